"""A service shipped as a package of its own is found, listed, scheduled, simulated, routed and delivered.

``tests/example_service`` is what a province's vendor would publish as ``motcua-relay-<name>``: one module declaring
an ``echo`` service (deliverer, typed options with a secret, a beat job, a callback, a simulator) and an entry
point in the ``motcua_relay.services`` group. The test builds its wheel in a temporary folder, installs it there
(``pip install --target``), and runs the relay's own commands with that folder on their path: no file of the relay
knows the service.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from sandbox.workload import generate_day, send_events_sync
from store.db import upgrade
from tests.harness import ROOT, RelayProcess, free_port, new_secret, relay_env, wait_for

EXAMPLE = ROOT / "tests" / "example_service"


@dataclass
class Installed:
    site: Path
    env: dict[str, str]
    routing: Path
    token: str
    intake_secret: str
    workdir: Path


def _relay(installed: Installed, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=installed.workdir,
                          env={**installed.env, "COLUMNS": "400"}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    # given the example service built as a wheel and installed in a folder of its own, beside the relay
    base = tmp_path_factory.mktemp("service-package")
    source = base / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(base / "dist"), str(source)], check=True, capture_output=True, timeout=120)
    wheel = next((base / "dist").glob("motcua_relay_echo-*.whl"))
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=120)
    assert (site / "motcua_relay_echo" / "__init__.py").exists()
    # and a routing file with one destination of its kind
    token = uuid.uuid4().hex
    routing = base / "routing.toml"
    routing.write_text('[destinations.echo]\nkind = "echo"\nurl = "http://127.0.0.1:1"\nurl_env = "ECHO_URL"\n'
                       'token_env = "ECHO_TOKEN"\nretry = { schedule = ["1s"] }\nevents = ["dossier.*"]\n',
                       encoding="utf-8")
    database = f"sqlite:///{base}/relay.db"
    upgrade(database)
    redis_url = f"{os.environ.get('MOTCUA_TEST_REDIS', 'redis://127.0.0.1:6379')}/" \
                f"{os.environ.get('MOTCUA_TEST_PACKAGE_REDIS_DB', '4')}"
    redis.Redis.from_url(redis_url).flushdb()
    intake_secret = new_secret()
    env = relay_env(database, redis_url, intake_secret, {}, routing, ECHO_TOKEN=token,
                    MOTCUA_REDIS_PREFIX=f"pkg{uuid.uuid4().hex[:6]}", MOTCUA_SWEEP_INTERVAL_SECONDS="0.5")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)])
    try:
        yield Installed(site, env, routing, token, intake_secret, base)
    finally:
        redis.Redis.from_url(redis_url).flushdb()


def test_the_service_is_listed_with_where_it_came_from(installed: Installed) -> None:
    # when the operator asks which services there are
    listed = _relay(installed, "services")
    # then the package's is among the bundled ones, named by its distribution and entry point
    assert listed.returncode == 0, listed.stderr
    text = " ".join(listed.stdout.split())
    assert "echo" in text and "motcua-relay-echo 0.1.0" in text and "relay.echo.count" in text
    assert "portal" in text and "services.portal" in text


def test_its_job_is_scheduled_and_routed_on_the_control_queue(installed: Installed) -> None:
    script = ("import json; from tasks.app import app; import tasks.jobs; c = app.conf; "
              "print(json.dumps({'beat': {k: v['task'] for k, v in c.beat_schedule.items()}, "
              "'routes': c.task_routes, 'tasks': sorted(t for t in app.tasks if t.startswith('relay.'))}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=installed.workdir, env=installed.env,
                          capture_output=True, text=True, timeout=60, check=True)
    conf = json.loads(done.stdout.strip().splitlines()[-1])
    assert conf["beat"]["echo-count"] == "relay.echo.count"
    assert conf["routes"]["relay.echo.count"] == {"queue": "relay.control"}
    assert "relay.echo.count" in conf["tasks"]
    # a kind the routing does not use is not scheduled
    assert "postal-tracking" not in conf["beat"]


def test_it_is_simulated_routed_and_delivered_by_a_real_worker(installed: Installed) -> None:
    # given its simulator, started by the sandbox command with the option the service declared
    port = free_port()
    logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", installed.workdir))
    sandbox = RelayProcess(["sandbox", "--echo-port", str(port)], installed.env, logs / "package-sandbox.log")
    env = {**installed.env, "ECHO_URL": f"http://127.0.0.1:{port}"}
    api_port = free_port()
    api = RelayProcess(["api", "--port", str(api_port)], env, logs / "package-api.log")
    worker = RelayProcess(["worker", "--concurrency", "4"], env, logs / "package-worker.log")
    try:
        sandbox.start()
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/_admin/count"), 30, 0.2, "the echo simulator")
        api.start()
        worker.start()
        wait_for(lambda: _answers(f"http://127.0.0.1:{api_port}/healthz"), 60, 0.2, "the API")
        # its callback router is mounted by the API
        answer = httpx.get(f"http://127.0.0.1:{api_port}/v1/callbacks/echo", timeout=5).json()
        assert answer == {"kind": "echo", "destinations": ["echo"]}
        # when the one-stop software sends two dossiers' days (their dossier events are routed to the service)
        events = generate_day(2, seed=5)
        routed = [e for e in events if e["type"].startswith("dossier.")]
        report = send_events_sync(f"http://127.0.0.1:{api_port}/v1/events", installed.intake_secret, events)
        assert report.accepted == len(events), report.errors
        # then the worker delivers each routed one to the package's endpoint, once
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/_admin/count", timeout=5).json()["count"]
                 >= len(routed), 60, 0.3, "every routed event at the echo endpoint")
        received = httpx.get(f"http://127.0.0.1:{port}/_admin/received", timeout=5).json()
        assert sorted(r["event_id"] for r in received) == sorted(e["event_id"] for e in routed)
    finally:
        for process in (worker, api, sandbox):
            process.stop()


def test_a_missing_secret_stops_the_worker_at_start_naming_the_variable(installed: Installed) -> None:
    env = {k: v for k, v in installed.env.items() if k != "ECHO_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "worker"], cwd=installed.workdir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "destination echo: set ECHO_TOKEN (token)" in " ".join(done.stdout.split())


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
