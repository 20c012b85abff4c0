"""What the failover tests share: the relay as real processes in front of the sandbox one-stop, a steady stream of
events into its intake, and the measures of a switch (how long until deliveries resumed, each effect once).

The relay is a supervised ``motcua-relay worker`` and a ``beat`` (subprocesses) and this process's API under
uvicorn, on whatever ledger and Redis URLs the test gives (a sentinel group, a pair of PostgreSQL servers). The
progress is read at the subscriber, not in the ledger, so it can be read while the ledger itself is switching.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from sandbox.onestop import create_app as onestop_app
from sandbox.workload import generate_day, send_events_sync
from tests.harness import RelayProcess, become_relay, new_secret, relay_env, wait_for, write_routing
from tests.servers import run_asgi

FAST_RETRY = '{ schedule = ["1s", "2s", "3s"], repeat_every = "3s", deadline = "1h", max_attempts = 500 }'
RESUME_WITHIN = 30.0  # seconds from a switch until an event accepted after it reaches the subscriber


def workload(n: int, seed: int = 300) -> list[dict[str, Any]]:
    """``n`` events of a few wards' working days."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out.extend(generate_day(200, seed=seed, unit_code=f"000.00.{seed % 90 + 10}.H49"))
        seed += 1
    return out[:n]


@dataclass
class Stack:
    sandbox_url: str
    intake_url: str
    intake_secret: str
    worker: RelayProcess
    beat: RelayProcess

    def readiness(self) -> dict[str, Any]:
        """The API's ``/readyz`` answer: its status code and checks (the ledger, Redis)."""
        answer = httpx.get(self.intake_url.replace("/v1/events", "/readyz"), timeout=10)
        return {"status": answer.status_code, **answer.json()["checks"]}

    def delivered(self) -> int:
        """The distinct events the subscriber has applied (0 while it cannot be read)."""
        try:
            return int(httpx.get(f"{self.sandbox_url}/_admin/stats", timeout=5).json()["warehouse"]["distinct"])
        except (httpx.HTTPError, KeyError):
            return 0


@contextmanager
def relay_stack(name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, *, database_url: str,
                redis_url: str) -> Iterator[Stack]:
    """The relay on ``database_url`` and ``redis_url`` (its broker and its own state), one webhook destination
    (``warehouse``) on the sandbox one-stop, the engine's default leases and requeue delay; the worker's and
    beat's logs are ``<name>-*.log`` under ``$MOTCUA_TEST_ARTIFACTS`` (else ``workdir``)."""
    from tasks.runtime import reset_runtime

    secrets = {"warehouse": new_secret()}
    intake_secret = new_secret()
    logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", workdir))
    logs.mkdir(parents=True, exist_ok=True)
    with run_asgi(onestop_app(secrets)) as sandbox_url:
        routing = write_routing(workdir / "routing.toml", sandbox_url, names=("warehouse",), retry=FAST_RETRY,
                                breaker='{ failure_threshold = 200, open_for = "2s" }', read_timeout=2.0)
        env = relay_env(
            database_url, redis_url, intake_secret, secrets, routing,
            MOTCUA_SWEEP_INTERVAL_SECONDS="1", MOTCUA_WORKER_CONCURRENCY="16", MOTCUA_DELIVERY_BATCH="50",
            MOTCUA_ORDERING_GAP_WAIT_SECONDS="5", MOTCUA_REDIS_PREFIX=name, MOTCUA_WORKER_STALL_SECONDS="10",
        )
        become_relay(monkeypatch, env)
        # supervised like systemd's Restart=always: a worker whose consumer died exits (tasks/watchdog.py)
        worker = RelayProcess(["worker"], env, logs / f"{name}-worker.log", supervise=True).start()
        beat = RelayProcess(["beat"], {**env, "MOTCUA_BEAT_SCHEDULE_FILE": str(workdir / f"{name}-beat")},
                            logs / f"{name}-beat.log").start()
        try:
            with run_asgi(create_app()) as api_url:
                yield Stack(sandbox_url, f"{api_url}/v1/events", intake_secret, worker, beat)
        finally:
            worker.close()
            beat.stop()
            reset_runtime()


@dataclass
class SteadySender:
    """Events into the intake at a steady pace from a thread, ``batch`` at a time every ``interval`` seconds, each
    batch retried (as the one-stop software would) until it is answered 2xx; ``accepted`` counts what was."""

    stack: Stack
    events: list[dict[str, Any]]
    batch: int = 10
    interval: float = 0.2
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> SteadySender:
        self._thread = threading.Thread(target=self._run, daemon=True, name="steady-sender")
        self._thread.start()
        return self

    def _run(self) -> None:
        for i in range(0, len(self.events), self.batch):
            started = time.monotonic()
            chunk = self.events[i:i + self.batch]
            report = send_events_sync(self.stack.intake_url, self.stack.intake_secret, chunk, batch_size=len(chunk),
                                      concurrency=1, max_attempts=12, backoff=0.25)
            if report.accepted + report.duplicates == len(chunk):
                self.accepted += len(chunk)
            else:
                self.refused.extend(report.errors)
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the sender did not finish"
        assert self.accepted == len(self.events), f"the intake did not take every event: {self.refused[:3]}"


def switch_and_time(stack: Stack, sender: SteadySender, switch: Any, what: str) -> float:
    """Run ``switch`` (a failover) and return the seconds from its start until the subscriber has applied an event
    the intake accepted after that start: deliveries resumed, not merely finished what was in flight."""
    before = sender.accepted
    assert before < len(sender.events), f"every event was accepted before {what}: nothing would show a resume"
    started = time.monotonic()
    switch()
    wait_for(lambda: stack.delivered() > before, RESUME_WITHIN, 0.1, f"deliveries to resume after {what}")
    return round(time.monotonic() - started, 1)


def assert_each_effect_once(stack: Stack, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every event applied by the subscriber exactly once; its stats (``duplicates``: redeliveries it recognised)."""
    wait_for(lambda: stack.delivered() >= len(events), 120, 0.5, "every event delivered")
    stats: dict[str, Any] = httpx.get(f"{stack.sandbox_url}/_admin/stats").json()["warehouse"]
    received = httpx.get(f"{stack.sandbox_url}/_admin/received", params={"subscriber": "warehouse"}).json()
    items = received["effects"] if isinstance(received, dict) else received
    assert sorted(r["event_id"] for r in items) == sorted(e["event_id"] for e in events)
    assert stats["distinct"] == len(events), stats
    return stats
