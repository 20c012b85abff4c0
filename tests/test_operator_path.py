"""The operator's path of the README with a ``.env`` file only: nothing exported, every setting and secret (the
relay's, the destinations', the console's) in the file beside the processes. ``doctor`` says ready, the simulator,
API, worker and beat start, events are delivered, and the console opens with the account written there."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from api.console.auth import hash_password
from sandbox.workload import generate_day, send_events_sync
from tests.harness import ROOT, free_port, new_secret, wait_for, write_routing

PASSWORD = "mật khẩu của vận hành"


def run(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def spawn(workdir: Path, env: dict[str, str], name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=workdir, env=env, stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.timeout(240)
def test_the_relay_runs_on_a_dotenv_file_alone(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    # given a working directory with a routing file and a .env holding every setting and secret
    sandbox_port, api_port = free_port(), free_port()
    sandbox_url, api_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{api_port}"
    routing = write_routing(tmp_path / "relay.toml", sandbox_url)
    intake_secret = new_secret()
    account = f"vanhanh01:{hash_password(PASSWORD, iterations=10_000)}"  # its $ signs, as printed
    database_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    (tmp_path / ".env").write_text("\n".join([
        "# the operator's only configuration",
        f"MOTCUA_DATABASE_URL={database_url}",
        f"MOTCUA_BROKER_URL={redis_url}",
        f"MOTCUA_REDIS_URL={redis_url}",
        "MOTCUA_REDIS_PREFIX=operator-path",
        f"MOTCUA_ROUTING_FILE={routing}",
        f"MOTCUA_INTAKE_SECRET={intake_secret}",
        f"MOTCUA_ONESTOP_WEBHOOK_SECRET={new_secret()}",
        f"MOTCUA_WAREHOUSE_WEBHOOK_SECRET={new_secret()}",
        f"MOTCUA_CONSOLE_SECRET={new_secret()}",
        f"MOTCUA_CONSOLE_OPERATORS={account}",
        f"MOTCUA_BEAT_SCHEDULE_FILE={tmp_path / 'beat-schedule'}",
        "MOTCUA_SWEEP_INTERVAL_SECONDS=1",
        "MOTCUA_WORKER_CONCURRENCY=8",
        "MOTCUA_LOG_FORMAT=json",
        "",
    ]), encoding="utf-8")
    # and nothing exported: the environment has no MOTCUA_ variable at all
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOTCUA_")}
    env["PYTHONPATH"] = str(ROOT)
    redis.Redis.from_url(redis_url).flushdb()

    # when the operator migrates the ledger and starts the simulator, the API, a worker and beat
    upgraded = run(tmp_path, env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    procs = [spawn(tmp_path, env, "sandbox", "sandbox", "--port", str(sandbox_port)),
             spawn(tmp_path, env, "api", "api", "--port", str(api_port)),
             spawn(tmp_path, env, "worker", "worker"),
             spawn(tmp_path, env, "beat", "beat")]
    try:
        def up() -> bool:
            assert all(p.poll() is None for p in procs), "a process exited: see its log in " + str(tmp_path)
            with contextlib.suppress(httpx.HTTPError):
                return (httpx.get(f"{api_url}/readyz", timeout=2).status_code == 200
                        and httpx.get(f"{sandbox_url}/_admin/stats", timeout=2).status_code == 200)
            return False

        wait_for(up, 60, 0.3, "the API, its workers and the simulator")
        # then doctor says everything is ready
        doctor = run(tmp_path, env, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        # and events sent to the intake are delivered
        events = generate_day(10, seed=5)
        report = send_events_sync(f"{api_url}/v1/events", intake_secret, events)
        assert report.accepted == len(events), report.errors

        def delivered() -> bool:
            stats = httpx.get(f"{sandbox_url}/_admin/stats", timeout=5).json()
            return bool(stats["warehouse"]["distinct"] == len(events))

        wait_for(delivered, 60, 0.5, "every event at the warehouse")
        # and the console opens with the account from the file
        with httpx.Client(base_url=api_url, timeout=10) as client:
            assert client.get("/console/login").status_code == 200
            logged = client.post("/console/login", data={"username": "vanhanh01", "password": PASSWORD})
            assert logged.status_code == 303, logged.text[:500]
            assert client.cookies.get("motcua_console"), "no session: the account from .env was not read"
    finally:
        stop(procs)
