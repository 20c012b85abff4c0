"""docs/contracts.md M1–M15, the national payment platform's contract, one test per rule: what the relay sends (its
connector and its deliverer) against the simulator over real HTTP, and what it takes back (the platform's
callback, signed as the platform signs it, at the relay's API)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from adapters.payment import PaymentMapping, platform_bill, transaction_id
from connectors.base import Permanent, build_http_client
from connectors.payment import PlatformConnector, classify_answer
from sandbox.payment import create_app
from sandbox.workload import fee_day
from schemas import payment as wire
from schemas.events import FeeAssessed, parse_event
from store import payments
from store.db import upgrade
from store.tables import BillState, payment_callbacks
from tasks.runtime import get_runtime
from tests.harness import drain, wait_for
from tests.payment_stack import (
    CALLBACK_KEY,
    CLIENT,
    REQUEST_KEY,
    amount_of,
    assessed_fees,
    bill_codes,
    ingest,
    later,
    paid_codes,
    pay,
    received,
    relay,
    transactions,
    verdicts,
)
from tests.servers import run_asgi

MAPPING = PaymentMapping(provider="platform", beneficiary_account="3511.0.1054321.00000",
                         beneficiary_name="Ủy ban nhân dân phường Hồng Gai", beneficiary_bank="KBNN",
                         return_url="https://dichvucong.quangninh.gov.vn/thanh-toan/ket-qua")
FEE = parse_event(fee_day(1, day=date(2026, 11, 20), seed=9)[0])
assert isinstance(FEE, FeeAssessed)
BILL = platform_bill(FEE, MAPPING)
M1_FIELDS = {"client_id", "transaction_id", "trans_amount", "command", "version", "description", "locale",
             "country_code", "currency_code", "environment", "bill_info", "return_url", "addition_fee", "check_sum"}
M12_FIELDS = {"client_id", "transaction_id", "transaction_code", "trans_amount", "payment_fee", "command",
              "addition_fee", "version", "description", "locale", "country_code", "currency_code", "environment",
              "status", "check_sum"}


def hmac256(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def simulator() -> Iterator[str]:
    with run_asgi(create_app(client_id=CLIENT, request_key=REQUEST_KEY, callback_key=CALLBACK_KEY)) as url:
        yield url


def connector(url: str, **registration: Any) -> PlatformConnector:
    return PlatformConnector(create_url=url + wire.CREATE_PATH, detail_url=url + wire.DETAIL_PATH, client_id=CLIENT,
                             request_key=SecretStr(REQUEST_KEY), client=build_http_client(1.0, 5.0), **registration)


def sent(conn: PlatformConnector, txn: str = "M0000000000000000001") -> dict[str, Any]:
    """The create-transaction the connector sends for the fee, as JSON."""
    return conn.transaction(txn, BILL.amount, BILL.description, BILL.bill_info, MAPPING.return_url).model_dump(
        mode="json", exclude_none=True)


def create(url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(url + wire.CREATE_PATH, json=body, timeout=5)
    assert answer.status_code == 200
    return dict(answer.json())


# --------------------------------------------------------------------------- what the relay sends


def test_m1_a_create_carries_exactly_the_fourteen_fields(simulator: str) -> None:
    body = sent(connector(simulator))
    assert set(body) == M1_FIELDS
    assert create(simulator, body)["error"] == wire.SUCCESS
    missing = {k: v for k, v in body.items() if k != "locale"}
    assert "locale (missing)" in create(simulator, missing)["msg"]
    assert "bill_code (unknown field)" in create(simulator, body | {"bill_code": "X"})["msg"]


def test_m2_the_checksum_signs_six_fields_in_order_with_hash_key_1_and_not_the_return_url(simulator: str) -> None:
    body = sent(connector(simulator))
    expected = hmac256(REQUEST_KEY, f"0|{CLIENT}|PAY|{BILL.amount}|M0000000000000000001|3.0")
    assert body["check_sum"] == expected and expected == expected.lower()
    other_return = body | {"return_url": "https://motcua.example/khac"}  # unsigned: the same checksum holds
    assert create(simulator, other_return)["error"] == wire.SUCCESS
    reordered = body | {"check_sum": hmac256(REQUEST_KEY, f"{CLIENT}|0|PAY|{BILL.amount}|M0000000000000000001|3.0")}
    assert create(simulator, reordered)["error"] == wire.CHECKSUM_INVALID


def test_m3_command_pay_version_3_0_and_the_look_up_is_its_own_endpoint(simulator: str) -> None:
    conn = connector(simulator)
    body = sent(conn)
    assert (body["command"], body["version"]) == ("PAY", "3.0")
    assert create(simulator, body)["error"] == wire.SUCCESS
    assert conn.detail("M0000000000000000001") is not None  # the detail endpoint, not a create
    query = body | {"command": "query", "check_sum": hmac256(
        REQUEST_KEY, f"0|{CLIENT}|query|{BILL.amount}|M0000000000000000001|3.0")}
    assert create(simulator, query)["error"] == wire.INVALID_DATA


def test_m4_amounts_are_whole_dong_in_digits_signed_as_they_are_written(simulator: str) -> None:
    body = sent(connector(simulator))
    assert body["trans_amount"] == str(BILL.amount) and body["addition_fee"] == "0"
    assert body["check_sum"] == hmac256(REQUEST_KEY, f"{body['addition_fee']}|{CLIENT}|PAY|{body['trans_amount']}|"
                                                     f"M0000000000000000001|3.0")  # String.valueOf(long)
    as_number = body | {"trans_amount": BILL.amount}
    assert "trans_amount (wrong type)" in create(simulator, as_number)["msg"]
    with_cents = body | {"trans_amount": f"{BILL.amount}.00"}
    assert "trans_amount (not the expected form)" in create(simulator, with_cents)["msg"]


@pytest.mark.parametrize("environment", ["1", "2"])
def test_m5_currency_environment_locale_and_country(simulator: str, environment: str) -> None:
    body = sent(connector(simulator, environment=environment))
    assert (body["currency_code"], body["environment"]) == ("VND", environment)
    assert body["locale"] and body["country_code"]
    assert create(simulator, body)["error"] == wire.SUCCESS
    for bad in ({"currency_code": "vnd"}, {"environment": "0"}, {"country_code": ""}):
        assert create(simulator, sent(connector(simulator)) | bad)["error"] == wire.INVALID_DATA, bad


def test_m6_the_bill_has_every_required_field(simulator: str) -> None:
    info = sent(connector(simulator))["bill_info"]
    required = {"MaDichVu", "TKThuHuong", "MaNHThuHuong", "TenTKThuHuong", "PhiLePhi", "MaDonVi", "TenDonVi",
                "MaHoSo", "MaTTHC", "TenTTHC", "MaDVC", "TenDVC", "NoiDungThanhToan", "HoTenNguoiNop", "DSKhoanNop"}
    assert required <= set(info) and all(info[k] for k in required)
    for key in sorted(required):
        body = sent(connector(simulator))
        body["bill_info"] = {k: v for k, v in body["bill_info"].items() if k != key}
        assert f"bill_info.{key} (missing)" in create(simulator, body)["msg"]


def test_m7_optional_fields_are_the_platform_s_and_snake_case_is_refused(simulator: str) -> None:
    optional = {"MaLoaiHinhThuPhat", "TenLoaiHinhThuPhat", "SoCMNDNguoiNop", "DiaChiNguoiNop", "HuyenNguoiNop",
                "TinhNguoiNop", "MaCoQuanQD", "TenCoQuanQD", "KhoBac", "NgayQD", "SoQD", "ThoiGianViPham",
                "DiaDiemViPham", "TenNguoiViPham", "TaiKhoanThuNSNN"}
    body = sent(connector(simulator))
    assert set(body["bill_info"]) <= set(wire.BillInfo.model_fields) and set(wire.BillInfo.model_fields) - optional \
        <= set(body["bill_info"])  # the required ones always, an optional one only when we know it
    assert {"SoCMNDNguoiNop", "TinhNguoiNop", "MaCoQuanQD"} <= set(body["bill_info"]) & optional
    everything = body | {"bill_info": body["bill_info"] | {k: "" for k in optional}}
    assert create(simulator, everything)["error"] == wire.SUCCESS
    for ours in ("procedure_code", "fee_lines", "payer_name", "beneficiary_account"):
        refused = body | {"bill_info": body["bill_info"] | {ours: "x"}}
        assert f"bill_info.{ours} (unknown field)" in create(simulator, refused)["msg"]


def test_m8_fee_and_payment_items_are_exact_and_the_payments_are_the_amount(simulator: str) -> None:
    body = sent(connector(simulator))
    info = body["bill_info"]
    assert all(set(x) == {"LoaiPhiLePhi", "MaPhiLePhi", "TenPhiLePhi", "SoTien"} for x in info["PhiLePhi"])
    assert all(set(x) == {"NoiDung", "SoTien"} for x in info["DSKhoanNop"])
    assert sum(int(x["SoTien"]) for x in info["DSKhoanNop"]) == int(body["trans_amount"])
    short = body | {"bill_info": info | {"DSKhoanNop": [{"NoiDung": "x", "SoTien": str(BILL.amount - 1)}]}}
    assert "SoTien must add up to trans_amount" in create(simulator, short)["msg"]
    extra = body | {"bill_info": info | {"DSKhoanNop": [{**info["DSKhoanNop"][0], "MaKhoan": "1"}]}}
    assert "bill_info.DSKhoanNop.0.MaKhoan (unknown field)" in create(simulator, extra)["msg"]


def test_m9_the_bill_names_the_dossier_the_applicant_and_the_fee(relayed: dict[str, Any]) -> None:
    # given fees billed by the relay's deliverer, then what the platform holds is each fee's
    fees = relayed["fees"]
    held = transactions(relayed)
    for fee, code in zip(fees, bill_codes(fees), strict=True):
        info = held[code]["bill_info"]
        assert info["MaHoSo"] == fee["dossier_code"] and info["HoTenNguoiNop"] == fee["applicant"]["name"]
        assert held[code]["bill_amount"] == amount_of(fee)


def test_m10_the_answer_is_error_0_with_the_payment_url_and_code_00_is_no_success(simulator: str) -> None:
    answer = httpx.post(simulator + wire.CREATE_PATH, json=sent(connector(simulator)), timeout=5)
    assert answer.status_code == 200 and set(answer.json()) == {"error", "msg", "payment_url"}
    assert answer.json()["error"] == "0" and answer.json()["payment_url"]
    assert classify_answer("create", wire.SUCCESS, "", 200) is None
    assert isinstance(classify_answer("create", "00", "", 200), Permanent)


def test_m11_the_detail_is_its_own_request_with_its_own_checksum(simulator: str) -> None:
    conn = connector(simulator)
    create(simulator, sent(conn))
    request = {"client_id": CLIENT, "transaction_id": "M0000000000000000001", "command": "PAY",
               "check_sum": hmac256(REQUEST_KEY, f"{CLIENT}|PAY|M0000000000000000001")}
    answer = httpx.post(simulator + wire.DETAIL_PATH, json=request, timeout=5).json()
    assert answer["error"] == "0" and answer["status"] == wire.UNPAID
    assert conn.detail("M0000000000000000001") is not None and conn.detail("M0000000000000000009") is None
    wrong = request | {"check_sum": hmac256(REQUEST_KEY, f"{CLIENT}|M0000000000000000001|PAY")}
    assert httpx.post(simulator + wire.DETAIL_PATH, json=wrong, timeout=5).json()["error"] == wire.CHECKSUM_INVALID


# --------------------------------------------------------------------------- what the relay takes back


@pytest.fixture
def relayed(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The relay in front of the simulator, with three fees billed."""
    url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(url)
    with relay(url, redis_url, tmp_path, monkeypatch, "platform") as urls:
        fees = assessed_fees(3, seed=11)
        ingest(fees)
        drain(later)
        yield {**urls, "fees": fees}


def signed_callback(code: str, amount: int, key: str = CALLBACK_KEY, **changes: Any) -> dict[str, Any]:
    """A callback exactly as the platform sends it (M12), signed over the six fields in their order (M13)."""
    body = {"client_id": CLIENT, "transaction_id": code, "transaction_code": "KP900000001",
            "trans_amount": str(amount), "payment_fee": "0", "command": "PAY", "addition_fee": "0", "version": "3.0",
            "description": "Lệ phí", "locale": "vn", "country_code": "vi", "currency_code": "VND",
            "environment": "1", "status": 0} | changes
    signed = f"{body['addition_fee']}|{body['client_id']}|{body['command']}|{body['trans_amount']}|{code}|" \
             f"{body['version']}"
    return body | {"check_sum": hmac256(key, signed)}


def call_back(urls: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{urls['api']}/v1/callbacks/payment/platform", json=body, timeout=10)


def callback_rows() -> list[Any]:
    with get_runtime().engine.connect() as conn:
        return list(conn.execute(select(payment_callbacks)))


def test_m12_the_callback_has_no_payment_time_and_is_dated_when_received(relayed: dict[str, Any]) -> None:
    code, fee = bill_codes(relayed["fees"])[0], relayed["fees"][0]
    body = signed_callback(code, amount_of(fee))
    assert set(body) == M12_FIELDS and "payment_time" not in body
    before = datetime.now(UTC)
    assert call_back(relayed, body).json() == {"return_code": 0, "return_msg": "recorded"}
    after = datetime.now(UTC)
    bill = payments.get_bill(get_runtime().engine, code)
    assert bill.state == BillState.PAID and before <= bill.paid_at.replace(tzinfo=UTC) <= after
    drain(later)
    [paid] = received(relayed["onestop"], "fee.paid")
    assert datetime.fromisoformat(paid["data"]["paid_at"]) == bill.paid_at.replace(tzinfo=UTC)
    # a status other than 0 is no payment: recorded, answered 0, the bill still to pay
    other = bill_codes(relayed["fees"])[1]
    assert call_back(relayed, signed_callback(other, amount_of(relayed["fees"][1]), status="2")).json()[
        "return_code"] == 0
    assert payments.get_bill(get_runtime().engine, other).state == BillState.ISSUED and verdicts(other) == ["not_paid"]


def test_m13_the_callback_is_signed_with_hash_key_2_over_the_six_fields_in_order(relayed: dict[str, Any]) -> None:
    code, amount = bill_codes(relayed["fees"])[0], amount_of(relayed["fees"][0])
    good = signed_callback(code, amount)
    first_key = good | {"check_sum": signed_callback(code, amount, key=REQUEST_KEY)["check_sum"]}
    todays = good | {"check_sum": hmac256(CALLBACK_KEY, f"{CLIENT}|{code}|{amount}|0|20261120103005|KP900000001")}
    for refused in (first_key, todays):
        assert call_back(relayed, refused).json()["return_code"] == -1
    assert callback_rows() == []
    # the simulator's own callback, signed the platform's way, is taken
    pay(relayed, code)
    wait_for(lambda: transactions(relayed)[code]["callbacks"], 10, what="the platform's callback")
    assert transactions(relayed)[code]["callbacks"] == [0] and verdicts(code) == ["paid"]


def test_m14_replies_0_once_recorded_minus_1_for_a_tampered_one_and_a_repeat_changes_nothing(
    relayed: dict[str, Any],
) -> None:
    code, fee = bill_codes(relayed["fees"])[0], relayed["fees"][0]
    good = signed_callback(code, amount_of(fee))
    # a tampered callback: refused with -1, HTTP 200, and nothing changes
    for tampered in (good | {"check_sum": "0" * 64}, good | {"trans_amount": str(amount_of(fee) + 1000)},
                     good | {"client_id": "UBND-KHAC"}):
        answer = call_back(relayed, tampered)
        assert (answer.status_code, answer.json()["return_code"]) == (200, -1)
    assert callback_rows() == [] and payments.get_bill(get_runtime().engine, code).state == BillState.ISSUED
    # the callback as the platform signs it: 0; repeated: 0, and one fee.paid
    for _ in range(3):
        answer = call_back(relayed, good)
        assert (answer.status_code, answer.json()) == (200, {"return_code": 0, "return_msg": "recorded"})
    drain(later)
    assert paid_codes(relayed["onestop"])[code] == 1 and verdicts(code) == ["paid", "repeat", "repeat"]


def test_m15_transaction_ids_fit_20_characters_and_two_fees_that_would_collide_stay_apart(
    relayed: dict[str, Any],
) -> None:
    # given the bills the relay made: every id fits
    assert all(len(code) <= wire.TRANSACTION_ID_MAX for code in transactions(relayed))
    # and two fees of one dossier whose ids, cut to 20, would be one
    fee = relayed["fees"][0]
    twins = [{**fee, "event_id": str(uuid.uuid4()), "sequence": fee["sequence"] + n,
              "data": {**fee["data"], "fee_id": f"{fee['dossier_code']}-{suffix}"}}
             for n, suffix in ((1, "LPA"), (2, "LPB"))]
    assert len({t["data"]["fee_id"][:20] for t in twins}) == 1
    ingest(twins)
    drain(later)
    codes = bill_codes(twins)
    held = transactions(relayed)
    assert len(set(codes)) == 2 and set(codes) <= set(held)
    assert {held[c]["sent_transaction_id"] for c in codes} == set(codes)  # nothing was cut
    # and each one's payment comes back to its own bill
    pay(relayed, codes[1])
    wait_for(lambda: payments.get_bill(get_runtime().engine, codes[1]).state == BillState.PAID, 10,
             what="the callback")
    assert payments.get_bill(get_runtime().engine, codes[0]).state == BillState.ISSUED
    assert transaction_id(fee["dossier_code"], twins[1]["data"]["fee_id"]) == codes[1]

