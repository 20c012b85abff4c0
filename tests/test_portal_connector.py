"""The portal connector: its answer table row by row (respx), and its session against the simulator (Redis)."""

from __future__ import annotations

import json
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
from connectors.portal import ANSWERS, PortalConnector, classify_answer, may_have_landed, meaning
from schemas.portal import AUTH_PATH, ERROR_CODES, INTEGRATION_PATH, PortalAnswer

BASE = "http://portal.test"
LOGIN = f"{BASE}{AUTH_PATH}"
SERVICE = f"{BASE}{INTEGRATION_PATH}"
UNIT = "000.21.00.H49"


def connector(tokens: TokenCache | None = None, *, read: float = 5.0, name: str = "portal:test",
              base: str = BASE) -> PortalConnector:
    return PortalConnector(
        base_url=base, auth_path=AUTH_PATH, integration_path=INTEGRATION_PATH, dstcode="DVCQG",
        username="relay", password=SecretStr("s3cret-pw"), client=build_http_client(1.0, read),
        tokens=tokens or TokenCache(None, "t"), credential_name=name, session_ttl=600,
    )


# (service, error_code as sent, class for an error, or the meaning of an answer that is not one)
ANSWER_TABLE: list[tuple[str, Any, type[DeliveryError] | str]] = [
    ("DongBoHoSoMC", 0, "ok"),
    ("DongBoHoSoMC", "0", "ok"),
    ("DongBoHoSoMC", "00", "ok"),
    ("DongBoHoSoMC", "01", AuthExpired),
    ("DongBoHoSoMC", 1, AuthExpired),
    ("DongBoHoSoMC", 2, Permanent),
    ("DongBoHoSoMC", "03", Permanent),
    ("DongBoHoSoMC", 4, Retryable),
    ("TraCuuHoSo", 4, "absent"),
    ("CapNhatTienDoHoSoMC", 4, Retryable),
    ("DongBoHoSoMC", "05", Permanent),
    ("DongBoHoSoMC", 6, Retryable),
    ("CapNhatTienDoHoSoMC", 6, "held"),
    ("CapNhatTienDoHoSoMC", "06", "held"),
    ("TraCuuHoSo", 6, Retryable),
    ("DongBoHoSoMC", 9, Permanent),
    ("LayThuTuc", 10, Permanent),
    ("DongBoHoSoMC", 96, Retryable),
    ("CapNhatTienDoHoSoMC", 99, Retryable),
    ("DongBoHoSoMC", "77", Permanent),
    ("DongBoHoSoMC", "-1", Permanent),
    ("DongBoHoSoMC", "KHONG_RO", Permanent),
]


@pytest.mark.parametrize(("service", "code", "expected"), ANSWER_TABLE,
                         ids=[f"{s}-{c!r}" for s, c, _ in ANSWER_TABLE])
def test_answer_table_row(service: str, code: Any, expected: type[DeliveryError] | str) -> None:
    answer = PortalAnswer.model_validate({"error_code": code, "message": "Lý do"})
    error = classify_answer(service, answer)
    if isinstance(expected, str):
        assert error is None
        assert meaning(service, answer.error_code) == expected
    else:
        assert type(error) is expected
        assert error is not None and "Lý do" in error.reason and service in error.reason


def test_every_documented_code_is_in_the_table() -> None:
    assert set(ERROR_CODES) == {code for _, code in ANSWERS}
    assert {service for service, _ in ANSWERS} == {"*", "TraCuuHoSo", "CapNhatTienDoHoSoMC"}


def test_unknown_codes_are_permanent_and_say_so() -> None:
    error = classify_answer("X", PortalAnswer(error_code="42"))
    assert isinstance(error, Permanent) and "unknown code" in error.reason


@respx.mock
def test_the_lookup_sends_mahoso_and_reads_result() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": 0, "session": "S1"}))
    calls = respx.post(SERVICE).mock(side_effect=[
        httpx.Response(200, json={"error_code": "00", "result": []}),
        httpx.Response(200, json={"error_code": 0, "result": [{"MaHoSo": "D-1", "TrangThaiHoSo": "2"}]}),
        httpx.Response(200, json={"error_code": 0, "data": [{"MaHoSo": "D-1"}]}),
    ])
    conn = connector()
    assert conn.lookup(UNIT, "D-1") is None
    request = calls.calls.last.request
    assert request.headers["dstcode"] == "DVCQG"
    assert json.loads(request.content) == {"session": "S1", "madonvi": UNIT, "service": "TraCuuHoSo",
                                           "mahoso": "D-1"}
    assert conn.lookup(UNIT, "D-1") == {"MaHoSo": "D-1", "TrangThaiHoSo": "2"}
    assert conn.lookup(UNIT, "D-1") is None  # rows in "data" are not the portal's answer


@respx.mock
def test_lookup_treats_not_found_as_absent() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": "00", "session": "S1"}))
    respx.post(SERVICE).mock(return_value=httpx.Response(200, json={"error_code": 4, "message": "Không có"}))
    assert connector().lookup(UNIT, "D-1") is None


@respx.mock
def test_the_sync_and_progress_bodies() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": 0, "session": "S1"}))
    procedure = {"MATTHC": "1.001", "TENTTHC": "Tên", "LINHVUCTHUCHIEN": [{"MALINHVUC": "G", "TENLINHVUC": "L"}]}
    calls = respx.post(SERVICE).mock(side_effect=[
        httpx.Response(200, json={"error_code": 0}), httpx.Response(200, json={"error_code": 0}),
        httpx.Response(200, json={"error_code": 6, "message": "Tiến độ đã tồn tại"}),
        httpx.Response(200, json={"error_code": 0, "result": [procedure]}),
    ])
    conn = connector()
    conn.sync(UNIT, {"MaHoSo": "D-1"}, updating=False)
    assert json.loads(calls.calls.last.request.content) == {
        "session": "S1", "madonvi": UNIT, "service": "DongBoHoSoMC", "isUpdating": "False", "data": [{"MaHoSo": "D-1"}]}
    assert conn.progress(UNIT, {"MaHoSo": "D-1"}) == "taken"
    assert json.loads(calls.calls.last.request.content)["data"] == [{"MaHoSo": "D-1"}]
    assert conn.progress(UNIT, {"MaHoSo": "D-1"}) == "held"
    found = conn.procedure(UNIT, "1.001")
    assert json.loads(calls.calls.last.request.content)["maTTHC"] == "1.001"
    assert found is not None and found.LINHVUCTHUCHIEN[0].TENLINHVUC == "L"


@respx.mock
def test_online_dossiers_come_in_result_under_the_configured_service() -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": 0, "session": "S1"}))
    calls = respx.post(SERVICE).mock(return_value=httpx.Response(
        200, json={"error_code": 0, "result": [{"ThuTu": 8, "MaHoSo": "D-8"}], "ConTiep": True}))
    rows, more = connector().online(UNIT, 7, 50, service="LayHoSoDVCQG")
    assert (rows, more) == ([{"ThuTu": 8, "MaHoSo": "D-8"}], True)
    assert json.loads(calls.calls.last.request.content) == {
        "session": "S1", "madonvi": UNIT, "service": "LayHoSoDVCQG", "TuThuTu": 7, "SoLuong": 50}


@respx.mock
def test_endpoints_are_configured_as_opencps_configures_them() -> None:
    login = respx.post("http://auth.test/oauth/dvcqg").mock(
        return_value=httpx.Response(200, json={"error_code": 0, "session": "S"}))
    service = respx.post(f"{BASE}/lgsp/dvcqg/v2").mock(return_value=httpx.Response(200, json={"error_code": 0}))
    conn = PortalConnector(base_url=BASE + "/", auth_path="http://auth.test/oauth/dvcqg",
                           integration_path="/lgsp/dvcqg/v2", dstcode="QNI", username="relay",
                           password=SecretStr("pw"), client=build_http_client(1.0, 5.0), tokens=TokenCache(None, "u"),
                           credential_name="portal:u", session_ttl=60)
    conn.call(UNIT, "LayDanhSachTTHC")
    assert login.call_count == 1 and service.call_count == 1
    assert login.calls.last.request.headers["dstcode"] == "QNI"


@respx.mock
def test_expired_session_logs_in_once_and_repeats_the_call() -> None:
    logins = respx.post(LOGIN).mock(side_effect=[
        httpx.Response(200, json={"error_code": "00", "session": "OLD"}),
        httpx.Response(200, json={"error_code": 0, "session": "NEW"}),
    ])
    calls = respx.post(SERVICE).mock(side_effect=[
        httpx.Response(200, json={"error_code": 1, "message": "Phiên hết hạn"}),
        httpx.Response(200, json={"error_code": 0}),
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
        (httpx.Response(200, json={"error_code": 2, "message": "Sai mật khẩu"}), Permanent, "password"),
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


# (what went wrong with the call, whether the portal may have applied it)
LANDED: list[tuple[Any, bool]] = [
    (httpx.ReadTimeout("slow"), True),
    (httpx.WriteTimeout("slow"), True),
    (httpx.RemoteProtocolError("closed mid-answer"), True),
    (httpx.ReadError("reset"), True),
    (httpx.ConnectError("refused"), False),
    (httpx.ConnectTimeout("no route"), False),
    (httpx.PoolTimeout("busy pool"), False),
    (httpx.Response(504), True),
    (httpx.Response(502), True),
    (httpx.Response(503), False),
    (httpx.Response(500), False),
    (httpx.Response(429), False),
    (httpx.Response(200, json={"error_code": 96}), False),
    (httpx.Response(200, json={"error_code": 3}), False),
    (httpx.Response(200, text="<html>gateway</html>"), False),
]


@pytest.mark.parametrize(("answer", "landed"), LANDED, ids=[repr(a) for a, _ in LANDED])
@respx.mock
def test_may_have_landed_row(answer: Any, landed: bool) -> None:
    respx.post(LOGIN).mock(return_value=httpx.Response(200, json={"error_code": 0, "session": "S"}))
    route = respx.post(SERVICE)
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    with pytest.raises(DeliveryError) as caught:
        connector().progress(UNIT, {})
    assert may_have_landed(caught.value) is landed


def test_a_call_the_attempts_clock_stopped_cannot_have_landed() -> None:
    with attempt_deadline(0.5), pytest.raises(Retryable) as caught:
        connector().progress(UNIT, {})
    assert not may_have_landed(caught.value)


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
