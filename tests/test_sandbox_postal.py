"""The postal service simulator, served by a real uvicorn on loopback and spoken to over HTTP."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.postal import create_app, item_code
from schemas.postal import (
    CANCEL_PATH,
    ORDERS_PATH,
    TOKEN_PATH,
    TRACKING_PATH,
    OrderView,
    PostalAnswer,
    TokenAnswer,
    TrackingPage,
    TrackingPush,
)
from tests.servers import SignedPushReceiver, run_asgi

KEY, SECRET = "motcua-halong", "consumer-secret-thu-nghiem"
CUSTOMER, OTHER_CUSTOMER = "HCC-HALONG", "HCC-UONGBI"
SERVED = ("01", "22", "79")
TOKEN, ORDERS, CANCEL, TRACKING = TOKEN_PATH, ORDERS_PATH, CANCEL_PATH, TRACKING_PATH
PUSH_SECRET = "whsec_" + base64.b64encode(b"postal-push-sandbox-test-secret!").decode()
CITIZEN, PHONE = "Nguyễn Thị Hương Giang", "0912 345 678"
DOSSIER = "000.00.12.H22-240315-0001"
DELIVERED_PATH = ["100", "200", "300", "400", "500"]


def postal_app(**overrides: Any) -> FastAPI:
    settings: dict[str, Any] = {
        "consumer_key": KEY, "consumer_secret": SECRET, "customer_codes": {CUSTOMER, OTHER_CUSTOMER},
        "step_seconds": 0, "province_codes": SERVED, "seed": 7,
    }
    return create_app(**(settings | overrides))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(postal_app()) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


def token(client: httpx.Client) -> str:
    response = client.post(TOKEN, json={"consumerKey": KEY, "consumerSecret": SECRET})
    assert response.status_code == 200, response.text
    return TokenAnswer.model_validate(response.json()).access_token


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def order(number: str = f"{DOSSIER}-KQ", **overrides: Any) -> dict[str, Any]:
    base = {
        "customerCode": CUSTOMER, "orderNumber": number, "purpose": "delivery",
        "senderName": "UBND thành phố Hạ Long", "senderAddress": "Số 1 Đường 25/4, phường Hồng Gai",
        "senderProvinceCode": "22", "senderDistrictCode": "193", "senderTel": "02033825678",
        "receiverName": CITIZEN, "receiverAddress": "Tổ 5, khu 3, phường Bãi Cháy", "receiverProvinceCode": "22",
        "receiverDistrictCode": "193", "receiverTel": PHONE, "codAmount": 50000, "description": "Kết quả TTHC",
    }
    return {**base, **overrides}


def answer(response: httpx.Response) -> PostalAnswer:
    return PostalAnswer.model_validate(response.json())


def create(client: httpx.Client, access_token: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(ORDERS, json=body, headers=bearer(access_token))


def cancel(client: httpx.Client, access_token: str, number: str, customer: str = CUSTOMER) -> httpx.Response:
    body = {"customerCode": customer, "orderNumber": number, "reason": "Công dân đến nhận trực tiếp"}
    return client.post(CANCEL, json=body, headers=bearer(access_token))


def tracking(client: httpx.Client, access_token: str, customer: str = CUSTOMER, **params: int) -> TrackingPage:
    response = client.get(TRACKING, params={"customerCode": customer, **params}, headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return TrackingPage.model_validate(answer(response).data)


def advance(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/_admin/advance", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def admin_order(client: httpx.Client, number: str = f"{DOSSIER}-KQ") -> dict[str, Any]:
    response = client.get(f"/_admin/orders/{number}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def codes(history: list[dict[str, Any]]) -> list[str]:
    return [r["statusCode"] for r in history]


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_admin/stats").json())


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def assert_unique_status_times(history: list[dict[str, Any]]) -> None:
    """What the relay derives event ids from must not repeat within an order, and time must not go back."""
    times = [datetime.fromisoformat(r["statusTime"]) for r in history]
    assert len({(r["statusCode"], t) for r, t in zip(history, times, strict=True)}) == len(history)
    assert times == sorted(times)


def test_item_codes_carry_the_s10_check_digit() -> None:
    assert item_code(47312482) == "EB473124829VN"  # the UPU S10 standard's worked example
    assert re.fullmatch(r"EB\d{9}VN", item_code(10_000_001))


def test_token_is_issued_and_refused(client: httpx.Client) -> None:
    # when
    first, second = token(client), token(client)
    wrong_secret = client.post(TOKEN, json={"consumerKey": KEY, "consumerSecret": "sai"})
    wrong_key = client.post(TOKEN, json={"consumerKey": "khac", "consumerSecret": SECRET})
    incomplete = client.post(TOKEN, json={"consumerKey": KEY})
    # then
    assert first != second
    assert (wrong_secret.status_code, answer(wrong_secret).code) == (401, "02")
    assert (wrong_key.status_code, answer(wrong_key).code) == (401, "02")
    assert (incomplete.status_code, answer(incomplete).code) == (400, "10")
    assert "consumerSecret" in answer(incomplete).message
    assert stats(client)["tokens"] == {"issued": 2, "refused": 2, "expired": 0}


@pytest.mark.parametrize("headers", [{}, bearer("khong-co"), {"Authorization": f"Basic {KEY}"}])
def test_calls_without_a_live_token_answer_01(client: httpx.Client, headers: dict[str, str]) -> None:
    response = client.post(ORDERS, json=order(), headers=headers)
    assert (response.status_code, answer(response).code) == (401, "01")
    assert client.get("/_admin/orders").json() == []


def test_expired_token_answers_01() -> None:
    with run_asgi(postal_app(token_ttl_seconds=0.5)) as url, httpx.Client(base_url=url, timeout=5) as c:
        issued = c.post(TOKEN, json={"consumerKey": KEY, "consumerSecret": SECRET}).json()
        assert issued["expires_in"] == 1
        assert tracking(c, issued["access_token"]).items == []
        time.sleep(0.6)
        response = c.get(TRACKING, params={"customerCode": CUSTOMER}, headers=bearer(issued["access_token"]))
        assert (response.status_code, answer(response).code) == (401, "01")
        assert stats(c)["tokens"]["expired"] == 1


def test_create_lookup_and_tracking_show_the_waiting_order(client: httpx.Client) -> None:
    access = token(client)
    # when
    created = create(client, access, order())
    # then
    assert (created.status_code, answer(created).code) == (200, "00")
    view = OrderView.model_validate(answer(created).data)
    assert (view.orderNumber, view.statusCode, view.codAmount) == (f"{DOSSIER}-KQ", "100", 50000)
    assert re.fullmatch(r"EB\d{9}VN", view.itemCode)
    found = client.get(f"{ORDERS}/{DOSSIER}-KQ", params={"customerCode": CUSTOMER}, headers=bearer(access))
    assert answer(found).data == answer(created).data
    page = tracking(client, access)
    assert [(r.orderNumber, r.itemCode, r.statusCode) for r in page.items] == [(view.orderNumber, view.itemCode, "100")]
    record = page.items[0]
    assert record.statusMessage == "Chờ bưu tá đến lấy" and record.location == "Bưu cục Quảng Ninh"
    assert record.statusTime.utcoffset() == timedelta(hours=7)
    assert (page.lastId, page.hasMore) == (record.id, False)
    # and the order is the customer's own
    assert tracking(client, access, customer=OTHER_CUSTOMER).items == []
    elsewhere = client.get(f"{ORDERS}/{DOSSIER}-KQ", params={"customerCode": OTHER_CUSTOMER}, headers=bearer(access))
    assert (elsewhere.status_code, answer(elsewhere).code) == (404, "21")
    refused = client.get(TRACKING, params={"customerCode": "HCC-KHAC"}, headers=bearer(access))
    assert (refused.status_code, answer(refused).code) == (403, "30")
    no_customer = client.get(f"{ORDERS}/{DOSSIER}-KQ", headers=bearer(access))
    assert (no_customer.status_code, answer(no_customer).code) == (400, "10")


def test_duplicate_create_answers_20_with_the_existing_order(client: httpx.Client) -> None:
    access = token(client)
    first = create(client, access, order())
    # when the relay retries with the same order number
    again = create(client, access, order(codAmount=0))
    # then
    assert (again.status_code, answer(again).code) == (409, "20")
    assert answer(again).data == answer(first).data
    assert admin_order(client)["create_calls"] == 2
    assert len(tracking(client, access).items) == 1
    # an order number belongs to its customer
    assert answer(create(client, access, order(customerCode=OTHER_CUSTOMER))).code == "00"
    assert stats(client)["creates"] == {"accepted": 2, "conflicts": 1}
    refused = create(client, access, order(customerCode="HCC-KHAC"))
    assert (refused.status_code, answer(refused).code) == (403, "30")


def test_invalid_order_names_the_fields_never_their_values(client: httpx.Client) -> None:
    access = token(client)
    body = order(receiverTel=f"{PHONE} / {PHONE} / {PHONE}", weight=0)
    del body["senderName"]
    # when
    response = create(client, access, body)
    # then
    assert (response.status_code, answer(response).code) == (400, "10")
    message = answer(response).message
    assert all(name in message for name in ("senderName", "receiverTel", "weight"))
    assert PHONE not in response.text and CITIZEN not in response.text
    not_json = client.post(ORDERS, content=b"{not json", headers=bearer(access))
    assert answer(not_json).code == "10"
    assert client.get("/_admin/orders").json() == []


@pytest.mark.parametrize(
    ("change", "side"),
    [
        ({"senderProvinceCode": "36"}, "người gửi"),
        ({"receiverProvinceCode": "2A"}, "người nhận"),
        ({"receiverProvinceCode": "022"}, "người nhận"),
        ({"receiverDistrictCode": "19"}, "người nhận"),
    ],
)
def test_address_not_served_answers_11_naming_the_side(client: httpx.Client, change: dict[str, str], side: str) -> None:
    response = create(client, token(client), order(**change))
    assert (response.status_code, answer(response).code) == (400, "11")
    assert side in answer(response).message and next(iter(change)) in answer(response).message
    assert client.get("/_admin/orders").json() == []


def test_cancel_of_a_waiting_order_is_idempotent(client: httpx.Client) -> None:
    access = token(client)
    number = f"{DOSSIER}-NHAN"
    create(client, access, order(number, purpose="pickup"))
    # when
    first = cancel(client, access, number)
    # then
    assert answer(first).code == "00" and answer(first).data["statusCode"] == "700"
    assert [r.statusCode for r in tracking(client, access).items] == ["100", "700"]
    # and a second cancel succeeds without a new record
    again = cancel(client, access, number)
    assert (again.status_code, answer(again).code, answer(again).data["statusCode"]) == (200, "00", "700")
    assert [r.statusCode for r in tracking(client, access).items] == ["100", "700"]
    # and a cancelled order is final
    assert advance(client, steps=3) == {"records": 0}
    assert (admin_order(client, number)["cancel_calls"], admin_order(client, number)["statusCode"]) == (2, "700")
    assert stats(client)["cancels"] == {"accepted": 1, "repeated": 1, "refused": 0}


def test_cancel_after_collection_answers_22(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    advance(client, steps=1)
    # when
    response = cancel(client, access, f"{DOSSIER}-KQ")
    # then
    assert (response.status_code, answer(response).code) == (409, "22")
    assert "200" in answer(response).message
    assert admin_order(client)["statusCode"] == "200"
    unknown = cancel(client, access, f"{DOSSIER}-KHAC")
    assert (unknown.status_code, answer(unknown).code) == (404, "21")


def test_orders_reach_delivered_and_tracking_pages_by_cursor(client: httpx.Client) -> None:
    # given three orders delivered step by step
    access = token(client)
    numbers = [f"{DOSSIER}-KQ{n}" for n in range(3)]
    for number in numbers:
        create(client, access, order(number))
    assert advance(client, steps=4) == {"records": 12}
    assert advance(client, steps=1) == {"records": 0}
    # when paging four records at a time
    pages, cursor = [], 0
    while True:
        page = tracking(client, access, lastId=cursor, limit=4)
        pages.append(page)
        if not page.hasMore:
            break
        cursor = page.lastId
    # then
    records = [r for page in pages for r in page.items]
    ids = [r.id for r in records]
    assert ids == list(range(ids[0], ids[0] + 15))
    assert [len(p.items) for p in pages] == [4, 4, 4, 3]
    assert all(p.lastId == p.items[-1].id for p in pages)
    for number in numbers:
        assert [r.statusCode for r in records if r.orderNumber == number] == DELIVERED_PATH
        assert answer(client.get(f"{ORDERS}/{number}", params={"customerCode": CUSTOMER},
                                 headers=bearer(access))).data["statusCode"] == "500"
    assert {r.location for r in records if r.statusCode in ("400", "500")} == {"Bưu cục phát Quảng Ninh"}
    after = tracking(client, access, lastId=ids[-1])
    assert (after.items, after.lastId, after.hasMore) == ([], ids[-1], False)
    assert stats(client)["statuses"] == {"500": 3}
    for wrong in ({"limit": 0}, {"limit": 501}, {"lastId": -1}):
        response = client.get(TRACKING, params={"customerCode": CUSTOMER, **wrong}, headers=bearer(access))
        assert (response.status_code, answer(response).code) == (400, "10")
    # and after a reset the ids go on, so a client's cursor still sees every new record
    client.post("/_admin/reset")
    access = token(client)
    create(client, access, order())
    assert [r.id for r in tracking(client, access, lastId=ids[-1]).items] == [ids[-1] + 1]


def test_failed_deliveries_end_returned_to_sender() -> None:
    app = postal_app(fail_rate=1.0, max_failures=2)
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        access = token(c)
        create(c, access, order())
        # when every delivery fails
        while admin_order(c)["statusCode"] not in ("500", "600"):
            advance(c, steps=1)
        # then
        held = admin_order(c)
        assert codes(held["history"]) == ["100", "200", "300", "400", "550", "400", "550", "600"]
        assert held["failures"] == 2
        assert_unique_status_times(held["history"])
        assert [r.model_dump(mode="json") for r in tracking(c, access).items] == held["history"]
        assert advance(c, steps=1) == {"records": 0}


def test_a_forced_failure_goes_out_again(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    advance(client, steps=3)
    # when
    forced = advance(client, orderNumber=f"{DOSSIER}-KQ", to="550")
    # then
    assert (forced["statusCode"], forced["failures"]) == ("550", 1)
    advance(client, steps=2)
    history = admin_order(client)["history"]
    assert codes(history) == ["100", "200", "300", "400", "550", "400", "500"]
    assert_unique_status_times(history)
    assert client.post("/_admin/advance", json={"orderNumber": f"{DOSSIER}-KQ", "to": "450"}).status_code == 422
    assert client.post("/_admin/advance", json={"orderNumber": f"{DOSSIER}-KQ"}).status_code == 422
    assert client.post("/_admin/advance", json={"orderNumber": "khong-co", "to": "550"}).status_code == 404


class Receiver(SignedPushReceiver):
    """The relay's callback for the post's pushes."""

    def __init__(self, status: int = 200) -> None:
        super().__init__("/v1/callbacks/postal", PUSH_SECRET, status)

    def pushes(self) -> list[tuple[str, TrackingPush]]:
        with self.lock:
            return [(msg_id, TrackingPush.model_validate(body)) for msg_id, body, _ in self.received]

    def records(self) -> list[tuple[str, str, str]]:
        return [(p.customerCode, r.orderNumber, r.statusCode) for _, p in self.pushes() for r in p.data]


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
        create(client, access, order(customerCode=OTHER_CUSTOMER))
        wait_for(lambda: stats(client)["pushes"]["sent"] == 2)
        # when one step moves both orders
        advance(client, steps=1)
        # then
        wait_for(lambda: stats(client)["pushes"]["sent"] == 4)
    assert receiver.rejected == 0
    assert sorted(receiver.records()) == [
        (CUSTOMER, number, "100"), (CUSTOMER, number, "200"),
        (OTHER_CUSTOMER, number, "100"), (OTHER_CUSTOMER, number, "200"),
    ]
    assert all(msg_id.startswith("postal-push-") for msg_id, _ in receiver.pushes())
    pushed = [r.model_dump(mode="json") for _, p in receiver.pushes() for r in p.data if p.customerCode == CUSTOMER]
    assert sorted(pushed, key=lambda r: r["id"]) == admin_order(client)["history"]
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


def test_lost_pushes_are_counted_and_never_sent(client: httpx.Client) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as url:
        set_push(client, url)
        access = token(client)
        client.post("/_admin/faults", json={"push_loss_rate": 1})
        # when
        create(client, access, order(f"{DOSSIER}-MAT"))
        # then
        assert stats(client)["pushes"]["lost"] == 1
        client.delete("/_admin/faults")
        create(client, access, order())
        wait_for(lambda: stats(client)["pushes"]["sent"] == 1)
    assert receiver.records() == [(CUSTOMER, f"{DOSSIER}-KQ", "100")]
    assert [r.orderNumber for r in tracking(client, token(client)).items] == [f"{DOSSIER}-MAT", f"{DOSSIER}-KQ"]


def test_duplicated_pushes_arrive_twice(client: httpx.Client) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as url:
        set_push(client, url)
        client.post("/_admin/faults", json={"push_duplicate_rate": 1})
        # when
        create(client, token(client), order())
        # then
        wait_for(lambda: stats(client)["pushes"]["sent"] == 2)
    (first_id, first), (second_id, second) = receiver.pushes()
    assert first_id == second_id and first == second
    assert stats(client)["pushes"] == {"sent": 2, "lost": 0, "duplicated": 1, "failed": 0, "pending": 0}


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
        assert answer(created).code == "00" and time.perf_counter() - started < 0.4
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
        wait_for(lambda: stats(c)["statuses"] == {"500": 4})
        wait_for(lambda: len(receiver.records()) == 20)
        for number in numbers:
            history = admin_order(c, number)["history"]
            assert codes(history) == DELIVERED_PATH
            assert_unique_status_times(history)
    assert sorted(receiver.records()) == sorted((CUSTOMER, n, code) for n in numbers for code in DELIVERED_PATH)


def test_busy_rate_answers_96_before_anything(client: httpx.Client) -> None:
    access = token(client)
    client.post("/_admin/faults", json={"busy_rate": 1})
    # when
    response = create(client, access, order())
    # then
    assert (response.status_code, answer(response).code) == (503, "96")
    token(client)
    client.delete("/_admin/faults")
    assert client.get("/_admin/orders").json() == []
    assert stats(client)["faults"]["busy"] == 1


def test_error_rate_answers_http_error_on_the_token_too(client: httpx.Client) -> None:
    access = token(client)
    client.post("/_admin/faults", json={"error_rate": 1, "error_status": 502})
    assert client.post(TOKEN, json={"consumerKey": KEY, "consumerSecret": SECRET}).status_code == 502
    assert create(client, access, order()).status_code == 502
    client.delete("/_admin/faults")
    assert client.get("/_admin/orders").json() == []
    assert stats(client)["faults"]["error"] == 2


def test_timeout_rate_applies_the_create_then_answers_late(client: httpx.Client) -> None:
    # given
    access = token(client)
    client.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 0.6})
    # when the client gives up before the answer
    with pytest.raises(httpx.ReadTimeout):
        client.post(ORDERS, json=order(), headers=bearer(access), timeout=0.2)
    # then the order exists all the same
    assert admin_order(client)["statusCode"] == "100"
    # and a patient retry learns it exists, after the hang
    started = time.perf_counter()
    retry = client.post(ORDERS, json=order(), headers=bearer(access), timeout=5)
    assert time.perf_counter() - started >= 0.5
    assert answer(retry).code == "20"
    assert admin_order(client)["create_calls"] == 2
    assert stats(client)["faults"]["timeout"] == 2


def test_expire_rate_drops_the_token(client: httpx.Client) -> None:
    access = token(client)
    client.post("/_admin/faults", json={"expire_rate": 1})
    assert answer(create(client, access, order())).code == "01"
    client.delete("/_admin/faults")
    assert answer(create(client, access, order())).code == "01"
    assert answer(create(client, token(client), order())).code == "00"
    assert stats(client)["faults"]["expire"] == 1


def test_faults_are_validated_and_reset(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"push_loss_rate": 2}).status_code == 422
    assert client.post("/_admin/faults", json={"drop_rate": 1}).status_code == 422
    client.post("/_admin/faults", json={"push_duplicate_rate": 0.5, "seed": 3})
    assert client.get("/_admin/faults").json()["push_duplicate_rate"] == 0.5
    client.post("/_admin/reset")
    assert client.get("/_admin/faults").json() is None
