"""The Zalo OA simulator, served by a real uvicorn on loopback and spoken to over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from sandbox.zalo import DEFAULT_TEMPLATES, create_app, zevent_signature
from schemas.vietnam import VN_TZ
from schemas.zalo import OAUTH_PATH, ZNS_PATH
from tests.servers import run_asgi

APP_ID, APP_SECRET, OA_KEY = "4318927364512345678", "zalo-app-secret-thu-nghiem", "oa-secret-key-thu-nghiem"
REFRESH, ZNS = OAUTH_PATH, ZNS_PATH
CITIZEN, PHONE, OTHER_PHONE = "Nguyễn Thị Hương Giang", "84912345678", "84987654321"
DOSSIER = "000.21.00.H49-240315-0001"
STATS_KEYS = {
    "sent", "duplicate_tracking", "refresh", "refresh_token_reuse", "token_expired", "answers", "faults", "webhooks",
    "quota", "balance",
}
# the simulator's clock runs from a working morning, so that no test depends on the hour it runs at (-133 at night)
MORNING = datetime(2026, 11, 20, 9, 0, tzinfo=VN_TZ)


def simulator(**options: Any) -> FastAPI:
    return create_app(app_id=APP_ID, app_secret=APP_SECRET, oa_secret_key=OA_KEY, start_at=MORNING, **options)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(simulator()) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


def issue(client: httpx.Client) -> dict[str, str]:
    return dict(client.post("/_admin/tokens").json())


def refresh(client: httpx.Client, token: str | None, **changes: str | None) -> dict[str, Any]:
    form = {"app_id": APP_ID, "grant_type": "refresh_token", "refresh_token": token}
    form.update({k: v for k, v in changes.items() if k != "secret_key"})
    secret = changes.get("secret_key", APP_SECRET)
    headers = {"secret_key": secret} if secret is not None else {}
    data = {k: v for k, v in form.items() if v is not None}
    response = client.post(REFRESH, data=data, headers=headers)
    assert response.status_code == 200
    return dict(response.json())


def template_data(**changes: Any) -> dict[str, Any]:
    data = {
        "ten_cong_dan": CITIZEN, "ma_ho_so": DOSSIER, "ten_thu_tuc": "Đăng ký khai sinh", "ngay_hen_tra": "18/03/2024",
    }
    return {**data, **changes}


def zns(**changes: Any) -> dict[str, Any]:
    body = {"phone": PHONE, "template_id": "300001", "template_data": template_data(), "tracking_id": "evt-0001"}
    return {**body, **changes}


def send(client: httpx.Client, access_token: str | None, body: Any) -> dict[str, Any]:
    headers = {"access_token": access_token} if access_token is not None else {}
    response = client.post(ZNS, json=body, headers=headers)
    assert response.status_code == 200
    return dict(response.json())


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_admin/stats").json())


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_default_templates_cover_the_one_stop_notifications() -> None:
    assert list(DEFAULT_TEMPLATES) == [f"30000{n}" for n in range(1, 7)]
    assert tuple(DEFAULT_TEMPLATES["300001"]) == ("ten_cong_dan", "ma_ho_so", "ten_thu_tuc", "ngay_hen_tra")
    assert dict(DEFAULT_TEMPLATES["300003"]) == {"ten_cong_dan": "customer_name", "ma_ho_so": "code",
                                                 "so_tien": "amount", "link_thanh_toan": "url"}
    assert all(tuple(params)[:2] == ("ten_cong_dan", "ma_ho_so") for params in DEFAULT_TEMPLATES.values())
    assert [t for t, params in DEFAULT_TEMPLATES.items() if "url" in params.values()] == ["300003"]


def test_send_answers_msg_id_time_and_quota_and_records_the_message(client: httpx.Client) -> None:
    # given
    access = issue(client)["access_token"]
    before = time.time() * 1000
    # when
    answer = send(client, access, zns())
    # then
    assert (answer["error"], answer["message"]) == (0, "Success")
    data = answer["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", data["msg_id"])
    assert isinstance(data["sent_time"], str) and before - 1 <= int(data["sent_time"]) <= time.time() * 1000 + 1
    assert data["quota"] == {"dailyQuota": "100000", "remainingQuota": "99999"}
    [recorded] = client.get("/_admin/messages").json()
    assert recorded == {
        "msg_id": data["msg_id"], "phone": PHONE, "template_id": "300001", "template_data": template_data(),
        "tracking_id": "evt-0001", "sent_time": data["sent_time"],
    }
    counters = stats(client)
    assert set(counters) == STATS_KEYS
    assert counters["sent"] == 1 and counters["answers"] == {"0": 1}
    assert counters["quota"] == {"daily": 100000, "used": 1}


def test_numbers_are_accepted_as_template_parameters(client: httpx.Client) -> None:
    access = issue(client)["access_token"]
    for amount in (150000, 150000.5):
        data = {"ten_cong_dan": CITIZEN, "ma_ho_so": DOSSIER, "so_tien": amount, "link_thanh_toan": "https://dvc.vn/p"}
        assert send(client, access, zns(template_id="300003", template_data=data))["error"] == 0


def test_refresh_rotates_the_pair_and_spends_the_old_refresh_token(client: httpx.Client) -> None:
    # given
    first = issue(client)
    # when
    second = refresh(client, first["refresh_token"])
    # then a new pair, expires_in as a string like Zalo's
    assert set(second) == {"access_token", "refresh_token", "expires_in"}
    assert second["expires_in"] == "90000"
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    # and both access tokens work, the old one until its own expiry
    assert send(client, first["access_token"], zns(tracking_id="a"))["error"] == 0
    assert send(client, second["access_token"], zns(tracking_id="b"))["error"] == 0
    # and the old refresh token is spent
    reused = refresh(client, first["refresh_token"])
    assert reused["error_name"] == "Invalid refresh token" and "access_token" not in reused
    counters = stats(client)
    assert counters["refresh"] == {"ok": 1, "refused": 1}
    assert counters["refresh_token_reuse"] == 1
    # and the new one rotates again
    assert "access_token" in refresh(client, second["refresh_token"])


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"app_id": "1234567890"}, -14002),
        ({"app_id": None}, -14002),
        ({"secret_key": "sai-khoa"}, -14004),
        ({"secret_key": None}, -14004),
        ({"grant_type": "authorization_code"}, -14001),
        ({"grant_type": None}, -14001),
        ({"refresh_token": None}, -14001),
        ({"refresh_token": "khong-ton-tai"}, None),  # a refused refresh token: no number, as Zalo answers it
    ],
)
def test_refresh_refusals(client: httpx.Client, changes: dict[str, str | None], code: int | None) -> None:
    # given
    pair = issue(client)
    # when
    answer = refresh(client, pair["refresh_token"], **changes)
    # then
    assert answer.get("error") == code
    assert set(answer) == {"error_name", "error_reason", "error_description"} | ({"error"} if code else set())
    assert APP_SECRET not in json.dumps(answer) and pair["refresh_token"] not in json.dumps(answer)
    # and the valid refresh token was not spent by the refused call
    assert "access_token" in refresh(client, pair["refresh_token"])
    counters = stats(client)
    assert counters["refresh"] == {"ok": 1, "refused": 1}
    assert counters["refresh_token_reuse"] == 0


def test_admin_expire_expires_every_access_token_but_not_refresh_tokens(client: httpx.Client) -> None:
    # given
    pairs = [issue(client) for _ in range(2)]
    assert send(client, pairs[0]["access_token"], zns())["error"] == 0
    # when
    assert client.post("/_admin/expire").json() == {"expired": 2}
    # then
    for pair in pairs:
        assert send(client, pair["access_token"], zns()) == {"error": -124, "message": "Access token đã hết hạn"}
    assert send(client, "khong-ton-tai", zns()) == {"error": -124, "message": "Access token không hợp lệ"}
    assert stats(client)["token_expired"] == 2
    # and a refresh gives a working token
    fresh = refresh(client, pairs[1]["refresh_token"])
    assert send(client, fresh["access_token"], zns())["error"] == 0


def test_access_tokens_issued_with_a_short_ttl_expire(client: httpx.Client) -> None:
    # given one token issued before and one after a short TTL is configured
    long_lived = issue(client)
    client.post("/_admin/faults", json={"access_ttl_seconds": 0.2}).raise_for_status()
    short = refresh(client, issue(client)["refresh_token"])
    assert short["expires_in"] == "1"
    assert send(client, short["access_token"], zns())["error"] == 0
    # when
    time.sleep(0.3)
    # then
    assert send(client, short["access_token"], zns())["error"] == -124
    assert send(client, long_lived["access_token"], zns())["error"] == 0
    assert stats(client)["token_expired"] == 1


_OMIT = object()


@pytest.mark.parametrize(
    ("changes", "code", "named"),
    [
        ({"phone": "0912345678"}, -108, None),
        ({"phone": "+84912345678"}, -108, None),
        ({"phone": "84 912 345 678"}, -108, None),
        ({"phone": "84212345678"}, -108, None),
        ({"phone": "8491234567"}, -108, None),
        ({"phone": "849123456789"}, -108, None),
        ({"phone": 84912345678}, -108, None),
        ({"phone": _OMIT}, -108, None),
        ({"phone": "0912", "template_id": "nope"}, -108, None),
        ({"template_id": "999999"}, -109, None),
        ({"template_id": 300001}, -109, None),
        ({"template_id": _OMIT}, -109, None),
        ({"template_id": "nope", "template_data": {}}, -109, None),
        ({"template_data": _OMIT}, -111, None),
        ({"template_data": None}, -111, None),
        ({"template_data": {}}, -111, None),
        ({"template_data": [CITIZEN]}, -112, "template_data"),
        ({"template_data": {k: v for k, v in template_data().items() if k != "ngay_hen_tra"}}, -112, "ngay_hen_tra"),
        ({"template_data": template_data(ten_thu_tuc="")}, -112, "ten_thu_tuc"),
        ({"template_data": template_data(ten_thu_tuc="   ")}, -112, "ten_thu_tuc"),
        ({"template_data": template_data(ten_cong_dan=None)}, -112, "ten_cong_dan"),
        ({"template_data": template_data(ten_cong_dan=[CITIZEN])}, -112, "ten_cong_dan"),
        ({"template_data": template_data(ten_cong_dan={"ho": CITIZEN})}, -112, "ten_cong_dan"),
        ({"template_data": template_data(ngay_hen_tra=True)}, -112, "ngay_hen_tra"),
        ({"template_data": template_data(so_dien_thoai=PHONE)}, -112, "so_dien_thoai"),
    ],
)
def test_zns_refusals(client: httpx.Client, changes: dict[str, Any], code: int, named: str | None) -> None:
    # given
    access = issue(client)["access_token"]
    body = {k: v for k, v in zns(**changes).items() if v is not _OMIT}
    # when
    answer = send(client, access, body)
    # then
    assert set(answer) == {"error", "message"} and answer["error"] == code
    assert answer["message"]
    if named:
        assert named in answer["message"]
    for personal in (CITIZEN, PHONE, "0912345678"):
        assert personal not in answer["message"]
    assert client.get("/_admin/messages").json() == []
    counters = stats(client)
    assert counters["answers"] == {str(code): 1} and counters["sent"] == 0 and counters["quota"]["used"] == 0


@pytest.mark.parametrize(
    ("content", "token"),
    [(b"{phone", "valid"), (b'["84912345678"]', "valid"), (b"", "valid"), (b"{}", None), (b"{}", "khong-ton-tai")],
)
def test_body_is_checked_before_the_token(client: httpx.Client, content: bytes, token: str | None) -> None:
    access = issue(client)["access_token"]
    headers = {"access_token": access if token == "valid" else token} if token else {}
    answer = client.post(ZNS, content=content, headers={**headers, "content-type": "application/json"}).json()
    assert answer["error"] == (-122 if token == "valid" else -124)


@pytest.mark.parametrize(
    ("admin", "phone", "code"),
    [
        ({}, "84912345000", -118),
        ({}, "84912345999", -141),
        ({}, PHONE, 0),
        ({"no_zalo": [PHONE]}, PHONE, -118),
        ({"refusing": [PHONE]}, PHONE, -141),
        ({"refusing": ["84912345000"]}, "84912345000", -141),
        ({"no_zalo": ["84912345999"]}, "84912345999", -118),
        ({"no_zalo": [OTHER_PHONE], "refusing": []}, PHONE, 0),
    ],
)
def test_phone_rules(client: httpx.Client, admin: dict[str, list[str]], phone: str, code: int) -> None:
    # given
    access = issue(client)["access_token"]
    assert client.post("/_admin/phones", json=admin).status_code == 200
    # when
    answer = send(client, access, zns(phone=phone))
    # then
    assert answer["error"] == code
    assert stats(client)["quota"]["used"] == (1 if code == 0 else 0)


def test_phone_sets_are_replaced_shown_validated_and_reset(client: httpx.Client) -> None:
    client.post("/_admin/phones", json={"no_zalo": [PHONE], "refusing": [OTHER_PHONE]})
    client.post("/_admin/phones", json={"refusing": []})
    assert client.get("/_admin/phones").json() == {"no_zalo": [PHONE], "refusing": []}
    invalid = client.post("/_admin/phones", json={"no_zalo": ["0912345678"]})
    assert invalid.status_code == 422 and "0912345678" not in invalid.text
    assert client.post("/_admin/phones", json={"blocked": [PHONE]}).status_code == 422
    client.post("/_admin/reset")
    assert client.get("/_admin/phones").json() == {"no_zalo": [], "refusing": []}


def test_daily_quota_is_counted_configurable_and_refuses_when_spent(client: httpx.Client) -> None:
    # given
    access = issue(client)["access_token"]
    assert client.post("/_admin/quota", json={"daily": 3, "used": 1}).json() == {"daily": 3, "used": 1}
    # when
    first, second = (send(client, access, zns(tracking_id=f"q{n}")) for n in range(2))
    spent = send(client, access, zns(tracking_id="q2"))
    # then
    assert first["data"]["quota"] == {"dailyQuota": "3", "remainingQuota": "1"}
    assert second["data"]["quota"] == {"dailyQuota": "3", "remainingQuota": "0"}
    assert spent["error"] == -144
    assert stats(client)["quota"] == {"daily": 3, "used": 3}
    # and checks before the quota still answer their own code
    assert send(client, access, zns(phone="0912345678"))["error"] == -108
    # and raising the quota lets sends through again
    client.post("/_admin/quota", json={"daily": 4})
    assert send(client, access, zns(tracking_id="q3"))["error"] == 0
    assert client.post("/_admin/quota", json={"daily": -1}).status_code == 422
    client.post("/_admin/reset")
    assert stats(client)["quota"] == {"daily": 100000, "used": 0}


def test_rate_limit_is_a_token_bucket_over_all_sends() -> None:
    app = simulator(rate_per_second=2)
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        tokens = [issue(c)["access_token"] for _ in range(2)]
        # an invalid send does not take from the bucket
        assert send(c, tokens[0], zns(phone="0912345678"))["error"] == -108
        # when three sends arrive at once with two tokens
        answers = [send(c, tokens[n % 2], zns(tracking_id=f"r{n}"))["error"] for n in range(3)]
        # then
        assert answers == [0, 0, -32]
        assert send(c, tokens[0], zns()) == {"error": -32, "message": "vượt quá giới hạn request"}
        time.sleep(0.6)
        assert send(c, tokens[1], zns(tracking_id="r4"))["error"] == 0
        assert stats(c)["answers"] == {"-108": 1, "0": 3, "-32": 2}


def test_repeated_tracking_id_is_accepted_and_counted(client: httpx.Client) -> None:
    access = issue(client)["access_token"]
    # when
    first = send(client, access, zns(tracking_id="evt-7"))
    second = send(client, access, zns(tracking_id="evt-7", phone=OTHER_PHONE))
    untracked = [send(client, access, {k: v for k, v in zns().items() if k != "tracking_id"}) for _ in range(2)]
    # then
    assert first["error"] == second["error"] == 0 and first["data"]["msg_id"] != second["data"]["msg_id"]
    assert all(a["error"] == 0 for a in untracked)
    assert stats(client)["duplicate_tracking"] == 1
    by_tracking = client.get("/_admin/messages", params={"tracking_id": "evt-7"}).json()
    assert [m["msg_id"] for m in by_tracking] == [first["data"]["msg_id"], second["data"]["msg_id"]]
    by_phone = client.get("/_admin/messages", params={"phone": OTHER_PHONE, "tracking_id": "evt-7"}).json()
    assert [m["msg_id"] for m in by_phone] == [second["data"]["msg_id"]]


def test_zevent_signature_is_a_plain_sha256_of_the_concatenation() -> None:
    body = json.dumps({"event_name": "user_received_message", "ten": CITIZEN}, ensure_ascii=False).encode()
    expected = hashlib.sha256((APP_ID + body.decode() + "1710466200000" + OA_KEY).encode()).hexdigest()
    assert zevent_signature(APP_ID, body, "1710466200000", OA_KEY) == "mac=" + expected
    assert zevent_signature(APP_ID, body + b" ", "1710466200000", OA_KEY) != "mac=" + expected


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A relay stand-in that checks each event's signature the way the relay must."""
    received: list[tuple[str, bytes]] = []
    app = FastAPI()

    @app.post("/zalo/events")
    async def events(request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get("x-zevent-signature", "")
        timestamp = json.loads(body)["timestamp"]
        received.append((signature, body))
        valid = signature == zevent_signature(APP_ID, body, timestamp, OA_KEY)
        return Response(status_code=200 if valid else 401)

    @app.post("/slow")
    async def slow() -> Response:
        await asyncio.sleep(1.0)
        return Response(status_code=200)

    with run_asgi(app) as url:
        yield url, received


def test_receipts_and_seen_events_are_signed(
    client: httpx.Client, receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    # given
    url, received = receiver
    config = client.post("/_admin/webhook", json={"url": f"{url}/zalo/events", "seen": True})
    assert config.json() == {"url": f"{url}/zalo/events", "seen": True, "retry_scale": 1.0, "timeout_seconds": 2.0}
    access = issue(client)["access_token"]
    # when
    msg_id = send(client, access, zns(tracking_id="evt-42"))["data"]["msg_id"]
    wait_for(lambda: stats(client)["webhooks"]["ok"] == 2)
    # then
    [(sig_received, raw_received), (sig_seen, raw_seen)] = received
    receipt, seen = json.loads(raw_received), json.loads(raw_seen)
    assert receipt["event_name"] == "user_received_message" and seen["event_name"] == "user_seen_message"
    assert receipt["app_id"] == seen["app_id"] == APP_ID
    assert receipt["message"] == {"msg_id": msg_id, "tracking_id": "evt-42"}
    assert seen["message"] == {"msg_ids": [msg_id], "tracking_id": "evt-42"}
    assert re.fullmatch(r"\d{13}", receipt["timestamp"])
    expected = hashlib.sha256(APP_ID.encode() + raw_received + receipt["timestamp"].encode() + OA_KEY.encode())
    assert sig_received == "mac=" + expected.hexdigest()
    assert sig_seen == zevent_signature(APP_ID, raw_seen, seen["timestamp"], OA_KEY)
    recipient = receipt["recipient"]["id"]
    assert recipient == seen["recipient"]["id"] and recipient.isdigit() and PHONE not in recipient
    assert stats(client)["webhooks"] == {"ok": 2, "failed": 0, "retries": 0, "disabled": False}


def test_receipts_do_not_block_the_send_and_failures_are_counted(
    client: httpx.Client, receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    url, _ = receiver
    access = issue(client)["access_token"]
    # given a slow receiver
    client.post("/_admin/webhook", json={"url": f"{url}/slow"}).raise_for_status()
    started = time.perf_counter()
    assert send(client, access, zns(tracking_id="s1"))["error"] == 0
    assert time.perf_counter() - started < 0.5
    wait_for(lambda: stats(client)["webhooks"]["ok"] == 1)
    # given an unreachable one, then a wrong path (their retries at once)
    client.post("/_admin/webhook", json={"url": f"http://127.0.0.1:{closed_port()}/zalo", "retry_scale": 0})
    send(client, access, zns(tracking_id="s2"))
    wait_for(lambda: stats(client)["webhooks"]["failed"] == 1)
    client.post("/_admin/webhook", json={"url": f"{url}/missing", "retry_scale": 0})
    send(client, access, zns(tracking_id="s3"))
    wait_for(lambda: stats(client)["webhooks"]["failed"] == 2)
    # when the webhook is removed nothing more is posted
    assert client.delete("/_admin/webhook").json() == {"status": "cleared"}
    send(client, access, zns(tracking_id="s4"))
    time.sleep(0.1)
    assert stats(client)["webhooks"] == {"ok": 1, "failed": 2, "retries": 10, "disabled": True}
    assert client.post("/_admin/webhook", json={"url": "ftp://x"}).status_code == 422
    assert client.post("/_admin/webhook", json={"url": url, "sign": True}).status_code == 422


def test_error_rate_answers_http_error_before_anything(client: httpx.Client) -> None:
    pair = issue(client)
    client.post("/_admin/faults", json={"error_rate": 1, "error_status": 502})
    assert client.post(ZNS, json=zns(), headers={"access_token": pair["access_token"]}).status_code == 502
    form = {"app_id": APP_ID, "grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    assert client.post(REFRESH, data=form, headers={"secret_key": APP_SECRET}).status_code == 502
    client.delete("/_admin/faults")
    assert "access_token" in refresh(client, pair["refresh_token"])
    counters = stats(client)
    assert counters["faults"] == {"error": 2, "unknown_error": 0}
    assert counters["sent"] == 0 and counters["answers"] == {} and client.get("/_admin/messages").json() == []


def test_unknown_error_rate_answers_minus_100_on_zns_only(client: httpx.Client) -> None:
    pair = issue(client)
    client.post("/_admin/faults", json={"unknown_error_rate": 1})
    assert send(client, pair["access_token"], zns()) == {"error": -100, "message": "lỗi không xác định"}
    assert "access_token" in refresh(client, pair["refresh_token"])
    counters = stats(client)
    assert counters["faults"] == {"error": 0, "unknown_error": 1}
    assert counters["answers"] == {"-100": 1} and counters["sent"] == 0


def test_seeded_faults_repeat_and_latency_delays(client: httpx.Client) -> None:
    access = issue(client)["access_token"]

    def statuses() -> list[int]:
        client.post("/_admin/faults", json={"error_rate": 0.5, "seed": 7})
        return [client.post(ZNS, json=zns(), headers={"access_token": access}).status_code for _ in range(12)]

    first = statuses()
    assert first == statuses() and {200, 503} == set(first)
    client.post("/_admin/faults", json={"latency_ms": 200})
    started = time.perf_counter()
    assert send(client, access, zns())["error"] == 0
    assert time.perf_counter() - started >= 0.2


def test_faults_are_validated_shown_and_reset(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"error_rate": 2}).status_code == 422
    assert client.post("/_admin/faults", json={"busy_rate": 1}).status_code == 422
    assert client.post("/_admin/faults", json={"access_ttl_seconds": 0}).status_code == 422
    client.post("/_admin/faults", json={"unknown_error_rate": 0.5, "seed": 4})
    assert client.get("/_admin/faults").json()["unknown_error_rate"] == 0.5
    assert client.delete("/_admin/faults").json() == {"status": "cleared"}
    client.post("/_admin/faults", json={"error_rate": 0.5})
    client.post("/_admin/reset")
    assert client.get("/_admin/faults").json() is None


def test_reset_forgets_tokens_messages_and_counters(client: httpx.Client) -> None:
    pair = issue(client)
    send(client, pair["access_token"], zns())
    client.post("/_admin/reset")
    assert send(client, pair["access_token"], zns())["error"] == -124
    assert refresh(client, pair["refresh_token"])["error_name"] == "Invalid refresh token"
    counters = stats(client)
    assert client.get("/_admin/messages").json() == []
    assert counters["sent"] == 0 and counters["token_expired"] == 0 and counters["refresh_token_reuse"] == 0
    assert counters["answers"] == {"-124": 1}


def test_custom_templates_and_quota() -> None:
    app = simulator(templates={"7895417a": {"ma_ho_so": "code"}}, daily_quota=5, access_ttl_seconds=600)
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        pair = issue(c)
        assert pair["expires_in"] == "600"
        assert send(c, pair["access_token"], zns())["error"] == -109
        answer = send(c, pair["access_token"], zns(template_id="7895417a", template_data={"ma_ho_so": DOSSIER}))
        assert answer["data"]["quota"] == {"dailyQuota": "5", "remainingQuota": "4"}
    with pytest.raises(TypeError):
        simulator(templates={"1": "ma_ho_so"})
    with pytest.raises(ValueError, match="unknown parameter types"):
        simulator(templates={"1": {"ma_ho_so": "string"}})


# ----------------------------------------------------------------------------------- typed parameters


@pytest.mark.parametrize(
    ("template_id", "changes", "named"),
    [
        ("300001", {"ten_cong_dan": "Nguyễn Thị Hương Giang Phạm Văn Đồng"},
         "ten_cong_dan (customer_name) dài 36 ký tự, vượt giới hạn 30"),
        ("300001", {"ma_ho_so": "H22-" + "1" * 30}, "ma_ho_so (code) dài 34 ký tự, vượt giới hạn 30"),
        ("300001", {"ma_ho_so": "HS 0001"}, "ma_ho_so (code) sai định dạng"),
        ("300001", {"ngay_hen_tra": "18-03-2024"}, "ngay_hen_tra (time) sai định dạng"),
        ("300001", {"ten_thu_tuc": "Xem tại https://dvc.gov.vn/p/1"}, "ten_thu_tuc (product_name) chứa liên kết"),
        ("300001", {"ten_thu_tuc": "Tra cứu ở dichvucong.gov.vn"}, "ten_thu_tuc (product_name) chứa liên kết"),
        ("300001", {"ten_thu_tuc": "x" * 201}, "vượt giới hạn 200"),
        ("300003", {"so_tien": "một triệu đồng"}, "so_tien (amount) sai định dạng"),
        ("300003", {"so_tien": "1.250.000.000.000.000 đồng"}, "so_tien (amount) dài"),
        ("300003", {"link_thanh_toan": "dichvucong/thanh-toan"}, "link_thanh_toan (url) sai định dạng"),
    ],
)
def test_parameters_are_checked_against_their_type_and_cap_naming_never_the_value(
    client: httpx.Client, template_id: str, changes: dict[str, str], named: str
) -> None:
    access = issue(client)["access_token"]
    params = {"ten_cong_dan": CITIZEN, "ma_ho_so": DOSSIER}
    params |= ({"ten_thu_tuc": "Đăng ký khai sinh", "ngay_hen_tra": "18/03/2024"} if template_id == "300001"
               else {"so_tien": "1.250.000 đ", "link_thanh_toan": "https://dichvucong.gov.vn/p?ma=LP-1"})
    answer = send(client, access, zns(template_id=template_id, template_data={**params, **changes}))
    assert answer["error"] == -112 and named in answer["message"], answer
    for value in changes.values():
        assert value not in answer["message"]
    assert stats(client)["sent"] == 0


@pytest.mark.parametrize("value", ["08:30 18/03/2024", "08:30:00 18/03/2024", "18/03/2024"])
def test_time_parameters_take_zalos_formats(client: httpx.Client, value: str) -> None:
    access = issue(client)["access_token"]
    assert send(client, access, zns(template_data=template_data(ngay_hen_tra=value)))["error"] == 0


# ----------------------------------------------------------------------------------- account-level conditions


def test_a_spent_balance_refuses_every_send_with_minus_115_until_it_is_topped_up(client: httpx.Client) -> None:
    access = issue(client)["access_token"]
    assert client.post("/_admin/balance", json={"messages": 1}).json() == {"messages": 1}
    assert send(client, access, zns(tracking_id="b1"))["error"] == 0
    spent = send(client, access, zns(tracking_id="b2"))
    assert spent == {"error": -115, "message": "Tài khoản ZNS không đủ số dư"}
    assert send(client, access, zns(tracking_id="b3", template_id="300006",
                                    template_data={"ten_cong_dan": CITIZEN, "ma_ho_so": DOSSIER}))["error"] == -115
    assert send(client, access, zns(phone="0912"))["error"] == -108  # the message's own faults come first
    assert client.post("/_admin/balance", json={"messages": None}).json() == {"messages": None}
    assert send(client, access, zns(tracking_id="b4"))["error"] == 0
    assert stats(client)["sent"] == 2 and stats(client)["balance"] is None
    assert client.post("/_admin/balance", json={"messages": -1}).status_code == 422


@pytest.mark.parametrize(("status", "code"), [("DISABLE", -146), ("PENDING_REVIEW", -131), ("REJECT", -131)])
def test_a_template_that_is_not_enabled_refuses_its_sends_only(client: httpx.Client, status: str, code: int) -> None:
    access = issue(client)["access_token"]
    assert client.post("/_admin/templates/300001", json={"status": status}).json()["status"] == status
    assert send(client, access, zns())["error"] == code
    other = zns(template_id="300006", template_data={"ten_cong_dan": CITIZEN, "ma_ho_so": DOSSIER})
    assert send(client, access, other)["error"] == 0
    client.post("/_admin/templates/300001", json={"status": "ENABLE"})
    assert send(client, access, zns())["error"] == 0
    assert client.post("/_admin/templates/999", json={"status": "ENABLE"}).status_code == 404


def test_a_template_daily_limit_refuses_with_minus_147_until_the_next_day(client: httpx.Client) -> None:
    access = issue(client)["access_token"]
    client.post("/_admin/templates/300001", json={"daily_quota": 2}).raise_for_status()
    answers = [send(client, access, zns(tracking_id=f"t{n}"))["error"] for n in range(3)]
    assert answers == [0, 0, -147]
    assert client.get("/_admin/templates").json()["300001"]["used"] == 2
    client.post("/_admin/clock", json={"at": "2026-11-21T08:00:00+07:00"}).raise_for_status()  # the next morning
    assert send(client, access, zns(tracking_id="t3"))["error"] == 0
    client.post("/_admin/templates/300001", json={"daily_quota": None})
    assert client.get("/_admin/templates").json()["300001"]["daily_quota"] is None


@pytest.mark.parametrize(("at", "code"), [("2026-11-20T21:59:59+07:00", 0), ("2026-11-20T22:00:00+07:00", -133),
                                          ("2026-11-21T03:00:00+07:00", -133), ("2026-11-21T05:59:59+07:00", -133),
                                          ("2026-11-21T06:00:00+07:00", 0), ("2026-11-20T16:00:00+00:00", -133)])
def test_the_night_rule_refuses_a_template_not_allowed_at_night(client: httpx.Client, at: str, code: int) -> None:
    access = issue(client)["access_token"]
    client.post("/_admin/clock", json={"at": at}).raise_for_status()
    answer = send(client, access, zns())
    assert answer["error"] == code
    if code:
        assert answer["message"] == "Mẫu ZNS này không được phép gửi vào ban đêm (từ 22h-6h)"
        client.post("/_admin/templates/300001", json={"night": True})
        assert send(client, access, zns(tracking_id="night"))["error"] == 0
    assert client.delete("/_admin/clock").json()["now"].startswith("2026-11-20T09:")


# ----------------------------------------------------------------------------------- webhook retries


def test_an_event_not_answered_200_is_posted_again_on_zalos_schedule(client: httpx.Client) -> None:
    from sandbox.zalo import WEBHOOK_RETRIES

    tries: list[float] = []
    app = FastAPI()

    @app.post("/events")
    async def events(request: Request) -> Response:
        tries.append(time.monotonic())
        return Response(status_code=200 if len(tries) == 4 else (202 if len(tries) == 3 else 500))

    with run_asgi(app) as url:
        client.post("/_admin/webhook", json={"url": f"{url}/events", "retry_scale": 0.001}).raise_for_status()
        send(client, issue(client)["access_token"], zns())
        wait_for(lambda: stats(client)["webhooks"]["ok"] == 1, timeout=10)
    # then the fourth try (three retries: a 202 is not Zalo's 200 either) was answered, at ≈30 s, 5 min, 15 min × scale
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(tries) == 4
    for gap, expected in zip(gaps, WEBHOOK_RETRIES, strict=False):
        assert expected * 0.001 <= gap < expected * 0.001 + 0.25, gaps
    assert stats(client)["webhooks"] == {"ok": 1, "failed": 0, "retries": 3, "disabled": False}


def test_an_answer_slower_than_two_seconds_counts_as_none(client: httpx.Client) -> None:
    answered: list[bool] = []
    app = FastAPI()

    @app.post("/events")
    async def events(request: Request) -> Response:
        answered.append(True)
        if len(answered) == 1:
            await asyncio.sleep(2.3)
        return Response(status_code=200)

    with run_asgi(app) as url:
        client.post("/_admin/webhook", json={"url": f"{url}/events", "retry_scale": 0.001}).raise_for_status()
        send(client, issue(client)["access_token"], zns())
        wait_for(lambda: stats(client)["webhooks"]["ok"] == 1, timeout=10)
    assert len(answered) == 2 and stats(client)["webhooks"]["retries"] == 1


def test_after_the_last_retry_the_webhook_is_disabled_until_set_again(client: httpx.Client) -> None:
    client.post("/_admin/webhook", json={"url": f"http://127.0.0.1:{closed_port()}/z", "retry_scale": 0.0005})
    access = issue(client)["access_token"]
    send(client, access, zns(tracking_id="w1"))
    wait_for(lambda: stats(client)["webhooks"]["disabled"], timeout=10)
    assert stats(client)["webhooks"] == {"ok": 0, "failed": 1, "retries": 5, "disabled": True}
    send(client, access, zns(tracking_id="w2"))  # nothing is posted to a disabled webhook
    time.sleep(0.2)
    assert stats(client)["webhooks"]["failed"] == 1
    client.post("/_admin/webhook", json={"url": f"http://127.0.0.1:{closed_port()}/z", "retry_scale": 0})
    assert stats(client)["webhooks"]["disabled"] is False
