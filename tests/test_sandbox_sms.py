"""The SMS brandname gateway simulator, served by a real uvicorn on loopback and spoken to over HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.sms import create_app, segments
from schemas.sms import SEND_PATH
from tests.servers import run_asgi

API_KEY, BRANDNAME = "sms-api-key-thu-nghiem", "UBND-HALONG"
SEND = SEND_PATH
PHONE = "84912345678"
TEXT = "UBND TP Ha Long: ho so 000.21.00.H49-240315-0001 cua ong/ba da co ket qua. Vui long den nhan."
VIETNAMESE = "UBND phường Hồng Gai: hồ sơ 000.21.00.H49-240315-0001 của Nguyễn Thị Hương Giang đã có kết quả."


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(create_app(api_key=API_KEY, brandname=BRANDNAME)) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


def sms(**changes: Any) -> dict[str, Any]:
    return {**{"brandname": BRANDNAME, "phone": PHONE, "message": TEXT, "request_id": "notif-0001"}, **changes}


def send(client: httpx.Client, body: Any) -> dict[str, Any]:
    response = client.post(SEND, json=body)
    assert response.status_code == 200
    return dict(response.json())


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_admin/stats").json())


def test_send_answers_an_sms_id_and_records_the_message(client: httpx.Client) -> None:
    # when
    answer = send(client, sms(message=VIETNAMESE))
    # then
    assert set(answer) == {"code", "message", "sms_id"}
    assert (answer["code"], answer["message"]) == ("00", "OK") and re.fullmatch(r"[0-9a-f]{32}", answer["sms_id"])
    [recorded] = client.get("/_admin/messages").json()
    assert recorded["sms_id"] == answer["sms_id"] and recorded["message"] == VIETNAMESE
    assert (recorded["phone"], recorded["brandname"], recorded["request_id"]) == (PHONE, BRANDNAME, "notif-0001")
    assert recorded["segments"] == 2 and recorded["sent_time"].isdigit()
    assert stats(client) == {"sent": 1, "duplicates": 0, "answers": {"00": 1}, "faults": {"error": 0, "timeout": 0}}


def test_same_request_id_answers_the_same_sms_id_without_sending_again(client: httpx.Client) -> None:
    # given
    first = send(client, sms())
    # when
    again = [send(client, sms()) for _ in range(2)]
    other = send(client, sms(request_id="notif-0002"))
    # then
    assert again == [{"code": "00", "message": "OK", "sms_id": first["sms_id"], "duplicate": True}] * 2
    assert other["sms_id"] != first["sms_id"] and "duplicate" not in other
    assert len(client.get("/_admin/messages").json()) == 2
    assert [m["sms_id"] for m in client.get("/_admin/messages", params={"request_id": "notif-0001"}).json()] == [
        first["sms_id"]
    ]
    counters = stats(client)
    assert (counters["sent"], counters["duplicates"], counters["answers"]) == (2, 2, {"00": 4})


_OMIT = object()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"brandname": "UBND-QUANGNINH"}, "12"),
        ({"brandname": "ubnd-halong"}, "12"),
        ({"brandname": _OMIT}, "12"),
        ({"phone": "0912345678"}, "13"),
        ({"phone": "+84912345678"}, "13"),
        ({"phone": "84212345678"}, "13"),
        ({"phone": "8491234567"}, "13"),
        ({"phone": 84912345678}, "13"),
        ({"phone": _OMIT}, "13"),
        ({"message": ""}, "14"),
        ({"message": "   "}, "14"),
        ({"message": "a" * 613}, "14"),
        ({"message": "ạ" * 613}, "14"),
        ({"message": ["ho so"]}, "14"),
        ({"message": _OMIT}, "14"),
        ({"request_id": _OMIT}, "11"),
        ({"request_id": ""}, "11"),
        ({"request_id": 17}, "11"),
        ({"request_id": "x" * 101}, "11"),
        ({"phone": "0912", "message": ""}, "13"),
        ({"brandname": "KHAC", "phone": "0912"}, "12"),
    ],
)
def test_refusals(client: httpx.Client, changes: dict[str, Any], code: str) -> None:
    # when
    body = {k: v for k, v in sms(**changes).items() if v is not _OMIT}
    answer = send(client, body)
    # then
    assert set(answer) == {"code", "message"} and answer["code"] == code
    assert "0912" not in answer["message"] and PHONE not in answer["message"]
    assert client.get("/_admin/messages").json() == []
    assert stats(client)["answers"] == {code: 1}
    # and a refused request_id is not burnt
    assert send(client, sms())["code"] == "00"


@pytest.mark.parametrize("message", ["a" * 612, "ạ" * 612, "Hồ sơ"])
def test_messages_up_to_612_characters_are_sent(client: httpx.Client, message: str) -> None:
    assert send(client, sms(message=message))["code"] == "00"


@pytest.mark.parametrize("content", [b"{brandname", b'["84912345678"]', b""])
def test_body_must_be_a_json_object(client: httpx.Client, content: bytes) -> None:
    answer = client.post(SEND, content=content, headers={"content-type": "application/json"}).json()
    assert answer["code"] == "11"


@pytest.mark.parametrize(
    "authorization", [None, "", f"Basic {API_KEY}", "Bearer sai-khoa", f"Bearer {API_KEY}x", API_KEY, "Bearer"]
)
def test_bad_or_missing_api_key_is_401(base_url: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=base_url, timeout=5) as c:
        c.post("/_admin/reset")
        response = c.post(SEND, json=sms(), headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "401" and API_KEY not in response.text
        assert c.get("/_admin/messages").json() == []
        assert stats(c)["answers"] == {"401": 1}
        assert c.post(SEND, json=sms(), headers={"Authorization": f"bearer {API_KEY}"}).json()["code"] == "00"


def test_error_rate_answers_503_before_anything(client: httpx.Client) -> None:
    client.post("/_admin/faults", json={"error_rate": 1}).raise_for_status()
    assert client.post(SEND, json=sms()).status_code == 503
    assert client.post(SEND, json=sms(), headers={"Authorization": "Bearer sai"}).status_code == 503
    client.delete("/_admin/faults")
    assert send(client, sms()).get("duplicate") is None
    assert stats(client) == {"sent": 1, "duplicates": 0, "answers": {"00": 1}, "faults": {"error": 2, "timeout": 0}}


def test_seeded_faults_repeat_and_latency_delays(client: httpx.Client) -> None:
    def statuses() -> list[int]:
        client.post("/_admin/faults", json={"error_rate": 0.5, "seed": 3})
        return [client.post(SEND, json=sms(request_id=f"f{n}")).status_code for n in range(12)]

    first = statuses()
    assert first == statuses() and set(first) == {200, 503}
    client.post("/_admin/faults", json={"latency_ms": 150})
    started = time.perf_counter()
    assert send(client, sms(request_id="late"))["code"] == "00"
    assert time.perf_counter() - started >= 0.15


def test_faults_are_validated_shown_and_reset(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"error_rate": 2}).status_code == 422
    assert client.post("/_admin/faults", json={"drop_rate": 1}).status_code == 422
    assert client.post("/_admin/faults", json={"timeout_rate": 1.5}).status_code == 422
    client.post("/_admin/faults", json={"error_rate": 0.25, "error_status": 500})
    assert client.get("/_admin/faults").json()["error_status"] == 500
    client.post("/_admin/faults", json={"latency_ms": 1})
    send(client, sms(request_id="before-reset"))
    client.post("/_admin/reset")
    assert client.get("/_admin/faults").json() is None
    assert client.get("/_admin/messages").json() == []
    assert stats(client) == {"sent": 0, "duplicates": 0, "answers": {}, "faults": {"error": 0, "timeout": 0}}


@pytest.mark.parametrize(
    ("text", "parts"), [("a" * 160, 1), ("a" * 161, 2), ("a" * 612, 4), ("ạ" * 70, 1), ("ạ" * 71, 2), ("ạ" * 612, 10)]
)
def test_segments(text: str, parts: int) -> None:
    assert segments(text) == parts


def test_other_brandname() -> None:
    with run_asgi(create_app(api_key=API_KEY, brandname="SO-TNMT-QN")) as url, httpx.Client(base_url=url) as c:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        assert c.post(SEND, json=sms(), headers=headers).json()["code"] == "12"
        assert c.post(SEND, json=sms(brandname="SO-TNMT-QN"), headers=headers).json()["code"] == "00"


# ---------------------------------------------------------------------------- the eSMS dialect


@pytest.fixture(scope="module")
def esms_url() -> Iterator[str]:
    with run_asgi(create_app(api_key=API_KEY, brandname=BRANDNAME, dialect="esms")) as url:
        yield url


@pytest.fixture()
def esms(esms_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=esms_url, timeout=5.0, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


def test_esms_answers_100_with_an_smsid_then_124_duplicate_request_id_and_sends_once(esms: httpx.Client) -> None:
    # when the same request id is sent twice
    first = send(esms, sms())
    again = send(esms, sms())
    # then the first is sent (100, its SMSID) and the repeat refused as a duplicate, naming why, with no SMSID
    assert set(first) == {"CodeResult", "CountRegenerate", "SMSID"} and first["CodeResult"] == "100"
    assert again == {"CodeResult": "124", "CountRegenerate": 0, "ErrorMessage": "Duplicate RequestId"}
    [recorded] = esms.get("/_admin/messages").json()
    assert recorded["sms_id"] == first["SMSID"]
    assert stats(esms) == {"sent": 1, "duplicates": 1, "answers": {"100": 1, "124": 1},
                           "faults": {"error": 0, "timeout": 0}}


@pytest.mark.parametrize(
    ("changes", "code"),
    [({"brandname": "KHAC"}, "104"), ({"phone": "0912345678"}, "108"), ({"request_id": ""}, "11"),
     ({"message": ""}, "14")],
)
def test_esms_refusals_use_its_codes_where_it_has_them(esms: httpx.Client, changes: dict[str, Any], code: str) -> None:
    answer = send(esms, sms(**changes))
    assert answer["CodeResult"] == code and "SMSID" not in answer and answer["ErrorMessage"]
    assert esms.get("/_admin/messages").json() == []


def test_esms_answers_a_wrong_key_101_with_http_200(esms_url: str) -> None:
    with httpx.Client(base_url=esms_url, timeout=5) as c:
        response = c.post(SEND, json=sms(), headers={"Authorization": "Bearer sai-khoa"})
        assert response.status_code == 200 and response.json()["CodeResult"] == "101"
        assert API_KEY not in response.text and c.get("/_admin/messages").json() == []


def test_timeout_rate_takes_the_sms_then_hangs_past_the_clients_read_timeout(client: httpx.Client) -> None:
    # given a gateway that hangs after taking a send
    client.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 2}).raise_for_status()
    # when a client with a short read timeout sends
    with pytest.raises(httpx.ReadTimeout):
        client.post(SEND, json=sms(), timeout=httpx.Timeout(5, read=0.3))
    # then the SMS went all the same, and its repeat (the gateway well again) is the duplicate
    client.delete("/_admin/faults")
    [recorded] = client.get("/_admin/messages").json()
    assert send(client, sms()) == {"code": "00", "message": "OK", "sms_id": recorded["sms_id"], "duplicate": True}
    assert stats(client)["faults"] == {"error": 0, "timeout": 1}
