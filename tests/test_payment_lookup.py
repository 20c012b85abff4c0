"""The portal's question back: ``dptracuuthanhtoanhs`` (by ``MaHoSo``, HTTP Basic) answered from the relay's bills
over HTTP, as OpenCPS answers it — a bill to pay (1), nothing to pay (0), no such dossier (-1), and no answer
without the credentials."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.payment import transaction_id
from sandbox.workload import generate_day
from schemas import payment as wire
from store import payments
from store.db import upgrade
from store.tables import BillState
from tasks.runtime import get_runtime
from tests.harness import drain, wait_for
from tests.payment_stack import CLIENT, LOOKUP_PASSWORD, LOOKUP_USER, ingest, later, pay, relay


def dossier_events() -> tuple[dict[str, Any], dict[str, Any]]:
    """A dossier's reception (which names its procedure) and its assessed fee, as the workload makes them."""
    day = generate_day(300, day=date(2026, 11, 20), seed=8)
    fee = next(e for e in day if e["type"] == "fee.assessed")
    received = next(e for e in day if e["type"] == "dossier.received" and e["dossier_code"] == fee["dossier_code"])
    return received, fee


@pytest.fixture
def platform(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(url)
    with relay(url, redis_url, tmp_path, monkeypatch, "platform") as urls:
        yield urls


def basic(user: str = LOOKUP_USER, password: str = LOOKUP_PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def look_up(urls: dict[str, Any], body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{urls['api']}/v1/callbacks/payment/dptracuuthanhtoanhs", json=body,
                      headers=basic() if headers is None else headers, timeout=10)


def test_an_unpaid_fee_is_answered_with_the_bill_to_pay(platform: dict[str, Any]) -> None:
    # given a dossier received, then its fee billed at the platform
    reception, fee = dossier_events()
    ingest([reception, fee])
    drain(later)
    code = transaction_id(fee["dossier_code"], fee["data"]["fee_id"])
    # when the portal asks about it
    answer = look_up(platform, {"MaHoSo": fee["dossier_code"]})
    # then it is told there is a bill to pay, the platform's bill with its transaction
    assert answer.status_code == 200
    body = answer.json()
    assert body["error_code"] == wire.LOOKUP_DUE
    bill = body["message"]
    assert (bill["transaction_id"], bill["client_id"], bill["MaHoSo"]) == (code, CLIENT, fee["dossier_code"])
    assert bill["MaTraCuuTT"].startswith(fee["dossier_code"]) and len(bill["MaTraCuuTT"]) == len(
        fee["dossier_code"]) + 14
    assert sum(int(x["SoTien"]) for x in bill["DSKhoanNop"]) == int(fee["data"]["amount"])
    assert bill["TenTTHC"] == reception["data"]["procedure_name"]  # named by the dossier's reception
    sent = httpx.get(f"{platform['provider']}/_admin/transactions", timeout=5).json()[0]["bill_info"]
    assert {k: v for k, v in bill.items() if k not in ("transaction_id", "client_id", "MaTraCuuTT")} == sent
    wire.LookupAnswer.model_validate(body)  # the contract's shape


def test_a_fee_paid_online_is_nothing_to_pay(platform: dict[str, Any]) -> None:
    # given two dossiers' fees billed, one paid its amount, one paid short
    day = generate_day(300, day=date(2026, 11, 20), seed=8)
    paid, short = [e for e in day if e["type"] == "fee.assessed"][:2]
    ingest([paid, short])
    drain(later)
    engine = get_runtime().engine
    for fee, amount in ((paid, int(paid["data"]["amount"])), (short, int(short["data"]["amount"]) - 1000)):
        code = transaction_id(fee["dossier_code"], fee["data"]["fee_id"])
        pay(platform, code, amount=amount)
        wait_for(lambda c=code: payments.get_bill(engine, c).state != BillState.ISSUED, 10, what="the callback")
    # when the portal asks, then both have nothing to pay online: one paid, one held for an operator
    for fee in (paid, short):
        assert look_up(platform, {"MaHoSo": fee["dossier_code"]}).json() == {"error_code": 0, "message": []}


def test_the_oldest_open_bill_of_a_dossier_is_answered_first(platform: dict[str, Any]) -> None:
    _, fee = dossier_events()
    second = {**fee, "event_id": str(uuid.uuid4()), "sequence": fee["sequence"] + 1,
              "data": {**fee["data"], "fee_id": fee["data"]["fee_id"] + "-2"}}
    ingest([fee])
    drain(later)
    ingest([second])
    drain(later)
    first_code = transaction_id(fee["dossier_code"], fee["data"]["fee_id"])
    assert look_up(platform, {"MaHoSo": fee["dossier_code"]}).json()["message"]["transaction_id"] == first_code
    pay(platform, first_code)
    engine = get_runtime().engine
    wait_for(lambda: payments.get_bill(engine, first_code).state == BillState.PAID, 10, what="the callback")
    assert look_up(platform, {"MaHoSo": fee["dossier_code"]}).json()["message"]["transaction_id"] == transaction_id(
        fee["dossier_code"], second["data"]["fee_id"])


def test_an_unknown_dossier_or_no_dossier_is_minus_1_and_a_known_one_without_a_fee_0(
    platform: dict[str, Any],
) -> None:
    reception, _ = dossier_events()
    ingest([reception])  # the relay knows the dossier, which has no fee
    assert look_up(platform, {"MaHoSo": reception["dossier_code"]}).json() == {"error_code": 0, "message": []}
    for body in ({"MaHoSo": "000.21.00.H49-261120-9999"}, {}, {"mahoso": reception["dossier_code"]}, ["x"]):
        answer = look_up(platform, body)
        assert (answer.status_code, answer.json()) == (200, {"error_code": -1, "message": []}), body


@pytest.mark.parametrize("headers", [
    {}, basic(password="sai-mat-khau"), basic(user="khach"), {"Authorization": "Bearer " + LOOKUP_PASSWORD},
    {"Authorization": "Basic khong-phai-base64!"},
], ids=["none", "wrong-password", "wrong-user", "not-basic", "not-base64"])
def test_without_the_credentials_nothing_is_answered(platform: dict[str, Any], headers: dict[str, str]) -> None:
    _, fee = dossier_events()
    ingest([fee])
    drain(later)
    answer = look_up(platform, {"MaHoSo": fee["dossier_code"]}, headers=headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic")
    assert answer.json() == {"error_code": -1, "message": []}


def test_a_destination_without_a_lookup_password_answers_no_one(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(url)
    with relay(url, redis_url, tmp_path, monkeypatch, "platform",
               lookup_password_env="MOTCUA_TEST_NO_SUCH_VARIABLE") as urls:
        answer = look_up(urls, {"MaHoSo": "000.21.00.H49-261120-0001"})
    assert answer.status_code == 401 and answer.json()["error_code"] == -1
