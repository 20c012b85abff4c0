"""The national payment platform simulator, served by a real uvicorn on loopback and spoken to over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from sandbox.payment import CALLBACK_TRIES, create_app
from schemas import payment as wire
from tests.harness import wait_for
from tests.servers import run_asgi

CLIENT, REQUEST_KEY, CALLBACK_KEY = "UBND-HALONG", "khoa-yeu-cau", "khoa-goi-lai"
NAME = "Trần Thị Bích Ngọc"


class Receiver:
    """The relay's side: records callbacks whose checksum holds; refuses the first of each in ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.callbacks: list[dict[str, Any]] = []
        self.bad = 0
        self.refuse = set(refuse)
        self.app = FastAPI()

        @self.app.post("/cb")
        async def receive(request: Request) -> dict[str, Any]:
            body = wire.PlatformCallback.model_validate(await request.json())
            if not wire.checksum_matches(body.check_sum, wire.callback_checksum(CALLBACK_KEY, body)):
                self.bad += 1
                return wire.platform_reply(False, "bad checksum")
            self.callbacks.append(body.model_dump())
            if body.transaction_id in self.refuse:
                self.refuse.discard(body.transaction_id)
                return wire.platform_reply(False, "try later")
            return wire.platform_reply(True, "ok")


@pytest.fixture
def platform() -> Iterator[str]:
    with run_asgi(create_app(client_id=CLIENT, request_key=REQUEST_KEY, callback_key=CALLBACK_KEY)) as url:
        yield url


def register(url: str, txn: str, amount: int = 150000, **changes: Any) -> httpx.Response:
    request = wire.PlatformTransaction(client_id=CLIENT, transaction_id=txn, trans_amount=amount,
                                       return_url="https://motcua.example/ket-qua")
    body = request.model_dump(mode="json") | {"check_sum": wire.request_checksum(REQUEST_KEY, request)} | changes
    return httpx.post(f"{url}{wire.TRANSACTIONS_PATH}", json=body, timeout=5)


def query(url: str, txn: str) -> httpx.Response:
    request = wire.PlatformTransaction(client_id=CLIENT, transaction_id=txn, command="query", trans_amount=0)
    body = request.model_dump(mode="json") | {"check_sum": wire.request_checksum(REQUEST_KEY, request)}
    return httpx.post(f"{url}{wire.TRANSACTIONS_PATH}", json=body, timeout=5)


def settled(url: str, day: str) -> list[dict[str, Any]]:
    body = {"client_id": CLIENT, "date": day, "check_sum": wire.settlement_checksum(REQUEST_KEY, CLIENT, day)}
    answer = httpx.post(f"{url}{wire.SETTLEMENTS_PATH}", json=body, timeout=5).json()
    assert answer["code"] == "00", answer
    return list(answer["data"])


def test_a_transaction_is_registered_once_and_answers_its_payment_url(platform: str) -> None:
    first = register(platform, "D-1-LP").json()
    assert first["code"] == "00" and first["payment_url"].endswith("txn=D-1-LP")
    assert register(platform, "D-1-LP").json()["payment_url"] == first["payment_url"]
    conflict = register(platform, "D-1-LP", amount=150001)
    assert conflict.status_code == 409 and conflict.json()["code"] == "05"
    [held] = httpx.get(f"{platform}/_admin/transactions", timeout=5).json()
    assert held["pay_calls"] == 3 and held["status"] == wire.UNPAID


@pytest.mark.parametrize(
    ("changes", "code"),
    [({"check_sum": "0" * 64}, "01"), ({"client_id": "OTHER"}, "02"), ({"trans_amount": -5}, "03")],
)
def test_refusals_say_why_in_the_platform_s_codes(platform: str, changes: dict[str, Any], code: str) -> None:
    assert register(platform, "D-2-LP", **changes).json()["code"] == code


def test_invalid_data_names_the_fields_never_the_values(platform: str) -> None:
    answer = register(platform, "D-3-LP", bill_info={"payer_name": NAME}).json()
    assert answer["code"] == "03" and "bill_info.dossier_code" in answer["message"]
    assert NAME not in answer["message"]


def test_a_citizen_pays_the_callback_is_signed_and_query_and_settlement_agree(platform: str) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as relay:
        httpx.post(f"{platform}/_admin/callback", json={"url": f"{relay}/cb"}, timeout=5).raise_for_status()
        register(platform, "D-4-LP", 250000)
        assert query(platform, "D-4-LP").json()["status"] == wire.UNPAID
        paid = httpx.post(f"{platform}/_admin/pay", json={"transaction_id": "D-4-LP",
                                                          "paid_at": "2026-11-20T10:30:05+07:00"}, timeout=5).json()
        wait_for(lambda: receiver.callbacks, 5, 0.05, "the callback")
    [callback] = receiver.callbacks
    assert receiver.bad == 0
    assert (callback["trans_amount"], callback["status"], callback["payment_time"]) == (250000, 0, "20261120103005")
    answer = query(platform, "D-4-LP").json()
    assert answer["status"] == wire.PAID and answer["gateway_trans_id"] == paid["gateway_trans_id"]
    assert [s["transaction_id"] for s in settled(platform, "20261120")] == ["D-4-LP"]
    assert settled(platform, "20261121") == []


def test_callbacks_lost_repeated_refused_and_with_another_amount(platform: str) -> None:
    receiver = Receiver(refuse=frozenset({"D-5-R"}))
    with run_asgi(receiver.app) as relay:
        httpx.post(f"{platform}/_admin/callback", json={"url": f"{relay}/cb"}, timeout=5).raise_for_status()
        for txn in ("L", "D", "R", "M"):
            register(platform, f"D-5-{txn}", 100000)
        pays = [{"transaction_id": "D-5-L", "lost": True}, {"transaction_id": "D-5-D", "copies": 3},
                {"transaction_id": "D-5-R"}, {"transaction_id": "D-5-M", "amount": 10000}]
        for body in pays:
            httpx.post(f"{platform}/_admin/pay", json=body, timeout=5).raise_for_status()
        wait_for(lambda: len(receiver.callbacks) >= 6, 10, 0.1, "the callbacks")
    by_txn: dict[str, list[dict[str, Any]]] = {}
    for c in receiver.callbacks:
        by_txn.setdefault(c["transaction_id"], []).append(c)
    assert "D-5-L" not in by_txn and len(by_txn["D-5-D"]) == 3
    assert by_txn["D-5-M"][0]["trans_amount"] == 10000
    assert len(by_txn["D-5-R"]) == 2 <= CALLBACK_TRIES  # refused once, sent again
    assert {s["transaction_id"]: s["trans_amount"] for s in settled(platform, _today())}["D-5-M"] == 10000


def test_an_extra_settlement_is_a_transaction_the_platform_never_registered(platform: str) -> None:
    httpx.post(f"{platform}/_admin/settle-extra", json={"transaction_id": "NOT-OURS-1", "amount": 50000,
                                                        "paid_at": "2026-11-20T09:00:00+07:00"}, timeout=5)
    assert [s["transaction_id"] for s in settled(platform, "20261120")] == ["NOT-OURS-1"]
    assert query(platform, "NOT-OURS-1").json()["code"] == "04"


def test_faults_busy_and_timeout_after_registering(platform: str) -> None:
    httpx.post(f"{platform}/_admin/faults", json={"busy_rate": 1}, timeout=5).raise_for_status()
    busy = register(platform, "D-6-LP")
    assert busy.status_code == 503 and busy.json()["code"] == "96"
    httpx.post(f"{platform}/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 2}, timeout=5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{platform}{wire.TRANSACTIONS_PATH}", timeout=httpx.Timeout(5, read=0.5),
                   json=register_body("D-6-LP"))
    httpx.delete(f"{platform}/_admin/faults", timeout=5)
    assert query(platform, "D-6-LP").json()["status"] == wire.UNPAID  # applied before the hang


def register_body(txn: str) -> dict[str, Any]:
    request = wire.PlatformTransaction(client_id=CLIENT, transaction_id=txn, trans_amount=150000)
    return request.model_dump(mode="json") | {"check_sum": wire.request_checksum(REQUEST_KEY, request)}


def _today() -> str:
    from datetime import datetime

    from schemas.vietnam import VN_TZ

    return datetime.now(VN_TZ).strftime("%Y%m%d")
