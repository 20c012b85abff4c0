"""The stall rule that makes a worker whose consumer died exit for a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from sandbox.workload import generate_day
from store import intake
from tasks.app import app
from tasks.queue import DRAIN_TASK
from tasks.runtime import get_runtime
from tasks.watchdog import EXIT_STALLED, stalled
from tests.conftest import RelayConfig
from tests.harness import RelayProcess


@pytest.mark.parametrize(
    ("queued", "idle", "limit", "expected"),
    [
        (0, 1000.0, 120.0, False),  # nothing to do: idle is fine
        (5, 10.0, 120.0, False),  # work waiting, but tasks moved recently
        (5, 121.0, 120.0, True),  # work waiting and nothing moved for too long
        (1, 120.0, 120.0, False),  # the limit itself is not yet a stall
    ],
)
def test_stall_rule(queued: int, idle: float, limit: float, expected: bool) -> None:
    assert stalled(queued, idle, limit) is expected


def test_a_worker_with_work_waiting_and_nothing_moving_exits_for_a_restart(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    # given a real worker with one thread, a 3 s stall limit, and a subscriber that answers after 8 s
    httpx.post(f"{relay_config.sandbox.url}/_admin/faults", json={"latency_ms": 8000}).raise_for_status()
    rt = get_runtime()
    firsts = list({e["dossier_code"]: e for e in reversed(generate_day(20, seed=5))}.values())[:10]
    intake.ingest_and_route(rt.engine, firsts, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    env = {**relay_config.env, "MOTCUA_WORKER_STALL_SECONDS": "3"}
    worker = RelayProcess(["worker", "--concurrency", "1", "--queues", "deliver.warehouse"], env,
                          tmp_path / "worker.log").start()
    try:
        # when the warehouse's doorbell is rung ten times (a ring per intake batch, its flag answered each
        # time): the first drain takes the deliveries, the worker prefetches a few doorbells, the others wait
        for _ in range(10):
            app.send_task(DRAIN_TASK, ("warehouse",), queue="deliver.warehouse")
        # then, nothing having moved for 3 s while work waits, the worker exits with EX_TEMPFAIL
        assert worker.proc is not None
        assert worker.proc.wait(40) == EXIT_STALLED
        assert "worker.stalled" in (tmp_path / "worker.log").read_text()
    finally:
        worker.kill()
