"""The postal service end to end: orders created once, cancelled when due, statuses back exactly once.

Real everything: the postal simulator (orders moving through their lifecycle, pushed callbacks,
the paged tracking list, faults), the one-stop simulator receiving the statuses, the intake and
the callback endpoint over HTTP, Redis, the ledger; in-process deliveries for the single-attempt
stories, ``motcua-relay worker`` and ``beat`` subprocesses for the working day.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from api.app import create_app
from bench.postal import to_cancel
from bench.support import routing_file
from sandbox.onestop import create_app as onestop_app
from sandbox.postal import create_app as postal_app
from sandbox.workload import generate_day, postal_day, send_events_sync
from schemas.webhook import sign
from services.postal.deliver import PostalDeliverer, order_mark
from services.postal.inbound import run_poll
from store import intake, queries
from store.db import get_engine, upgrade
from store.deadletters import DeadLetterFilter, dead_letters
from store.marks import get_mark
from store.tables import FINAL_STATUSES, Status, attempts, deliveries, events
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import become_relay, drain, new_secret, relay_env, wait_for, worker_and_beat
from tests.servers import run_asgi

KEY, SECRET, CUSTOMER = "relay-halong", "bi-mat-buu-dien", "HCC-TEST"
FAST_RETRY = {"schedule": ["0.2s", "0.5s", "1s"], "repeat_every": "2s", "deadline": "1h", "max_attempts": 200}
DAY = date(2026, 11, 20)


def postal_routing(path: Path, *, read_timeout: float = 2.0) -> Path:
    """The post (orders and cancellations of the one-stop software) and the one-stop software (statuses): the
    postal bench's routing, with fast retries; its addresses are :func:`postal_addresses`."""
    return routing_file("postal", path, {"postal": {"timeouts": {"read": read_timeout}, "retry": FAST_RETRY},
                                         "onestop": {"retry": FAST_RETRY}})


def postal_addresses(postal_url: str, onestop_url: str) -> dict[str, str]:
    """The variables that point :func:`postal_routing` at the simulators, and the customer code the post knows."""
    return {"MOTCUA_POSTAL_URL": postal_url, "MOTCUA_ONESTOP_WEBHOOK_URL": f"{onestop_url}/subscribers/onestop/events",
            "MOTCUA_POSTAL_CUSTOMER_CODE": CUSTOMER}


PostalStatus = tuple[str, str, datetime]  # order number, status code, when


def status_key(order_number: str, code: str, at: str) -> PostalStatus:
    return order_number, code, datetime.fromisoformat(at)


def late_statuses(engine: Engine) -> list[PostalStatus]:
    """The statuses stored but routed nowhere: older than what their dossier's stream already held."""
    with engine.connect() as conn:
        rows = conn.execute(select(events.c.payload).where(
            events.c.type == "postal.status",
            ~select(deliveries.c.id).where(deliveries.c.event_pk == events.c.id).exists())).scalars()
        return [status_key(p["data"]["order_number"], p["data"]["status_code"], p["occurred_at"])
                for p in map(json.loads, rows)]


def sent_statuses(got: list[dict[str, Any]]) -> list[PostalStatus]:
    return [status_key(e["data"]["order_number"], e["data"]["status_code"], e["occurred_at"]) for e in got]


def recorded_statuses(orders: list[dict[str, Any]]) -> list[PostalStatus]:
    """What the post recorded, but "waiting for the postman" (not news)."""
    return [(o["OrderNumber"], str(h["StatusCode"]), datetime.fromtimestamp(h["EventTime"] // 1000, UTC))
            for o in orders for h in o["history"] if h["StatusCode"] != 1]


def received_statuses(onestop_url: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{onestop_url}/_admin/received", params={"subscriber": "onestop", "full": True},
                     timeout=10).json()
    return [r["event"] for r in rows if r["type"] == "postal.status"]


# ------------------------------------------------------------- in-process: one attempt at a time


@pytest.fixture
def postal_config(db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """This process as a relay (API included) against a postal simulator whose orders move only when told."""
    onestop_secret = new_secret()
    with run_asgi(postal_app(consumer_key=KEY, consumer_secret=SECRET, customer_codes=[CUSTOMER],
                             step_seconds=0, seed=3)) as postal_url, \
            run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        routing = postal_routing(tmp_path / "routing.toml", read_timeout=1.0)
        prefix = f"pt{uuid.uuid4().hex[:6]}"
        env = relay_env(db_url, redis_url, new_secret(), {"onestop": onestop_secret}, routing,
                        **postal_addresses(postal_url, onestop_url),
                        MOTCUA_POSTAL_CONSUMER_KEY=KEY, MOTCUA_POSTAL_CONSUMER_SECRET=SECRET,
                        MOTCUA_POSTAL_CALLBACK_SECRET=new_secret(), MOTCUA_REDIS_PREFIX=prefix)
        become_relay(monkeypatch, env)
        with run_asgi(create_app()) as api_url:
            yield {"postal": postal_url, "onestop": onestop_url, "api": api_url, "env": env}
        reset_runtime()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def later() -> datetime:
    """The engine's clock for in-process draining: past the retries' waits (at most 2 s here)."""
    return datetime.now(UTC) + timedelta(seconds=5)


def ingest(batch: list[dict[str, Any]]) -> None:
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, batch, datetime.now(UTC), rt.routing.destinations_for, rt.rules)


def up_to(events: list[dict[str, Any]], request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's dossier's events until the request: the ordered stream has no gap to wait out."""
    return [e for e in events if e["dossier_code"] == request["dossier_code"] and e["sequence"] <= request["sequence"]]


def dossier_with(kind: str, seed: int = 5, **where: Any) -> list[dict[str, Any]]:
    events = generate_day(400, day=DAY, seed=seed)
    code = next(e["dossier_code"] for e in events if e["type"] == kind
                and all(e["data"].get(k) == v for k, v in where.items()))
    return [e for e in events if e["dossier_code"] == code]


def order(postal_url: str, number: str) -> dict[str, Any]:
    return httpx.get(f"{postal_url}/_admin/orders/{number}", timeout=5).json()


def timed_out_order(postal_config: dict, seed: int = 5) -> tuple[str, int]:
    """A delivery order whose first attempt the post applied, then hung past the read timeout on: its number and
    delivery id, the attempt spent (the ledger's mark says "sent")."""
    dossier = dossier_with("postal.delivery_requested", seed=seed)
    request = next(e for e in dossier if e["type"] == "postal.delivery_requested")
    httpx.post(f"{postal_config['postal']}/_admin/faults",
               json={"timeout_rate": 1, "hang_seconds": 3}, timeout=5).raise_for_status()
    ingest(up_to(dossier, request))
    with get_runtime().engine.connect() as conn:
        [delivery_id] = conn.execute(select(deliveries.c.id)).scalars().all()
    assert run_delivery(delivery_id, "postal", clock=lambda: datetime.now(UTC)) == Status.RETRYING
    httpx.delete(f"{postal_config['postal']}/_admin/faults", timeout=5).raise_for_status()
    number = f"{request['dossier_code']}-KQ"
    assert get_mark(get_runtime().engine, "postal", order_mark(number)) == "sent"
    return number, delivery_id


def outcomes() -> list[Any]:
    with get_runtime().engine.connect() as conn:
        return list(conn.execute(select(attempts.c.outcome, attempts.c.response_excerpt, attempts.c.external_ref,
                                        attempts.c.error).order_by(attempts.c.number)).all())


def test_an_order_whose_create_timed_out_after_the_post_took_it_is_settled_by_the_repeat_s_answer(
    postal_config: dict,
) -> None:
    # given the post took the first create and the relay never heard
    number, _ = timed_out_order(postal_config)
    # when the post is well again and the delivery is retried
    drain(later)
    # then the repeat of the number was answered "duplicate": one order, and the delivery done
    held = order(postal_config["postal"], number)
    stats = httpx.get(f"{postal_config['postal']}/_admin/stats", timeout=5).json()
    assert (held["create_calls"], held["StatusCode"]) == (2, 1)
    assert stats["creates"] == {"accepted": 1, "duplicates": 1, "refused": 0, "second_orders": 0}
    assert [o.outcome for o in outcomes()] == ["retryable", "delivered"]
    assert "already held by the post (an earlier attempt landed)" in outcomes()[1].response_excerpt
    assert outcomes()[1].external_ref == number
    assert get_mark(get_runtime().engine, "postal", order_mark(number)) == "taken"


def test_an_ambiguous_order_the_tracking_list_shows_is_not_posted_again(postal_config: dict) -> None:
    # given the post took the first create and the relay never heard
    number, _ = timed_out_order(postal_config, seed=6)
    # when the tracking list is read before the retry
    run_poll(get_runtime().deliverer_of(PostalDeliverer, "postal"))
    drain(later)
    # then the order is settled from the list: no second create at all
    assert order(postal_config["postal"], number)["create_calls"] == 1
    assert "already held by the post (the ledger's mark)" in outcomes()[1].response_excerpt


def test_an_order_whose_first_create_never_arrived_is_created_by_the_repeat(postal_config: dict) -> None:
    # given the first attempt never reached the post (an injected 503 before anything)
    dossier = dossier_with("postal.delivery_requested", seed=7)
    request = next(e for e in dossier if e["type"] == "postal.delivery_requested")
    httpx.post(f"{postal_config['postal']}/_admin/faults", json={"error_rate": 1}, timeout=5).raise_for_status()
    ingest(up_to(dossier, request))
    with get_runtime().engine.connect() as conn:
        [delivery_id] = conn.execute(select(deliveries.c.id)).scalars().all()
    run_delivery(delivery_id, "postal", clock=lambda: datetime.now(UTC))
    httpx.delete(f"{postal_config['postal']}/_admin/faults", timeout=5).raise_for_status()
    # when it is retried
    drain(later)
    # then the repeat created it, once
    held = order(postal_config["postal"], f"{request['dossier_code']}-KQ")
    assert held["create_calls"] == 1 and "order created" in outcomes()[-1].response_excerpt


@pytest.fixture
def waiting_config(db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A relay with ``ambiguous_order = "wait"`` against a gateway that takes a repeated number as a second order."""
    with run_asgi(postal_app(consumer_key=KEY, consumer_secret=SECRET, customer_codes=[CUSTOMER],
                             step_seconds=0, seed=3, repeats="create")) as postal_url:
        routing = routing_file("postal", tmp_path / "routing.toml", {"postal": {
            "timeouts": {"read": 1.0}, "retry": FAST_RETRY, "ambiguous_order": "wait", "ambiguous_wait": "30m"}})
        prefix = f"pw{uuid.uuid4().hex[:6]}"
        env = relay_env(db_url, redis_url, new_secret(), {"onestop": new_secret()}, routing,
                        **postal_addresses(postal_url, "http://127.0.0.1:9"),
                        MOTCUA_POSTAL_CONSUMER_KEY=KEY, MOTCUA_POSTAL_CONSUMER_SECRET=SECRET,
                        MOTCUA_REDIS_PREFIX=prefix)
        become_relay(monkeypatch, env)
        yield {"postal": postal_url, "env": env}
        reset_runtime()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def test_with_ambiguous_order_wait_nothing_is_posted_twice_even_where_the_gateway_would_take_it(
    waiting_config: dict,
) -> None:
    # given a gateway that does not refuse a repeated number, and an attempt that timed out after it took the order
    number, delivery_id = timed_out_order({"postal": waiting_config["postal"]}, seed=8)
    # when the retries come before the tracking list shows the order
    assert run_delivery(delivery_id, "postal", clock=later) == Status.RETRYING
    assert "waiting for the tracking list" in outcomes()[-1].error
    # then nothing was posted again; and once the list shows it, the delivery is done
    run_poll(get_runtime().deliverer_of(PostalDeliverer, "postal"))
    drain(later)
    stats = httpx.get(f"{waiting_config['postal']}/_admin/stats", timeout=5).json()
    assert stats["creates"]["accepted"] == 1 and stats["creates"]["second_orders"] == 0
    assert order(waiting_config["postal"], number)["create_calls"] == 1
    assert outcomes()[-1].outcome == "delivered"


def test_an_address_outside_the_table_is_dead_at_once_with_the_reason(postal_config: dict) -> None:
    dossier = dossier_with("postal.delivery_requested", seed=6)
    request = next(e for e in dossier if e["type"] == "postal.delivery_requested")
    moved = {**request["data"]["address"], "province": "Tỉnh Hoàng Sa Cũ"}
    ingest([*up_to(dossier, request)[:-1], {**request, "data": {**request["data"], "address": moved}}])
    drain(later)
    [dead] = dead_letters(get_runtime().engine, DeadLetterFilter(destination="postal"))
    assert dead.attempts == 1
    assert "province 'Tỉnh Hoàng Sa Cũ' is not in the administrative-unit table" in dead.last_error
    assert moved["street"] not in dead.last_error
    stats = httpx.get(f"{postal_config['postal']}/_admin/stats", timeout=5).json()
    assert not httpx.get(f"{postal_config['postal']}/_admin/orders", timeout=5).json(), stats


def test_withdrawal_cancels_a_waiting_order_and_a_collected_one_is_dead_with_the_reason(
    postal_config: dict,
) -> None:
    # given two dossiers with delivery orders at the post; the postman has taken the second one
    events = generate_day(200, day=DAY, seed=9)
    codes = [e["dossier_code"] for e in events if e["type"] == "postal.delivery_requested"][:2]
    requests = {c: next(e for e in events if e["dossier_code"] == c and e["type"] == "postal.delivery_requested")
                for c in codes}
    ingest([e for r in requests.values() for e in up_to(events, r)])
    drain(later)
    httpx.post(f"{postal_config['postal']}/_admin/advance", json={"OrderNumber": f"{codes[1]}-KQ", "to": 2},
               timeout=5).raise_for_status()
    # when both citizens come to the desk for their results instead
    ingest([{**r, "event_id": f"returned-{uuid.uuid4().hex}", "type": "dossier.returned",
             "sequence": r["sequence"] + 1, "data": {"returned_at": r["occurred_at"], "method": "desk"}}
            for r in requests.values()])
    drain(later)
    # then the waiting order is cancelled, and the collected one is a dead letter that says what to do
    assert order(postal_config["postal"], f"{codes[0]}-KQ")["StatusCode"] == 7
    assert order(postal_config["postal"], f"{codes[1]}-KQ")["StatusCode"] == 2
    [dead] = dead_letters(get_runtime().engine, DeadLetterFilter(destination="postal"))
    assert dead.dossier_code == codes[1] and dead.attempts == 1
    assert "cannot be cancelled" in dead.last_error and "post office" in dead.last_error


def test_a_withdrawal_without_postal_orders_calls_nobody(postal_config: dict) -> None:
    dossier = dossier_with("dossier.withdrawn", seed=4)
    ingest(dossier)
    drain(later)
    rt = get_runtime()
    assert queries.status_counts(rt.engine).get("postal") == {Status.DELIVERED: 1}
    with rt.engine.connect() as conn:
        excerpt = conn.execute(select(attempts.c.response_excerpt)).scalar_one()
    assert excerpt == "no postal order for this dossier"
    assert httpx.get(f"{postal_config['postal']}/_admin/stats", timeout=5).json()["tokens"]["issued"] == 0


def test_statuses_pushed_lost_repeated_and_polled_reach_the_one_stop_software_once(postal_config: dict) -> None:
    # given five delivery orders at the post, which pushes statuses losing and repeating half of them
    events = generate_day(200, day=DAY, seed=12)
    requests = [e for e in events if e["type"] == "postal.delivery_requested"][:5]
    ingest([e for r in requests for e in up_to(events, r)])
    drain(later)
    postal, secret = postal_config["postal"], postal_config["env"]["MOTCUA_POSTAL_CALLBACK_SECRET"]
    httpx.post(f"{postal}/_admin/push", json={"url": f"{postal_config['api']}/v1/callbacks/postal",
                                              "secret": secret}, timeout=5).raise_for_status()
    httpx.post(f"{postal}/_admin/faults", json={"push_loss_rate": 0.5, "push_duplicate_rate": 0.5, "seed": 4},
               timeout=5).raise_for_status()
    # when the orders go all the way to delivered, one status per push, and the poller reads the tracking list
    for status in (2, 3, 8, 4):
        for request in requests:
            httpx.post(f"{postal}/_admin/advance", json={"OrderNumber": f"{request['dossier_code']}-KQ",
                                                         "to": status}, timeout=5).raise_for_status()
    stats = wait_for(lambda: (s := httpx.get(f"{postal}/_admin/stats", timeout=5).json())["pushes"]["pending"] == 0
                     and s, 10, 0.1, "pushes sent")
    assert stats["pushes"]["lost"] > 0 and stats["pushes"]["duplicated"] > 0, stats
    polled = run_poll(get_runtime().deliverer_of(PostalDeliverer, "postal"))
    drain(later)
    # then each status the post recorded (but "waiting") reached the one-stop software exactly once, in order
    recorded = recorded_statuses(httpx.get(f"{postal}/_admin/orders", timeout=5).json())
    got = received_statuses(postal_config["onestop"])
    late = late_statuses(get_runtime().engine)  # found by the poller after a newer one came pushed
    assert sorted(sent_statuses(got) + late) == sorted(recorded)
    assert all(code != "4" for _, code, _ in late)
    assert {e["data"]["status"] for e in got if e["data"]["status_code"] == "4"} == {"delivered"}
    assert sum(1 for e in got if e["data"]["status_code"] == "4") == len(requests)
    assert polled.intake.stored + polled.intake.duplicates + polled.intake.ignored == polled.records
    for code in {e["dossier_code"] for e in got}:
        sequences = [e["sequence"] for e in got if e["dossier_code"] == code]
        assert sequences == sorted(sequences) == list(range(1, len(sequences) + 1)), code


def test_v11_every_status_of_our_orders_is_one_event_and_a_foreign_record_none(postal_config: dict) -> None:
    # given one order of ours moved on, and records of orders that are not ours on the same account's list:
    # another desk's customer code, and our customer code on a number we never made
    events = generate_day(200, day=DAY, seed=13)
    request = next(e for e in events if e["type"] == "postal.delivery_requested")
    ingest(up_to(events, request))
    drain(later)
    postal, number = postal_config["postal"], f"{request['dossier_code']}-KQ"
    for status in (2, 3):
        httpx.post(f"{postal}/_admin/advance", json={"OrderNumber": number, "to": status},
                   timeout=5).raise_for_status()
    httpx.post(f"{postal}/_admin/foreign", json={"OrderNumber": number, "CustomerCode": "HCC-KHAC"},
               timeout=5).raise_for_status()
    httpx.post(f"{postal}/_admin/foreign", json={"OrderNumber": "000.00.99.H49-261120-0009-KQ",
                                                 "CustomerCode": CUSTOMER}, timeout=5).raise_for_status()
    # when the tracking list is read twice
    deliverer = get_runtime().deliverer_of(PostalDeliverer, "postal")
    first, second = run_poll(deliverer), run_poll(deliverer)
    drain(later)
    # then our two statuses are one event each, the foreign records none, and the second read finds nothing new
    assert (first.records, first.intake.stored, first.intake.ignored, len(first.intake.unknown)) == (5, 2, 1, 2)
    assert second.records == 0 and len(second.cursor) == 24
    got = received_statuses(postal_config["onestop"])
    assert sorted((e["data"]["order_number"], e["data"]["status_code"]) for e in got) == [
        (number, "2"), (number, "3")]


def test_the_callback_refuses_what_it_cannot_trust_and_reports_orders_that_are_not_ours(
    postal_config: dict,
) -> None:
    url = f"{postal_config['api']}/v1/callbacks/postal"
    secret = postal_config["env"]["MOTCUA_POSTAL_CALLBACK_SECRET"]
    record = {"_id": {"$oid": "6560a1b2c3d4e5f6a7b8c9d0"}, "CustomerCode": CUSTOMER,
              "OrderNumber": "000.00.99.H49-261120-0001-KQ", "EventTime": 1763607600000, "POSID": "200000",
              "ItemCode": "EB1VN", "StatusCode": 4, "StatusMessage": "Phát thành công", "Notes": None}

    def push(body: dict[str, Any], key: str = secret) -> httpx.Response:
        raw = httpx.Request("POST", url, json=body).content
        headers = sign(key, f"postal-push-{uuid.uuid4()}", raw).as_headers()
        return httpx.post(url, content=raw, headers={**headers, "content-type": "application/json"}, timeout=5)

    good = {"CustomerCode": CUSTOMER, "data": [record]}
    assert push(good, new_secret()).status_code == 401
    assert httpx.post(url, json=good, timeout=5).status_code == 401
    assert push({"CustomerCode": "OTHER", "data": [record]}).json()["Status"] == 403
    invalid = push({"CustomerCode": CUSTOMER, "data": [{"_id": 1}]})
    assert invalid.status_code == 400 and "data.0.OrderNumber" in invalid.json()["fields"]
    old = push({"customerCode": CUSTOMER, "data": [{"id": 1, "orderNumber": "X-KQ", "statusCode": "500"}]})
    assert old.status_code == 400  # the old push's shape
    answer = push(good)
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"Message": ""} == {"Status": 200, "Message": "", "stored": 0, "duplicates": 0,
                                                "late": 0, "ignored": 0, "unknown": [record["OrderNumber"]]}
    with get_runtime().engine.connect() as conn:
        assert conn.execute(select(events.c.id)).first() is None


# ------------------------------------------------------------- a working day through faults


@dataclass
class PostalStack:
    env: dict[str, str]
    postal_url: str
    onestop_url: str
    intake_url: str
    intake_secret: str
    database_url: str

    def counts(self) -> dict[str, dict[str, int]]:
        return queries.status_counts(get_engine(self.database_url))


@pytest.fixture
def postal_stack(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostalStack]:
    database_url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database_url)
    base = redis_url.rsplit("/", 1)[0]
    broker = f"{base}/{os.environ.get('MOTCUA_TEST_POSTAL_REDIS_DB', '9')}"  # its own: the worker takes all in it
    redis.Redis.from_url(broker).flushdb()
    onestop_secret, intake_secret, callback_secret = new_secret(), new_secret(), new_secret()
    postal = postal_app(consumer_key=KEY, consumer_secret=SECRET, customer_codes=[CUSTOMER], step_seconds=0.3,
                        collect_after_seconds=25, fail_rate=0.15, seed=21)
    with run_asgi(postal) as postal_url, run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        routing = postal_routing(tmp_path / "routing.toml")
        env = relay_env(
            database_url, broker, intake_secret, {"onestop": onestop_secret}, routing,
            **postal_addresses(postal_url, onestop_url),
            MOTCUA_POSTAL_CONSUMER_KEY=KEY, MOTCUA_POSTAL_CONSUMER_SECRET=SECRET,
            MOTCUA_POSTAL_CALLBACK_SECRET=callback_secret, MOTCUA_SWEEP_INTERVAL_SECONDS="0.5",
            MOTCUA_POSTAL_POLL_INTERVAL_SECONDS="3", MOTCUA_PORTAL_PULL_INTERVAL_SECONDS="3600",
            MOTCUA_WORKER_CONCURRENCY="48", MOTCUA_REDIS_PREFIX=f"postal{uuid.uuid4().hex[:6]}",
        )
        become_relay(monkeypatch, env)
        worker, beat = worker_and_beat(env, "postal", tmp_path)
        try:
            with run_asgi(create_app()) as api_url:
                httpx.post(f"{postal_url}/_admin/push", json={"url": f"{api_url}/v1/callbacks/postal",
                                                              "secret": callback_secret}, timeout=5)
                yield PostalStack(env, postal_url, onestop_url, f"{api_url}/v1/events", intake_secret, database_url)
        finally:
            worker.close()
            beat.stop()
            reset_runtime()
            redis.Redis.from_url(broker).flushdb()


@pytest.mark.slow
def test_a_postal_day_through_faults_creates_each_order_once_and_brings_each_status_back_once(
    postal_stack: PostalStack,
) -> None:
    # given 300 dossiers involving the post (most results go back by post, a few are collected from home),
    # 10 of them withdrawn right after asking for the post, and 10 citizens who come for their result in person
    plan = postal_day(300, day=DAY, seed=2026)
    events = plan.events
    # and a post that fails 20 % of calls (15 % 503, 5 % answered after a hang past the read timeout),
    # loses 30 % of its pushed statuses, repeats 20 %, and fails 15 % of first delivery attempts
    httpx.post(f"{postal_stack.postal_url}/_admin/faults", timeout=5, json={
        "error_rate": 0.15, "error_status": 503, "timeout_rate": 0.05, "hang_seconds": 3,
        "push_loss_rate": 0.3, "push_duplicate_rate": 0.2, "seed": 11,
    }).raise_for_status()

    # when the one-stop software sends its day
    report = send_events_sync(postal_stack.intake_url, postal_stack.intake_secret, events, batch_size=50)
    assert report.accepted == len(events), report.errors[:3]
    requests = [e for e in events if e["type"] in ("postal.pickup_requested", "postal.delivery_requested")]
    numbers = {f"{e['dossier_code']}-{'TN' if e['type'] == 'postal.pickup_requested' else 'KQ'}" for e in requests}
    cancelled = to_cancel(plan)

    def settled() -> bool:
        orders = httpx.get(f"{postal_stack.postal_url}/_admin/orders", timeout=10).json()
        if {o["OrderNumber"] for o in orders} != numbers or any(o["StatusCode"] not in (4, 6, 7)
                                                               for o in orders):
            return False
        counts = postal_stack.counts()
        return all(s in FINAL_STATUSES for c in counts.values() for s in c)
    wait_for(settled, 420, 2.0, "every order final at the post and every delivery final")
    wait_for(lambda: _statuses_in(postal_stack) >= _recorded(postal_stack), 60, 2.0, "the poller catching up")
    wait_for(lambda: all(s in FINAL_STATUSES for c in postal_stack.counts().values() for s in c), 60, 1.0,
             "every delivery final")

    # then every order was created exactly once, the ones whose create timed out after the post took it
    # included (their repeat was answered "duplicate"), and the withdrawn and in-person ones are cancelled
    orders = {o["OrderNumber"]: o for o in httpx.get(f"{postal_stack.postal_url}/_admin/orders", timeout=10).json()}
    assert set(orders) == numbers
    stats = httpx.get(f"{postal_stack.postal_url}/_admin/stats", timeout=10).json()
    assert stats["creates"]["accepted"] == len(numbers) and stats["creates"]["second_orders"] == 0, stats
    # (a create is repeated only after one of ours that got no answer: the post's injected hangs, or an answer
    # later than our read timeout on a loaded machine)
    timed_out = _timed_out_creates(postal_stack)
    assert stats["creates"]["refused"] == 0 and stats["creates"]["duplicates"] <= len(timed_out), (stats, timed_out)
    assert sum(o["create_calls"] - 1 for o in orders.values()) == stats["creates"]["duplicates"]
    ambiguous = set(timed_out)  # settled by a status of theirs pushed or polled, or by the repeat
    assert ambiguous and ambiguous <= set(orders), ambiguous
    assert {n for n, o in orders.items() if o["StatusCode"] == 7} == cancelled
    # and nothing is dead
    counts = postal_stack.counts()
    assert Status.DEAD not in counts.get("postal", {}) and Status.DEAD not in counts.get("onestop", {}), counts
    # and every status the post recorded (but "waiting") reached the one-stop software exactly once
    got = received_statuses(postal_stack.onestop_url)
    assert max(Counter(sent_statuses(got)).values()) == 1
    late = late_statuses(get_engine(postal_stack.database_url))
    assert sorted(sent_statuses(got) + late) == sorted(recorded_statuses(list(orders.values())))
    delivered = [n for n, o in orders.items() if o["StatusCode"] == 4]
    assert sorted(e["data"]["order_number"] for e in got if e["data"]["status"] == "delivered") == sorted(delivered)
    assert stats["pushes"]["lost"] > 0 and stats["pushes"]["duplicated"] > 0 and stats["faults"]["timeout"] > 0


def _timed_out_creates(stack: PostalStack) -> list[str]:
    """The order of each create attempt that timed out (the post may have taken it), from the ledger."""
    d, e = deliveries.c, events.c
    with get_engine(stack.database_url).connect() as conn:
        rows = conn.execute(select(e.dossier_code, e.type).select_from(attempts).join(deliveries)
                            .join(events, e.id == d.event_pk)
                            .where(d.destination == "postal", e.type.like("postal.%_requested"),
                                   attempts.c.error.like("%timeout%"))).all()
    return [f"{r.dossier_code}-{'TN' if r.type == 'postal.pickup_requested' else 'KQ'}" for r in rows]


def _recorded(stack: PostalStack) -> int:
    orders = httpx.get(f"{stack.postal_url}/_admin/orders", timeout=10).json()
    return sum(1 for o in orders for h in o["history"] if h["StatusCode"] != 1)


def _statuses_in(stack: PostalStack) -> int:
    with get_engine(stack.database_url).connect() as conn:
        return len(conn.execute(select(events.c.id).where(events.c.type == "postal.status")).all())


def test_the_postal_poll_command_reads_the_tracking_list_into_the_ledger(postal_config: dict) -> None:
    if postal_config["env"]["MOTCUA_DATABASE_URL"].startswith("postgresql"):
        pytest.skip("the command's table, once: the poll itself runs on both engines above")
    # given an order at the post that has been collected and is in transit, with no push configured
    day = generate_day(200, day=DAY, seed=14)
    request = next(e for e in day if e["type"] == "postal.delivery_requested")
    ingest(up_to(day, request))
    drain(later)
    for status in (2, 3):
        httpx.post(f"{postal_config['postal']}/_admin/advance", json={"OrderNumber": f"{request['dossier_code']}-KQ",
                                                                       "to": status}, timeout=5).raise_for_status()
    # when the operator polls now
    result = subprocess.run([sys.executable, "-m", "cli.main", "postal", "poll"], capture_output=True, text=True,
                            env={**postal_config["env"], "COLUMNS": "200"}, timeout=60)
    # then the table says what was read and stored, and the ledger holds the statuses
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Tracking list of postal" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.count("│") > 5 and "pages" not in line)
    assert [c.strip() for c in row.split("│")[1:-1]][:7] == ["1", "3", "2", "0", "0", "1", "0"]
    with get_runtime().engine.connect() as conn:
        codes = sorted(json.loads(p)["data"]["status_code"] for p in conn.execute(
            select(events.c.payload).where(events.c.type == "postal.status")).scalars())
    assert codes == ["2", "3"]
