"""Zalo notifications end to end, one attempt at a time in this process, against the Zalo and SMS simulators.

Real Redis (the token pair and its lock), a real ledger on each engine, real HTTP. The worker's
threads are played by a thread pool so that "20 deliveries at once when the token expires" is
exactly that, every time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
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
from sandbox.workload import generate_day, send_events_sync
from sandbox.zalo import create_app as zalo_app
from sandbox.zalo import zevent_signature
from schemas.vietnam import VN_TZ
from services.zalo.deliver import set_token
from store import intake, queries
from store.sweep import sweep
from store.tables import FINAL_STATUSES, Status, attempts, deliveries, receipts
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import become_relay, new_secret, relay_env, wait_for
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


def routing(path: Path, zalo: str, sms: str, quiet: str, extra: str = "") -> Path:
    events = json.dumps(LIFECYCLE)
    path.write_text(f"""
[destinations.zalo]
kind = "zalo"
url = "{zalo}"
quiet_hours = "{quiet}"
fallback = "sms"
timeouts = {{ connect = 2, read = 5 }}
breaker = {{ failure_threshold = 1000, open_for = "1s" }}
# a pause is probed every second; what it holds comes back after a minute unless the probe releases it
pause_probe_every = "1s"
pause_recheck_every = "60s"
{extra}

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
    day = generate_day(100, day=date(2026, 11, 20), seed=17)  # 239 notifications of 80 dossiers
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


# ----------------------------------------------------------------------------------- account-level pauses


def distinct(count: int, kinds: tuple[str, ...] = ("dossier.received",), skip: set[str] | None = None,
             seed: int = 5) -> list[dict[str, Any]]:
    """``count`` consenting citizens' events of ``kinds``, one per dossier (sequence 1), none without Zalo."""
    out: list[dict[str, Any]] = []
    seen = set(skip or ())
    for e in generate_day(200, day=date(2026, 11, 20), seed=seed):
        phone = (e["applicant"].get("phone") or "").replace(" ", "")
        if (e["type"] in kinds and e["applicant"].get("zalo_consent") and phone and phone[-3:] not in ("000", "999")
                and e["dossier_code"] not in seen):
            seen.add(e["dossier_code"])
            out.append({**e, "event_id": f"z-{uuid.uuid4().hex}", "sequence": 1})
        if len(out) == count:
            return out
    raise AssertionError(f"fewer than {count} events of {kinds}")


def zalo_deliveries() -> list[Any]:
    with get_runtime().engine.connect() as conn:
        return list(conn.execute(select(deliveries).where(deliveries.c.destination == "zalo")
                                 .order_by(deliveries.c.id)).all())


def outcomes(delivery_id: int) -> list[str]:
    with get_runtime().engine.connect() as conn:
        return list(conn.execute(select(attempts.c.outcome).where(attempts.c.delivery_id == delivery_id)
                                 .order_by(attempts.c.number)).scalars())


def paused_lines(api: str) -> list[str]:
    return re.findall(r"^motcua_destination_paused\{.*$", httpx.get(f"{api}/metrics", timeout=10).text, re.M)


def relay_cli(stack: ZaloStack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=60,
                          env={**stack.env, "COLUMNS": "250", **env})


def test_a_spent_balance_pauses_the_destination_probes_it_and_resumes_by_itself(zalo_stack: ZaloStack) -> None:
    # given the ZNS account out of balance and four citizens to notify
    httpx.post(f"{zalo_stack.zalo}/_admin/balance", json={"messages": 0}, timeout=5).raise_for_status()
    ingest(distinct(4), datetime.now(UTC))
    first, *others = [d.id for d in zalo_deliveries()]
    # when the first is sent, Zalo answers -115: the destination pauses and that attempt does not count
    assert run_delivery(first, "zalo") == "paused"
    # and the others are held without a call, an attempt or a dead letter
    assert [run_delivery(d, "zalo") for d in others] == ["deferred"] * 3
    held = zalo_deliveries()
    assert [(d.attempts, d.budget_used, d.status) for d in held] == [(1, 0, "pending")] + [(0, 0, "pending")] * 3
    assert all(d.last_error.startswith("paused: Zalo ZNS error -115") for d in held), held[1].last_error
    assert "top up" in held[1].last_error
    with run_asgi(create_app()) as api:
        assert paused_lines(api) == ['motcua_destination_paused{condition="balance",destination="zalo"} 1.0']
        # when the probe, a second later, meets the condition again, the pause goes on
        time.sleep(1.1)
        assert run_delivery(first, "zalo") == "paused"
        # when the account is topped up, the next probe goes through and releases what was held, at once
        httpx.post(f"{zalo_stack.zalo}/_admin/balance", json={"messages": None}, timeout=5).raise_for_status()
        time.sleep(1.1)
        assert run_delivery(first, "zalo") == Status.DELIVERED
        assert paused_lines(api) == []
    woken = zalo_deliveries()[1:]
    assert all(d.next_attempt_at <= datetime.now(UTC) and d.enqueued_at is not None for d in woken)
    assert [run_delivery(d.id, "zalo") for d in woken] == [Status.DELIVERED] * 3
    # then every message went once, each on the one attempt that delivered it
    assert [(d.status, d.budget_used) for d in zalo_deliveries()] == [(Status.DELIVERED, 1)] * 4
    assert outcomes(first) == ["paused", "paused", "delivered"]
    stats = zalo_stack.stats()
    assert (stats["sent"], stats["answers"].get("-115"), stats["duplicate_tracking"]) == (4, 2, 0), stats


def test_while_paused_one_message_probes_per_turn_and_one_held_is_due_for_the_next(zalo_stack: ZaloStack) -> None:
    from tasks.delivery import run_batch

    # given the ZNS account out of balance: a first batch of six meets -115 and the destination pauses
    httpx.post(f"{zalo_stack.zalo}/_admin/balance", json={"messages": 0}, timeout=5).raise_for_status()
    ingest(distinct(6, seed=7), datetime.now(UTC))
    assert list(run_batch("zalo").states.values()) == ["paused"] * 6
    # when the drain's next batch finds the probe's turn taken, it holds what is due now, not the six's retries
    # (due a second later, when the turn has come: whichever goes first probes)
    report = run_batch("zalo")
    assert report.states == {} and report.held
    # and when the turn comes, one message, not a batch, probes (and meets -115 again)
    time.sleep(1.1)
    assert list(run_batch("zalo").states.values()) == ["paused"]
    assert zalo_stack.stats()["answers"]["-115"] == 7
    # and the batch after it holds the other five: the first of them until the next turn, the others a minute
    report = run_batch("zalo")
    assert list(report.states.values()) == ["deferred"] * 5 and report.held
    now = datetime.now(UTC)
    waits = sorted((d.next_attempt_at - now).total_seconds() for d in zalo_deliveries())
    assert waits[0] < 1.5 and waits[1] < 1.5 and all(55 < w < 61 for w in waits[2:]), waits
    # when a batch has the turn but nothing to send (the delivery it was run for is not due), it gives it back:
    # a due one goes on the turn instead of being held for another
    httpx.post(f"{zalo_stack.zalo}/_admin/balance", json={"messages": None}, timeout=5).raise_for_status()
    time.sleep(1.1)
    not_due = max(zalo_deliveries(), key=lambda d: d.next_attempt_at).id
    assert run_batch("zalo", ids=[not_due]).states == {not_due: "skip"}
    assert list(run_batch("zalo").states.values()) == [Status.DELIVERED]
    # then the probe that went through released the rest at once, each sent once
    assert sorted(run_batch("zalo").states.values()) == [Status.DELIVERED] * 5
    assert [(d.status, d.budget_used) for d in zalo_deliveries()] == [(Status.DELIVERED, 1)] * 6
    assert zalo_stack.stats()["duplicate_tracking"] == 0


def test_a_disabled_template_pauses_only_its_messages_until_zalo_resume(zalo_stack: ZaloStack) -> None:
    # given Zalo disabled the "result ready" template
    httpx.post(f"{zalo_stack.zalo}/_admin/templates/300004", json={"status": "DISABLE"}, timeout=5)
    completed = distinct(2, ("dossier.completed",))
    received = distinct(1, skip={e["dossier_code"] for e in completed})
    ingest(completed + received, datetime.now(UTC))
    one, two, other = (d.id for d in zalo_deliveries())
    # when they are sent: the first meets -146, the second is held without a call, another template goes on
    assert [run_delivery(d, "zalo") for d in (one, two, other)] == ["paused", "paused", Status.DELIVERED]
    assert (outcomes(one), outcomes(two)) == (["paused"], [])
    status = relay_cli(zalo_stack, "zalo", "status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert "template_disabled (template 300004)" in status.stdout and "re-enabled" in status.stdout
    # when the template is enabled again and the operator says so
    httpx.post(f"{zalo_stack.zalo}/_admin/templates/300004", json={"status": "ENABLE"}, timeout=5)
    resumed = relay_cli(zalo_stack, "zalo", "resume", "--template", "300004")
    assert resumed.returncode == 0 and "2 waiting deliveries released" in resumed.stdout, resumed.stdout
    # then both go at once, on their first counted attempt
    assert [run_delivery(d, "zalo") for d in (one, two)] == [Status.DELIVERED] * 2
    assert [(d.status, d.budget_used) for d in zalo_deliveries()] == [(Status.DELIVERED, 1)] * 3
    assert relay_cli(zalo_stack, "zalo", "status").returncode == 0
    assert "is not paused" in relay_cli(zalo_stack, "zalo", "resume").stdout


def test_a_refused_refresh_token_waits_for_set_token_which_sends_what_waited(zalo_stack: ZaloStack) -> None:
    # given a pair due for renewal whose refresh token Zalo refuses (answered with names, no number)
    rt = get_runtime()
    set_token(TokenPairStore(rt.redis, rt.settings.redis_prefix), "zalo", "stale", "not-a-refresh-token", -1)
    ingest(distinct(2), datetime.now(UTC))
    first, second = (d.id for d in zalo_deliveries())
    assert [run_delivery(first, "zalo"), run_delivery(second, "zalo")] == ["paused", "deferred"]
    status = relay_cli(zalo_stack, "zalo", "status")
    assert status.returncode == 3 and "token_refused" in status.stdout and "zalo set-token" in status.stdout
    # when the operator stores a new pair
    pair = httpx.post(f"{zalo_stack.zalo}/_admin/tokens", timeout=5).json()
    stored = relay_cli(zalo_stack, "zalo", "set-token", "--expires-in", pair["expires_in"],
                       MOTCUA_ZALO_ACCESS_TOKEN=pair["access_token"], MOTCUA_ZALO_REFRESH_TOKEN=pair["refresh_token"])
    assert stored.returncode == 0 and "2 waiting deliveries released" in stored.stdout, stored.stdout
    # then what waited goes, nothing lost, no attempt spent by the wait
    assert [run_delivery(first, "zalo"), run_delivery(second, "zalo")] == [Status.DELIVERED] * 2
    assert [(d.status, d.budget_used) for d in zalo_deliveries()] == [(Status.DELIVERED, 1)] * 2


def test_our_webhook_answers_within_two_seconds_and_zalos_retry_records_the_receipt(
    zalo_stack: ZaloStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store import receipts as receipts_store

    record, slow = receipts_store.record, {"next": True}

    def slow_once(*args: Any, **kwargs: Any) -> Any:  # the ledger taking 2.5 s, once
        if slow.pop("next", False):
            time.sleep(2.5)
        return record(*args, **kwargs)

    monkeypatch.setattr(receipts_store, "record", slow_once)
    event = consenting("dossier.returned", seed=9)
    with run_asgi(create_app()) as api:
        # given a ledger slower than Zalo's 2 s: our answer does not wait for it
        body = json.dumps({"app_id": APP_ID, "event_name": "user_seen_message", "timestamp": "1763625600000",
                           "message": {"msg_ids": ["m-0"], "tracking_id": "mc-direct"}}).encode()
        headers = {"X-ZEvent-Signature": zevent_signature(APP_ID, body, "1763625600000", OA_KEY),
                   "content-type": "application/json"}
        # (a server already up: an unsigned post first, so that the 2 s are the answer's, not the app's start-up)
        assert httpx.post(f"{api}/v1/callbacks/zalo", content=body, timeout=5).status_code == 401
        started = time.monotonic()
        late = httpx.post(f"{api}/v1/callbacks/zalo", content=body, headers=headers, timeout=5)
        assert late.status_code == 503 and time.monotonic() - started < 2.0
        # when a message is delivered and Zalo posts its receipt to us while the ledger is slow again
        slow["next"] = True
        httpx.post(f"{zalo_stack.zalo}/_admin/webhook", json={"url": f"{api}/v1/callbacks/zalo", "retry_scale": 0.01},
                   timeout=5).raise_for_status()
        ingest([event])
        drain()
        wait_for(lambda: zalo_stack.stats()["webhooks"]["ok"] == 1, 15, what="the receipt posted again and taken")
        time.sleep(1.5)  # the slow write ends too
    # then Zalo posted it again after its retry delay, and it is recorded once
    assert zalo_stack.stats()["webhooks"] == {"ok": 1, "failed": 0, "retries": 1, "disabled": False}
    with get_runtime().engine.connect() as conn:
        rows = conn.execute(select(receipts.c.tracking_id, receipts.c.seen_at.is_not(None))).all()
    assert sorted(rows) == sorted([("mc-direct", True), (tracking_id(event["event_id"], "300006"), False)])


# ----------------------------------------------------------------------------------- a day through real workers


def three_hundred() -> list[dict[str, Any]]:
    """Whole dossiers of a day, 300 Zalo notifications among their events."""
    by_dossier: dict[str, list[dict[str, Any]]] = {}
    for e in generate_day(200, day=date(2026, 11, 20), seed=1):
        by_dossier.setdefault(e["dossier_code"], []).append(e)
    chosen: list[dict[str, Any]] = []
    count = 0
    for events in by_dossier.values():
        n = sum(1 for e in events if e["type"] in LIFECYCLE and e["applicant"].get("phone")
                and e["applicant"].get("zalo_consent"))
        if count + n <= 300:
            chosen += events
            count += n
    assert count == 300
    return chosen


@pytest.mark.slow
def test_300_notifications_with_the_balance_spent_for_30_s_in_the_middle_all_go_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from store.db import upgrade
    from tests.harness import worker_and_beat

    database_url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database_url)
    broker = f"{redis_url.rsplit('/', 1)[0]}/{os.environ.get('MOTCUA_TEST_ZALO_REDIS_DB', '6')}"
    redis.Redis.from_url(broker).flushdb()
    intake_secret = new_secret()
    with run_asgi(zalo_app(app_id=APP_ID, app_secret=APP_SECRET, oa_secret_key=OA_KEY, start_at=NOON)) as zalo, \
            run_asgi(sms_app(api_key=SMS_KEY)) as sms:
        env = relay_env(database_url, broker, intake_secret, {}, routing(tmp_path / "routing.toml", zalo, sms, "none"),
                        MOTCUA_ZALO_APP_ID=APP_ID, MOTCUA_ZALO_APP_SECRET=APP_SECRET, MOTCUA_ZALO_OA_SECRET_KEY=OA_KEY,
                        MOTCUA_SMS_API_KEY=SMS_KEY, MOTCUA_SWEEP_INTERVAL_SECONDS="0.5",
                        MOTCUA_WORKER_CONCURRENCY="8", MOTCUA_REDIS_PREFIX=f"zw{uuid.uuid4().hex[:6]}")
        become_relay(monkeypatch, env)
        rt = get_runtime()
        pair = httpx.post(f"{zalo}/_admin/tokens", timeout=5).json()
        set_token(TokenPairStore(rt.redis, rt.settings.redis_prefix), "zalo", pair["access_token"],
                  pair["refresh_token"], float(pair["expires_in"]))
        # every ZNS call takes 100 ms: the day takes a while, so that the outage falls in its middle
        httpx.post(f"{zalo}/_admin/faults", json={"latency_ms": 100}, timeout=5).raise_for_status()
        worker, beat = worker_and_beat(env, "zalo", tmp_path)
        seen_paused: list[str] = []
        try:
            with run_asgi(create_app()) as api:
                # given a day of 300 notifications sent through the intake
                events = three_hundred()
                report = send_events_sync(f"{api}/v1/events", intake_secret, events, batch_size=100)
                assert report.accepted == len(events), report.errors[:3]

                def zalo_final() -> int:
                    return sum(n for s, n in counts().get("zalo", {}).items() if s in FINAL_STATUSES)

                # when the ZNS account runs out of balance once a third are delivered, for 30 s
                wait_for(lambda: zalo_final() >= 100, 120, 0.2, "a third delivered")
                httpx.post(f"{zalo}/_admin/balance", json={"messages": 0}, timeout=5).raise_for_status()
                spent_at = time.monotonic()
                while time.monotonic() - spent_at < 30:
                    seen_paused += paused_lines(api)
                    time.sleep(1)
                final_during = zalo_final()
                httpx.post(f"{zalo}/_admin/balance", json={"messages": None}, timeout=5).raise_for_status()
                restored_at = time.monotonic()
                # then, the balance restored, everything goes within seconds (held deliveries would otherwise
                # wait pause_recheck_every, 60 s)
                wait_for(lambda: zalo_final() == 300 and all(s in FINAL_STATUSES for c in counts().values()
                                                             for s in c), 45, 0.5, "every delivery final")
                resumed_in = time.monotonic() - restored_at
                wait_for(lambda: not paused_lines(api), 10, 0.5, "the pause metric cleared")
        finally:
            worker.close()
            beat.stop()
        stats = httpx.get(f"{zalo}/_admin/stats", timeout=5).json()
        sms_sent = httpx.get(f"{sms}/_admin/stats", timeout=5).json()["sent"]
    c = counts()
    rows = zalo_deliveries()
    with get_runtime().engine.connect() as conn:
        by_outcome = dict(conn.execute(select(attempts.c.outcome, func.count()).group_by(attempts.c.outcome)).all())
    reset_runtime()
    redis.Redis.from_url(broker).flushdb()
    # the pause was raised during the outage (and the day was held: little was delivered meanwhile), cleared after
    assert 'motcua_destination_paused{condition="balance",destination="zalo"} 1.0' in seen_paused, seen_paused
    assert final_during < 300 and resumed_in < 30, (final_during, resumed_in)
    # no dead letter, and every notification delivered exactly once (the simulator's view)
    assert all(Status.DEAD not in per for per in c.values()), c
    delivered = [d for d in rows if d.status == Status.DELIVERED]
    rerouted = [d for d in rows if d.status == Status.SUPERSEDED]
    assert len(delivered) + len(rerouted) == 300 and sms_sent == len(rerouted), (c, sms_sent)
    assert stats["sent"] == len(delivered) and stats["duplicate_tracking"] == 0, stats
    assert stats["answers"].get("-115", 0) >= 1, stats
    # and no attempt spent by the pause: each delivered on its first counted attempt, the pause's answers apart
    assert {d.budget_used for d in delivered} == {1}, sorted({d.budget_used for d in delivered})
    assert by_outcome.get("paused", 0) == stats["answers"]["-115"] and "retryable" not in by_outcome, by_outcome
