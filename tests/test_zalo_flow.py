"""Zalo notifications end to end, one attempt at a time in this process, against the Zalo and SMS simulators.

Real Redis (the token pair and its lock), a real ledger on each engine, real HTTP. The worker's
threads are played by a thread pool so that "20 deliveries at once when the token expires" is
exactly that, every time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from adapters.zalo import tracking_id
from api.app import create_app
from connectors.credentials import TokenPairStore
from sandbox.sms import create_app as sms_app
from sandbox.workload import generate_day
from sandbox.zalo import create_app as zalo_app
from sandbox.zalo import zevent_signature
from schemas.vietnam import VN_TZ
from services.zalo.deliver import set_token
from store import intake, queries
from store.sweep import sweep
from store.tables import FINAL_STATUSES, Status, attempts, deliveries, receipts
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import become_relay, new_secret, relay_env
from tests.servers import run_asgi

APP_ID, APP_SECRET, OA_KEY, SMS_KEY = "4301520984", "zalo-app-secret", "oa-secret-key", "sms-api-key"
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=VN_TZ).astimezone(UTC)
LIFECYCLE = ["dossier.received", "dossier.supplement_requested", "dossier.fee_requested", "dossier.completed",
             "dossier.refused", "dossier.returned"]


@dataclass
class ZaloStack:
    zalo: str
    sms: str
    env: dict[str, str]
    tmp: Path

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.zalo}/_admin/stats", timeout=5).json()


def routing(path: Path, zalo: str, sms: str, quiet: str) -> Path:
    events = json.dumps(LIFECYCLE)
    path.write_text(f"""
[destinations.zalo]
kind = "zalo"
url = "{zalo}"
quiet_hours = "{quiet}"
fallback = "sms"
timeouts = {{ connect = 2, read = 5 }}
breaker = {{ failure_threshold = 1000, open_for = "1s" }}

[destinations.sms]
kind = "sms"
url = "{sms}/api/v1/sms/send"
brandname = "UBND-HALONG"
ordering = "none"
timeouts = {{ connect = 2, read = 5 }}

[[routes]]
events = {events}
origins = ["onestop"]
require = ["applicant.phone", "applicant.zalo_consent"]
destination = "zalo"
""", encoding="utf-8")
    return path


@pytest.fixture
def zalo_stack(db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               request: pytest.FixtureRequest) -> Iterator[ZaloStack]:
    quiet = getattr(request, "param", "none")
    with run_asgi(zalo_app(app_id=APP_ID, app_secret=APP_SECRET, oa_secret_key=OA_KEY, start_at=NOON)) as zalo, \
            run_asgi(sms_app(api_key=SMS_KEY)) as sms:
        redis.Redis.from_url(redis_url).flushdb()
        env = relay_env(db_url, redis_url, new_secret(), {}, routing(tmp_path / "routing.toml", zalo, sms, quiet),
                        MOTCUA_ZALO_APP_ID=APP_ID, MOTCUA_ZALO_APP_SECRET=APP_SECRET,
                        MOTCUA_ZALO_OA_SECRET_KEY=OA_KEY, MOTCUA_SMS_API_KEY=SMS_KEY,
                        MOTCUA_REDIS_PREFIX=f"z{uuid.uuid4().hex[:6]}")
        become_relay(monkeypatch, env)
        rt = get_runtime()
        pair = httpx.post(f"{zalo}/_admin/tokens", timeout=5).json()
        set_token(TokenPairStore(rt.redis, rt.settings.redis_prefix), "zalo", pair["access_token"],
                  pair["refresh_token"], float(pair["expires_in"]))
        yield ZaloStack(zalo, sms, env, tmp_path)
        reset_runtime()


def ingest(events: list[dict[str, Any]], now: datetime = NOON) -> None:
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, events, now, rt.routing.destinations_for, rt.rules)


def open_heads() -> list[tuple[int, str]]:
    """One open delivery per dossier and destination: the lowest sequence (the one that may go)."""
    rt = get_runtime()
    d = deliveries.c
    with rt.engine.connect() as conn:
        rows = conn.execute(select(d.id, d.destination, d.dossier_code, d.sequence)
                            .where(d.status.notin_(FINAL_STATUSES)).order_by(d.sequence)).all()
    heads: dict[tuple[str, str], tuple[int, str]] = {}
    for row in rows:
        heads.setdefault((row.dossier_code, row.destination), (row.id, row.destination))
    return list(heads.values())


def drain(clock: datetime = NOON) -> None:
    for _ in range(40):
        heads = open_heads()
        if not heads:
            return
        for delivery_id, destination in heads:
            run_delivery(delivery_id, destination, clock=lambda: clock)
    raise AssertionError(f"still open: {open_heads()[:5]}")


def counts() -> dict[str, dict[str, int]]:
    return queries.status_counts(get_runtime().engine)


def test_a_day_with_the_token_expiring_three_times_under_20_concurrent_deliveries(zalo_stack: ZaloStack) -> None:
    # given a working day's notifications for the citizens who consented
    day = generate_day(300, day=date(2026, 11, 20), seed=17)
    ingest(day)
    total = sum(counts()["zalo"].values())
    assert total > 100
    # every call takes 300 ms, so the 20 sends are all on the wire with the expired token at once
    httpx.post(f"{zalo_stack.zalo}/_admin/faults", json={"latency_ms": 300}, timeout=5).raise_for_status()
    for _ in range(3):
        # when the access token expires while 20 deliveries are sent at the same moment
        assert httpx.post(f"{zalo_stack.zalo}/_admin/expire", timeout=5).status_code == 200
        batch = [h for h in open_heads() if h[1] == "zalo"][:20]
        assert len(batch) == 20
        start = threading.Barrier(20)

        def one(item: tuple[int, str], start: threading.Barrier = start) -> str:
            start.wait(10)
            return run_delivery(item[0], item[1], clock=lambda: NOON)

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, batch))
        assert all(r in (Status.DELIVERED, Status.SUPERSEDED) for r in results), results
    httpx.delete(f"{zalo_stack.zalo}/_admin/faults", timeout=5).raise_for_status()
    drain()
    # then every message went once, the refresh token was spent once per expiry and never twice
    c = counts()
    rerouted = c["zalo"].get(Status.SUPERSEDED, 0)
    assert c["zalo"] == {Status.DELIVERED: total - rerouted, **({Status.SUPERSEDED: rerouted} if rerouted else {})}, c
    stats = zalo_stack.stats()
    assert stats["refresh"]["ok"] == 3 and stats["refresh_token_reuse"] == 0, stats
    assert stats["duplicate_tracking"] == 0 and stats["sent"] == total - rerouted, stats
    assert stats["token_expired"] >= 3 * 20, stats


def consenting(kind: str, seed: int = 5, phone: str | None = None) -> dict[str, Any]:
    event = next(e for e in generate_day(60, day=date(2026, 11, 20), seed=seed)
                 if e["type"] == kind and e["applicant"].get("zalo_consent") and e["applicant"].get("phone"))
    event = {**event, "event_id": f"z-{uuid.uuid4().hex}", "sequence": 1}
    if phone:
        event["applicant"] = {**event["applicant"], "phone": phone}
    return event


def only_delivery(destination: str) -> Any:
    with get_runtime().engine.connect() as conn:
        return conn.execute(select(deliveries).where(deliveries.c.destination == destination)).one()


@pytest.mark.parametrize("zalo_stack", ["21:00-07:00"], indirect=True)
def test_an_event_at_22_30_is_sent_at_07_00_without_spending_an_attempt(zalo_stack: ZaloStack) -> None:
    late = datetime(2026, 11, 20, 22, 30, tzinfo=VN_TZ)
    ingest([consenting("dossier.completed")], late)
    delivery = only_delivery("zalo")
    # when a worker takes it at 22:30
    assert run_delivery(delivery.id, "zalo", clock=lambda: late) == "deferred"
    # then it waits, untried, until 07:00 the next morning
    waiting = only_delivery("zalo")
    assert waiting.attempts == 0 and waiting.status == "pending"
    assert waiting.next_attempt_at == datetime(2026, 11, 21, 7, 0, tzinfo=VN_TZ)
    assert "quiet hours" in waiting.last_error
    assert sweep(get_runtime().engine, late + timedelta(hours=8), 60, 100).deliveries_to_enqueue == []
    due = sweep(get_runtime().engine, datetime(2026, 11, 21, 7, 0, tzinfo=VN_TZ), 60, 100).deliveries_to_enqueue
    assert [d.delivery_id for d in due] == [delivery.id]
    seven = datetime(2026, 11, 21, 7, 0, tzinfo=VN_TZ)
    assert run_delivery(delivery.id, "zalo", clock=lambda: seven) == Status.DELIVERED
    assert zalo_stack.stats()["sent"] == 1


def test_a_phone_without_zalo_gets_an_sms_as_a_delivery_of_its_own(zalo_stack: ZaloStack) -> None:
    event = consenting("dossier.received", phone="0912 345 000")  # the simulator: no Zalo account
    ingest([event])
    drain()
    zalo = only_delivery("zalo")
    sms = only_delivery("sms")
    assert zalo.status == Status.SUPERSEDED and "-118" in zalo.last_error and f"delivery {sms.id}" in zalo.last_error
    assert sms.status == Status.DELIVERED and sms.external_ref
    [message] = httpx.get(f"{zalo_stack.sms}/_admin/messages", timeout=5).json()
    assert message["phone"] == "84912345000" and event["dossier_code"] in message["message"]
    with get_runtime().engine.connect() as conn:
        outcome = conn.execute(select(attempts.c.outcome).where(attempts.c.delivery_id == zalo.id)).scalar_one()
    assert outcome == "rerouted"
    assert zalo_stack.stats()["sent"] == 0


def test_a_spent_quota_waits_for_the_next_day_and_the_rest_wait_without_attempts(zalo_stack: ZaloStack) -> None:
    httpx.post(f"{zalo_stack.zalo}/_admin/quota", json={"daily": 5, "used": 5}, timeout=5).raise_for_status()
    first, second = consenting("dossier.received", seed=7), consenting("dossier.completed", seed=8)
    now = datetime.now(UTC)
    ingest([first, second], now)
    rt = get_runtime()
    with rt.engine.connect() as conn:
        ids = dict(conn.execute(select(deliveries.c.idempotency_key, deliveries.c.id)).all())
    # the one that met the spent quota does not spend an attempt either (its answer is kept for the audit)
    assert run_delivery(ids[f"{first['event_id']}:zalo"], "zalo", clock=lambda: now) == "paused"
    assert run_delivery(ids[f"{second['event_id']}:zalo"], "zalo", clock=lambda: now) == "deferred"
    with rt.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(deliveries))}
        outcomes = conn.execute(select(attempts.c.outcome)).scalars().all()
    tomorrow = datetime.combine(now.astimezone(VN_TZ).date() + timedelta(days=1), datetime.min.time(), VN_TZ)
    met = rows[ids[f"{first['event_id']}:zalo"]]
    assert met.next_attempt_at >= tomorrow - timedelta(minutes=1)
    assert (met.status, met.budget_used, outcomes) == ("pending", 0, ["paused"])
    assert rows[ids[f"{second['event_id']}:zalo"]].attempts == 0
    assert "quota" in rows[ids[f"{second['event_id']}:zalo"]].last_error


def test_receipts_are_signed_recorded_once_and_stop_a_repeated_send(zalo_stack: ZaloStack) -> None:
    from tasks.app import configure_app

    configure_app()
    event = consenting("dossier.returned", seed=9)
    tracking = tracking_id(event["event_id"], "300006")
    body = json.dumps({"app_id": APP_ID, "event_name": "user_received_message", "timestamp": "1763625600000",
                       "message": {"msg_id": "m-1", "tracking_id": tracking}}).encode()
    good = {"X-ZEvent-Signature": zevent_signature(APP_ID, body, "1763625600000", OA_KEY),
            "content-type": "application/json"}
    bad = {**good, "X-ZEvent-Signature": zevent_signature(APP_ID, body, "1763625600000", "not-the-key")}
    with run_asgi(create_app()) as api:
        forged = httpx.post(f"{api}/v1/callbacks/zalo", content=body, headers=bad, timeout=5)
        with get_runtime().engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(receipts)).scalar() == 0
        first = httpx.post(f"{api}/v1/callbacks/zalo", content=body, headers=good, timeout=5)
        again = httpx.post(f"{api}/v1/callbacks/zalo", content=body, headers=good, timeout=5)
    assert forged.status_code == 401
    assert (first.json()["status"], again.json()["status"]) == ("recorded", "already recorded")
    # when the event's delivery runs (say its first answer was lost), nothing is sent again
    ingest([event])
    drain()
    assert only_delivery("zalo").status == Status.DELIVERED and only_delivery("zalo").external_ref == "m-1"
    assert zalo_stack.stats()["sent"] == 0
    # and the dossier's trace shows the citizen received it
    trace = subprocess.run([sys.executable, "-m", "cli.main", "trace", event["dossier_code"]], capture_output=True,
                           text=True, env={**zalo_stack.env, "COLUMNS": "200"}, timeout=60)
    assert trace.returncode == 0 and "received by the citizen (zalo, message m-1)" in trace.stdout, trace.stdout


def test_a_destination_that_cannot_be_built_is_a_dead_letter_saying_why(
    zalo_stack: ZaloStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an SMS destination whose url was forgotten, routed to directly
    broken = zalo_stack.tmp / "broken.toml"
    broken.write_text('[destinations.sms]\nkind = "sms"\n\n[[routes]]\nevents = ["dossier.received"]\n'
                      'destination = "sms"\n', encoding="utf-8")
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(broken))
    reset_runtime()
    ingest([consenting("dossier.received")])
    # when a worker takes the delivery, then it is recorded dead with the reason, not lost in a loop
    assert run_delivery(only_delivery("sms").id, "sms", clock=lambda: NOON) == "dead"
    assert "rejected: destination sms: url: Field required" in only_delivery("sms").last_error
