"""Nothing lost, nothing twice, whatever crashes: the relay under SIGKILL and a Redis restart.

Real everything: a private ``redis-server`` (restarted mid-run), ``motcua-relay worker``
and ``motcua-relay beat`` subprocesses (the worker SIGKILLed three times mid-delivery),
the intake over HTTP, a PostgreSQL or SQLite ledger, and the sandbox one-stop as the subscriber,
answering in 200 ms (so that a kill finds attempts in flight), optionally failing 30 % of calls with
5xx or timeouts. The engine runs on its default lease and requeue settings: what a kill orphans is
attempted again within 30 s of the fault, and no worker ever exits with status 0.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from api.app import create_app
from sandbox.onestop import create_app as onestop_app
from sandbox.workload import generate_day, send_events_sync
from store.audit.archive import read_archive
from store.audit.checkpoints import Signer, make_checkpoint
from store.audit.export import export
from store.audit.verify import verify
from store.db import get_engine, upgrade
from store.queries import status_counts
from store.tables import Status, attempts, audit_checkpoints, audit_entries, deliveries, events
from tests.conftest import _fresh_pg
from tests.harness import RedisServer, RelayProcess, become_relay, new_secret, relay_env, wait_for, write_routing
from tests.servers import run_asgi

pytestmark = pytest.mark.slow

EVENTS = 1000
RECOVERY = timedelta(seconds=30)  # what a fault orphans is attempted again (and, without failing calls, final) by then
FAST_RETRY = '{ schedule = ["1s", "2s", "3s"], repeat_every = "3s", deadline = "1h", max_attempts = 500 }'


def _workload(n: int) -> list[dict]:
    out: list[dict] = []
    seed = 100
    while len(out) < n:
        day = generate_day(400, seed=seed, unit_code=f"000.00.{seed % 90 + 10}.H49")
        out.extend(day)
        seed += 1
    return out[:n]


@dataclass
class Stack:
    env: dict[str, str]
    redis: RedisServer
    worker: RelayProcess
    beat: RelayProcess
    sandbox_url: str
    intake_url: str
    intake_secret: str
    database_url: str
    signer: Signer = field(default_factory=Signer.generate)
    done: threading.Event = field(default_factory=threading.Event)
    # each fault's time and the deliveries in flight just before it
    faults: list[tuple[datetime, set[int]]] = field(default_factory=list)

    def delivered(self) -> int:
        return status_counts(get_engine(self.database_url)).get("warehouse", {}).get("delivered", 0)


@pytest.fixture(params=["postgresql", "sqlite"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    from tasks.runtime import reset_runtime

    if request.param == "postgresql":
        database_url = _fresh_pg(request.getfixturevalue("pg_url"))
    else:
        database_url = f"sqlite:///{tmp_path}/relay.db"
        upgrade(database_url)
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    secrets = {"warehouse": new_secret()}
    intake_secret = new_secret()
    signer = Signer.generate()
    with run_asgi(onestop_app(secrets)) as sandbox_url:
        httpx.post(f"{sandbox_url}/_admin/faults", json={"latency_ms": 200}).raise_for_status()
        routing = write_routing(tmp_path / "routing.toml", sandbox_url, names=("warehouse",), retry=FAST_RETRY,
                                breaker='{ failure_threshold = 200, open_for = "2s" }', read_timeout=2.0)
        env = relay_env(
            database_url, redis_server.url, intake_secret, secrets, routing,
            MOTCUA_SWEEP_INTERVAL_SECONDS="1", MOTCUA_WORKER_CONCURRENCY="32",
            MOTCUA_ORDERING_GAP_WAIT_SECONDS="5", MOTCUA_REDIS_PREFIX="crash", MOTCUA_WORKER_STALL_SECONDS="15",
            MOTCUA_AUDIT_SIGNING_KEY=signer.private_text(), MOTCUA_AUDIT_CHECKPOINT_SECONDS="2",
        )
        become_relay(monkeypatch, env)
        logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", tmp_path))
        logs.mkdir(parents=True, exist_ok=True)
        # supervised like systemd's Restart=always: a worker whose consumer died exits (tasks/watchdog.py)
        worker = RelayProcess(["worker"], env, logs / "crash-worker.log", supervise=True).start()
        beat = RelayProcess(["beat"], {**env, "MOTCUA_BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule")},
                            logs / "crash-beat.log")
        beat.start()
        done = threading.Event()  # ends the progress writer
        try:
            with run_asgi(create_app()) as api_url:
                yield Stack(env, redis_server, worker, beat, sandbox_url, f"{api_url}/v1/events", intake_secret,
                            database_url, signer, done)
        finally:
            worker.close()
            beat.stop()
            redis_server.stop()
            done.set()
            reset_runtime()


def _play_with_crashes(stack: Stack, events_: list[dict]) -> None:
    sent: dict[str, int] = {}

    def send() -> None:
        report = send_events_sync(stack.intake_url, stack.intake_secret, events_, batch_size=100, concurrency=2)
        sent["accepted"] = report.accepted + report.duplicates

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    threading.Thread(target=_progress, args=(stack,), daemon=True).start()
    # SIGKILL the worker three times while deliveries are in flight, and restart Redis once (at a tenth of the
    # deliveries, three, five and seven).
    for share, action in ((0.1, "kill"), (0.3, "kill"), (0.5, "redis"), (0.7, "kill")):
        threshold = int(share * len(events_))
        wait_for(lambda t=threshold: stack.delivered() >= t, 180, 0.1, f"{threshold} deliveries")
        stack.faults.append((datetime.now(UTC), _in_flight(get_engine(stack.database_url))))
        if action == "kill":
            stack.worker.kill()
            stack.worker.start()
        else:
            stack.redis.restart()
    sender.join(240)
    assert sent.get("accepted") == len(events_), f"the intake did not take every event: {sent}"


def _in_flight(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(deliveries.c.id).where(deliveries.c.status == Status.IN_FLIGHT)).scalars())


def _assert_recovered_within(stack: Stack, limit: timedelta, *, final: bool) -> None:
    """Every delivery in flight at a fault attempted again (or ended) within ``limit`` of it; with ``final``,
    delivered within ``limit`` of the last fault that found it in flight (one orphaned twice waits for the second
    rescue). Also, no worker exited with status 0 (a supervisor restarting on failure would not have brought it
    back)."""
    engine = get_engine(stack.database_url)
    last_fault: dict[int, datetime] = {}
    slow: list[str] = []

    def aware(moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite keeps naive UTC

    with engine.connect() as conn:
        delivered_at = {i: aware(at) for i, at in conn.execute(
            select(deliveries.c.id, deliveries.c.delivered_at).where(deliveries.c.delivered_at.is_not(None))).tuples()}
        starts: dict[int, list[datetime]] = {}
        for delivery_id, started in conn.execute(select(attempts.c.delivery_id, attempts.c.started_at)).tuples():
            starts.setdefault(delivery_id, []).append(aware(started))
    for at, orphans in stack.faults:
        for delivery_id in sorted(orphans):
            last_fault[delivery_id] = at
            again = min([s for s in starts.get(delivery_id, []) if s > at] + [delivered_at[delivery_id]])
            if again - at > limit:
                slow.append(f"delivery {delivery_id}: again {(again - at).total_seconds():.1f} s after a fault")
    if final:
        slow += [f"delivery {i}: delivered {(delivered_at[i] - at).total_seconds():.1f} s after its last fault"
                 for i, at in last_fault.items() if delivered_at[i] - at > limit]
    assert last_fault, "no fault found an attempt in flight: the test proves nothing"
    assert not slow, f"{len(slow)} orphans waited longer than {limit}: {slow[:5]}"
    assert 0 not in stack.worker.exit_codes, f"a worker exited with status 0: {stack.worker.exit_codes}"


def _progress(stack: Stack) -> None:
    """Write the ledger's counts every 2 s next to the worker's log, for post-mortems."""
    import json
    import time

    path = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", "/tmp")) / "crash-progress.log"
    with path.open("a") as out:
        while not stack.done.is_set():
            try:
                counts = status_counts(get_engine(stack.database_url))
            except Exception as exc:
                counts = {"error": str(exc)}  # type: ignore[dict-item]
            out.write(f"{time.strftime('%H:%M:%S')} {json.dumps(counts)}\n")
            out.flush()
            time.sleep(2)


def _assert_nothing_lost_nothing_twice(stack: Stack, events_: list[dict]) -> None:
    engine = get_engine(stack.database_url)
    wait_for(lambda: stack.delivered() == len(events_), 300, 0.5, "every delivery delivered")
    counts = status_counts(engine)
    assert counts == {"warehouse": {"delivered": len(events_)}}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == len(events_)
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == len(events_)
    stats = httpx.get(f"{stack.sandbox_url}/_admin/stats").json()["warehouse"]
    assert stats["distinct"] == len(events_), stats
    received = httpx.get(f"{stack.sandbox_url}/_admin/received", params={"subscriber": "warehouse"}).json()
    items = received["effects"] if isinstance(received, dict) else received
    assert sorted(r["event_id"] for r in items) == sorted(e["event_id"] for e in events_)


def _assert_the_chain_verifies(stack: Stack, tmp_path: Path) -> None:
    """The audit chain the crashes left: exactly one entry per recorded attempt, and an archive that verifies
    against the checkpoints the beat signed meanwhile (and one made now, covering the last entries)."""
    engine = get_engine(stack.database_url)
    with engine.connect() as conn:
        recorded = set(conn.execute(select(attempts.c.id).where(attempts.c.outcome.is_not(None))).scalars())
        entries = Counter(conn.execute(select(audit_entries.c.attempt_id)
                                       .where(audit_entries.c.attempt_id.is_not(None))).scalars())
        made_by_beat = conn.execute(select(func.count()).select_from(audit_checkpoints)).scalar()
    assert set(entries) == recorded and set(entries.values()) == {1}
    assert made_by_beat, "the beat made no checkpoint"
    now = datetime.now(UTC)
    assert make_checkpoint(engine, stack.signer, now, idle_every=0) is not None  # whether the beat's covered all
    out = tmp_path / "audit.zip"
    export(engine, out, now - timedelta(hours=1), now, now)
    report = verify(read_archive(out), public_key_pem=stack.signer.public_pem)
    assert report.ok and not report.warnings, report.findings


def test_sigkill_and_redis_restart_lose_nothing(stack: Stack, tmp_path: Path) -> None:
    # given 1,000 events of a district's working days
    events_ = _workload(EVENTS)
    # when they are played through the intake while the worker is SIGKILLed 3 times and Redis restarts once
    _play_with_crashes(stack, events_)
    # then every delivery is delivered, each effect happened exactly once, and no ledger row is lost
    _assert_nothing_lost_nothing_twice(stack, events_)
    # ... and what each fault left in flight was delivered within 30 s of it
    _assert_recovered_within(stack, RECOVERY, final=True)
    # ... and the audit chain holds one entry per attempt, and verifies
    _assert_the_chain_verifies(stack, tmp_path)


@pytest.mark.parametrize("stack", ["postgresql"], indirect=True)  # the production ledger; keeps the suite short
def test_crashes_with_30_percent_failing_calls(stack: Stack, tmp_path: Path) -> None:
    # given a subscriber that fails 30 % of calls: 20 % with 5xx, 10 % by hanging past the read timeout
    httpx.post(f"{stack.sandbox_url}/_admin/faults", json={
        "error_rate": 0.2, "timeout_rate": 0.1, "hang_seconds": 3, "seed": 7, "latency_ms": 200,
    }).raise_for_status()
    events_ = _workload(EVENTS // 2)  # half: the faults, not the size, are what this run adds to the one above
    # when the day is played with the same crashes
    _play_with_crashes(stack, events_)
    # then the same guarantees hold, and the retries show in the attempts
    _assert_nothing_lost_nothing_twice(stack, events_)
    stats = httpx.get(f"{stack.sandbox_url}/_admin/stats").json()["warehouse"]
    assert stats["faults"]["error"] > 0 and stats["faults"]["timeout"] > 0
    _assert_recovered_within(stack, RECOVERY, final=False)  # retried within 30 s; its retries may fail again
    _assert_the_chain_verifies(stack, tmp_path)
