"""Inter-level transfer end to end: hops to the LGSP exchange, documents streamed with checksums, answers back.

Real everything: the exchange simulator (SOAP via zeep from its WSDL, documents over HTTP, units that accept,
refuse, decide, go down; the LGSP's gateway in front, its OAuth2 token on every call), the origin's document
server, the one-stop simulator, Redis, the ledger; in-process deliveries and polls, one at a time.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from bench.support import routing_file
from sandbox.lgsp import (
    COMMUNE,
    DEPARTMENT,
    JUSTICE,
    MINISTRY,
    NEIGHBOUR,
    OFFICE,
    UnitConfig,
    document_app,
    document_sha256,
)
from sandbox.lgsp import create_app as exchange_app
from sandbox.onestop import create_app as onestop_app
from sandbox.workload import generate_day
from schemas import transfer as tx
from services.transfer.deliver import TransferDeliverer
from services.transfer.inbound import run_poll
from store import intake, queries
from store.db import upgrade
from store.deadletters import DeadLetterFilter, dead_letters
from store.tables import attempts, deliveries
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import RelayProcess, become_relay, drain, new_secret, relay_env, wait_for
from tests.servers import run_asgi

USER, PASSWORD = "lienthong-halong", "mat-khau-truc"
CONSUMER_KEY, CONSUMER_SECRET = "relay-halong", "bi-mat-cong-lgsp"
DOSSIERS = itertools.count(1)
FAST_RETRY = {"schedule": ["0.2s", "0.5s", "1s"], "repeat_every": "1s", "deadline": "1h", "max_attempts": 200}


def units(**changes: dict[str, Any]) -> dict[str, UnitConfig]:
    base = {COMMUNE: {"name": "UBND phường Hồng Gai"}, NEIGHBOUR: {"name": "UBND phường Bãi Cháy"},
            DEPARTMENT: {"name": "Sở Nông nghiệp và Môi trường tỉnh Quảng Ninh"},
            OFFICE: {"name": "Văn phòng Đăng ký đất đai tỉnh Quảng Ninh"},
            JUSTICE: {"name": "Sở Tư pháp tỉnh Quảng Ninh"}, MINISTRY: {"name": "Bộ Tư pháp"}}
    return {code: UnitConfig(**{"accept_seconds": 0.2, "process_seconds": 0.3, **base[code], **changes.get(code, {})})
            for code in base}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
          request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """This process as a relay against the exchange (units as the test's ``units`` marker says)."""
    marker = request.node.get_closest_marker("units")
    behind = units(**(marker.kwargs if marker else {}))
    database_url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database_url)
    onestop_secret = new_secret()
    exchange = exchange_app(username=USER, password=PASSWORD, units=behind, seed=5, tick_seconds=0.05,
                            consumer_key=CONSUMER_KEY, consumer_secret=CONSUMER_SECRET)
    with run_asgi(exchange) as exchange_url, run_asgi(document_app()) as documents_url, \
            run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        path = routing_file("transfer", tmp_path / "routing.toml",
                            {"lgsp": {"timeouts": {"read": 1.0}, "retry": FAST_RETRY},
                             "onestop": {"retry": FAST_RETRY}})
        prefix = f"tr{uuid.uuid4().hex[:6]}"
        env = relay_env(database_url, redis_url, new_secret(), {"onestop": onestop_secret}, path,
                        MOTCUA_TRANSFER_URL=exchange_url,
                        MOTCUA_ONESTOP_WEBHOOK_URL=f"{onestop_url}/subscribers/onestop/events",
                        MOTCUA_TRANSFER_USERNAME=USER, MOTCUA_TRANSFER_PASSWORD=PASSWORD,
                        MOTCUA_TRANSFER_CONSUMER_KEY=CONSUMER_KEY, MOTCUA_TRANSFER_CONSUMER_SECRET=CONSUMER_SECRET,
                        MOTCUA_REDIS_PREFIX=prefix)
        become_relay(monkeypatch, env)
        try:
            yield {"exchange": exchange_url, "documents": documents_url, "onestop": onestop_url, "env": env}
        finally:
            reset_runtime()
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)


def later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def requested(stack: dict[str, Any], target: str, *, size: int = 2_000_000, sha256: str | None = None,
              origin: str = COMMUNE) -> dict[str, Any]:
    """A ``transfer.requested`` of a generated dossier, from ``origin`` to ``target``, with one scanned document."""
    sample = next(e for e in generate_day(40, seed=8) if e["type"] == "transfer.requested")
    name = f"to-khai-{uuid.uuid4().hex[:8]}.pdf"
    document = {"name": name, "url": f"{stack['documents']}/files/{name}?size={size}",
                "sha256": sha256 or document_sha256(name, size), "size": size}
    code = f"{origin}-261120-{next(DOSSIERS):04d}"  # distinct: a hop's id is its dossier's
    return {**sample, "event_id": f"tr-{uuid.uuid4().hex}", "unit_code": origin, "dossier_code": code,
            "data": {"target_unit": target, "reason": "Thủ tục liên thông", "documents": [document]}}


def ingest(batch: list[dict[str, Any]]) -> None:
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, batch, datetime.now(UTC), rt.routing.destinations_for, rt.rules)


def received(stack: dict[str, Any], dossier: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{stack['onestop']}/_admin/received", params={"subscriber": "onestop", "full": True},
                     timeout=10).json()
    return [r["event"] for r in rows if r["event"]["dossier_code"] == dossier]


def settle(stack: dict[str, Any], dossier: str, until: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """Poll the exchange and deliver, again and again, until the one-stop software has heard ``until``."""
    def step() -> list[dict[str, Any]] | None:
        run_poll(get_runtime().deliverer_of(TransferDeliverer, "lgsp"))
        drain(later)
        got = received(stack, dossier)
        return got if until(got) else None

    return list(wait_for(step, timeout, interval=0.2, what="the transfer's answers"))


def kinds(got: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(e["type"], e["data"].get("from_unit"), e["data"].get("target_unit")) for e in got]


def test_a_two_hop_transfer_streams_its_document_once_and_the_result_comes_back_the_same_way(
    stack: dict[str, Any],
) -> None:
    # given a ward's dossier for the land registration office (under its department), with a 2 MB scan
    event = requested(stack, OFFICE)
    dossier = event["dossier_code"]
    ingest([event])
    # when the relay sends it, polls the exchange and delivers what comes back, until the result is home
    got = settle(stack, dossier, lambda got: any(e["type"] == "transfer.result" and not e["data"].get("return_to")
                                                 for e in got))
    hop1, hop2 = (tx.transfer_id(dossier, COMMUNE, DEPARTMENT), tx.transfer_id(dossier, DEPARTMENT, OFFICE))
    # then the one-stop software heard every step in order: the department took it, passed it on, its office
    # took it and decided, and the decision came back down to the ward once
    assert kinds(got) == [
        ("transfer.accepted", COMMUNE, DEPARTMENT), ("transfer.requested", None, OFFICE),
        ("transfer.accepted", DEPARTMENT, OFFICE), ("transfer.result", DEPARTMENT, OFFICE),
        ("transfer.result", COMMUNE, DEPARTMENT)]
    assert [e["data"]["transfer_id"] for e in got if e["type"] != "transfer.requested"] == [hop1, hop2, hop2, hop1]
    assert got[3]["data"]["return_to"] == hop1 and got[4]["data"]["outcome"] == "approved"
    assert got[4]["data"]["documents"][0]["name"].startswith("ket-qua-")
    # and the exchange holds both hops, linked, the scan uploaded once and checked
    held = {t["transferId"]: t for t in httpx.get(f"{stack['exchange']}/_admin/transfers", timeout=5).json()}
    assert held[hop2]["previousTransferId"] == hop1 and held[hop1]["status"] == held[hop2]["status"] == "RESULT"
    stats = httpx.get(f"{stack['exchange']}/_admin/stats", timeout=5).json()["counters"]
    assert stats["documents_stored"] == 1 and stats["document_bytes"] == 2_000_000
    assert all(t["send_calls"] == 1 for t in held.values())
    # and the ledger has one delivery per hop out, and one to carry the result back
    with get_runtime().engine.connect() as conn:
        refs = conn.execute(select(deliveries.c.external_ref, deliveries.c.status)
                            .where(deliveries.c.destination == "lgsp").order_by(deliveries.c.id)).all()
    assert [(r.external_ref, r.status) for r in refs] == [(hop1, "delivered"), (hop2, "delivered"),
                                                           (hop1, "delivered")]
    # and `motcua-relay trace` shows the whole chain, hop by hop, in order
    shown = subprocess.run([sys.executable, "-m", "cli.main", "trace", dossier], capture_output=True, text=True,
                           env={**stack["env"], "COLUMNS": "250"}, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    chain = shown.stdout[shown.stdout.index("Transfer chain"):]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in chain.splitlines() if line.count("│") > 5]
    assert [(r[0], r[1], r[3], r[5], r[7]) for r in rows] == [
        ("1", f"{COMMUNE} → {DEPARTMENT}", "accepted", "approved", "yes"),
        ("2", f"{DEPARTMENT} → {OFFICE}", "accepted", "approved", "—")]


def test_a_document_whose_bytes_do_not_match_its_checksum_is_refused_and_the_reason_says_so(
    stack: dict[str, Any],
) -> None:
    event = requested(stack, DEPARTMENT, size=300_000, sha256="0" * 64)
    ingest([event])
    drain(later)
    [dead] = dead_letters(get_runtime().engine, DeadLetterFilter(destination="lgsp"))
    assert dead.attempts == 1 and "checksum mismatch" in dead.last_error
    assert "the dossier says 0000000000000000" in dead.last_error
    assert httpx.get(f"{stack['exchange']}/_admin/transfers", timeout=5).json() == []
    stats = httpx.get(f"{stack['exchange']}/_admin/stats", timeout=5).json()["counters"]
    assert stats.get("documents_stored", 0) == 0 and stats["documents_refused"] == 1


@pytest.mark.units(**{DEPARTMENT: {"refuse_rate": 1.0}})
def test_a_refusal_reaches_the_origin_once_and_goes_no_further(stack: dict[str, Any]) -> None:
    event = requested(stack, OFFICE, size=100_000)
    ingest([event])
    got = settle(stack, event["dossier_code"], lambda got: any(e["type"] == "transfer.refused" for e in got))
    assert kinds(got) == [("transfer.refused", COMMUNE, DEPARTMENT)]
    assert got[0]["data"]["reason"] == "Hồ sơ chưa đủ thành phần theo quy định"
    assert len(httpx.get(f"{stack['exchange']}/_admin/transfers", timeout=5).json()) == 1


def test_a_hop_to_a_unit_that_is_down_waits_and_goes_once_it_is_up(stack: dict[str, Any]) -> None:
    # given the district's system is down
    httpx.post(f"{stack['exchange']}/_admin/units/{DEPARTMENT}/down", json={"seconds": 600}, timeout=5)
    event = requested(stack, DEPARTMENT, size=100_000)
    ingest([event])
    with get_runtime().engine.connect() as conn:
        [delivery_id] = conn.execute(select(deliveries.c.id)).scalars().all()
    run_delivery(delivery_id, "lgsp", clock=lambda: datetime.now(UTC))
    # when it comes back and the delivery is retried
    httpx.post(f"{stack['exchange']}/_admin/units/{DEPARTMENT}/up", timeout=5)
    got = settle(stack, event["dossier_code"], lambda got: any(e["type"] == "transfer.result" for e in got))
    # then the hop went once, on the second attempt (its document already there), and the answers came back
    assert kinds(got) == [("transfer.accepted", COMMUNE, DEPARTMENT), ("transfer.result", COMMUNE, DEPARTMENT)]
    with get_runtime().engine.connect() as conn:
        tried = conn.execute(select(attempts.c.outcome, attempts.c.error).order_by(attempts.c.id)).all()
    assert tried[0].outcome == "retryable" and "UNIT_UNAVAILABLE" in tried[0].error
    assert tried[1].outcome == "delivered"
    stats = httpx.get(f"{stack['exchange']}/_admin/stats", timeout=5).json()["counters"]
    assert stats["documents_stored"] == 1 and stats["unit_unavailable"] == 1


# ----------------------------------------------------------------------------------- real worker and beat


@contextmanager
def relay_processes(stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, *,
                    beat: bool) -> Iterator[RelayProcess]:
    """A ``motcua-relay worker`` (and ``beat``) on the stack's ledger, with a Redis db of their own."""
    db = os.environ.get("MOTCUA_TEST_TRANSFER_REDIS_DB", "5")
    broker = f"{stack['env']['MOTCUA_BROKER_URL'].rsplit('/', 1)[0]}/{db}"
    redis.Redis.from_url(broker).flushdb()
    env = {**stack["env"], "MOTCUA_BROKER_URL": broker, "MOTCUA_REDIS_URL": broker,
           "MOTCUA_SWEEP_INTERVAL_SECONDS": "0.5", "MOTCUA_TRANSFER_POLL_INTERVAL_SECONDS": "1",
           "MOTCUA_PORTAL_PULL_INTERVAL_SECONDS": "3600", "MOTCUA_POSTAL_POLL_INTERVAL_SECONDS": "3600",
           "MOTCUA_PAYMENT_QUERY_INTERVAL_SECONDS": "3600", "MOTCUA_WORKER_CONCURRENCY": "16"}
    become_relay(monkeypatch, env)  # this process enqueues on the same broker
    logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", tmp_path))
    worker = RelayProcess(["worker"], env, logs / f"{name}-worker.log").start()
    scheduler = (RelayProcess(["beat"], {**env, "MOTCUA_BEAT_SCHEDULE_FILE": str(tmp_path / f"{name}-beat")},
                              logs / f"{name}-beat.log").start() if beat else None)
    try:
        yield worker
    finally:
        worker.stop()
        if scheduler is not None:
            scheduler.stop()
        reset_runtime()
        redis.Redis.from_url(broker).flushdb()


def send(events: list[dict[str, Any]]) -> None:
    """Store and route the events and queue their deliveries, as the intake does."""

    rt = get_runtime()
    _, ready = intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    rt.enqueue(ready)


def delivered(destination: str) -> int:
    with get_runtime().engine.connect() as conn:
        return len(conn.execute(select(deliveries.c.id).where(deliveries.c.destination == destination,
                                                              deliveries.c.status == "delivered")).all())


@pytest.mark.slow
def test_a_200_mb_document_crosses_with_the_worker_growing_by_less_than_50_mb(
    stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.support import tree_hwm_mb, tree_rss_mb

    with relay_processes(stack, tmp_path, monkeypatch, "transfer-200mb", beat=False) as worker:
        # given a worker warmed up by a first, small transfer (imports, the WSDL loaded, pools open)
        send([requested(stack, DEPARTMENT, size=1_000_000)])
        wait_for(lambda: delivered("lgsp") == 1, 60, what="the warm-up transfer")
        assert worker.proc is not None
        before = tree_rss_mb(worker.proc.pid)
        # when a dossier with a 200 MB scan goes to the district
        big = requested(stack, DEPARTMENT, size=200_000_000)
        send([big])
        wait_for(lambda: delivered("lgsp") == 2, 180, interval=0.5, what="the 200 MB transfer")
        peak = tree_hwm_mb(worker.proc.pid)
    # then the exchange holds all of it, checked, and the worker's peak stayed within 50 MB of its resting size
    stats = httpx.get(f"{stack['exchange']}/_admin/stats", timeout=5).json()["counters"]
    assert stats["document_bytes"] == 201_000_000 and stats["documents_stored"] == 2
    print(f"worker RSS before {before:.1f} MB, peak {peak:.1f} MB, growth {peak - before:.1f} MB")
    assert peak - before < 50, f"the worker grew by {peak - before:.1f} MB"


@pytest.mark.slow
@pytest.mark.units(**{DEPARTMENT: {"refuse_rate": 0.1}, OFFICE: {"refuse_rate": 0.1, "reject_rate": 0.1},
                      MINISTRY: {"refuse_rate": 0.1}, NEIGHBOUR: {"refuse_rate": 0.1}})
def test_a_hundred_transfers_on_the_two_level_tree_survive_a_department_going_down(
    stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.transfer import traced_chain

    # given 40 ward → department, 20 department → ministry, 20 ward → ward (received outside the applicant's
    # residence) and 20 ward → the department's land registration office (two hops) transfers
    kinds_of = ([(COMMUNE, DEPARTMENT)] * 40 + [(JUSTICE, MINISTRY)] * 20 + [(COMMUNE, NEIGHBOUR)] * 20
                + [(COMMUNE, OFFICE)] * 20)
    plan = [kinds_of[i] for i in sorted(range(100), key=lambda i: (i * 37) % 100)]  # the kinds spread over the day
    day = [requested(stack, target, origin=origin, size=50_000 + 1000 * n) for n, (origin, target) in enumerate(plan)]
    with relay_processes(stack, tmp_path, monkeypatch, "transfer-100", beat=True):
        # when they are sent, and the department's system goes down for 8 s once the exchange has begun to take
        # them (not after a fixed pause: a busy machine's worker may not have begun by then, and the downtime
        # would pass unfelt), before the second half is sent
        send(day[:50])
        wait_for(lambda: httpx.get(f"{stack['exchange']}/_admin/stats", timeout=5).json()["counters"].get(
            "documents_stored", 0) >= 5, 60, interval=0.2, what="the exchange taking the first transfers")
        httpx.post(f"{stack['exchange']}/_admin/units/{DEPARTMENT}/down", json={"seconds": 8}, timeout=5)
        send(day[50:])

        # then every transfer ends: refused somewhere, or its result back at the origin
        def ended() -> bool:
            words = [e for e in received_all(stack) if e["type"] in ("transfer.refused", "transfer.result")]
            done = {e["dossier_code"] for e in words if e["type"] == "transfer.refused"
                    or not e["data"].get("return_to")}
            return done >= {e["dossier_code"] for e in day}

        wait_for(ended, 150, interval=1.0, what="every transfer's last word at the origin")
        got = received_all(stack)
    stats = httpx.get(f"{stack['exchange']}/_admin/stats", timeout=5).json()
    assert stats["counters"].get("unit_unavailable", 0) > 0, stats  # the downtime was felt
    homes = Counter(e["dossier_code"] for e in got if e["type"] == "transfer.result" and not e["data"].get("return_to"))
    refused = Counter(e["dossier_code"] for e in got if e["type"] == "transfer.refused")
    for event in day:
        code = event["dossier_code"]
        assert (homes[code], refused[code]) in ((1, 0), (0, 1)), (code, homes[code], refused[code])
    assert 0 < sum(refused.values()) < 40 and sum(homes.values()) + sum(refused.values()) == 100
    # and no hop went through a district: every hop is one of the paths that exist now
    hops = {(t["fromUnit"], t["toUnit"]) for t in httpx.get(f"{stack['exchange']}/_admin/transfers", timeout=10).json()}
    assert hops <= {(COMMUNE, DEPARTMENT), (JUSTICE, MINISTRY), (COMMUNE, NEIGHBOUR), (DEPARTMENT, OFFICE)}, hops
    # and every two-hop chain that was accepted all the way shows both hops in order, the result carried back
    two_hops = [e["dossier_code"] for e in day if e["data"]["target_unit"] == OFFICE and homes[e["dossier_code"]]]
    assert two_hops
    for code in two_hops:
        evs, dels, _ = queries.dossier_trace(get_runtime().engine, code)
        steps = traced_chain(evs, dels)
        assert [(h.from_unit, h.to_unit, h.answer, h.returned) for h in steps] == [
            (COMMUNE, DEPARTMENT, "accepted", True), (DEPARTMENT, OFFICE, "accepted", False)]
        # (by the units' own clocks: the ledger's delivery times are when each success was recorded, and a first
        # hop retried after a lost answer is recorded after the second hop it made possible)
        assert steps[0].answered_at <= steps[1].answered_at and steps[1].result_at <= steps[0].result_at  # type: ignore[operator]
    assert dead_letters(get_runtime().engine, DeadLetterFilter()) == []


def received_all(stack: dict[str, Any]) -> list[dict[str, Any]]:
    rows = httpx.get(f"{stack['onestop']}/_admin/received", params={"subscriber": "onestop", "full": True},
                     timeout=30).json()
    return [r["event"] for r in rows]
