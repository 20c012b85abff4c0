"""The operator's commands (``cli/``): bad arguments said in one line, tables whole in a pipe, replay's dry
run, Zalo's held messages sent once quiet hours are over, and samples never stamped in the future.

Real ledgers (SQLite in the test's directory), real Redis, the Zalo simulator on loopback; the commands run through
typer's runner in this process, or as ``python -m cli.main`` where what a pipe gets is the point.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import redis
from sqlalchemy import select
from typer.testing import CliRunner, Result

from cli.main import app
from connectors.credentials import TokenPairStore
from sandbox.workload import generate_day, sample
from sandbox.zalo import create_app as zalo_app
from schemas.events import event_json, parse_event
from schemas.vietnam import VN_TZ
from services.zalo.deliver import set_token
from store import intake
from store.db import upgrade
from store.tables import Status, attempts, deliveries
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.conftest import RelayConfig
from tests.harness import ROOT, become_relay, drain, new_secret, relay_env
from tests.servers import run_asgi

runner = CliRunner()


def run(*args: str) -> Result:
    """The command in this process. Its logging stays this process's: configured inside the runner, structlog would
    keep writing to the runner's stream, closed once the command ends."""
    with mock.patch("cli.common.configure_logging"):
        return runner.invoke(app, list(args))


def said(result: Result) -> str:
    """What the command printed, stdout and stderr, as one line of words: typer's error panel folds a message at
    80 columns and frames it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def cleanly_refused(result: Result) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------ bad arguments

BAD_ARGUMENTS = [
    (["deadletters", "--since", "today"], "Invalid value for '--since': expected a day, YYYY-MM-DD, not 'today'"),
    (["deadletters", "--until", "2026-02-30"], "Invalid value for '--until': expected a day, YYYY-MM-DD"),
    (["deadletters", "--since", "0001-01-01"], "Invalid value for '--since': expected a day of 1900-2999"),
    (["deadletters", "--limit", "0"], "Invalid value for '--limit'"),
    (["replay", "--all", "--since", "15/03/2026"], "Invalid value for '--since': expected a day, YYYY-MM-DD"),
    (["replay", "--all", "--dry-run", "--until", "2026-3-1"], "Invalid value for '--until': expected a day"),
    (["replay", "abc"], "Invalid value for 'delivery_id': Input should be a valid integer"),
    (["report", "portal", "--date", "2026-13-01"], "Invalid value for '--date': expected a day, YYYY-MM-DD"),
    (["reconcile", "--date", "today"], "Invalid value for '--date': expected a day, YYYY-MM-DD"),
    (["events", "sample", "--until", "tomorrow"], "Invalid value for '--until': expected a time, YYYY-MM-DDTHH:MM"),
    (["events", "sample", "--until", "2999-01-01T08:00"], "Invalid value for '--until': expected a past time"),
    (["events", "sample", "--dossiers", "0"], "Invalid value for '--dossiers'"),
    (["events", "sample", "--dossiers", "10000"], "Invalid value for '--dossiers'"),
    (["api", "--port", "70000"], "Invalid value for '--port'"),
    (["worker", "--processes", "0"], "Invalid value for '--processes'"),
    (["demo", "--faults", "1.5"], "Invalid value for '--faults'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_one_clear_error_naming_the_option(args: list[str], message: str) -> None:
    # when an option's value cannot be read
    result = run(*args)
    # then the command says which option and what it expects, exits 2, and shows no traceback
    cleanly_refused(result)
    assert message in said(result), said(result)


def test_a_bad_date_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    # given the command the issue names, as an operator runs it (a ledger that is not there: nothing is read)
    env = relay_env(f"sqlite:///{tmp_path}/relay.db", "memory://", new_secret(), {}, ROOT / "config" / "relay.toml")
    # when the date cannot be read
    done = subprocess.run([sys.executable, "-m", "cli.main", "deadletters", "--since", "2026-02-30"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    # then one error, naming the option and the form, and no traceback
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Invalid value for '--since': expected a day, YYYY-MM-DD" in done.stderr, done.stderr
    assert not (tmp_path / "relay.db").exists()  # refused before anything was opened


@pytest.fixture
def shipped(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as a relay with the shipped routing file (every kind of destination), on an empty ledger."""
    database = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database)
    become_relay(monkeypatch, relay_env(database, redis_url, new_secret(), {}, ROOT / "config" / "relay.toml",
                                        MOTCUA_REDIS_PREFIX=f"c{uuid.uuid4().hex[:6]}"))
    yield
    reset_runtime()


UNKNOWN_DESTINATIONS = [
    (["replay", "--all", "--destination", "nope"], "--destination: 'nope' is not a destination of the routing file"),
    (["replay", "--all", "--dry-run", "--destination", "nope"], "is not a destination of the routing file"),
    (["report", "portal", "--date", "2026-03-10", "--destination", "nope"], "'nope' not a portal destination"),
    (["reconcile", "--destination", "zalo"], "'zalo' not a payment destination of the routing file"),
    (["postal", "poll", "--destination", "nope"], "name one of the postal destinations: postal"),
    (["zalo", "send-held", "--destination", "nope"], "name one of the Zalo destinations: zalo"),
]


@pytest.mark.parametrize(("args", "message"), UNKNOWN_DESTINATIONS, ids=[" ".join(a) for a, _ in UNKNOWN_DESTINATIONS])
@pytest.mark.usefixtures("shipped")
def test_an_unknown_destination_is_refused_naming_the_choices(args: list[str], message: str) -> None:
    result = run(*args)
    cleanly_refused(result)
    assert message in said(result), said(result)


# ------------------------------------------------------------------------------------------------ pipes


def piped(env: dict[str, str], *args: str) -> str:
    """A command's stdout as a script reads it: through a pipe, with no COLUMNS set."""
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_table_keeps_every_column_in_a_pipe(tmp_path: Path) -> None:
    # given the services table, seven columns of long cells, read by a script through a pipe
    env = relay_env(f"sqlite:///{tmp_path}/relay.db", "memory://", new_secret(), {}, ROOT / "config" / "relay.toml")
    out = piped(env, "services")
    # then the header has every column whole, on one line, the last ones well beyond 80 columns
    header = next(line for line in out.splitlines() if "kind" in line and "service" in line)
    assert header.index("simulators") > 80 and "callbacks" in header and "beat jobs" in header, header
    # and each service is one line holding its cells whole
    payment = [line for line in out.splitlines() if line.startswith("│ payment ")]
    assert len(payment) == 1, out
    assert "relay.payment.reconcile: reconciling the previous day" in payment[0]
    assert "payment platform (8706), bank (8707)" in payment[0]
    # and --json gives the same as lines a script parses
    services = [json.loads(line) for line in piped(env, "services", "--json").splitlines()]
    payment_json = next(s for s in services if s["kind"] == "payment")
    assert {"title": "bank", "port": 8707} in payment_json["simulators"] and payment_json["callbacks"] is True
    assert "relay.payment.reconcile" in [job["task"] for job in payment_json["beat_jobs"]]


# ------------------------------------------------------------------------------------------------ replay --dry-run


def dead_letters_of_the_warehouse(relay_config: RelayConfig, count: int = 3) -> list[int]:
    """``count`` dead letters in the ledger: the warehouse refused their events (HTTP 400, permanent)."""
    httpx.post(f"{relay_config.sandbox.url}/_admin/faults", json={"error_rate": 1, "error_status": 400},
               timeout=5).raise_for_status()
    events = [e for e in generate_day(8, seed=3) if e["origin"] == "onestop" and e["sequence"] == 1][:count]
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    drain(lambda: datetime.now(UTC) + timedelta(seconds=5))
    httpx.delete(f"{relay_config.sandbox.url}/_admin/faults", timeout=5).raise_for_status()
    with rt.engine.connect() as conn:
        dead = conn.execute(select(deliveries.c.id).where(deliveries.c.status == Status.DEAD)
                            .order_by(deliveries.c.id)).scalars().all()
    assert len(dead) == count
    return list(dead)


def ledger() -> tuple[list[Any], int]:
    rt = get_runtime()
    with rt.engine.connect() as conn:
        rows = list(conn.execute(select(deliveries).order_by(deliveries.c.id)).all())
        tried = len(conn.execute(select(attempts.c.id)).all())
    return rows, tried


def doorbell(destination: str) -> bool:
    rt = get_runtime()
    assert rt.redis is not None
    return bool(rt.redis.exists(f"{rt.settings.redis_prefix}:doorbell:{destination}"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_replay_dry_run_lists_what_would_go_and_changes_nothing(relay_config: RelayConfig) -> None:
    # given three dead letters of the warehouse
    dead = dead_letters_of_the_warehouse(relay_config)
    before = ledger()
    get_runtime().doorbells.answer("warehouse")
    today = datetime.now(VN_TZ).date().isoformat()
    # when the operator asks what a replay of them would do
    result = run("replay", "--all", "--destination", "warehouse", "--since", today, "--dry-run")
    # then it lists each, with the count, and says nothing changed
    assert result.exit_code == 0, result.output
    assert "Would replay (3)" in result.output
    assert "dry run: 3 deliveries would be replayed; nothing was changed" in result.output
    assert all(re.search(rf"^│ {i} ", result.output, re.M) for i in dead), result.output
    # and the ledger is as it was, and no worker was woken
    assert ledger() == before
    assert not doorbell("warehouse")
    # and named ids are taken as replay takes them: a dead letter, and what is not one said
    named = run("replay", str(dead[0]), "999999", "--dry-run")
    assert named.exit_code == 0, named.output
    assert "Would replay (1)" in named.output and "not replayed (no dead letter matching the filters): 999999" in \
        said(named)
    assert ledger() == before
    # when they are replayed for real afterwards
    replayed = run("replay", "--all", "--destination", "warehouse")
    # then the same three go, with a fresh budget
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 3 deliveries" in replayed.output
    rows, _ = ledger()
    assert [(r.id, r.status, r.replays, r.budget_used) for r in rows if r.destination == "warehouse"] == \
        [(i, Status.PENDING, 1, 0) for i in dead]
    assert doorbell("warehouse")
    assert "Would replay (0)" in run("replay", "--all", "--destination", "warehouse", "--dry-run").output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_dead_letters_in_a_pipe_keep_the_reason_column(relay_config: RelayConfig) -> None:
    # given dead letters whose reason is long
    dead_letters_of_the_warehouse(relay_config, count=2)
    # when they are listed into a pipe
    out = piped(relay_config.env, "deadletters", "--destination", "warehouse")
    # then the header has every column, the reason beyond 80 columns, and each row its whole reason on one line
    header = next(line for line in out.splitlines() if "destination" in line and "dossier" in line)
    assert header.index("reason") > 80 and "when (VN)" in header and "HTTP" in header, header
    rows = [line for line in out.splitlines() if re.match(r"^│ \d+ ", line)]
    assert len(rows) == 2, out
    with get_runtime().engine.connect() as conn:
        reasons = conn.execute(select(deliveries.c.last_error).where(deliveries.c.status == Status.DEAD)).scalars()
        assert all(any(reason in row for row in rows) for reason in reasons), out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_trace_as_json_is_what_its_tables_show(relay_config: RelayConfig) -> None:
    # given a dossier whose delivery to the warehouse gave up
    dead = dead_letters_of_the_warehouse(relay_config, count=1)
    with get_runtime().engine.connect() as conn:
        code = conn.execute(select(deliveries.c.dossier_code).where(deliveries.c.id == dead[0])).scalar_one()
    # when a script asks for its trace
    result = run("trace", code, "--json")
    # then one JSON document: the timeline, every delivery and the (empty) transfer chain
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dossier"] == code and document["chain"] == []
    assert {(d["id"], d["destination"], d["status"]) for d in document["deliveries"]} >= \
        {(dead[0], "warehouse", Status.DEAD)}
    tried = [row for row in document["timeline"] if row["what"] == "attempt" and row["destination"] == "warehouse"]
    assert tried and all("HTTP 400" in row["detail"] for row in tried)
    times = [datetime.fromisoformat(row["time"]) for row in document["timeline"]]
    assert times == sorted(times)
    # and the tables say the same
    table = run("trace", code)
    assert table.exit_code == 0 and f"Dossier {code}" in table.output and "HTTP 400" in table.output


# ------------------------------------------------------------------------------------------------ zalo send-held

APP_ID, APP_SECRET, OA_KEY = "4301520984", "zalo-app-secret", "oa-secret-key"
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=VN_TZ)


def zalo_routing(path: Path, zalo: str, quiet: str) -> Path:
    path.write_text(f"""
[destinations.zalo]
kind = "zalo"
url = "{zalo}"
quiet_hours = "{quiet}"
ordering = "none"
timeouts = {{ connect = 2, read = 5 }}

[[routes]]
events = ["dossier.completed"]
origins = ["onestop"]
require = ["applicant.phone", "applicant.zalo_consent"]
destination = "zalo"
""", encoding="utf-8")
    return path


@pytest.fixture
def zalo_relay(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[Callable[[str], str]]:
    """Make this process a relay whose Zalo destination has the quiet hours given (its simulator's clock at noon,
    when Zalo takes every template); the simulator's URL."""
    database = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database)
    with run_asgi(zalo_app(app_id=APP_ID, app_secret=APP_SECRET, oa_secret_key=OA_KEY, start_at=NOON)) as zalo:

        def configure(quiet: str) -> str:
            redis.Redis.from_url(redis_url).flushdb()
            env = relay_env(database, redis_url, new_secret(), {}, zalo_routing(tmp_path / "routing.toml", zalo, quiet),
                            MOTCUA_ZALO_APP_ID=APP_ID, MOTCUA_ZALO_APP_SECRET=APP_SECRET,
                            MOTCUA_ZALO_OA_SECRET_KEY=OA_KEY, MOTCUA_REDIS_PREFIX=f"z{uuid.uuid4().hex[:6]}")
            become_relay(monkeypatch, env)
            rt = get_runtime()
            pair = httpx.post(f"{zalo}/_admin/tokens", timeout=5).json()
            set_token(TokenPairStore(rt.redis, rt.settings.redis_prefix), "zalo", pair["access_token"],
                      pair["refresh_token"], float(pair["expires_in"]))
            return zalo

        yield configure
    reset_runtime()


def held_message(at: datetime) -> Any:
    """A citizen's completed dossier, taken by a worker at ``at``: the delivery as quiet hours left it."""
    event = next(e for e in generate_day(60, day=date(2026, 11, 20), seed=5)
                 if e["type"] == "dossier.completed" and e["applicant"].get("zalo_consent")
                 and (e["applicant"].get("phone") or "").replace(" ", "")[-3:] not in ("", "000", "999"))
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, [{**event, "event_id": f"z-{uuid.uuid4().hex}"}], datetime.now(UTC),
                            rt.routing.destinations_for, rt.rules)
    with rt.engine.connect() as conn:
        delivery_id = conn.execute(select(deliveries.c.id).where(deliveries.c.destination == "zalo")).scalar_one()
    assert run_delivery(delivery_id, "zalo", clock=lambda: at) == "deferred"
    rt.doorbells.answer("zalo")
    return zalo_delivery()


def zalo_delivery() -> Any:
    with get_runtime().engine.connect() as conn:
        return conn.execute(select(deliveries).where(deliveries.c.destination == "zalo")).one()


def hhmm(moment: datetime) -> str:
    return f"{moment.astimezone(VN_TZ):%H:%M}"


def test_send_held_releases_what_quiet_hours_held_once_they_are_over(zalo_relay: Callable[[str], str]) -> None:
    # given quiet hours from an hour from now to two, and a message a worker took in them
    now = datetime.now(UTC)
    zalo = zalo_relay(f"{hhmm(now + timedelta(hours=1))}-{hhmm(now + timedelta(hours=2))}")
    held = held_message(now + timedelta(minutes=90))
    assert held.status == Status.PENDING and held.attempts == 0 and held.last_error.startswith("quiet hours")
    assert held.next_attempt_at > now + timedelta(minutes=100)
    # when the operator sends the held messages now, outside the quiet hours
    result = run("zalo", "send-held")
    # then the one held is due now, queued, and the destination's doorbell rung
    assert result.exit_code == 0, result.output
    assert "zalo: 1 messages held by quiet hours released" in said(result)
    released = zalo_delivery()
    assert released.next_attempt_at <= datetime.now(UTC) and released.enqueued_at is not None
    assert doorbell("zalo")
    # and a worker sends it at once, with its first attempt
    assert run_delivery(released.id, "zalo") == Status.DELIVERED
    assert zalo_delivery().attempts == 1
    assert httpx.get(f"{zalo}/_admin/stats", timeout=5).json()["sent"] == 1
    # and a second call finds nothing more to release
    assert "zalo: 0 messages held by quiet hours released" in said(run("zalo", "send-held"))


def test_send_held_refuses_while_quiet_hours_are_on(zalo_relay: Callable[[str], str]) -> None:
    # given quiet hours from an hour ago to an hour from now, and a message they hold
    now = datetime.now(UTC)
    zalo_relay(f"{hhmm(now - timedelta(hours=1))}-{hhmm(now + timedelta(hours=1))}")
    held = held_message(now)
    # when the operator asks to send the held messages now
    result = run("zalo", "send-held")
    # then it is refused, saying why and until when, and the message still waits, the doorbell silent
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert re.search(r"zalo: quiet hours \(\d\d:\d\d-\d\d:\d\d Vietnam time\) until .*: nothing sent", said(result)), \
        said(result)
    assert zalo_delivery() == held
    assert not doorbell("zalo")


# ------------------------------------------------------------------------------------------------ events sample

MOMENTS = [  # Vietnam time: a morning, lunch, just after lunch, before closing, the evening, just open, the night
    datetime(2026, 3, 10, 9, 0), datetime(2026, 3, 10, 12, 15), datetime(2026, 3, 10, 13, 45),
    datetime(2026, 3, 10, 16, 59), datetime(2026, 3, 10, 20, 0), datetime(2026, 3, 10, 7, 40),
    datetime(2026, 3, 10, 3, 0),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=[f"{m:%H:%M}" for m in MOMENTS])
def test_sample_events_are_never_later_than_now(moment: datetime) -> None:
    until = moment.replace(tzinfo=VN_TZ)
    events = sample(40, seed=7, until=until)
    assert {len({e["dossier_code"] for e in events})} == {40}
    for event in events:
        assert event_json(parse_event(event)) == event  # what the intake takes
        # every time that has happened (not a due date) is at or before the moment, in Vietnam time
        data = event["data"]
        stamped = [event["occurred_at"], *(data[k] for k in ("paid_at", "returned_at") if k in data),
                   *([data["step"]["started_at"]] if "step" in data else [])]
        for text in stamped:
            when = datetime.fromisoformat(text)
            assert when.utcoffset() == timedelta(hours=7) and when <= until, (text, until)
    # the day played is the moment's, or the day before while the desk has opened less than 20 minutes ago
    days = {datetime.fromisoformat(e["occurred_at"]).date() for e in events}
    expected = until.date() - timedelta(days=1) if until.hour < 8 else until.date()
    assert days == {expected}
    # each dossier's events in order, a second apart at least
    for code in {e["dossier_code"] for e in events}:
        times = [datetime.fromisoformat(e["occurred_at"]) for e in events if e["dossier_code"] == code]
        assert all(b - a >= timedelta(seconds=1) for a, b in itertools.pairwise(times))


def test_the_sample_command_stamps_nothing_in_the_future() -> None:
    result = run("events", "sample", "--dossiers", "20")
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and all(datetime.fromisoformat(e["occurred_at"]) <= after for e in events)


def test_sample_dossier_codes_are_each_seeds_own_and_a_seed_gives_the_same_events() -> None:
    until = "2026-03-10T10:30"

    def codes(seed: int) -> set[str]:
        result = run("events", "sample", "--dossiers", "30", "--seed", str(seed), "--until", until)
        assert result.exit_code == 0, result.output
        return {json.loads(line)["dossier_code"] for line in result.stdout.splitlines()}

    # different seeds: dossiers of their own
    drawn = {seed: codes(seed) for seed in (0, 1, 2, 3, 42, 999)}
    assert all(len(c) == 30 for c in drawn.values())
    for seed, mine in drawn.items():
        for other, theirs in drawn.items():
            assert seed == other or not mine & theirs, (seed, other, sorted(mine & theirs)[:3])
    assert "000.21.00.H49-260310-10001" in drawn[1] and "000.21.00.H49-260310-420001" in drawn[42]
    # the same seed and moment: the same output, line for line
    again = [run("events", "sample", "--seed", "3", "--until", until).stdout for _ in range(2)]
    assert again[0] == again[1] and again[0]
    # and the same seed at another moment: the same dossiers and event ids, at other times
    later = sample(30, seed=3, until=datetime(2026, 3, 10, 16, 0, tzinfo=VN_TZ))
    earlier = sample(30, seed=3, until=datetime(2026, 3, 10, 10, 30, tzinfo=VN_TZ))
    assert sorted(e["event_id"] for e in later) == sorted(e["event_id"] for e in earlier)
    assert {e["dossier_code"] for e in later} == drawn[3]
