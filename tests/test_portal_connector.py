"""The portal connector: its answer table row by row (respx), and its session against the simulator (Redis)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import respx
from pydantic import SecretStr

from connectors.base import (
    AuthExpired,
    DeliveryError,
    Permanent,
    Retryable,
    attempt_deadline,
    build_http_client,
    call_timeout,
)
from connectors.credentials import TokenCache
from connectors.portal import ANSWERS, PortalConnector, classify_answer
from schemas.portal import AUTH_PATH, ERROR_CODES, INTEGRATION_PATH, PortalAnswer

BASE = "http://portal.test"
LOGIN = f"{BASE}{AUTH_PATH}"
SERVICE = f"{BASE}{INTEGRATION_PATH}"
UNIT = "000.00.12.H22"


def connector(tokens: TokenCache | None = None, *, read: float = 5.0, name: str = "portal:test",
              base: str = BASE) -> PortalConnector:
    return PortalConnector(
        base_url=base, auth_path=AUTH_PATH, integration_path=INTEGRATION_PATH, dstcode="DVCQG",
        username="relay", password=SecretStr("s3cret-pw"), client=build_http_client(1.0, read),
        tokens=tokens or TokenCache(None, "t"), credential_name=name, session_ttl=600,
    )


# (error_code as sent, class or None for success, retried by a later attempt?)
ANSWER_TABLE: list[tuple[Any, type[DeliveryError] | None]] = [
    (0, None),
    ("0", None),
    ("00", None),
    ("01", AuthExpired),
    (1, AuthExpired),
    ("02", Permanent),
    ("03", Permanent),
    ("04", Retryable),
    ("05", Permanent),
    ("06", Retryable),
    ("09", Permanent),
    ("10", Permanent),
    ("96", Retryable),
    (99, Retryable),
    ("77", Permanent),
    ("-1", Permanent),
    ("KHONG_RO", Permanent),
]


@pytest.mark.parametrize(("code", "expected"), ANSWER_TABLE, ids=[repr(c) for c, _ in ANSWER_TABLE])
def test_answer_table_row(code: Any, expected: type[DeliveryError] | None) -> None:
    error = classify_answer("DongBoHoSoMC", PortalAnswer.model_validate({"error_code": code, "message": "Lý do"}))
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        assert error is not None and "Lý do" in error.reason and "DongBoHoSoMC" in error.reason


def test_every_documented_code_is_in_the_table() -> None:
    assert set(ERROR_CODES) == set(ANSWERS)


def test_unknown_codes_are_permanent_and_say_so() -> None:
    error = classify_answer("X", PortalAnswer(error_code="42"))
    assert isinstance(error, Permanent) and "unknown code" in error.reason


@respx.mock
def test_both_success_spellings_and_the_session_is_sent() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": 0, "session": "S1"}))
    calls = respx.post(SERVICE).mock(return_value=httpx.Response(200, json={"error_code": "00", "data": []}))
    assert connector().lookup(UNIT, "D-1") is None
    body = calls.calls.last.request
    assert body.headers["dstcode"] == "DVCQG"
    assert b'"session":"S1"' in body.content and b'"madonvi":"000.00.12.H22"' in body.content


@respx.mock
def test_lookup_treats_not_found_as_none() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": "00", "session": "S1"}))
    respx.post(SERVICE).mock(return_value=httpx.Response(200, json={"error_code": "04", "message": "Không có"}))
    assert connector().lookup(UNIT, "D-1") is None


@respx.mock
def test_expired_session_logs_in_once_and_repeats_the_call() -> None:
    logins = respx.post(LOGIN).mock(side_effect=[
        httpx.Response(200, json={"error_code": "00", "session": "OLD"}),
        httpx.Response(200, json={"error_code": 0, "session": "NEW"}),
    ])
    calls = respx.post(SERVICE).mock(side_effect=[
        httpx.Response(200, json={"error_code": "01", "message": "Phiên hết hạn"}),
        httpx.Response(200, json={"error_code": "0", "data": []}),
    ])
    conn = connector()
    conn.progress(UNIT, {"MaHoSo": "D-1"})
    assert logins.call_count == 2 and calls.call_count == 2
    assert b'"session":"NEW"' in calls.calls.last.request.content


@respx.mock
def test_an_expired_session_twice_in_a_row_is_auth_expired() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": "00", "session": "S"}))
    respx.post(SERVICE).mock(return_value=httpx.Response(200, json={"error_code": "01"}))
    with pytest.raises(AuthExpired):
        connector().progress(UNIT, {})


@respx.mock
def test_http_401_from_the_gateway_counts_as_an_expired_session() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": "00", "session": "S"}))
    respx.post(SERVICE).mock(side_effect=[httpx.Response(401), httpx.Response(200, json={"error_code": 0})])
    connector().progress(UNIT, {})


@pytest.mark.parametrize(
    ("answer", "expected", "words"),
    [
        (httpx.Response(200, json={"error_code": "02", "message": "Sai mật khẩu"}), Permanent, "password"),
        (httpx.Response(200, json={"error_code": "00"}), Retryable, "without a session"),
        (httpx.Response(503), Retryable, "503"),
        (httpx.Response(200, text="<html>gateway</html>"), Retryable, "not JSON"),
    ],
)
@respx.mock
def test_login_failures(answer: httpx.Response, expected: type[DeliveryError], words: str) -> None:
    respx.post(LOGIN).mock(return_value=answer)
    with pytest.raises(expected) as caught:
        connector().progress(UNIT, {})
    assert words in caught.value.reason
    assert "s3cret-pw" not in caught.value.reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(500), Retryable),
        (httpx.Response(429, headers={"Retry-After": "7"}), Retryable),
        (httpx.Response(404), Permanent),
        (httpx.Response(400), Permanent),
        (httpx.ConnectError("refused"), Retryable),
        (httpx.ReadTimeout("slow"), Retryable),
    ],
)
@respx.mock
def test_transport_answers(answer: Any, expected: type[DeliveryError]) -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": "00", "session": "S"}))
    route = respx.post(SERVICE)
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    with pytest.raises(expected) as caught:
        connector().sync(UNIT, {}, updating=False)
    if isinstance(answer, httpx.Response) and answer.status_code == 429:
        assert caught.value.retry_after == 7


def test_connect_and_read_timeouts_are_separate() -> None:
    client = build_http_client(2.0, 60.0)
    assert (client.timeout.connect, client.timeout.read) == (2.0, 60.0)


# ---------------------------------------------------------------- the shared session, real Redis


@pytest.fixture
def tokens(redis_url: str) -> Iterator[TokenCache]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    yield TokenCache(client, prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def test_session_is_shared_through_redis_and_renewed_once(tokens: TokenCache, redis_url: str) -> None:
    # given two workers (two caches over one Redis) and a portal counting logins
    other = TokenCache(redis.Redis.from_url(redis_url), tokens._prefix)
    issued: list[str] = []
    lock = threading.Lock()

    def login() -> tuple[str, float]:
        with lock:
            issued.append(f"S{len(issued) + 1}")
            return issued[-1], 60.0

    # when the first logs in, the second reuses the session
    first = tokens.renew("portal:x", None, login)
    assert other.get("portal:x") == first
    # and when both see it expire at once, only one logs in again
    results: list[str] = []
    workers = [threading.Thread(target=lambda c=c: results.append(c.renew("portal:x", first, login)))
               for c in (tokens, other, tokens, other)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert issued == ["S1", "S2"]
    assert set(results) == {"S2"}


def test_an_attempt_deadline_cuts_every_calls_timeout_and_stops_calls_when_spent() -> None:
    configured = httpx.Timeout(60.0, connect=5.0)
    assert call_timeout(configured) is configured
    with attempt_deadline(3.0):
        cut = call_timeout(configured)
        assert cut.read is not None and cut.read <= 3.0 and cut.connect is not None and cut.connect <= 3.0
    with attempt_deadline(0.5), pytest.raises(Retryable, match="ran out of time"):
        connector().progress(UNIT, {})
