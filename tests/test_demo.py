"""``motcua-relay demo`` as a person runs it: a subprocess in an empty directory, no configuration.

The demo's Redis database is ``MOTCUA_TEST_DEMO_REDIS_DB`` (default 12), not the db 3 a person's
demo uses; the in-process broker path is taken by pointing the Redis probe at a closed port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness import ROOT, free_port

REDIS_BASE = os.environ.get("MOTCUA_TEST_REDIS", "redis://127.0.0.1:6379")
DEMO_DB = os.environ.get("MOTCUA_TEST_DEMO_REDIS_DB", "12")
PROBE = REDIS_BASE.split("://", 1)[1].rstrip("/")


def run_demo(tmp_path: Path, dossiers: int, **env_extra: str) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}
    # (the day sent at 50 events/s, not the 20 a person watches: the test checks the outcome, not the pace)
    env.update(MOTCUA_DEMO_REDIS_DB=DEMO_DB, MOTCUA_DEMO_TIMEOUT="50", MOTCUA_DEMO_SEED="11", PYTHONPATH=str(ROOT),
               MOTCUA_DEMO_RATE="50",
               COLUMNS="160",
               **env_extra)
    out = tmp_path / "s.json"
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--dossiers", str(dossiers), "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text(encoding="utf-8")), proc.stdout


def check_summary(summary: dict[str, Any], tmp_path: Path, stdout: str) -> None:
    assert summary["total"] > 0
    assert summary["delivered"] + summary["superseded"] + summary["dead"] == summary["total"]
    assert summary["dead"] == 0 and summary["open"] == 0 and not summary["timed_out"]
    # the day's audit chain, exported and verified offline, as an inspector would
    audit = summary["audit"]
    assert audit["verified"] and audit["entries"] >= summary["total"] and audit["checkpoints"] >= 1, audit
    assert summary["delivered"] > 0
    assert summary["p99_ms"] >= summary["p50_ms"] > 0
    # the SMS fallback appears only when a phone without Zalo turned up
    assert {"onestop", "warehouse", "portal", "zalo", "postal", "payment"} <= set(summary["destinations"]) <= {
        "onestop", "warehouse", "portal", "zalo", "sms", "postal", "payment", "lgsp"}
    portal = summary["portal"]
    assert portal["dossiers"] > 0 and portal["matching"] == portal["dossiers"], portal
    assert portal["online"] >= 2 and portal["online_delivered"] == portal["online"], portal
    # every postal order was created once, and each one delivered was reported to the one-stop software once
    postal = summary["postal"]
    assert postal["orders"] > 0 and postal["created_once"] == postal["orders"], postal
    assert postal["delivered_back"] == postal["delivered"] > 0, postal
    # every bill paid online reached the one-stop software once; the wrong amount was held and reported
    # (a handful of dossiers may have had every fee paid at the desk)
    payments = summary["payments"]
    assert payments["paid_once"] == payments["expected_paid"] and payments["wrong_amount_paid"] == 0, payments
    assert payments["reconciliation"].get("amount_mismatch", 0) == (1 if payments["bills_paid"] else 0), payments
    assert payments["reconciliation"]["unknown"] == 1 and payments["report"][0].endswith(".xlsx"), payments
    # every transfer's last word reached the origin once: the result home, or the refusal (a small day may
    # have none: tests/test_transfer_flow.py covers them)
    transfers = summary["transfers"]
    assert transfers["results_home_once"] + transfers["refused"] == transfers["transfers"], transfers
    assert transfers["results_twice"] == 0 and transfers["hops"] >= transfers["transfers"], transfers
    # the citizens' Zalo receipts came back through the signed webhook into the ledger
    assert 0 < summary["zalo_receipts"]["received"] <= summary["destinations"]["zalo"]["delivered"]
    for name, figures in summary["destinations"].items():
        assert figures["total"] > 0, f"{name} got no deliveries"
        assert figures["effects"] == figures["delivered"], f"{name}: an effect was applied twice or lost"
    assert summary["no_duplicate_effect"]
    assert summary["intake"]["refused"] == 0
    # the ledger and the logs are in ./var of the working directory; logs never reach the terminal
    assert summary["database"].startswith(f"sqlite:///{tmp_path.resolve()}/var/demo-")
    assert list((tmp_path / "var" / "demo-logs").glob("*/demo.log"))
    assert '"event":' not in stdout and "Traceback" not in stdout
    assert "motcua-relay trace" in stdout


@pytest.mark.timeout(120)
def test_demo_with_redis(tmp_path: Path) -> None:
    client = redis.Redis.from_url(f"{REDIS_BASE}/{DEMO_DB}")
    try:
        summary, stdout = run_demo(tmp_path, 15, MOTCUA_DEMO_REDIS_PROBE=PROBE)
    finally:
        client.flushdb()
    assert summary["broker"] == {"mode": "redis", "url": f"redis://{PROBE}/{DEMO_DB}"}
    assert summary["payments"]["expected_paid"] > 0, "the day had no fee paid online: pick another size"
    assert {"api.log", "worker.log"} <= {p.name for p in (tmp_path / "var" / "demo-logs").glob("*/*.log")}
    check_summary(summary, tmp_path, stdout)


@pytest.mark.timeout(120)
def test_demo_without_redis_uses_the_in_process_broker(tmp_path: Path) -> None:
    port = free_port()  # bound and released: nothing answers there
    summary, stdout = run_demo(tmp_path, 5, MOTCUA_DEMO_REDIS_PROBE=f"127.0.0.1:{port}")
    assert f"no Redis on 127.0.0.1:{port}: using an in-process broker (memory://)" in stdout
    assert summary["broker"]["mode"] == "memory"
    check_summary(summary, tmp_path, stdout)


def test_the_demo_flushes_a_redis_database_only_when_it_is_its_own_or_it_is_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rich.console import Console

    from cli.demo import DEMO_MARK, _choose_broker

    client = redis.Redis.from_url(f"{REDIS_BASE}/{DEMO_DB}")
    client.flushdb()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}

    def choose(**env: str) -> tuple[str, str, dict[str, str]]:
        environ = {**base, "MOTCUA_DEMO_REDIS_PROBE": PROBE, "MOTCUA_DEMO_REDIS_DB": DEMO_DB, **env}
        monkeypatch.setattr(os, "environ", environ)
        console = Console(record=True, width=300)
        mode = _choose_broker(console)
        return mode, console.export_text(), environ

    try:
        # given a database holding someone's keys, and no terminal to ask at (the test's stdin is not a tty)
        client.set("someone:else", "their data")
        mode, said, environ = choose()
        # then it is left as it is, and the demo runs on the in-process broker, saying why and how to choose
        assert mode == "memory" and environ["MOTCUA_BROKER_URL"] == "memory://"
        assert client.get("someone:else") == b"their data"
        assert "holds 1 keys the demo did not write" in said and "MOTCUA_DEMO_FLUSH=yes" in said
        # when told to, it flushes it and marks it the demo's
        mode, said, _ = choose(MOTCUA_DEMO_FLUSH="yes")
        assert mode == "redis" and client.get("someone:else") is None and client.exists(DEMO_MARK)
        # and the next demo flushes its own database without asking
        client.set("celery-task-meta-x", "the last demo's")
        mode, said, _ = choose()
        assert mode == "redis" and client.get("celery-task-meta-x") is None and "was flushed for the demo" in said
    finally:
        client.flushdb()


def test_the_demo_names_motcua_relay_as_it_can_be_called_from_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cli.demo import _command

    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "motcua-relay").exists()
    # on the PATH (an activated venv): its name
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}/usr/bin")
    assert _command() == "motcua-relay"
    # not on it (the quick start): its path, relative to the working directory when below it
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert _command() == str(venv_bin / "motcua-relay")
    monkeypatch.chdir(venv_bin.parent.parent)
    assert _command() == str((venv_bin / "motcua-relay").relative_to(venv_bin.parent.parent))
