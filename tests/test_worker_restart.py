"""A worker whose broker restarts empty under load never exits 0, and after its supervisor's restart every
delivery ends final, once.

Celery stops a worker on an "Unrecoverable error" when kombu's cleanup of the lost connection raises (a Redis
restarted under load); before ``cli/main.py`` passed Celery's status on, the process then exited 0, and a
supervisor restarting only on failure (systemd ``Restart=on-failure``) left no worker at all. The supervisor here
is that one: a worker that exits 0 stays stopped, and the deliveries never end.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from sandbox.onestop import create_app as onestop_app
from sandbox.workload import generate_day
from store import intake
from store.db import get_engine
from store.queries import status_counts
from store.tables import deliveries
from tasks.runtime import get_runtime, reset_runtime
from tasks.watchdog import EXIT_STALLED, exit_status
from tests.conftest import _fresh_pg
from tests.harness import RedisServer, RelayProcess, become_relay, new_secret, relay_env, wait_for, write_routing
from tests.servers import run_asgi

EVENTS = 500
FAST_RETRY = '{ schedule = ["1s", "2s"], repeat_every = "2s", deadline = "1h", max_attempts = 500 }'


@pytest.mark.parametrize(("celery_status", "expected"), [
    (None, 0),  # asked to stop (SIGTERM: a warm shutdown)
    (0, 0),
    (1, EXIT_STALLED),  # Celery's EX_FAILURE: an "Unrecoverable error", a cold shutdown
    (2, 2),  # a usage error keeps its own status
])
def test_celery_statuses_become_the_process_status(celery_status: int | None, expected: int) -> None:
    assert exit_status(celery_status) == expected


def _events(n: int) -> list[dict]:
    out: list[dict] = []
    seed = 300
    while len(out) < n:
        out.extend(generate_day(300, seed=seed, unit_code=f"000.00.{seed % 90 + 10}.H49"))
        seed += 1
    return out[:n]


@pytest.mark.slow
def test_a_broker_restarted_empty_under_load_never_leaves_a_worker_exited_0(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a PostgreSQL ledger, a private Redis, a subscriber answering in 300 ms, a worker supervised like
    # systemd's Restart=on-failure and a beat sweeping every second
    database_url = _fresh_pg(pg_url)
    broker = RedisServer(tmp_path)
    broker.start()
    secrets = {"warehouse": new_secret()}
    logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", tmp_path))
    logs.mkdir(parents=True, exist_ok=True)
    with run_asgi(onestop_app(secrets)) as sandbox_url:
        httpx.post(f"{sandbox_url}/_admin/faults", json={"latency_ms": 300}).raise_for_status()
        routing = write_routing(tmp_path / "routing.toml", sandbox_url, names=("warehouse",), retry=FAST_RETRY,
                                read_timeout=2.0)
        env = relay_env(database_url, broker.url, new_secret(), secrets, routing,
                        MOTCUA_SWEEP_INTERVAL_SECONDS="1", MOTCUA_WORKER_CONCURRENCY="16",
                        MOTCUA_DELIVERY_BATCH="10", MOTCUA_ORDERING_GAP_WAIT_SECONDS="5",
                        MOTCUA_REDIS_PREFIX="restart", MOTCUA_WORKER_STALL_SECONDS="15")
        become_relay(monkeypatch, env)
        worker = RelayProcess(["worker", "--loglevel", "INFO"], env, logs / "restart-worker.log", supervise=True,
                              on_failure_only=True).start()
        beat = RelayProcess(["beat"], {**env, "MOTCUA_BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule")},
                            logs / "restart-beat.log").start()
        engine = get_engine(database_url)

        def delivered() -> int:
            return status_counts(engine).get("warehouse", {}).get("delivered", 0)

        try:
            events_ = _events(EVENTS)
            rt = get_runtime()
            intake.ingest_and_route(rt.engine, events_, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
            # when Redis is killed and started again, empty, three times while deliveries are in flight (the worker
            # survives some restarts: whether kombu's cleanup raises depends on where the consumer was)
            for threshold in (100, 200, 300):
                wait_for(lambda t=threshold: delivered() >= t, 120, 0.1, f"{threshold} deliveries")
                broker.stop()
                time.sleep(1)
                broker.start()
            # then the worker either goes on delivering or exits non-zero and is restarted, and every delivery
            # ends delivered: nothing lost, and each effect applied once
            wait_for(lambda: delivered() == EVENTS, 240, 0.5, "every delivery delivered")
            assert 0 not in worker.exit_codes, f"a worker exited 0: {worker.exit_codes}"
            # (a worker that exits for a restart once the last deliveries are in is restarted within the
            # supervisor's half second)
            wait_for(lambda: worker.alive, 5, 0.1, "the worker running, or restarted")
            assert status_counts(engine) == {"warehouse": {"delivered": EVENTS}}
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == EVENTS
            stats = httpx.get(f"{sandbox_url}/_admin/stats").json()["warehouse"]
            assert stats["distinct"] == EVENTS, stats
            received = httpx.get(f"{sandbox_url}/_admin/received", params={"subscriber": "warehouse"}).json()
            items = received["effects"] if isinstance(received, dict) else received
            assert sorted(r["event_id"] for r in items) == sorted(e["event_id"] for e in events_)
        finally:
            worker.close()
            beat.stop()
            broker.stop()
            reset_runtime()
