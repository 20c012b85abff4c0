"""The postal connector: its answer table row by row, the OAuth2 token and its renewal (respx, one connector)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.base import AuthExpired, DeliveryError, Permanent, Retryable, build_http_client
from connectors.credentials import TokenCache
from connectors.postal import ANSWERS, PostalConnector, classify
from schemas.postal import (
    CANCEL_PATH,
    DEFAULT_ANSWERS,
    ORDER_PATH,
    TOKEN_PATH,
    TRACKING_PATH,
    Meaning,
    PostalOrder,
    PostalResult,
)

BASE = "http://post.test"
TOKEN = f"{BASE}{TOKEN_PATH}"
ORDERS = f"{BASE}{ORDER_PATH}"
NUMBER = "000.21.00.H49-261120-0042-KQ"


def connector(answers: dict[int, Meaning] | None = None) -> PostalConnector:
    return PostalConnector(token_url=TOKEN, order_url=ORDERS, cancel_url=f"{BASE}{CANCEL_PATH}",
                           tracking_url=f"{BASE}{TRACKING_PATH}", customer_code="HCC-QNI", consumer_key="key",
                           consumer_secret=SecretStr("c0nsumer-s3cret"), client=build_http_client(1.0, 5.0),
                           tokens=TokenCache(None, "t"), credential_name="postal:test",
                           answers=answers or DEFAULT_ANSWERS)


def order() -> PostalOrder:
    side = {"Name": "Nguyễn Văn An", "Address": "Số 1, Phường Hồng Gai, Quảng Ninh", "Province": 22,
            "Tel": "0912345678"}
    return PostalOrder(CustomerCode="HCC-QNI", OrderNumber=NUMBER, CODAmount=50000.0,
                       **{f"Sender{k}": v for k, v in side.items()}, **{f"Receiver{k}": v for k, v in side.items()})


def token_ok(token: str = "T1") -> httpx.Response:  # noqa: S107
    return httpx.Response(200, json={"access_token": token, "scope": "default", "token_type": "Bearer",
                                     "expires_in": 3600})


def mresult(status: int, message: str = "Lý do") -> httpx.Response:
    return httpx.Response(200, json={"Status": status, "Message": message})


ANSWER_TABLE: list[tuple[Any, str | type[DeliveryError]]] = [
    (200, "done"),
    ("200", "done"),
    (409, "duplicate"),
    (404, "not_found"),
    (400, Permanent),
    (403, Permanent),
    (422, Permanent),
    (500, Retryable),
    (503, Retryable),
    (418, Permanent),  # a Status the table does not know
    (0, Permanent),
]


@pytest.mark.parametrize(("status", "expected"), ANSWER_TABLE, ids=[repr(c) for c, _ in ANSWER_TABLE])
def test_answer_table_row(status: Any, expected: str | type[DeliveryError]) -> None:
    result = PostalResult.model_validate({"Status": status, "Message": "Lý do"})
    if isinstance(expected, str):
        assert classify("create", result, 200).meaning == expected
    else:
        with pytest.raises(expected) as caught:
            classify("create", result, 200)
        assert "Lý do" in caught.value.reason and "create" in caught.value.reason


def test_every_meaning_has_a_class_and_unknown_statuses_say_so() -> None:
    assert set(ANSWERS) == set(DEFAULT_ANSWERS.values())
    with pytest.raises(Permanent, match="not in the destination's answers"):
        classify("x", PostalResult(Status=418), 200)
    with pytest.raises(Permanent, match="post office"):
        classify("cancel", PostalResult(Status=422), 200)


def test_a_province_s_own_statuses_are_configuration() -> None:
    assert classify("create", PostalResult(Status=2), 200, {**DEFAULT_ANSWERS, 2: "duplicate"}).meaning == "duplicate"


@respx.mock
def test_the_token_is_basic_with_a_client_credentials_form_and_reused() -> None:
    tokens = respx.post(TOKEN).mock(return_value=token_ok())
    creates = respx.post(ORDERS).mock(return_value=mresult(200, "Thành công"))
    conn = connector()
    assert conn.create(order()).meaning == "done" and conn.create(order()).meaning == "done"
    assert tokens.call_count == 1 and creates.call_count == 2
    asked = tokens.calls.last.request
    assert asked.headers["authorization"] == "Basic " + base64.b64encode(b"key:c0nsumer-s3cret").decode()
    assert asked.headers["content-type"] == "application/x-www-form-urlencoded"
    assert asked.content == b"grant_type=client_credentials"
    sent = creates.calls.last.request
    assert sent.headers["authorization"] == "Bearer T1" and sent.headers["content-type"] == "application/json"


@respx.mock
def test_a_refused_token_is_renewed_once_and_the_call_repeated() -> None:
    tokens = respx.post(TOKEN).mock(side_effect=[token_ok("OLD"), token_ok("NEW")])
    calls = respx.post(ORDERS).mock(side_effect=[
        httpx.Response(401, json={"fault": {"code": 900901, "message": "Invalid Credentials"}}),
        mresult(200, "Thành công"),
    ])
    assert connector().create(order()).meaning == "done"
    assert tokens.call_count == 2 and calls.calls.last.request.headers["authorization"] == "Bearer NEW"


@respx.mock
def test_a_token_refused_twice_in_a_row_is_auth_expired() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.post(ORDERS).mock(return_value=httpx.Response(401, json={"fault": {"code": 900901}}))
    with pytest.raises(AuthExpired):
        connector().create(order())


@pytest.mark.parametrize(
    ("answer", "expected", "words"),
    [
        (httpx.Response(401, json={"error": "invalid_client", "error_description": "Client Authentication failed."}),
         Permanent, "invalid_client"),
        (httpx.Response(400, json={"error": "unsupported_grant_type"}), Permanent, "unsupported_grant_type"),
        (httpx.Response(200, json={"token_type": "Bearer"}), Retryable, "no token"),
        (httpx.Response(503), Retryable, "503"),
        (httpx.Response(200, text="<html>gateway</html>"), Retryable, "no token"),
    ],
)
@respx.mock
def test_token_failures(answer: httpx.Response, expected: type[DeliveryError], words: str) -> None:
    respx.post(TOKEN).mock(return_value=answer)
    with pytest.raises(expected) as caught:
        connector().create(order())
    assert words in caught.value.reason and "c0nsumer-s3cret" not in caught.value.reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (mresult(503, "Bận"), Retryable),
        (mresult(500), Retryable),
        (mresult(400, "Thiếu trường ReceiverTel"), Permanent),
        (httpx.Response(502, text="Bad gateway"), Retryable),
        (httpx.Response(429, headers={"Retry-After": "9"}), Retryable),
        (httpx.Response(404), Permanent),
        (httpx.Response(200, json={"code": "00"}), Retryable),  # not MResult
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
def test_cancel_is_a_get_with_exactly_the_customer_and_the_number() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    route = respx.get(f"{BASE}{CANCEL_PATH}").mock(return_value=mresult(200, "Thành công"))
    assert connector().cancel(NUMBER).meaning == "done"
    assert dict(route.calls.last.request.url.params) == {"CustomerCode": "HCC-QNI", "OrderNumber": NUMBER}


@respx.mock
def test_a_cancel_that_is_too_late_is_permanent_with_the_post_s_reason() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.get(f"{BASE}{CANCEL_PATH}").mock(return_value=mresult(422, "Đơn hàng đã được bưu tá nhận"))
    with pytest.raises(Permanent, match="bưu tá"):
        connector().cancel(NUMBER)


@respx.mock
def test_tracking_pages_are_read_after_an_object_id() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    record = {"_id": {"$oid": "6560a1b2c3d4e5f6a7b8c9d0"}, "CustomerCode": "HCC-QNI", "OrderNumber": NUMBER,
              "EventTime": 1763604000000, "POSID": "200000", "ItemCode": "EB1VN", "StatusCode": 2,
              "StatusMessage": "Đã nhận hàng", "Notes": None}
    route = respx.get(f"{BASE}{TRACKING_PATH}").mock(side_effect=[
        httpx.Response(200, json={"_size": 1, "_total_pages": 1, "_returned": 1,
                                  "_embedded": {"rh:doc": [record]}}),
        httpx.Response(200, json={"_size": 1, "_total_pages": 1, "_returned": 0}),
    ])
    conn = connector()
    page = conn.tracking("0" * 24, 50)
    assert [r.oid for r in page.records] == ["6560a1b2c3d4e5f6a7b8c9d0"] and page.records[0].StatusCode == 2
    assert dict(route.calls.last.request.url.params) == {"pagesize": "50", "lastId": "0" * 24}
    assert conn.tracking(page.records[-1].oid, 50).records == []  # no _embedded: the end


@respx.mock
def test_a_tracking_page_of_another_shape_is_retried() -> None:
    respx.post(TOKEN).mock(return_value=token_ok())
    respx.get(f"{BASE}{TRACKING_PATH}").mock(return_value=httpx.Response(200, json={"_embedded": {"rh:doc": [
        {"_id": 8, "OrderNumber": NUMBER}]}}))
    with pytest.raises(Retryable, match="RESTHeart"):
        connector().tracking("0" * 24, 50)
