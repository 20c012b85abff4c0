"""The SMS connector's answer table, row by row, and the connector against the gateway simulator over HTTP.

Both answer shapes are the table's: the generic gateway's (``sandbox/sms.py``) and eSMS's (its "Table of error
codes", developers.esms.vn): ``100`` sent, ``124`` "Duplicate RequestId" a repeat of a send that went through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr, ValidationError

from connectors.base import DeliveryError, Permanent, Retryable, build_http_client
from connectors.sms import ANSWERS, BALANCE_WAIT, DUPLICATE, SENT, SmsConnector, answer_table, classify_sms
from sandbox.sms import create_app
from schemas.sms import SEND_PATH, SmsAnswer
from services.sms.deliver import SmsOptions
from tests.servers import run_asgi

API_KEY, BRANDNAME, PHONE, TEXT = "sms-api-key-thu-nghiem", "UBND-HALONG", "84912345678", "Ho so da co ket qua"

# (the answer's JSON, what it is); a DeliveryError class, or SENT / DUPLICATE
TABLE: list[tuple[dict[str, Any], str | type[DeliveryError]]] = [
    # the generic gateway
    ({"code": "00", "message": "OK", "sms_id": "s1"}, SENT),
    ({"code": "00", "message": "OK", "sms_id": "s1", "duplicate": True}, SENT),
    ({"code": "00", "message": "OK"}, Retryable),  # sent, but no sms id to hold: the repeat is the duplicate
    ({"code": "11", "message": "Thiếu hoặc sai request_id"}, Permanent),
    ({"code": "12", "message": "Brandname chưa được đăng ký"}, Permanent),
    ({"code": "13"}, Permanent),
    ({"code": "14"}, Permanent),
    # eSMS
    ({"CodeResult": "100", "CountRegenerate": 0, "SMSID": "d533459ee42b2b9525ba9eabf6a8156"}, SENT),
    ({"CodeResult": 100, "SMSID": "d533459ee42b2b9525ba9eabf6a8156"}, SENT),
    ({"CodeResult": "100", "CountRegenerate": 0}, Retryable),
    ({"CodeResult": "124", "CountRegenerate": 0, "ErrorMessage": "Duplicate RequestId"}, DUPLICATE),
    ({"CodeResult": "124", "SMSID": "d533459ee42b2b9525ba9eabf6a8156"}, DUPLICATE),
    ({"CodeResult": "99", "ErrorMessage": "The phone number is blocked in the system"}, Permanent),
    ({"CodeResult": "101", "CountRegenerate": 0, "ErrorMessage": "Authorize Failed"}, Permanent),
    ({"CodeResult": "102"}, Permanent),
    ({"CodeResult": "103", "ErrorMessage": "Not enough balance"}, Retryable),
    ({"CodeResult": "104"}, Permanent),
    ({"CodeResult": "108"}, Permanent),
    ({"CodeResult": "118"}, Permanent),
    ({"CodeResult": "140"}, Permanent),
    ({"CodeResult": "146"}, Permanent),
    ({"CodeResult": "177"}, Permanent),
    ({"CodeResult": "300"}, Permanent),
    ({"CodeResult": "301"}, Permanent),
    # neither's
    ({"code": "77"}, Permanent),
    ({"CodeResult": "105"}, Permanent),  # eSMS's, but of its look-ups: not an answer to a send
]


def row_id(row: tuple[dict[str, Any], Any]) -> str:
    answer, _ = row
    return f"{answer.get('code', answer.get('CodeResult'))}-{'-'.join(sorted(answer))}"


def test_the_table_rows_cover_every_code_of_the_table() -> None:
    assert {str(answer.get("code", answer.get("CodeResult"))) for answer, _ in TABLE} >= set(ANSWERS)


@pytest.mark.parametrize(("payload", "expected"), TABLE, ids=[row_id(r) for r in TABLE])
def test_sms_answer_table_row(payload: dict[str, Any], expected: str | type[DeliveryError]) -> None:
    answer = SmsAnswer.model_validate(payload)
    outcome = classify_sms(answer)
    if isinstance(expected, str):
        assert outcome == expected
        return
    assert type(outcome) is expected
    assert isinstance(outcome, DeliveryError) and f"code {answer.code}" in outcome.reason
    assert ("unknown code" in outcome.reason) is (answer.code not in ANSWERS)
    assert outcome.retry_after == (BALANCE_WAIT if answer.code == "103" else None)


def test_a_refusal_without_words_is_named_in_esmss_words() -> None:
    error = classify_sms(SmsAnswer.model_validate({"CodeResult": "104"}))
    assert isinstance(error, Permanent) and error.reason == "SMS gateway code 104 — Brandname does not exist"


def test_a_destinations_own_codes_take_precedence_over_the_table() -> None:
    answers = answer_table(success_codes=["0", "12"], duplicate_codes=["DUP"])
    assert classify_sms(SmsAnswer(code="0", sms_id="x"), answers) == SENT
    assert classify_sms(SmsAnswer(code="12", sms_id="x"), answers) == SENT
    assert classify_sms(SmsAnswer(code="DUP"), answers) == DUPLICATE
    assert classify_sms(SmsAnswer(code="124"), answers) == DUPLICATE  # the table's rows stay
    assert ANSWERS["12"] is Permanent


def test_a_code_cannot_be_both_a_success_and_a_duplicate() -> None:
    with pytest.raises(ValidationError, match="both in success_codes and duplicate_codes: 7"):
        SmsOptions(url="http://sms.test/send", api_key=SecretStr("k"), success_codes=["0", "7"],
                   duplicate_codes=["7"])
    options = SmsOptions.model_validate({"url": "http://sms.test/send", "api_key": "k", "success_codes": "0, 1"})
    assert (options.success_codes, options.duplicate_codes) == (["0", "1"], [])


def mocked(url: str = "http://sms.test/send", **codes: Any) -> SmsConnector:
    return SmsConnector(url=url, api_key=SecretStr("k"), brandname="UBND", client=build_http_client(1, 5), **codes)


HTTP_TABLE: list[tuple[httpx.Response, type[DeliveryError] | None]] = [
    (httpx.Response(200, json={"code": "00", "sms_id": "s1"}), None),
    (httpx.Response(200, json={"CodeResult": "100", "CountRegenerate": 0, "SMSID": "s1"}), None),
    (httpx.Response(401, json={"code": "401"}), Permanent),
    (httpx.Response(403, text="Forbidden"), Permanent),
    (httpx.Response(503), Retryable),
    (httpx.Response(429), Retryable),
    (httpx.Response(200, text="<html>gateway</html>"), Retryable),
    (httpx.Response(200, json={"status": "ok"}), Retryable),  # not the gateway's answer
]


@pytest.mark.parametrize(("answer", "expected"), HTTP_TABLE)
@respx.mock
def test_sms_http_answer_row(answer: httpx.Response, expected: type[DeliveryError] | None) -> None:
    respx.post("http://sms.test/send").mock(return_value=answer)
    if expected is None:
        assert mocked().send(PHONE, "Ho so", "ev:sms").sms_id == "s1"
    else:
        with pytest.raises(expected):
            mocked().send(PHONE, "Ho so", "ev:sms")


@respx.mock
def test_a_configured_duplicate_code_is_delivered_with_the_request_id() -> None:
    respx.post("http://sms.test/send").mock(return_value=httpx.Response(200, json={"code": "DUP"}))
    sent = mocked(duplicate_codes=["DUP"]).send(PHONE, "Ho so", "ev-1:sms")
    assert (sent.sms_id, sent.duplicate) == ("ev-1:sms", True)


# ------------------------------------------------------------------ against the simulator, over HTTP


@pytest.fixture(params=["generic", "esms"])
def gateway(request: pytest.FixtureRequest) -> Iterator[str]:
    """The simulator's base URL, in each dialect (``request.param``)."""
    with run_asgi(create_app(api_key=API_KEY, brandname=BRANDNAME, dialect=request.param)) as url:
        yield url


def connector(base: str, *, read: float = 5, key: str = API_KEY, brandname: str = BRANDNAME) -> SmsConnector:
    return SmsConnector(url=f"{base}{SEND_PATH}", api_key=SecretStr(key), brandname=brandname,
                        client=build_http_client(1, read))


def stats(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/_admin/stats", timeout=5).json())


def test_a_repeated_request_id_is_a_delivered_sms_not_a_refusal(gateway: str, request: pytest.FixtureRequest) -> None:
    # given an SMS the gateway took
    first = connector(gateway).send(PHONE, TEXT, "ev-1:sms")
    [recorded] = httpx.get(f"{gateway}/_admin/messages", timeout=5).json()
    assert (first.sms_id, first.duplicate) == (recorded["sms_id"], False)
    # when the same request id is sent again
    again = connector(gateway).send(PHONE, TEXT, "ev-1:sms")
    # then it counts as sent (the generic gateway names the first SMS, eSMS only says 124), and went once
    assert again.duplicate
    assert again.sms_id == ("ev-1:sms" if request.node.callspec.params["gateway"] == "esms" else recorded["sms_id"])
    assert (stats(gateway)["sent"], stats(gateway)["duplicates"]) == (1, 1)


def test_an_answer_lost_after_the_gateway_took_the_sms_then_the_duplicate_is_one_sms(gateway: str) -> None:
    # given a gateway that takes the SMS, then answers after the client stopped waiting
    httpx.post(f"{gateway}/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 2}, timeout=5).raise_for_status()
    with pytest.raises(Retryable, match="timeout"):
        connector(gateway, read=0.3).send(PHONE, TEXT, "ev-2:sms")
    # when the attempt is repeated with the gateway well again
    httpx.delete(f"{gateway}/_admin/faults", timeout=5).raise_for_status()
    sent = connector(gateway).send(PHONE, TEXT, "ev-2:sms")
    # then it is sent, and the gateway sent one SMS
    assert sent.duplicate and sent.sms_id
    assert (stats(gateway)["sent"], stats(gateway)["duplicates"], stats(gateway)["faults"]["timeout"]) == (1, 1, 1)


@pytest.mark.parametrize(
    ("how", "code"),
    [({"key": "sai-khoa"}, "101"), ({"brandname": "UBND-KHAC"}, "104")],
)
def test_esms_refusals_are_permanent_and_name_the_code(how: dict[str, str], code: str) -> None:
    with run_asgi(create_app(api_key=API_KEY, brandname=BRANDNAME, dialect="esms")) as base:
        with pytest.raises(Permanent, match=f"code {code} — "):
            connector(base, **how).send(PHONE, TEXT, "ev-3:sms")
        with pytest.raises(Permanent, match="code 108 — "):
            connector(base).send("0912345678", TEXT, "ev-4:sms")
        assert stats(base)["sent"] == 0
