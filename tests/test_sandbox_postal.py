"""The postal service simulator's lifecycle, pushes and faults, served by a real uvicorn on loopback and spoken to
over HTTP (the contract's rules, V1–V12, are ``tests/test_postal_contract.py``)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.postal import item_code
from schemas.postal import TrackingPush
from tests.postal_wire import (
    CUSTOMER,
    DELIVERED_PATH,
    DOSSIER,
    OTHER_CUSTOMER,
    admin_order,
    advance,
    ask_token,
    auth,
    cancel,
    codes,
    create,
    order,
    postal_app,
    stats,
    token,
    tracking,
)
from tests.servers import SignedPushReceiver, run_asgi

PUSH_SECRET = "whsec_" + base64.b64encode(b"postal-push-sandbox-test-secret!").decode()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(postal_app()) as url:
        yield url


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def assert_unique_status_times(history: list[dict[str, Any]]) -> None:
    """What the relay derives event ids from must not repeat within an order, and time must not go back."""
    seconds = [r["EventTime"] // 1000 for r in history]
    assert len({(r["StatusCode"], t) for r, t in zip(history, seconds, strict=True)}) == len(history)
    assert seconds == sorted(seconds)


def test_item_codes_carry_the_s10_check_digit() -> None:
    assert item_code(47312482) == "EB473124829VN"  # the UPU S10 standard's worked example
    assert re.fullmatch(r"EB\d{9}VN", item_code(10_000_001))


def test_cancel_of_a_waiting_order_is_idempotent(client: httpx.Client) -> None:
    access = token(client)
    number = f"{DOSSIER}-TN"
    create(client, access, order(number))
    # when
    first = cancel(client, access, number)
    # then
    assert first["Status"] == 200
    assert [r.StatusCode for r in tracking(client, access).records] == [1, 7]
    # and a second cancel succeeds without a new record
    assert cancel(client, access, number)["Status"] == 200
    assert [r.StatusCode for r in tracking(client, access).records] == [1, 7]
    # and a cancelled order is final
    assert advance(client, steps=3) == {"records": 0}
    assert (admin_order(client, number)["cancel_calls"], admin_order(client, number)["StatusCode"]) == (2, 7)
    assert stats(client)["cancels"] == {"accepted": 1, "repeated": 1, "refused": 0}


def test_cancel_after_collection_is_refused_and_an_unknown_number_is_not_found(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    advance(client, steps=1)
    # when
    refused = cancel(client, access, f"{DOSSIER}-KQ")
    # then
    assert refused["Status"] == 422 and "2 (Đã nhận hàng từ người gửi)" in refused["Message"]
    assert admin_order(client)["StatusCode"] == 2
    assert cancel(client, access, f"{DOSSIER}-KHAC")["Status"] == 404
    assert cancel(client, access, f"{DOSSIER}-KQ", customer="HCC-KHAC")["Status"] == 403


def test_orders_reach_delivered_and_tracking_pages_by_object_id(client: httpx.Client) -> None:
    # given three orders delivered step by step
    access = token(client)
    numbers = [f"{DOSSIER}-KQ{n}" for n in range(3)]
    for number in numbers:
        create(client, access, order(number))
    assert advance(client, steps=4) == {"records": 12}
    assert advance(client, steps=1) == {"records": 0}
    # when paging four records at a time, as OpenCPS does: the next lastId is the last record's _id.$oid
    pages, cursor = [], "0" * 24
    while True:
        page = tracking(client, access, cursor, 4)
        pages.append(page)
        if not page.records:
            break
        cursor = page.records[-1].oid
    # then
    records = [r for page in pages for r in page.records]
    ids = [r.oid for r in records]
    assert ids == sorted(ids) and len(set(ids)) == 15
    assert [p.returned for p in pages] == [4, 4, 4, 3, 0] and {p.size for p in pages} == {15}
    assert pages[-1].embedded is None and pages[0].total_pages == 4
    for number in numbers:
        assert [r.StatusCode for r in records if r.OrderNumber == number] == DELIVERED_PATH
    assert {r.POSID for r in records} == {"200000"}
    assert stats(client)["statuses"] == {"4": 3}
    # and after a reset the ids go on, so a client's cursor still sees every new record
    client.post("/_admin/reset")
    access = token(client)
    create(client, access, order())
    assert [r.StatusCode for r in tracking(client, access, ids[-1]).records] == [1]


def test_failed_deliveries_end_returned_to_sender() -> None:
    app = postal_app(fail_rate=1.0, max_failures=2)
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        access = token(c)
        create(c, access, order())
        # when every delivery fails
        while admin_order(c)["StatusCode"] not in (4, 6):
            advance(c, steps=1)
        # then
        held = admin_order(c)
        assert codes(held["history"]) == [1, 2, 3, 8, 5, 8, 5, 6]
        assert held["failures"] == 2
        assert_unique_status_times(held["history"])
        assert [r.wire() for r in tracking(c, access).records] == held["history"]
        assert advance(c, steps=1) == {"records": 0}


def test_a_forced_failure_goes_out_again(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    advance(client, steps=3)
    # when
    forced = advance(client, OrderNumber=f"{DOSSIER}-KQ", to=5)
    # then
    assert (forced["StatusCode"], forced["failures"]) == (5, 1)
    advance(client, steps=2)
    history = admin_order(client)["history"]
    assert codes(history) == [1, 2, 3, 8, 5, 8, 4]
    assert_unique_status_times(history)
    assert client.post("/_admin/advance", json={"OrderNumber": f"{DOSSIER}-KQ", "to": 45}).status_code == 422
    assert client.post("/_admin/advance", json={"OrderNumber": f"{DOSSIER}-KQ"}).status_code == 422
    assert client.post("/_admin/advance", json={"OrderNumber": "khong-co", "to": 5}).status_code == 404


class Receiver(SignedPushReceiver):
    """The relay's callback for the post's pushes."""

    def __init__(self, status: int = 200) -> None:
        super().__init__("/v1/callbacks/postal", PUSH_SECRET, status)

    def pushes(self) -> list[tuple[str, TrackingPush]]:
        with self.lock:
            return [(msg_id, TrackingPush.model_validate(body)) for msg_id, body, _ in self.received]

    def records(self) -> list[tuple[str, str, int]]:
        return [(p.CustomerCode, r.OrderNumber, r.StatusCode) for _, p in self.pushes() for r in p.data]


def set_push(client: httpx.Client, url: str) -> None:
    response = client.post("/_admin/push", json={"url": f"{url}/v1/callbacks/postal", "secret": PUSH_SECRET})
    assert response.status_code == 200 and PUSH_SECRET not in response.text


def test_records_are_pushed_signed_one_push_per_customer_and_call(client: httpx.Client) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as url:
        # given
        set_push(client, url)
        access = token(client)
        number = f"{DOSSIER}-KQ"
        create(client, access, order())
        create(client, access, order(CustomerCode=OTHER_CUSTOMER))
        wait_for(lambda: stats(client)["pushes"]["sent"] == 2)
        # when one step moves both orders
        advance(client, steps=1)
        # then
        wait_for(lambda: stats(client)["pushes"]["sent"] == 4)
    assert receiver.rejected == 0
    assert sorted(receiver.records()) == [
        (CUSTOMER, number, 1), (CUSTOMER, number, 2), (OTHER_CUSTOMER, number, 1), (OTHER_CUSTOMER, number, 2),
    ]
    assert all(msg_id.startswith("postal-push-") for msg_id, _ in receiver.pushes())
    pushed = [r.wire() for _, p in receiver.pushes() for r in p.data if p.CustomerCode == CUSTOMER]
    assert sorted(pushed, key=lambda r: r["_id"]["$oid"]) == admin_order(client)["history"]
    assert stats(client)["pushes"] == {"sent": 4, "lost": 0, "duplicated": 0, "failed": 0, "pending": 0}


def test_push_configuration_is_validated_and_removable(client: httpx.Client) -> None:
    assert client.post("/_admin/push", json={"url": "ftp://x", "secret": PUSH_SECRET}).status_code == 422
    bad_secret = client.post("/_admin/push", json={"url": "http://x", "secret": "whsec_not base64!"})
    assert bad_secret.status_code == 422 and "not base64" not in bad_secret.text
    receiver = Receiver(status=500)
    with run_asgi(receiver.app) as url:
        set_push(client, url)
        create(client, token(client), order())
        wait_for(lambda: stats(client)["pushes"]["failed"] == 1)
    client.delete("/_admin/push")
    advance(client, steps=1)
    assert stats(client)["pushes"] == {"sent": 0, "lost": 0, "duplicated": 0, "failed": 1, "pending": 0}


def test_lost_and_duplicated_pushes_are_counted(client: httpx.Client) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as url:
        set_push(client, url)
        access = token(client)
        client.post("/_admin/faults", json={"push_loss_rate": 1})
        # when one push is lost, then one repeated
        create(client, access, order(f"{DOSSIER}-MAT"))
        assert stats(client)["pushes"]["lost"] == 1
        client.post("/_admin/faults", json={"push_duplicate_rate": 1})
        create(client, access, order())
        wait_for(lambda: stats(client)["pushes"]["sent"] == 2)
    # then the lost one is on the tracking list only, the repeated one arrived twice with one id
    assert receiver.records() == [(CUSTOMER, f"{DOSSIER}-KQ", 1)] * 2
    (first_id, first), (second_id, second) = receiver.pushes()
    assert first_id == second_id and first == second
    assert [r.OrderNumber for r in tracking(client, token(client)).records] == [f"{DOSSIER}-MAT", f"{DOSSIER}-KQ"]


def test_delayed_pushes_do_not_hold_the_answer(client: httpx.Client) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as url:
        set_push(client, url)
        access = token(client)
        client.post("/_admin/faults", json={"push_delay_ms": 600})
        # when
        started = time.perf_counter()
        created = create(client, access, order())
        # then
        assert created["Status"] == 200 and time.perf_counter() - started < 0.4
        assert receiver.received == []
        wait_for(lambda: len(receiver.received) == 1)
    assert time.perf_counter() - started >= 0.6


def test_the_ticker_moves_orders_and_pushes_by_itself() -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as push_url, run_asgi(postal_app(step_seconds=0.02)) as url, \
            httpx.Client(base_url=url, timeout=5) as c:
        set_push(c, push_url)
        access = token(c)
        numbers = [f"{DOSSIER}-KQ{n}" for n in range(4)]
        # when
        for number in numbers:
            create(c, access, order(number))
        # then
        wait_for(lambda: stats(c)["statuses"] == {"4": 4})
        wait_for(lambda: len(receiver.records()) == 20)
        for number in numbers:
            history = admin_order(c, number)["history"]
            assert codes(history) == DELIVERED_PATH
            assert_unique_status_times(history)
    assert sorted(receiver.records()) == sorted((CUSTOMER, n, code) for n in numbers for code in DELIVERED_PATH)


def test_busy_rate_answers_status_503_before_anything(client: httpx.Client) -> None:
    access = token(client)
    client.post("/_admin/faults", json={"busy_rate": 1})
    # when
    answer = create(client, access, order())
    # then
    assert answer["Status"] == 503
    token(client)
    client.delete("/_admin/faults")
    assert client.get("/_admin/orders").json() == []
    assert stats(client)["faults"]["busy"] == 1


def test_error_rate_answers_http_error_on_the_token_too(client: httpx.Client) -> None:
    access = token(client)
    client.post("/_admin/faults", json={"error_rate": 1, "error_status": 502})
    assert ask_token(client).status_code == 502
    assert client.post("/apiVNPostNGSP/p1.0/order/post", json=order(), headers=auth(access)).status_code == 502
    client.delete("/_admin/faults")
    assert client.get("/_admin/orders").json() == []
    assert stats(client)["faults"]["error"] == 2


def test_timeout_rate_applies_the_create_then_answers_late(client: httpx.Client) -> None:
    # given
    access = token(client)
    client.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 0.6})
    # when the client gives up before the answer
    with pytest.raises(httpx.ReadTimeout):
        client.post("/apiVNPostNGSP/p1.0/order/post", json=order(), headers=auth(access), timeout=0.2)
    # then the order exists all the same
    assert admin_order(client)["StatusCode"] == 1
    # and a patient repeat of the number is answered a duplicate, after the hang
    started = time.perf_counter()
    retry = client.post("/apiVNPostNGSP/p1.0/order/post", json=order(), headers=auth(access), timeout=5).json()
    assert time.perf_counter() - started >= 0.5
    assert retry["Status"] == 409
    assert admin_order(client)["create_calls"] == 2
    assert stats(client)["faults"]["timeout"] == 2


def test_expire_rate_drops_the_token(client: httpx.Client) -> None:
    access = token(client)
    client.post("/_admin/faults", json={"expire_rate": 1})
    path = "/apiVNPostNGSP/p1.0/order/post"
    assert client.post(path, json=order(), headers=auth(access)).status_code == 401
    client.delete("/_admin/faults")
    assert client.post(path, json=order(), headers=auth(access)).status_code == 401
    assert create(client, token(client), order())["Status"] == 200
    assert stats(client)["faults"]["expire"] == 1


def test_faults_are_validated_and_reset(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"push_loss_rate": 2}).status_code == 422
    assert client.post("/_admin/faults", json={"drop_rate": 1}).status_code == 422
    client.post("/_admin/faults", json={"push_duplicate_rate": 0.5, "seed": 3})
    assert client.get("/_admin/faults").json()["push_duplicate_rate"] == 0.5
    client.post("/_admin/reset")
    assert client.get("/_admin/faults").json() is None
