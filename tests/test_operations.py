"""What an operator's monitoring reads: readiness (database, Redis, workers) and the metrics the alert rules use."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from sandbox.workload import generate_day
from store import intake
from tasks.runtime import get_runtime
from tests.conftest import RelayConfig
from tests.harness import RelayProcess, captured_logs, drain, wait_for
from tests.servers import run_asgi

ROOT = Path(__file__).resolve().parent.parent


def metric(text: str, name: str, destination: str) -> float | None:
    found = re.search(rf'^{name}{{destination="{destination}"}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_readiness_checks_the_ledger_redis_and_the_workers(relay_config: RelayConfig, tmp_path: Path) -> None:
    with run_asgi(create_app()) as api:
        ready = httpx.get(f"{api}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert (checks["database"], checks["redis"], checks["workers"]["answering"]) == ("ok", "ok", 0)
        assert httpx.get(f"{api}/readyz/workers", timeout=10).status_code == 503
        worker = RelayProcess(["worker"], relay_config.env, tmp_path / "worker.log").start()
        try:
            answered = wait_for(lambda: (r := httpx.get(f"{api}/readyz/workers", timeout=10)).status_code == 200
                                and r.json(), 60, interval=0.5, what="the worker answering")
            assert answered["answering"] == 1 and answered["names"][0].startswith("relay-")
        finally:
            worker.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_metrics_show_dead_letters_and_an_open_breaker(relay_config: RelayConfig) -> None:
    # given the warehouse refuses everything (400: permanent) and the one-stop software is down (503)
    sandbox = relay_config.sandbox.url
    httpx.post(f"{sandbox}/_admin/faults", json={"error_rate": 1, "error_status": 400}, timeout=5)
    events = [e for e in generate_day(5, seed=3) if e["origin"] == "onestop" and e["sequence"] == 1][:3]
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    drain(lambda: datetime.now(UTC) + timedelta(seconds=5))
    for _ in range(30):  # the breaker opens after its threshold of consecutive failures
        rt.protection.after_attempt("onestop", True, rt.destination("onestop").breaker)
    with run_asgi(create_app()) as api:
        text = httpx.get(f"{api}/metrics", timeout=10).text
    assert metric(text, "motcua_dead_letters", "warehouse") == 3
    # ... each attempted in a batch of its own (run_delivery: a batch of the given id)
    assert metric(text, "motcua_delivery_batch_size_count", "warehouse") == 3
    assert metric(text, "motcua_delivery_batch_size_sum", "warehouse") == 3
    assert 'motcua_delivery_batch_size_bucket{destination="warehouse",le="1.0"} 3.0' in text
    assert metric(text, "motcua_breaker_open", "onestop") == 1
    assert metric(text, "motcua_breaker_open", "warehouse") == 0
    # and the example alert rules use only metrics this scrape has
    rules = (ROOT / "docs" / "prometheus-alerts.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\b(motcua_[a-z_]+)", rules))
    families = set(re.findall(r"^# TYPE (motcua_[a-z_]+) ", text, re.MULTILINE))  # a counter's samples add _total
    assert used and all(any(name.startswith(family) for family in families) for name in used), (used, families)
    assert {"MotcuaOldestDeliveryTooOld", "MotcuaDeadLettersGrowing", "MotcuaBreakerOpen",
            "MotcuaDestinationPaused"} <= set(re.findall(r"alert: (\w+)", rules))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_metrics_show_a_paused_destination_while_it_is_paused(relay_config: RelayConfig) -> None:
    import time

    from connectors.pauses import Pause

    rt = get_runtime()
    rt.pauses.pause("warehouse", Pause("balance", "out of balance", time.time()))
    rt.pauses.pause("warehouse", Pause("template_disabled", "-146", time.time(), scope="300003"))
    rt.pauses.pause("onestop", Pause("template_disabled", "-146", time.time(), until=time.time() - 1))  # ended
    pattern = r'^motcua_destination_paused{{condition="{1}",destination="{0}"}} ([0-9.]+)$'
    with run_asgi(create_app()) as api:
        during = httpx.get(f"{api}/metrics", timeout=10).text
        rt.pauses.lift("warehouse")
        after = httpx.get(f"{api}/metrics", timeout=10).text
    assert re.search(pattern.format("warehouse", "balance"), during, re.MULTILINE).group(1) == "1.0"
    assert re.search(pattern.format("warehouse", "template_disabled"), during, re.MULTILINE).group(1) == "1.0"
    assert 'destination="onestop"' not in "".join(re.findall(r"^motcua_destination_paused.*$", during, re.MULTILINE))
    assert re.findall(r"^motcua_destination_paused{.*$", after, re.MULTILINE) == []
    assert "# TYPE motcua_destination_paused gauge" in after


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_beat_job_over_destinations_runs_once_at_a_time_and_one_failure_does_not_stop_the_rest(
    relay_config: RelayConfig,
) -> None:

    rt = get_runtime()

    def step(name: str) -> dict[str, int]:
        if name == "down":
            raise RuntimeError("HTTP 503")
        return {"stored": 1 if name == "busy" else 0}

    with captured_logs() as logs:
        summary = rt.each_destination("test-job", 10, ["quiet", "down", "busy"], step, done="test.done",
                                      failed="test.failed", noteworthy=lambda s: bool(s["stored"]),
                                      failure_hint=lambda name: f"rerun {name}")
    assert summary == {"quiet": {"stored": 0}, "down": {"error": "HTTP 503"}, "busy": {"stored": 1}}
    assert [(e["event"], e["destination"], e["log_level"]) for e in logs] == [
        ("test.failed", "down", "error"), ("test.done", "busy", "info")]
    assert logs[0]["hint"] == "rerun down"
    with rt.exclusive("test-job", 10) as mine:
        assert mine
        assert rt.each_destination("test-job", 10, ["quiet"], step, done="d", failed="f") == {"skipped": True}
