"""``motcua-relay doctor``: ready against the simulators (every destination of the shipped routing, and a bank), on
both ledgers and on a ``.env`` file alone; a missing secret, a credential a simulator refuses, a ledger not migrated
or missing, Redis down or hanging, no Zalo token pair or a paused one, no worker (with ``--require-workers``), a
server whose clock is off: each a row not ready saying what to fix, and exit 1, within seconds; the JSON's shape; no
secret ever printed, no Zalo refresh token ever spent.

Real servers on loopback: the simulators built by their services from the destinations' options (as ``motcua-relay
sandbox`` builds them), a private ``redis-server``, SQLite and PostgreSQL ledgers. The command runs through typer's
runner in this process, and as ``python -m cli.main`` where the operator's path is the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from alembic import command
from typer.testing import CliRunner

from api.console.auth import hash_password
from cli import doctor as doctor_module
from cli.main import app
from config.options import resolve
from config.routing import load_routing
from config.settings import DEFAULT_ROUTING_FILE
from connectors.credentials import TokenPairStore
from connectors.pauses import WHOLE, Pause, PauseStore
from services.base import Configured
from services.registry import get_registry
from services.zalo.deliver import set_token
from store.db import alembic_config
from tasks.runtime import reset_runtime
from tests.harness import ROOT, RedisServer, RelayProcess, free_port, new_secret, wait_for
from tests.servers import run_asgi

# the shipped routing, and a bank for the fees of one unit (the commented example of config/relay.toml)
BANK = """
[destinations.bank]
kind = "payment"
provider = "bank"
url = "http://127.0.0.1:8707"
url_env = "MOTCUA_BANK_URL"
partner_code = "HALONG01"
username = "halong.ws"
password_env = "MOTCUA_BANK_PASSWORD"
beneficiary_account = "3511.0.1054321.00000"
beneficiary_name = "Ủy ban nhân dân phường Hồng Gai"
beneficiary_bank = "KBNN"
"""
# each simulator's option (its `motcua-relay sandbox --…-port`) → the variables pointing destinations at it
SIMULATED = {
    "port": {"MOTCUA_ONESTOP_WEBHOOK_URL": "/subscribers/onestop/events",
             "MOTCUA_WAREHOUSE_WEBHOOK_URL": "/subscribers/warehouse/events"},
    "portal_port": {"MOTCUA_PORTAL_URL": ""},
    "zalo_port": {"MOTCUA_ZALO_ZNS_URL": "", "MOTCUA_ZALO_OAUTH_URL": ""},
    "sms_port": {"MOTCUA_SMS_URL": "/api/v1/sms/send"},
    "postal_port": {"MOTCUA_POSTAL_URL": ""},
    "payment_port": {"MOTCUA_PAYMENT_URL": ""},
    "bank_port": {"MOTCUA_BANK_URL": ""},
    "exchange_port": {"MOTCUA_TRANSFER_URL": ""},
}
# what every destination's service checks, and what each finds against its simulator
READY_ROWS = {
    "onestop: reachable": "ready", "onestop: secret": "ready", "warehouse: reachable": "ready",
    "portal: reachable": "ready", "portal: log-in": "ready",
    "zalo: reachable (ZNS)": "ready", "zalo: token pair": "ready",
    "sms: reachable": "ready",
    "postal: reachable": "ready", "postal: token": "ready",
    "payment: reachable": "ready", "payment: account": "ready",
    "bank: reachable": "ready", "bank: WSDL": "ready", "bank: account": "skipped",
    "lgsp: reachable": "ready", "lgsp: gateway token": "ready", "lgsp: account": "ready",
    "ledger": "ready", "ledger schema": "ready", "ledger writable": "ready", "redis": "ready", "broker": "ready",
    "workers": "warning", "clock": "ready", "routing file": "ready", "intake secret": "ready",
}
runner = CliRunner()


def _secret() -> str:
    return secrets.token_urlsafe(18)


def secret_env() -> dict[str, str]:
    """Every secret the routing's destinations and the relay take, fresh."""
    return {
        "MOTCUA_INTAKE_SECRET": new_secret(),
        "MOTCUA_ONESTOP_WEBHOOK_SECRET": new_secret(), "MOTCUA_WAREHOUSE_WEBHOOK_SECRET": new_secret(),
        "MOTCUA_PORTAL_USERNAME": "relay-halong", "MOTCUA_PORTAL_PASSWORD": _secret(),
        "MOTCUA_ZALO_APP_ID": f"app{secrets.randbelow(10**12)}", "MOTCUA_ZALO_APP_SECRET": _secret(),
        "MOTCUA_ZALO_OA_SECRET_KEY": _secret(), "MOTCUA_SMS_API_KEY": _secret(),
        "MOTCUA_POSTAL_CONSUMER_KEY": _secret(), "MOTCUA_POSTAL_CONSUMER_SECRET": _secret(),
        "MOTCUA_PAYMENT_REQUEST_KEY": _secret(), "MOTCUA_PAYMENT_CALLBACK_KEY": _secret(),
        "MOTCUA_TRANSFER_PASSWORD": _secret(), "MOTCUA_TRANSFER_CONSUMER_SECRET": _secret(),
        "MOTCUA_BANK_PASSWORD": _secret(),
    }


@contextlib.contextmanager
def simulators(routing_file: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Every simulator the routing's destinations have, on loopback, built by its service from their options
    (read from ``env``), as ``motcua-relay sandbox`` builds them; yields the variables pointing at them."""
    routing = load_routing(routing_file)
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for service in get_registry():
            destinations = [d for d in routing.destinations.values() if d.kind == service.kind]
            configured = [Configured(d, resolve(d, service.options, env.get)) for d in destinations]
            for simulator in service.simulators:
                taken = [c for c in configured if simulator.takes(c.options)]
                if taken:
                    base = stack.enter_context(run_asgi(simulator.build.load()(taken)))
                    urls.update({var: base + path for var, path in SIMULATED[simulator.option].items()})
        yield urls


def store_zalo_pair(zalo_url: str, redis_url: str, prefix: str) -> None:
    """The OA's first pair, as an operator stores it (`motcua-relay zalo set-token`)."""
    pair = httpx.post(f"{zalo_url}/_admin/tokens", timeout=5).json()
    set_token(TokenPairStore(redis.Redis.from_url(redis_url), prefix), "zalo", pair["access_token"],
              pair["refresh_token"], float(pair["expires_in"]))


@dataclass
class Stack:
    env: dict[str, str]
    secrets: dict[str, str]
    redis: RedisServer
    routing_file: Path


@pytest.fixture(autouse=True)
def _short_worker_ping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker runs in these tests but one: the ping's wait for replies (2 s, all of it spent when none answers)
    is cut short, except where a worker is to answer."""
    if request.node.name != "test_workers_are_asked_which_queues_they_consume":
        monkeypatch.setattr(doctor_module, "WORKER_PING_SECONDS", 0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The simulators of every destination, a private Redis holding the Zalo pair, and the environment of a relay
    configured for them (its ledger is each test's)."""
    workdir = tmp_path_factory.mktemp("doctor")
    routing_file = workdir / "relay.toml"
    routing_file.write_text(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8") + BANK, encoding="utf-8")
    server = RedisServer(workdir)
    server.start()
    keys = secret_env()
    try:
        with simulators(routing_file, keys) as urls:
            env = {**keys, **urls, "MOTCUA_ROUTING_FILE": str(routing_file), "MOTCUA_REDIS_URL": server.url,
                   "MOTCUA_BROKER_URL": server.url, "MOTCUA_REDIS_PREFIX": "doctor", "MOTCUA_LOG_FORMAT": "json"}
            store_zalo_pair(urls["MOTCUA_ZALO_ZNS_URL"], server.url, "doctor")
            yield Stack(env, keys, server, routing_file)
    finally:
        server.stop()


def sqlite_ledger(tmp_path: Path, revision: str = "head") -> str:
    url = f"sqlite:///{tmp_path}/relay.db"
    command.upgrade(alembic_config(url), revision)
    return url


def run_doctor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str | None], *args: str
               ) -> tuple[int, dict[str, Any], str]:
    """``motcua-relay doctor *args`` in this process with exactly ``env`` (``None``: unset),
    in ``tmp_path`` (no ``.env``): its exit code, its JSON (``{}`` for a table) and all it printed."""
    for name in list(os.environ):
        if name.startswith("MOTCUA_") and not name.startswith("MOTCUA_TEST_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.chdir(tmp_path)
    # doctor sets up the process's logging on the runner's stream, which closes after it: a later test that logs
    # in this process would write to a closed file
    monkeypatch.setattr("config.logging.configure_logging", lambda *args, **kwargs: None)
    reset_runtime()
    try:
        result = runner.invoke(app, ["doctor", *args])
    finally:
        reset_runtime()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    report = json.loads(result.stdout) if "--json" in args else {}
    return result.exit_code, report, result.output


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["check"]: row for row in report["checks"]}


def not_ready(report: dict[str, Any]) -> list[str]:
    return [f"{r['check']}: {r['detail']}" for r in report["checks"] if r["status"] == "not_ready"]


# ------------------------------------------------------------------------------------------------ ready


def test_doctor_is_ready_against_the_simulators_on_both_ledgers(stack: Stack, db_url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # given every destination served by its simulator, a migrated ledger, Redis with the Zalo pair, no worker yet
    # when doctor runs
    code, report, printed = run_doctor(monkeypatch, tmp_path, {**stack.env, "MOTCUA_DATABASE_URL": db_url}, "--json")
    # then it exits 0, every destination reachable and its credentials taken; no worker is only a warning
    assert code == 0, not_ready(report)
    assert report["ready"] is True
    found = {check: rows(report)[check]["status"] for check in READY_ROWS if check in rows(report)}
    assert found == READY_ROWS
    assert "session" in rows(report)["portal: log-in"]["detail"]
    assert "not found" in rows(report)["lgsp: account"]["detail"]
    # and the clock was compared with the servers that said their time (PostgreSQL's too)
    clocked = [r for r in report["checks"] if r["clock_offset_seconds"] is not None]
    assert len(clocked) >= 9 + (1 if db_url.startswith("postgresql") else 0)
    # and no secret's value is printed
    for value in stack.secrets.values():
        assert value not in printed


def test_the_table_says_ready_and_names_every_check(stack: Stack, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, printed = run_doctor(monkeypatch, tmp_path, {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path)},
                                  "--timeout", "3")
    assert code == 0, printed
    assert "motcua-relay doctor" in printed and "ready (" in printed
    assert "portal: log-in" in printed and "lgsp: gateway token" in printed and "not ready" not in printed


def test_the_json_has_a_verdict_a_summary_and_a_row_per_check(stack: Stack, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, report, _ = run_doctor(monkeypatch, tmp_path, {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path)},
                                 "--json", "--timeout", "3", "--max-skew", "20")
    assert code == 0
    assert set(report) == {"ready", "checked_at", "timeout_seconds", "max_skew_seconds", "summary", "checks"}
    assert (report["timeout_seconds"], report["max_skew_seconds"]) == (3.0, 20.0)
    assert set(report["summary"]) == {"ready", "warning", "skipped", "not_ready"}
    assert sum(report["summary"].values()) == len(report["checks"])
    for row in report["checks"]:
        assert set(row) == {"check", "target", "status", "detail", "clock_offset_seconds"}
        assert row["status"] in ("ready", "warning", "skipped", "not_ready")
        assert isinstance(row["detail"], str) and row["detail"]
    assert report["checks"][-1]["check"] == "clock"


# ------------------------------------------------------------------------------------------------ not ready


def test_a_missing_secret_is_not_ready_naming_its_variable(stack: Stack, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # given the post's consumer secret not set
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), "MOTCUA_POSTAL_CONSUMER_SECRET": None}
    # when doctor runs, as a table
    code, _, printed = run_doctor(monkeypatch, tmp_path, env)
    code_json, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json")
    # then the post's options are not ready, saying which variable to set, and the post is not tried
    assert code == code_json == 1
    assert rows(report)["postal: options"]["status"] == "not_ready"
    assert "MOTCUA_POSTAL_CONSUMER_SECRET" in rows(report)["postal: options"]["detail"]
    assert "postal: token" not in rows(report)
    assert "MOTCUA_POSTAL_CONSUMER_SECRET" in printed and "not ready" in printed
    # and the other destinations are still checked
    assert rows(report)["portal: log-in"]["status"] == "ready"


@pytest.mark.parametrize(("variable", "check", "said"), [
    ("MOTCUA_PORTAL_PASSWORD", "portal: log-in", "check the portal destination's username, password and dstcode"),
    ("MOTCUA_POSTAL_CONSUMER_SECRET", "postal: token", "check the postal destination's consumer key and secret"),
    ("MOTCUA_PAYMENT_REQUEST_KEY", "payment: account", "check the payment destination's request key"),
    ("MOTCUA_TRANSFER_CONSUMER_SECRET", "lgsp: gateway token", "consumer_key and consumer_secret"),
    ("MOTCUA_TRANSFER_PASSWORD", "lgsp: account", "check the transfer destination's username and password"),
])
def test_a_credential_the_service_refuses_is_not_ready(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       variable: str, check: str, said: str) -> None:
    # given a credential other than the one the simulator holds
    wrong = _secret()
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), variable: wrong}
    # when doctor runs
    code, report, printed = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    # then that check is not ready, saying what to check, and never showing the value
    assert code == 1
    assert rows(report)[check]["status"] == "not_ready", rows(report)[check]
    assert said in rows(report)[check]["detail"]
    assert wrong not in printed
    assert [line.split(":")[0] for line in not_ready(report)] == [check.split(":")[0]]


def newest_revision() -> str:
    from alembic.script import ScriptDirectory

    from store.db import MIGRATIONS

    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def test_a_ledger_not_migrated_is_not_ready_with_the_command_to_fix_it(stack: Stack, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # given a ledger one migration behind
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path, "0006")}
    code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    assert code == 1
    schema = rows(report)["ledger schema"]
    assert schema["status"] == "not_ready"
    assert "at 0006" in schema["detail"] and f"the newest is {newest_revision()}" in schema["detail"]
    assert "motcua-relay db upgrade" in schema["detail"]
    assert not_ready(report) == [f"ledger schema: {schema['detail']}"]


def test_a_ledger_file_that_does_not_exist_is_not_created(stack: Stack, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**stack.env, "MOTCUA_DATABASE_URL": "sqlite:///./var/relay.db"}
    code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    assert code == 1
    assert "motcua-relay db upgrade" in rows(report)["ledger"]["detail"]
    assert rows(report)["ledger schema"]["status"] == "skipped"
    assert not (tmp_path / "var").exists()


def test_redis_down_is_not_ready_and_doctor_ends_within_seconds(stack: Stack, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # given Redis and the broker on a port nobody listens on
    down = f"redis://127.0.0.1:{free_port()}/0"
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), "MOTCUA_REDIS_URL": down,
           "MOTCUA_BROKER_URL": down}
    started = time.monotonic()
    code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "2")
    # then both are not ready, saying which variable to check, the workers are not asked, within seconds
    assert time.monotonic() - started < 10
    assert code == 1
    assert rows(report)["redis"]["status"] == rows(report)["broker"]["status"] == "not_ready"
    assert "MOTCUA_REDIS_URL" in rows(report)["redis"]["detail"]
    assert "MOTCUA_BROKER_URL" in rows(report)["broker"]["detail"]
    assert rows(report)["workers"]["status"] == "skipped"
    # and the Zalo pair, kept in Redis, cannot be read
    assert rows(report)["zalo: token pair"]["status"] == "not_ready"


def test_a_redis_that_never_answers_is_cut_at_the_timeout(stack: Stack, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # given a Redis address that takes connections and never answers (a host gone behind a live port)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), "MOTCUA_REDIS_URL": url}
        started = time.monotonic()
        code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "1")
        took = time.monotonic() - started
    # then doctor ends soon after its timeout, Redis not ready
    assert took < 8
    assert code == 1
    assert rows(report)["redis"]["status"] == "not_ready"
    assert rows(report)["broker"]["status"] == "ready"


def test_no_zalo_token_pair_is_not_ready_and_doctor_never_renews_one(stack: Stack, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # given a Redis prefix under which no pair is stored
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), "MOTCUA_REDIS_PREFIX": "elsewhere"}
    zalo = stack.env["MOTCUA_ZALO_ZNS_URL"]
    before = httpx.get(f"{zalo}/_admin/stats", timeout=5).json()
    code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    assert code == 1
    assert rows(report)["zalo: token pair"]["status"] == "not_ready"
    assert "motcua-relay zalo set-token" in rows(report)["zalo: token pair"]["detail"]
    # and no refresh token was spent, no message sent, by this run or the others
    after = httpx.get(f"{zalo}/_admin/stats", timeout=5).json()
    assert after == before
    assert not after.get("refresh_ok") and not after.get("sent")


def test_a_paused_zalo_destination_is_not_ready_saying_what_to_do(stack: Stack, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # given a stored pair, and the destination paused because the ZNS balance is spent
    client = redis.Redis.from_url(stack.redis.url)
    store_zalo_pair(stack.env["MOTCUA_ZALO_ZNS_URL"], stack.redis.url, "paused")
    PauseStore(client, "paused").pause("zalo", Pause("balance", "Zalo ZNS error -115", time.time(), None, WHOLE))
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), "MOTCUA_REDIS_PREFIX": "paused"}
    code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    assert code == 1
    assert rows(report)["zalo: token pair"]["status"] == "ready"
    pause = rows(report)["zalo: pause"]
    assert pause["status"] == "not_ready"
    assert "top up" in pause["detail"] and "motcua-relay zalo resume" in pause["detail"]


@pytest.mark.timeout(120)
def test_workers_are_asked_which_queues_they_consume(stack: Stack, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given no worker: with --require-workers that is not ready
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path)}
    code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "2", "--require-workers")
    assert code == 1
    assert rows(report)["workers"]["status"] == "not_ready"
    assert "motcua-relay worker" in rows(report)["workers"]["detail"]
    # when a worker runs, consuming every queue
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}
    process_env.update({**env, "PYTHONPATH": str(ROOT)})
    worker = RelayProcess(["worker", "--concurrency", "2"], process_env, tmp_path / "worker.log").start()
    try:
        def answering() -> dict[str, Any] | None:
            assert worker.alive, (tmp_path / "worker.log").read_text()[-2000:]
            found = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "2", "--require-workers")[1]
            return found if rows(found)["workers"]["status"] == "ready" else None

        report = wait_for(answering, 60, 0.5, "the worker to answer doctor")
    finally:
        worker.stop()
    # then doctor is ready, naming it
    assert report["ready"] is True, not_ready(report)
    assert "1 answered (relay-" in rows(report)["workers"]["detail"]
    assert "every queue consumed" in rows(report)["workers"]["detail"]


class _SkewedClock(BaseHTTPRequestHandler):
    """A subscriber whose clock is five minutes fast (what its Date header says)."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(time.time() + 300, usegmt=True)

    def do_HEAD(self) -> None:
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_server_clock_off_by_more_than_the_tolerance_is_not_ready(stack: Stack, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # given the warehouse's subscriber answering with a clock five minutes ahead
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SkewedClock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path),
               "MOTCUA_WAREHOUSE_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/events"}
        code, report, _ = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    finally:
        server.shutdown()
        server.server_close()
    # then the clock is not ready, naming the server and how far off it is
    assert code == 1
    assert rows(report)["warehouse: reachable"]["status"] == "ready"
    assert 295 <= rows(report)["warehouse: reachable"]["clock_offset_seconds"] <= 301
    assert rows(report)["clock"]["status"] == "not_ready"
    assert re.search(r"warehouse: reachable (299|300) s ahead", rows(report)["clock"]["detail"])
    assert not_ready(report) == [f"clock: {rows(report)['clock']['detail']}"]


# ------------------------------------------------------------------------------------------------ the operator's path


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("console", "status", "said"), [
    ({}, "warning", "closed (it answers 503): it needs a key of 16 characters or more"),
    ({"MOTCUA_CONSOLE_SECRET": "k" * 32, "MOTCUA_CONSOLE_OPERATORS": "vanhanh01:pbkdf2_sha256"}, "not_ready",
     "no password can open vanhanh01"),
    ({"MOTCUA_CONSOLE_SECRET": "k" * 32,
      "MOTCUA_CONSOLE_OPERATORS": f"vanhanh01:{hash_password('mật khẩu đủ dài', iterations=1000)}"}, "ready",
     "1 account"),
])
def test_the_console_row_says_whether_an_operator_can_log_in(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console: dict[str, str], status: str, said: str
) -> None:
    # given the console closed, an account whose hash a shell mangled (its "$…" expanded to nothing), or one account
    env = {**stack.env, "MOTCUA_DATABASE_URL": sqlite_ledger(tmp_path), **console}
    _, report, printed = run_doctor(monkeypatch, tmp_path, env, "--json", "--timeout", "3")
    # then the console's row says so, and never shows the console's key
    assert rows(report)["console"]["status"] == status
    assert said in rows(report)["console"]["detail"]
    assert "k" * 32 not in printed
