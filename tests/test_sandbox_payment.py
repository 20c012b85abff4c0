"""The national payment platform simulator, served by a real uvicorn on loopback and spoken to over HTTP: it takes
the platform's contract (docs/contracts.md M1–M15) and refuses everything else, today's dialect first."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from adapters.payment import PaymentMapping, platform_bill
from sandbox.payment import CALLBACK_TRIES, create_app
from sandbox.workload import fee_day
from schemas import payment as wire
from schemas.events import FeeAssessed, parse_event
from schemas.vietnam import VN_TZ
from tests.harness import wait_for
from tests.servers import run_asgi

CLIENT, REQUEST_KEY, CALLBACK_KEY = "UBND-HALONG", "khoa-yeu-cau", "khoa-goi-lai"
MAPPING = PaymentMapping(provider="platform", beneficiary_account="7111", beneficiary_name="UBND phường Hồng Gai",
                         beneficiary_bank="KBNN", return_url="https://motcua.example/ket-qua")
FEE = parse_event(fee_day(1, day=date(2026, 11, 20), seed=6)[0])
assert isinstance(FEE, FeeAssessed)
NAME = FEE.applicant.name


class Receiver:
    """The relay's side: records callbacks whose checksum holds; refuses the first of each in ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.callbacks: list[dict[str, Any]] = []
        self.bad = 0
        self.refuse = set(refuse)
        self.app = FastAPI()

        @self.app.post("/cb")
        async def receive(request: Request) -> dict[str, Any]:
            raw = await request.json()
            body = wire.PlatformCallback.model_validate(raw)
            if not wire.checksum_matches(body.check_sum, wire.callback_checksum(CALLBACK_KEY, body)):
                self.bad += 1
                return wire.platform_reply(False, "bad checksum")
            self.callbacks.append(raw)
            if body.transaction_id in self.refuse:
                self.refuse.discard(body.transaction_id)
                return wire.platform_reply(False, "try later")
            return wire.platform_reply(True, "ok")


@pytest.fixture
def platform() -> Iterator[str]:
    with run_asgi(create_app(client_id=CLIENT, request_key=REQUEST_KEY, callback_key=CALLBACK_KEY)) as url:
        yield url


def create_body(txn: str, amount: int | None = None, key: str = REQUEST_KEY) -> dict[str, Any]:
    """A create-transaction as the contract has it, signed (at ``amount`` instead of the fee's when given)."""
    bill = platform_bill(FEE, MAPPING)
    total = bill.amount if amount is None else amount
    info = bill.bill_info.model_dump(mode="json", exclude_none=True)
    info["DSKhoanNop"] = [{"NoiDung": bill.description, "SoTien": str(total)}]
    body = {"client_id": CLIENT, "transaction_id": txn, "trans_amount": str(total), "command": "PAY",
            "version": "3.0", "description": bill.description, "locale": "vn", "country_code": "vi",
            "currency_code": "VND", "environment": "1", "bill_info": info, "return_url": MAPPING.return_url,
            "addition_fee": "0"}
    return body | {"check_sum": sign(key, f"0|{CLIENT}|PAY|{total}|{txn}|3.0")}


def sign(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def post(url: str, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
    answer = httpx.post(f"{url}{path}", json=body, timeout=5, **kwargs)
    assert answer.status_code == 200, answer.text  # M10: the verdict is in the body
    return dict(answer.json())


def create(url: str, txn: str, amount: int | None = None, **changes: Any) -> dict[str, Any]:
    return post(url, wire.CREATE_PATH, create_body(txn, amount) | changes)


def detail(url: str, txn: str, **changes: Any) -> dict[str, Any]:
    body = {"client_id": CLIENT, "transaction_id": txn, "command": "PAY",
            "check_sum": sign(REQUEST_KEY, f"{CLIENT}|PAY|{txn}")}
    return post(url, wire.DETAIL_PATH, body | changes)


def settled(url: str, day: str) -> list[dict[str, Any]]:
    body = {"client_id": CLIENT, "date": day, "check_sum": sign(REQUEST_KEY, f"{CLIENT}|{day}")}
    answer = post(url, wire.SETTLEMENT_PATH, body)
    assert answer["error"] == "0", answer
    return list(answer["data"])


def test_a_transaction_is_created_once_and_answers_its_payment_url(platform: str) -> None:
    first = create(platform, "D1LP")
    assert set(first) == {"error", "msg", "payment_url"} and first["error"] == "0"
    assert first["payment_url"].endswith("txn=D1LP")
    assert create(platform, "D1LP")["payment_url"] == first["payment_url"]
    assert create(platform, "D1LP", amount=150001)["error"] == "5"
    [held] = httpx.get(f"{platform}/_admin/transactions", timeout=5).json()
    assert held["pay_calls"] == 3 and held["status"] == wire.UNPAID
    assert held["bill_info"]["MaHoSo"] == FEE.dossier_code


def todays_create() -> dict[str, Any]:
    """A create exactly as the connector sent it before it spoke the contract (command "pay", version "1.0",
    snake_case bill_info, amounts as numbers, the checksum over its own order with the return URL)."""
    txn = f"{FEE.dossier_code}-LP"
    body: dict[str, Any] = {
        "client_id": CLIENT, "transaction_id": txn, "command": "pay", "version": "1.0", "trans_amount": 52000,
        "addition_fee": 0, "return_url": MAPPING.return_url,
        "bill_info": {"procedure_code": FEE.procedure_code, "procedure_name": "", "unit_code": FEE.unit_code,
                      "dossier_code": FEE.dossier_code,
                      "fee_lines": [{"code": "PCT-BS", "name": "Phí chứng thực bản sao", "amount": 52000}],
                      "payer_name": NAME, "beneficiary_account": "7111", "beneficiary_name": "UBND",
                      "beneficiary_bank": "KBNN"}}
    body["check_sum"] = sign(REQUEST_KEY, f"{CLIENT}|{txn}|pay|1.0|52000|0|{MAPPING.return_url}")
    return body


def test_today_s_dialect_is_refused_with_the_reasons(platform: str) -> None:
    # on today's path there is nothing
    assert httpx.post(f"{platform}/api/v1/transactions", json=todays_create(), timeout=5).status_code == 404
    # on the create endpoint: invalid data, naming what is missing, unknown and of the wrong type
    answer = post(platform, wire.CREATE_PATH, todays_create())
    assert answer["error"] == wire.INVALID_DATA
    for reason in ("description (missing)", "locale (missing)", "currency_code (missing)",
                   "environment (missing)", "trans_amount (wrong type)", "addition_fee (wrong type)",
                   "bill_info.MaDichVu (missing)", "bill_info.DSKhoanNop (missing)",
                   "bill_info.procedure_code (unknown field)", "bill_info.fee_lines (unknown field)",
                   "bill_info.payer_name (unknown field)", "bill_info.beneficiary_account (unknown field)"):
        assert reason in answer["msg"], reason
    assert NAME not in answer["msg"]  # fields named, never values
    # and today's look-up, a create with command "query", is no detail request
    query = {"client_id": CLIENT, "transaction_id": "X", "command": "query", "version": "1.0", "trans_amount": 0,
             "addition_fee": 0, "return_url": "", "check_sum": "0" * 64}
    assert post(platform, wire.CREATE_PATH, query)["error"] == wire.INVALID_DATA
    assert "version (unknown field)" in post(platform, wire.DETAIL_PATH, query)["msg"]
    assert httpx.get(f"{platform}/_admin/transactions", timeout=5).json() == []


def _drop(key: str) -> Any:
    return lambda b: {k: v for k, v in b.items() if k != key}


def _bill(**changes: Any) -> Any:
    return lambda b: b | {"bill_info": b["bill_info"] | changes}


def _bill_drop(key: str) -> Any:
    return lambda b: b | {"bill_info": {k: v for k, v in b["bill_info"].items() if k != key}}


def _resigned(**changes: Any) -> Any:
    """Fields changed and the checksum recomputed over them, so only the change is at fault."""
    def change(b: dict[str, Any]) -> dict[str, Any]:
        c = b | changes
        return c | {"check_sum": sign(REQUEST_KEY, f"{c['addition_fee']}|{c['client_id']}|{c['command']}|"
                                                   f"{c['trans_amount']}|{c['transaction_id']}|{c['version']}")}
    return change


REFUSALS: list[tuple[str, Any, str, str]] = [
    ("an unknown field", lambda b: b | {"customer_code": "X"}, "3", "customer_code (unknown field)"),
    ("a missing field", _drop("return_url"), "3", "return_url (missing)"),
    ("another casing", lambda b: _drop("client_id")(b) | {"Client_id": CLIENT}, "3", "Client_id (unknown field)"),
    ("another casing in the bill", lambda b: _bill_drop("MaHoSo")(b) | {"bill_info": _bill_drop("MaHoSo")(b)[
        "bill_info"] | {"mahoso": "X"}}, "3", "bill_info.mahoso (unknown field)"),
    ("a missing required bill field", _bill_drop("HoTenNguoiNop"), "3", "bill_info.HoTenNguoiNop (missing)"),
    ("an unknown bill field", _bill(payer_name="X"), "3", "bill_info.payer_name (unknown field)"),
    ("an amount as a number", lambda b: b | {"trans_amount": int(b["trans_amount"])}, "3",
     "trans_amount (wrong type)"),
    ("a fee amount as digits", _bill(PhiLePhi=[{"LoaiPhiLePhi": 2, "MaPhiLePhi": "X", "TenPhiLePhi": "X",
                                                "SoTien": "6000"}]), "3", "bill_info.PhiLePhi.0.SoTien (wrong type)"),
    ("an unknown fee item field", _bill(PhiLePhi=[{"LoaiPhiLePhi": 2, "MaPhiLePhi": "X", "TenPhiLePhi": "X",
                                                   "SoTien": 6000, "code": "X"}]), "3",
     "bill_info.PhiLePhi.0.code (unknown field)"),
    ("payments not adding up", _bill(DSKhoanNop=[{"NoiDung": "X", "SoTien": "1"}]), "3",
     "SoTien must add up to trans_amount"),
    ("another currency", lambda b: b | {"currency_code": "USD"}, "3", "currency_code (not an accepted value)"),
    ("another environment", lambda b: b | {"environment": "3"}, "3", "environment (not an accepted value)"),
    ("an environment as a number", lambda b: b | {"environment": 1}, "3", "environment"),
    ("an empty locale", lambda b: b | {"locale": ""}, "3", "locale (empty)"),
    ("an upper-case checksum", lambda b: b | {"check_sum": b["check_sum"].upper()}, "3",
     "check_sum (not the expected form)"),
    ("today's command", _resigned(command="pay"), "3", "command (the partner's is PAY)"),
    ("today's version", _resigned(version="1.0"), "3", "version (the partner's is 3.0)"),
    ("another client", _resigned(client_id="UBND-KHAC"), "2", ""),
    ("the checksum in today's order", lambda b: b | {"check_sum": sign(
        REQUEST_KEY, f"{CLIENT}|{b['transaction_id']}|PAY|3.0|{b['trans_amount']}|0|{b['return_url']}")}, "1", ""),
    ("the checksum with the fields reversed", lambda b: b | {"check_sum": sign(
        REQUEST_KEY, f"3.0|{b['transaction_id']}|{b['trans_amount']}|PAY|{CLIENT}|0")}, "1", ""),
    ("the checksum with the callback key", lambda b: b | {"check_sum": sign(
        CALLBACK_KEY, f"0|{CLIENT}|PAY|{b['trans_amount']}|{b['transaction_id']}|3.0")}, "1", ""),
    ("another envelope", lambda b: {"data": b}, "3", "data (unknown field)"),
    ("a list for a body", lambda b: [b], "3", "not a JSON object"),
]


@pytest.mark.parametrize(("what", "change", "code", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_the_simulator_refuses_what_the_platform_would(platform: str, what: str, change: Any, code: str,
                                                       words: str) -> None:
    answer = post(platform, wire.CREATE_PATH, change(create_body("D2LP")))
    assert answer["error"] == code and words in answer["msg"], answer
    assert httpx.get(f"{platform}/_admin/transactions", timeout=5).json() == []


def test_a_form_body_is_refused_before_it_is_read(platform: str) -> None:
    body = {k: v for k, v in create_body("D2LP").items() if k != "bill_info"}
    answer = httpx.post(f"{platform}{wire.CREATE_PATH}", data=body, timeout=5)
    assert answer.status_code == 415 and "application/json" in answer.json()["msg"]


def test_a_transaction_id_over_20_characters_is_cut_as_the_platform_may(platform: str) -> None:
    # M15: the transaction the platform holds, and tells of, is the first 20 characters
    long = f"{FEE.dossier_code}-LP"
    assert create(platform, long)["payment_url"].endswith(f"txn={long[:20]}")
    assert detail(platform, long[:20])["transaction_id"] == long[:20]
    assert detail(platform, long)["error"] == wire.NOT_FOUND
    # so another fee of the dossier, cut the same, meets the first one's transaction
    assert create(platform, f"{FEE.dossier_code}-PHI")["payment_url"].endswith(f"txn={long[:20]}")
    assert httpx.get(f"{platform}/_admin/stats", timeout=5).json()["counters"]["ids_cut"] == 2


def test_the_detail_has_its_own_shape_and_checksum(platform: str) -> None:
    create(platform, "D3LP")
    held = detail(platform, "D3LP")
    assert held["error"] == "0" and held["status"] == wire.UNPAID and held["trans_amount"] == str(
        platform_bill(FEE, MAPPING).amount)
    assert detail(platform, "D3XX")["error"] == wire.NOT_FOUND
    six = sign(REQUEST_KEY, f"0|{CLIENT}|PAY|0|D3LP|3.0")  # the create's checksum is not the detail's
    assert detail(platform, "D3LP", check_sum=six)["error"] == wire.CHECKSUM_INVALID
    assert detail(platform, "D3LP", version="3.0")["error"] == wire.INVALID_DATA
    assert detail(platform, "D3LP", client_id="UBND-KHAC")["error"] == wire.CLIENT_REFUSED


def test_a_citizen_pays_the_callback_is_signed_and_detail_and_settlement_agree(platform: str) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as relay:
        httpx.post(f"{platform}/_admin/callback", json={"url": f"{relay}/cb"}, timeout=5).raise_for_status()
        create(platform, "D4LP", 250000)
        assert detail(platform, "D4LP")["status"] == wire.UNPAID
        paid = httpx.post(f"{platform}/_admin/pay", json={"transaction_id": "D4LP",
                                                          "paid_at": "2026-11-20T10:30:05+07:00"}, timeout=5).json()
        wait_for(lambda: receiver.callbacks, 5, 0.05, "the callback")
    [callback] = receiver.callbacks
    assert receiver.bad == 0
    # M12: the fields kpCallBack reads or names, no payment time; M13: signed with hash_key_2
    assert set(callback) == {"client_id", "transaction_id", "transaction_code", "trans_amount", "payment_fee",
                             "command", "addition_fee", "version", "description", "locale", "country_code",
                             "currency_code", "environment", "status", "check_sum"}
    assert (callback["trans_amount"], callback["status"], callback["command"]) == ("250000", 0, "PAY")
    assert callback["check_sum"] == sign(CALLBACK_KEY, f"0|{CLIENT}|PAY|250000|D4LP|3.0")
    answer = detail(platform, "D4LP")
    assert answer["status"] == wire.PAID and answer["transaction_code"] == paid["transaction_code"]
    assert [s["transaction_id"] for s in settled(platform, "20261120")] == ["D4LP"]
    assert settled(platform, "20261121") == []


def test_callbacks_lost_repeated_refused_and_with_another_amount(platform: str) -> None:
    receiver = Receiver(refuse=frozenset({"D5R"}))
    with run_asgi(receiver.app) as relay:
        httpx.post(f"{platform}/_admin/callback", json={"url": f"{relay}/cb"}, timeout=5).raise_for_status()
        for txn in ("L", "D", "R", "M"):
            create(platform, f"D5{txn}", 100000)
        pays = [{"transaction_id": "D5L", "lost": True}, {"transaction_id": "D5D", "copies": 3},
                {"transaction_id": "D5R"}, {"transaction_id": "D5M", "amount": 10000}]
        for body in pays:
            httpx.post(f"{platform}/_admin/pay", json=body, timeout=5).raise_for_status()
        wait_for(lambda: len(receiver.callbacks) >= 6, 10, 0.1, "the callbacks")
    by_txn: dict[str, list[dict[str, Any]]] = {}
    for c in receiver.callbacks:
        by_txn.setdefault(c["transaction_id"], []).append(c)
    assert "D5L" not in by_txn and len(by_txn["D5D"]) == 3
    assert by_txn["D5M"][0]["trans_amount"] == "10000" and receiver.bad == 0  # signed as it is sent
    assert len(by_txn["D5R"]) == 2 <= CALLBACK_TRIES  # refused once, sent again
    assert {s["transaction_id"]: s["trans_amount"] for s in settled(platform, _today())}["D5M"] == "10000"


def test_an_extra_settlement_is_a_transaction_the_platform_never_registered(platform: str) -> None:
    httpx.post(f"{platform}/_admin/settle-extra", json={"transaction_id": "NOT-OURS-1", "amount": 50000,
                                                        "paid_at": "2026-11-20T09:00:00+07:00"}, timeout=5)
    assert [s["transaction_id"] for s in settled(platform, "20261120")] == ["NOT-OURS-1"]
    assert detail(platform, "NOT-OURS-1")["error"] == wire.NOT_FOUND


def test_faults_busy_and_timeout_after_creating(platform: str) -> None:
    httpx.post(f"{platform}/_admin/faults", json={"busy_rate": 1}, timeout=5).raise_for_status()
    assert create(platform, "D6LP")["error"] == wire.BUSY
    httpx.post(f"{platform}/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 2}, timeout=5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{platform}{wire.CREATE_PATH}", timeout=httpx.Timeout(5, read=0.5), json=create_body("D6LP"))
    httpx.delete(f"{platform}/_admin/faults", timeout=5)
    assert detail(platform, "D6LP")["status"] == wire.UNPAID  # applied before the hang


def _today() -> str:
    return datetime.now(VN_TZ).strftime("%Y%m%d")
