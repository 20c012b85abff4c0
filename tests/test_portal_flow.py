"""The national portal end to end: the portal simulator ends in the one-stop software's truth.

Real everything: ``motcua-relay worker`` and ``beat`` subprocesses, the intake and the
callback endpoint over HTTP, Redis, the ledger, the portal simulator (the real contract, sessions
that expire, status rules, each progress entry taken once) and the one-stop simulator receiving
online dossiers. The in-process tests below take one attempt at a time: an ambiguous progress entry
resolved, a create resolved by the look-up, a business rejection replayed after fixing the mapping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from adapters.portal import DEFAULT_STATUS_MAP, content_issues, expected_truth, portal_time, progress_entry
from api.app import create_app
from connectors.base import Permanent, Retryable
from sandbox.onestop import create_app as onestop_app
from sandbox.portal import create_app as portal_app
from sandbox.portal import online_dossiers
from sandbox.workload import PROCEDURES, generate_day, send_events_sync, shuffle_per_dossier
from schemas.events import DossierEvent, Event, parse_event
from services.portal.deliver import PortalDeliverer
from services.portal.inbound import run_pull
from services.portal.progress import TAKEN, UNANSWERED
from store import intake, queries
from store.db import get_engine, upgrade
from store.deadletters import DeadLetterFilter, dead_letters, replay
from store.reports import portal_sync_report
from store.tables import FINAL_STATUSES, Status, attempts, deliveries, progress_marks
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import RelayProcess, become_relay, drain, new_secret, relay_env, wait_for, worker_and_beat
from tests.servers import run_asgi

UNIT = "000.21.00.H49"
USER, PASSWORD = "relay-h22", "mat-khau-thu-nghiem"
FAST_RETRY = '{ schedule = ["0.2s", "0.5s", "1s"], repeat_every = "2s", deadline = "1h", max_attempts = 200 }'


def portal_routing(path: Path, portal_url: str, onestop_url: str, *, extra: str = "", read_timeout: float = 2.0,
                   retry: str = FAST_RETRY) -> Path:
    """The portal (lifecycle events of the one-stop software) and the one-stop software (online dossiers)."""
    path.write_text(f"""
[destinations.portal]
kind = "portal"
url = "{portal_url}"
username_env = "MOTCUA_PORTAL_USERNAME"
password_env = "MOTCUA_PORTAL_PASSWORD"
session_ttl = "10m"
pull_units = ["{UNIT}"]
timeouts = {{ connect = 2, read = {read_timeout} }}
retry = {retry}
breaker = {{ failure_threshold = 500, open_for = "2s" }}
{extra}

[destinations.onestop]
kind = "webhook"
url = "{onestop_url}/subscribers/onestop/events"
secret_env = "MOTCUA_ONESTOP_WEBHOOK_SECRET"
timeouts = {{ connect = 2, read = 5 }}
retry = {retry}

[[routes]]
events = ["dossier.*"]
origins = ["onestop"]
destination = "portal"

[[routes]]
events = ["*"]
exclude_origins = ["onestop"]
destination = "onestop"
""", encoding="utf-8")
    return path


def lifecycle(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The one-stop software's truth: each dossier's lifecycle events in sequence order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e["sequence"]):
        if e["type"] in DEFAULT_STATUS_MAP:
            out[e["dossier_code"]].append(e)
    return out


def assert_portal_holds_the_truth(portal_url: str, events: list[dict[str, Any]]) -> None:
    """The simulator's final view (each record, with the entries it took in order) is the one-stop truth: the
    status, every progress entry once and in order, and no content issue (the way the result goes, the submitted
    files, the agency's name)."""
    view = httpx.get(f"{portal_url}/_admin/dossiers", timeout=10).json()
    truth = expected_truth(parse_event(e) for e in events)
    assert sorted(view) == sorted(truth)
    for code, want in truth.items():
        held = view[code]
        assert held["TrangThaiHoSo"] == want.status, code
        assert [(p["TrangThai"], p["ThoiDiemXuLy"]) for p in held["QuaTrinhXuLy"]] == list(want.history), code
        assert content_issues(held, want) == [], code
    assert httpx.get(f"{portal_url}/_admin/issues", timeout=10).json() == []


def marks_of(engine: Any, destination: str = "portal") -> dict[str, str]:
    """What the ledger holds of the portal's progress entries whose calls went unanswered."""
    marks = progress_marks.c
    with engine.connect() as conn:
        rows = conn.execute(select(marks.entry, marks.state).where(marks.destination == destination)).all()
    return {entry: state for entry, state in rows}


@dataclass
class PortalStack:
    env: dict[str, str]
    portal_url: str
    onestop_url: str
    intake_url: str
    intake_secret: str
    database_url: str
    routing: Path
    worker: RelayProcess

    def counts(self) -> dict[str, dict[str, int]]:
        return queries.status_counts(get_engine(self.database_url))

    def all_final(self, expected: int) -> bool:
        counts = self.counts()
        total = sum(sum(c.values()) for c in counts.values())
        final = sum(n for c in counts.values() for s, n in c.items() if s in FINAL_STATUSES)
        return total >= expected and final == total


@pytest.fixture
def portal_stack(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PortalStack]:

    database_url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database_url)
    base = redis_url.rsplit("/", 1)[0]
    broker = f"{base}/{os.environ.get('MOTCUA_TEST_PORTAL_REDIS_DB', '10')}"  # its own: the worker takes all in it
    redis.Redis.from_url(broker).flushdb()
    onestop_secret, intake_secret = new_secret(), new_secret()
    with run_asgi(portal_app(username=USER, password=PASSWORD)) as portal_url, \
            run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        routing = portal_routing(tmp_path / "routing.toml", portal_url, onestop_url)
        env = relay_env(
            database_url, broker, intake_secret, {"onestop": onestop_secret}, routing,
            MOTCUA_PORTAL_USERNAME=USER, MOTCUA_PORTAL_PASSWORD=PASSWORD,
            MOTCUA_PORTAL_CALLBACK_SECRET=new_secret(), MOTCUA_SWEEP_INTERVAL_SECONDS="0.5",
            MOTCUA_PORTAL_PULL_INTERVAL_SECONDS="2", MOTCUA_ORDERING_GAP_WAIT_SECONDS="60",
            MOTCUA_WORKER_CONCURRENCY="48", MOTCUA_REDIS_PREFIX=f"portal{uuid.uuid4().hex[:6]}",
        )
        become_relay(monkeypatch, env)
        worker, beat = worker_and_beat(env, "portal", tmp_path)
        try:
            with run_asgi(create_app()) as api_url:
                yield PortalStack(env, portal_url, onestop_url, f"{api_url}/v1/events", intake_secret,
                                  database_url, routing, worker)
        finally:
            worker.close()
            beat.stop()
            reset_runtime()
            redis.Redis.from_url(broker).flushdb()


@pytest.mark.slow
def test_a_working_day_through_faults_ends_in_the_one_stop_truth(portal_stack: PortalStack) -> None:
    # given a ward's day (200 dossiers), each dossier's events arriving shuffled,
    # and a portal failing 20 % of calls with 5xx, 5 % with a timeout after applying them,
    # with sessions that expire every 10 s (a run lasts longer: expiries are certain)
    day = date(2026, 11, 20)
    events = generate_day(200, day=day, seed=2026)
    shuffled = shuffle_per_dossier(events, seed=7)
    httpx.post(f"{portal_stack.portal_url}/_admin/faults", timeout=5, json={
        "error_rate": 0.2, "error_status": 503, "timeout_rate": 0.05, "hang_seconds": 3,
        "session_ttl_seconds": 10, "seed": 11,
    }).raise_for_status()
    # and 30 citizens submitting online on the national portal: pulled by beat
    online = online_dossiers(30, unit_code=UNIT, day=day, seed=3)
    httpx.post(f"{portal_stack.portal_url}/_admin/online", json={"dossiers": online}, timeout=5).raise_for_status()

    # when the one-stop software sends its day
    report = send_events_sync(portal_stack.intake_url, portal_stack.intake_secret, shuffled, batch_size=50)
    assert report.accepted == len(events), report.errors[:3]
    expected = sum(len(v) for v in lifecycle(events).values()) + len(online)
    wait_for(lambda: portal_stack.all_final(expected), 420, 1.0, "every delivery final")

    # then nothing is dead, nothing superseded, and the portal holds exactly the one-stop truth
    counts = portal_stack.counts()
    assert counts == {"portal": {Status.DELIVERED: expected - len(online)},
                      "onestop": {Status.DELIVERED: len(online)}}, counts
    assert_portal_holds_the_truth(portal_stack.portal_url, events)
    stats = httpx.get(f"{portal_stack.portal_url}/_admin/stats", timeout=5).json()
    assert stats["sessions_expired"] > 0 and stats["faults"]["timeout"] > 0 and stats["faults"]["error"] > 0, stats
    # and an entry was sent again only after a progress call the portal left unanswered (each such repeat
    # answered "06", as held), and the ledger knows every one of them taken
    unanswered = stats["unanswered"].get("CapNhatTienDoHoSoMC", 0)
    assert 0 < stats["repeated_progress"] <= unanswered, stats
    marks = marks_of(get_engine(portal_stack.database_url))
    assert marks and set(marks.values()) == {"taken"} and len(marks) <= unanswered, marks
    # and each online dossier reached the one-stop software once, as dossier.submitted
    received = httpx.get(f"{portal_stack.onestop_url}/_admin/received", params={"subscriber": "onestop"}).json()
    assert sorted(r["dossier_code"] for r in received) == sorted(d["MaHoSo"] for d in online)
    assert {r["type"] for r in received} == {"dossier.submitted"}

    # and the sync report agrees with the ledger
    engine = get_engine(portal_stack.database_url)
    [unit, total] = portal_sync_report(engine, ["portal"], day)
    truth = lifecycle(events)
    assert (unit.unit, unit.dossiers, unit.synced, unit.pending, unit.failed) == (UNIT, len(truth), len(truth), 0, 0)
    assert unit.events == unit.delivered == expected - len(online)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.delivered_at, deliveries.c.created_at)
                            .where(deliveries.c.destination == "portal")).all()
    assert len(rows) == unit.events
    assert total.dossiers == unit.dossiers and total.lag_p99_s == unit.lag_p99_s
    assert unit.relay_p50_s is not None and unit.relay_p99_s is not None and unit.relay_p50_s <= unit.relay_p99_s
    csv_path = portal_stack.routing.parent / "sync.csv"
    result = subprocess.run([sys.executable, "-m", "cli.main", "report", "portal", "--date", day.isoformat(),
                             "--csv", str(csv_path)], env={**portal_stack.env, "COLUMNS": "200"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "National portal sync" in result.stdout and UNIT in result.stdout
    csv_text = csv_path.read_text(encoding="utf-8").splitlines()
    assert csv_text[0].startswith("unit,dossiers,synced,pending,failed")
    assert csv_text[1].startswith(f"{UNIT},{len(truth)},{len(truth)},0,0,")


# ------------------------------------------------------------- in-process: one attempt at a time


@pytest.fixture
def portal_config(db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """This process as a relay against the portal simulator whose catalogue lacks one local procedure code."""

    local = PROCEDURES[0].code
    catalogue = {p.code: (p.name, "G01") for p in PROCEDURES[1:]} | {"1.999001": (PROCEDURES[0].name, "G01")}
    onestop_secret = new_secret()
    with run_asgi(portal_app(username=USER, password=PASSWORD, catalogue=catalogue)) as portal_url, \
            run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        redis.Redis.from_url(redis_url).flushdb()
        routing = portal_routing(tmp_path / "routing.toml", portal_url, onestop_url)
        env = relay_env(db_url, redis_url, new_secret(), {"onestop": onestop_secret}, routing,
                        MOTCUA_PORTAL_USERNAME=USER, MOTCUA_PORTAL_PASSWORD=PASSWORD,
                        MOTCUA_PORTAL_CALLBACK_SECRET=new_secret(), MOTCUA_REDIS_PREFIX=f"p{uuid.uuid4().hex[:6]}")
        become_relay(monkeypatch, env)
        yield {"portal": portal_url, "onestop": onestop_url, "routing": routing, "local": local,
               "tmp": tmp_path, "env": env}
        reset_runtime()


def test_business_rejection_is_dead_at_once_and_replay_after_fixing_the_mapping_delivers(
    portal_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a dossier whose local procedure code the national catalogue does not know
    events = [e for e in generate_day(80, day=date(2026, 11, 20), seed=5)]
    code = next(e["dossier_code"] for e in events if e["procedure_code"] == portal_config["local"]
                and e["type"] == "dossier.received")
    dossier = [e for e in events if e["dossier_code"] == code]
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, dossier, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    # when it is delivered
    drain()
    # then the first lifecycle event is dead after one attempt, with the portal's own message
    dead = dead_letters(rt.engine, DeadLetterFilter(destination="portal"))
    assert dead, "nothing went to the dead letters"
    first = min(dead, key=lambda r: r.sequence)
    assert first.attempts == 1
    assert "error_code 03" in first.last_error
    assert portal_config["local"] in first.last_error
    with rt.engine.connect() as conn:
        excerpt = conn.execute(select(attempts.c.response_excerpt).join(deliveries)
                               .where(deliveries.c.id == first.id)).scalar_one()
    assert dossier[0]["applicant"]["name"] not in (excerpt or "")
    # when the operator maps the local code to the national one and replays
    routing = portal_routing(portal_config["tmp"] / "fixed.toml", portal_config["portal"], portal_config["onestop"],
                             extra=f'procedure_map = {{ "{portal_config["local"]}" = "1.999001" }}')
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(routing))
    reset_runtime()
    rt = get_runtime()
    replayed = replay(rt.engine, DeadLetterFilter(destination="portal"),
                             {"portal": 3600.0}, datetime.now(UTC))
    assert len(replayed) == len(dead)
    drain()
    # then the portal holds the dossier exactly as the one-stop software does
    counts = queries.status_counts(rt.engine)
    assert counts["portal"] == {Status.DELIVERED: len(lifecycle(dossier)[code])}, counts
    view = httpx.get(f"{portal_config['portal']}/_admin/dossiers/{code}", timeout=5).json()
    assert view["MaTTHC"] == "1.999001"
    history = [(p["TrangThai"], p["ThoiDiemXuLy"]) for p in view["QuaTrinhXuLy"]]
    assert history == [(DEFAULT_STATUS_MAP[e["type"]], portal_time(e["occurred_at"]))
                       for e in lifecycle(dossier)[code]]


def test_a_late_event_never_overwrites_a_newer_status(portal_config: dict) -> None:
    # given a dossier whose events 1..n are delivered, then an old one arrives again under a new id
    events = generate_day(20, day=date(2026, 11, 20), seed=8)
    code = next(e["dossier_code"] for e in events if e["type"] == "dossier.returned"
                and e["procedure_code"] != portal_config["local"])
    dossier = lifecycle(events)[code]
    rt = get_runtime()
    everything = [e for e in events if e["dossier_code"] == code]  # fees and post too: no gap in the sequence
    intake.ingest_and_route(rt.engine, everything, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    drain()
    stale = dict(dossier[1], event_id=f"late-{uuid.uuid4().hex}")
    intake.ingest_and_route(rt.engine, [stale], datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    drain()
    # then it is superseded, and the portal still says returned
    counts = queries.status_counts(rt.engine)["portal"]
    assert counts == {Status.DELIVERED: len(dossier), "superseded": 1}, counts
    view = httpx.get(f"{portal_config['portal']}/_admin/dossiers/{code}", timeout=5).json()
    assert view["TrangThaiHoSo"] == "10" and len(view["QuaTrinhXuLy"]) == len(dossier)


def test_online_dossiers_pushed_and_pulled_are_one_event_each(portal_config: dict) -> None:
    # given the portal pushes some online dossiers to the callback, and holds others only for the pull
    import contextlib

    from tasks.app import configure_app

    configure_app()
    portal = portal_config["portal"]
    with contextlib.ExitStack() as stack:
        api_url = stack.enter_context(run_asgi(create_app()))
        secret = portal_config["env"]["MOTCUA_PORTAL_CALLBACK_SECRET"]
        httpx.post(f"{portal}/_admin/push", json={"url": f"{api_url}/v1/callbacks/portal", "secret": secret},
                   timeout=5).raise_for_status()
        pushed = online_dossiers(5, unit_code=UNIT, day=date(2026, 11, 20), seed=1, start=9001)
        httpx.post(f"{portal}/_admin/online", json={"dossiers": pushed}, timeout=5).raise_for_status()
        wait_for(lambda: httpx.get(f"{portal}/_admin/stats", timeout=5).json()["online"]["pushed"] >= 1, 10)
        httpx.delete(f"{portal}/_admin/push", timeout=5).raise_for_status()
        only_pulled = online_dossiers(3, unit_code=UNIT, day=date(2026, 11, 20), seed=2, start=9101)
        httpx.post(f"{portal}/_admin/online", json={"dossiers": only_pulled}, timeout=5).raise_for_status()
        # when beat's pull runs (twice: the second finds nothing new)
        portal = get_runtime().deliverer_of(PortalDeliverer, "portal")
        first = run_pull(portal)
        again = run_pull(portal)
    # then every dossier is stored once, the pushed ones recognised as duplicates by the pull
    assert (first.intake.stored, first.intake.duplicates, first.intake.rejected) == (3, 5, 0)
    assert again.pulled == 0 and again.cursors == first.cursors
    drain()
    received = httpx.get(f"{portal_config['onestop']}/_admin/received", params={"subscriber": "onestop"}).json()
    assert sorted(r["dossier_code"] for r in received) == sorted(d["MaHoSo"] for d in pushed + only_pulled)


def test_a_signed_callback_is_required(portal_config: dict) -> None:
    from tasks.app import configure_app

    configure_app()
    body: dict[str, Any] = {"madonvi": UNIT, "data": online_dossiers(1, unit_code=UNIT, seed=4)}
    body["data"][0]["ThuTu"] = 1
    with run_asgi(create_app()) as api_url:
        unsigned = httpx.post(f"{api_url}/v1/callbacks/portal", json=body, timeout=5)
        from schemas.webhook import sign

        raw = httpx.Request("POST", "http://x", json=body).content
        wrong = sign(new_secret(), "m1", raw).as_headers() | {"content-type": "application/json"}
        forged = httpx.post(f"{api_url}/v1/callbacks/portal", content=raw, headers=wrong, timeout=5)
        right = sign(portal_config["env"]["MOTCUA_PORTAL_CALLBACK_SECRET"], "m2", raw).as_headers()
        ok = httpx.post(f"{api_url}/v1/callbacks/portal", content=raw,
                        headers=right | {"content-type": "application/json"}, timeout=5)
        again = httpx.post(f"{api_url}/v1/callbacks/portal", content=raw,
                           headers=right | {"content-type": "application/json"}, timeout=5)
    assert (unsigned.status_code, forged.status_code) == (401, 401)
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text
    assert again.json()["duplicates"] == 1 and again.json()["accepted"] == 0


# ------------------------------------------------------------- in-process: each progress entry once


def ingest_dossier(events: list[dict[str, Any]], code: str) -> list[Event]:
    """The dossier's events in the ledger (as the intake stores them); its lifecycle events, parsed, in order."""
    rt = get_runtime()
    dossier = [e for e in events if e["dossier_code"] == code]
    intake.ingest_and_route(rt.engine, dossier, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    return [parse_event(e) for e in lifecycle(dossier)[code]]


def a_mapped_dossier(portal_config: dict, seed: int = 21) -> tuple[list[dict[str, Any]], str]:
    """A day and one of its dossiers that went all the way, whose procedure the simulator's catalogue knows."""
    events = generate_day(40, day=date(2026, 11, 20), seed=seed)
    code = next(e["dossier_code"] for e in events if e["type"] == "dossier.returned"
                and e["procedure_code"] != portal_config["local"])
    return events, code


def portal_faults(portal_url: str, **faults: Any) -> None:
    httpx.post(f"{portal_url}/_admin/faults", json=faults, timeout=5).raise_for_status()


def portal_stats(portal_url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{portal_url}/_admin/stats", timeout=5).json())


def test_an_unanswered_progress_entry_is_resolved_by_the_portals_answer_to_the_repeat(portal_config: dict) -> None:
    # given a dossier's first lifecycle event, and a portal that takes progress entries but never answers in time
    events, code = a_mapped_dossier(portal_config)
    [first, *_] = ingest_dossier(events, code)
    portal = portal_config["portal"]
    portal_faults(portal, timeout_rate=1, hang_seconds=3, services=["CapNhatTienDoHoSoMC"])
    deliverer = get_runtime().deliverer_of(PortalDeliverer, "portal")
    entry = progress_entry(first, deliverer.mapping)
    # when the first attempt sends it and times out
    with pytest.raises(Retryable, match="timeout"):
        deliverer.deliver(first, "k1")
    # then the ledger knows the entry's call went unanswered
    assert deliverer.progress.state(entry) == UNANSWERED
    # when the next attempt finds the portal answering again
    httpx.delete(f"{portal}/_admin/faults", timeout=5)
    result = deliverer.deliver(first, "k1")
    # then the entry was offered once more, the portal said it holds it, and it holds it once
    assert result.excerpt is not None and "held by the portal (06)" in result.excerpt
    view = httpx.get(f"{portal}/_admin/dossiers/{code}", timeout=5).json()
    assert [(p["TrangThai"], p["ThoiDiemXuLy"]) for p in view["QuaTrinhXuLy"]] == [
        (DEFAULT_STATUS_MAP[first.type], portal_time(first.occurred_at))]
    stats = portal_stats(portal)
    assert (stats["repeated_progress"], stats["unanswered"]) == (1, {"CapNhatTienDoHoSoMC": 1})
    assert deliverer.progress.state(entry) == TAKEN
    # and an attempt after that (a crash before the ledger recorded the delivery) offers nothing
    again = deliverer.deliver(first, "k1")
    assert again.excerpt is not None and "already taken (the ledger)" in again.excerpt
    assert portal_stats(portal)["calls"]["CapNhatTienDoHoSoMC"] == 2


def test_a_failure_that_cannot_have_landed_leaves_no_mark_and_no_repeat(portal_config: dict) -> None:
    # given a portal refusing every progress call before reading it (503), then well again
    events, code = a_mapped_dossier(portal_config)
    [first, *_] = ingest_dossier(events, code)
    portal = portal_config["portal"]
    portal_faults(portal, error_rate=1, error_status=503, services=["CapNhatTienDoHoSoMC"])
    deliverer = get_runtime().deliverer_of(PortalDeliverer, "portal")
    with pytest.raises(Retryable, match="503"):
        deliverer.deliver(first, "k2")
    assert deliverer.progress.state(progress_entry(first, deliverer.mapping)) is None
    httpx.delete(f"{portal}/_admin/faults", timeout=5)
    # when the next attempt runs
    result = deliverer.deliver(first, "k2")
    # then the entry is simply appended: nothing was ambiguous, nothing repeated
    assert result.excerpt is not None and result.excerpt.endswith("progress entry appended")
    assert portal_stats(portal)["repeated_progress"] == 0
    assert len(httpx.get(f"{portal}/_admin/dossiers/{code}", timeout=5).json()["QuaTrinhXuLy"]) == 1


def test_an_unanswered_entry_that_had_not_landed_is_taken_by_the_repeat(portal_config: dict) -> None:
    # given a gateway that loses the progress call before the portal reads it, answering 504
    events, code = a_mapped_dossier(portal_config)
    [first, *_] = ingest_dossier(events, code)
    portal = portal_config["portal"]
    portal_faults(portal, error_rate=1, error_status=504, services=["CapNhatTienDoHoSoMC"])
    deliverer = get_runtime().deliverer_of(PortalDeliverer, "portal")
    entry = progress_entry(first, deliverer.mapping)
    with pytest.raises(Retryable, match="504"):
        deliverer.deliver(first, "k7")
    assert deliverer.progress.state(entry) == UNANSWERED  # a 504 may have landed: the relay cannot tell
    httpx.delete(f"{portal}/_admin/faults", timeout=5)
    # when the next attempt offers it again
    result = deliverer.deliver(first, "k7")
    # then the portal takes it ("0"): it had not landed, and now it holds it once
    assert result.excerpt is not None and "the earlier unanswered call had not landed" in result.excerpt
    assert portal_stats(portal)["repeated_progress"] == 0
    assert len(httpx.get(f"{portal}/_admin/dossiers/{code}", timeout=5).json()["QuaTrinhXuLy"]) == 1
    assert deliverer.progress.state(entry) == TAKEN


def test_a_create_that_timed_out_after_landing_becomes_an_update_by_the_look_up(portal_config: dict) -> None:
    # given a portal that stores the record and then hangs on DongBoHoSoMC
    events, code = a_mapped_dossier(portal_config)
    [first, *_] = ingest_dossier(events, code)
    portal = portal_config["portal"]
    portal_faults(portal, timeout_rate=1, hang_seconds=3, services=["DongBoHoSoMC"])
    deliverer = get_runtime().deliverer_of(PortalDeliverer, "portal")
    with pytest.raises(Retryable, match="timeout"):
        deliverer.deliver(first, "k3")
    assert code in httpx.get(f"{portal}/_admin/dossiers", timeout=5).json()
    httpx.delete(f"{portal}/_admin/faults", timeout=5)
    # when the next attempt runs
    result = deliverer.deliver(first, "k3")
    # then TraCuuHoSo found it held, so it was updated ("True"), never created twice (no "06")
    assert result.excerpt is not None and result.excerpt.startswith("updated")
    stats = portal_stats(portal)
    assert "06" not in stats["answers"] and stats["calls"]["DongBoHoSoMC"] == 2


def test_assume_taken_never_offers_an_unanswered_entry_again(portal_config: dict, monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    # given a destination whose portal would append a repeat: ambiguous progress is assumed taken
    routing = portal_routing(portal_config["tmp"] / "assume.toml", portal_config["portal"], portal_config["onestop"],
                             extra='ambiguous_progress = "assume_taken"')
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(routing))
    reset_runtime()
    events, code = a_mapped_dossier(portal_config)
    [first, second, *_] = ingest_dossier(events, code)
    portal = portal_config["portal"]
    deliverer = get_runtime().deliverer_of(PortalDeliverer, "portal")
    # when the first entry's call lands but goes unanswered, and the second's is lost at a gateway (504)
    portal_faults(portal, timeout_rate=1, hang_seconds=3, services=["CapNhatTienDoHoSoMC"])
    with pytest.raises(Retryable):
        deliverer.deliver(first, "k4")
    httpx.delete(f"{portal}/_admin/faults", timeout=5)
    assumed = deliverer.deliver(first, "k4").excerpt
    assert assumed is not None and assumed.endswith("(ambiguous_progress = assume_taken)")
    portal_faults(portal, error_rate=1, error_status=504, services=["CapNhatTienDoHoSoMC"])
    with pytest.raises(Retryable, match="504"):
        deliverer.deliver(second, "k5")
    httpx.delete(f"{portal}/_admin/faults", timeout=5)
    deliverer.deliver(second, "k5")
    # then neither was offered again (the 504 came before the portal read the call: only the first reached it),
    # the first is held once, the second is missing: the price of at most once
    stats = portal_stats(portal)
    assert stats["repeated_progress"] == 0 and stats["calls"]["CapNhatTienDoHoSoMC"] == 1
    assert stats["faults"]["error"] == 1
    held = httpx.get(f"{portal}/_admin/dossiers/{code}", timeout=5).json()["QuaTrinhXuLy"]
    assert [p["ThoiDiemXuLy"] for p in held] == [portal_time(first.occurred_at)]


def test_a_unit_without_an_agency_name_is_a_dead_letter_until_named(portal_config: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given a unit directory that does not know the dossier's unit
    units = portal_config["tmp"] / "units.csv"
    units.write_text("code,level,name,parent\n000.00.00.H49,province,Trung tâm PVHCC tỉnh Quảng Ninh,\n",
                     encoding="utf-8")
    routing = portal_routing(portal_config["tmp"] / "units.toml", portal_config["portal"], portal_config["onestop"],
                             extra=f'units_file = "{units}"')
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(routing))
    reset_runtime()
    events, code = a_mapped_dossier(portal_config)
    [first, *_] = ingest_dossier(events, code)
    # when it is delivered
    with pytest.raises(Permanent, match=f"no agency name for unit {UNIT}.*agency_names.*units_file"):
        get_runtime().deliverer_of(PortalDeliverer, "portal").deliver(first, "k6")
    # then nothing reached the portal; named in agency_names, it is delivered with the name
    assert portal_stats(portal_config["portal"])["calls"] == {}
    named = portal_routing(portal_config["tmp"] / "named.toml", portal_config["portal"], portal_config["onestop"],
                           extra=f'units_file = "{units}"\nagency_names = {{ "{UNIT}" = "UBND phường Hồng Gai" }}')
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(named))
    reset_runtime()
    get_runtime().deliverer_of(PortalDeliverer, "portal").deliver(first, "k6")
    view = httpx.get(f"{portal_config['portal']}/_admin/dossiers/{code}", timeout=5).json()
    assert view["DonViXuLy"] == "UBND phường Hồng Gai"


def test_the_earlier_events_are_parsed_once_kept_within_bounds_and_the_same_as_read_afresh(
    portal_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.portal import deliver as portal_deliver

    # given a dossier's lifecycle in the ledger, and a deliverer that keeps at most three parsed events
    events, code = a_mapped_dossier(portal_config)
    lifecycle_events = ingest_dossier(events, code)
    assert len(lifecycle_events) > 3
    monkeypatch.setattr(portal_deliver, "PARSED_KEPT", 3)
    deliverer = get_runtime().deliverer_of(PortalDeliverer, "portal")
    last = lifecycle_events[-1]
    assert isinstance(last, DossierEvent)
    # when its earlier events are read twice
    first, again = deliverer.earlier(last), deliverer.earlier(last)
    # then both are the ledger's events as the intake stored them, in order; what was kept is not parsed again
    # (the same objects), and no more than three are kept
    assert [e.event_id for e in first] == [e.event_id for e in again] == [e.event_id for e in lifecycle_events]
    assert first == again == lifecycle_events
    assert sum(a is b for a, b in zip(first, again, strict=True)) == 3 and len(deliverer._parsed) == 3
