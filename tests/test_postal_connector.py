"""The postal connector: its answer table row by row, and the token's renewal (respx)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.base import AuthExpired, DeliveryError, Permanent, Retryable, build_http_client
from connectors.credentials import TokenCache
from connectors.postal import ANSWERS, PostalConnector, classify_answer
from schemas.postal import ANSWER_CODES, ORDERS_PATH, TOKEN_PATH, TRACKING_PATH, PostalAnswer, PostalOrder

BASE = "http://post.test"
TOKEN = f"{BASE}{TOKEN_PATH}"
ORDERS = f"{BASE}{ORDERS_PATH}"
NUMBER = "000.00.12.H22-261120-0042-KQ"
VIEW = {"orderNumber": NUMBER, "itemCode": "EB000000042VN", "purpose": "delivery", "statusCode": "100"}


def connector() -> PostalConnector:
    return PostalConnector(base_url=BASE, customer_code="HCC-QNI", consumer_key="key",
                           consumer_secret=SecretStr("c0nsumer-s3cret"), client=build_http_client(1.0, 5.0),
                           tokens=TokenCache(None, "t"), credential_name="postal:test")


def order() -> PostalOrder:
    side = {"Name": "Nguyễn Văn An", "Address": "Số 1", "ProvinceCode": "22", "DistrictCode": "193",
            "Tel": "0912345678"}
    return PostalOrder(customerCode="HCC-QNI", orderNumber=NUMBER, purpose="delivery",
                       **{f"sender{k}": v for k, v in side.items()}, **{f"receiver{k}": v for k, v in side.items()})


def token_ok(token: str = "T1") -> httpx.Response:  # noqa: S107
    return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": 3600})


ANSWER_TABLE: list[tuple[Any, type[DeliveryError] | None]] = [
    ("00", None),
    (0, None),
    ("01", AuthExpired),
    ("02", Permanent),
    ("10", Permanent),
    ("11", Permanent),
    ("20", Retryable),
    ("21", Permanent),
    ("22", Permanent),
    ("30", Permanent),
    ("96", Retryable),
    (99, Retryable),
    ("42", Permanent),
    ("LOI", Permanent),
]


@pytest.mark.parametrize(("code", "expected"), ANSWER_TABLE, ids=[repr(c) for c, _ in ANSWER_TABLE])
def test_answer_table_row(code: Any, expected: type[DeliveryError] | None) -> None:
    error = classify_answer("create", PostalAnswer.model_validate({"code": code, "message": "Lý do"}), 200)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        assert error is not None and "Lý do" in error.reason and "create" in error.reason


def test_every_documented_code_is_in_the_table_and_unknown_ones_say_so() -> None:
    assert set(ANSWER_CODES) == set(ANSWERS)
    error = classify_answer("x", PostalAnswer(code="42"), 200)
    assert isinstance(error, Permanent) and "unknown code" in error.reason


@respx.mock
def test_the_token_is_sent_as_bearer_and_reused() -> None:
    tokens = respx.post(TOKEN).mock(return_value=token_ok())
    lookups = respx.get(f"{ORDERS}/{NUMBER}").mock(
        return_value=httpx.Response(200, json={"code": "00", "data": VIEW}))
    conn = connector()
    assert conn.lookup(NUMBER) is not None and conn.lookup(NUMBER) is not None
    assert tokens.call_count == 1 and lookups.call_count == 2
    request = lookups.calls.last.request
    assert request.headers["authorization"] == "Bearer T1" and request.url.params["customerCode"] == "HCC-QNI"
    assert b"c0nsumer-s3cret" in tokens.calls.last.request.content


@respx.mock
def test_lookup_of_an_order_the_post_does_not_have_is_none() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.get(f"{ORDERS}/{NUMBER}").mock(return_value=httpx.Response(404, json={"code": "21", "message": "Không có"}))
    assert connector().lookup(NUMBER) is None


@respx.mock
def test_a_refused_token_is_renewed_once_and_the_call_repeated() -> None:
    tokens = respx.post(TOKEN).mock(side_effect=[token_ok("OLD"), token_ok("NEW")])
    calls = respx.post(ORDERS).mock(side_effect=[
        httpx.Response(401, json={"code": "01", "message": "Token hết hạn"}),
        httpx.Response(200, json={"code": "00", "data": VIEW}),
    ])
    view, created = connector().create(order())
    assert created and view.itemCode == "EB000000042VN"
    assert tokens.call_count == 2 and calls.calls.last.request.headers["authorization"] == "Bearer NEW"


@respx.mock
def test_a_token_refused_twice_in_a_row_is_auth_expired() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.post(ORDERS).mock(return_value=httpx.Response(401, json={"code": "01"}))
    with pytest.raises(AuthExpired):
        connector().create(order())


@respx.mock
def test_an_order_that_exists_already_is_returned_as_not_created() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.post(ORDERS).mock(return_value=httpx.Response(409, json={"code": "20", "message": "Đã tồn tại"}))
    respx.get(f"{ORDERS}/{NUMBER}").mock(return_value=httpx.Response(200, json={"code": "00", "data": VIEW}))
    view, created = connector().create(order())
    assert not created and view.orderNumber == NUMBER


@pytest.mark.parametrize(
    ("answer", "expected", "words"),
    [
        (httpx.Response(401, json={"code": "02", "message": "Sai khóa"}), Permanent, "consumer key and secret"),
        (httpx.Response(200, json={"code": "00"}), Retryable, "no token"),
        (httpx.Response(503), Retryable, "503"),
        (httpx.Response(200, text="<html>gateway</html>"), Retryable, "not JSON"),
    ],
)
@respx.mock
def test_token_failures(answer: httpx.Response, expected: type[DeliveryError], words: str) -> None:
    respx.post(TOKEN).mock(return_value=answer)
    with pytest.raises(expected) as caught:
        connector().lookup(NUMBER)
    assert words in caught.value.reason and "c0nsumer-s3cret" not in caught.value.reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(503, json={"code": "96", "message": "Bận"}), Retryable),
        (httpx.Response(500, json={"code": "99"}), Retryable),
        (httpx.Response(400, json={"code": "10", "message": "Thiếu receiverTel"}), Permanent),
        (httpx.Response(400, json={"code": "11", "message": "Mã tỉnh người nhận"}), Permanent),
        (httpx.Response(403, json={"code": "30"}), Permanent),
        (httpx.Response(502, text="Bad gateway"), Retryable),
        (httpx.Response(429, headers={"Retry-After": "9"}), Retryable),
        (httpx.Response(404), Permanent),
        (httpx.Response(200, json={"code": "00", "data": {"orderNumber": NUMBER}}), Retryable),  # no itemCode
        (httpx.ConnectError("refused"), Retryable),
        (httpx.ReadTimeout("slow"), Retryable),
    ],
)
@respx.mock
def test_create_answers(answer: Any, expected: type[DeliveryError]) -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    route = respx.post(ORDERS)
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    with pytest.raises(expected) as caught:
        connector().create(order())
    if isinstance(answer, httpx.Response) and answer.status_code == 429:
        assert caught.value.retry_after == 9


@respx.mock
def test_cancel_that_is_too_late_is_permanent_with_the_post_s_reason() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.post(f"{ORDERS}/cancel").mock(return_value=httpx.Response(
        409, json={"code": "22", "message": "Đơn hàng đã được bưu tá nhận (200)"}))
    with pytest.raises(Permanent, match="bưu tá"):
        connector().cancel(NUMBER, "Công dân rút hồ sơ")


@respx.mock
def test_tracking_pages_are_read_from_the_cursor() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    route = respx.get(f"{BASE}{TRACKING_PATH}").mock(return_value=httpx.Response(200, json={"code": "00", "data": {
        "items": [{"id": 8, "orderNumber": NUMBER, "statusCode": "200", "statusTime": "2026-11-20T09:00:00+07:00"}],
        "lastId": 8, "hasMore": True}}))
    page = connector().tracking(7, 50)
    assert [r.id for r in page.items] == [8] and page.hasMore and page.lastId == 8
    assert dict(route.calls.last.request.url.params) == {"customerCode": "HCC-QNI", "lastId": "7", "limit": "50"}
