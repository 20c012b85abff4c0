"""The payment platform connector: its answer table row by row, and its calls against the simulator over HTTP;
the reconciliation's settlement sources (the endpoint and the bank's files)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.payment import PaymentMapping, platform_bill
from connectors.base import DeliveryError, Permanent, Retryable, build_http_client
from connectors.payment import ANSWERS, PlatformConnector, classify_answer
from connectors.settlement import SettlementEndpoint, SettlementFiles
from sandbox.payment import create_app
from sandbox.workload import fee_day
from schemas.events import FeeAssessed, parse_event
from schemas.payment import ANSWER_CODES, CREATE_PATH, DETAIL_PATH, PAID, SETTLEMENT_PATH, UNPAID
from tests.servers import run_asgi

CLIENT, REQUEST_KEY, CALLBACK_KEY = "UBND-HALONG", "khoa-yeu-cau-bi-mat", "khoa-goi-lai"
MAPPING = PaymentMapping(provider="platform", beneficiary_account="7111", beneficiary_name="Kho bạc Nhà nước Hạ Long",
                         beneficiary_bank="KBNN", return_url="https://motcua.example/kq")
FEE = parse_event(fee_day(1, day=date(2026, 11, 20), seed=5)[0])
assert isinstance(FEE, FeeAssessed)
BILL = platform_bill(FEE, MAPPING)

ANSWER_TABLE: list[tuple[str, type[DeliveryError] | None]] = [
    ("0", None), ("1", Permanent), ("2", Permanent), ("3", Permanent), ("4", Permanent), ("5", Permanent),
    ("96", Retryable), ("99", Retryable), ("42", Permanent), ("00", Permanent),
]


@pytest.mark.parametrize(("code", "expected"), ANSWER_TABLE, ids=[c for c, _ in ANSWER_TABLE])
def test_answer_table_row(code: str, expected: type[DeliveryError] | None) -> None:
    error = classify_answer("create", code, "Lý do", 200)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected and error is not None and "Lý do" in error.reason
        assert ("unknown code" in error.reason) == (code not in ANSWERS)


def test_every_documented_code_is_in_the_table() -> None:
    assert set(ANSWER_CODES) == set(ANSWERS)


@pytest.fixture
def platform() -> Iterator[str]:
    with run_asgi(create_app(client_id=CLIENT, request_key=REQUEST_KEY, callback_key=CALLBACK_KEY)) as url:
        yield url


def connector(url: str, key: str = REQUEST_KEY, read: float = 2.0) -> PlatformConnector:
    return PlatformConnector(create_url=url + CREATE_PATH, detail_url=url + DETAIL_PATH, client_id=CLIENT,
                             request_key=SecretStr(key), client=build_http_client(1.0, read))


def create(conn: PlatformConnector, txn: str, amount: int | None = None) -> str:
    """Create ``txn`` for the fee (at another ``amount`` when given); its payment URL."""
    bill, total = BILL.bill_info, BILL.amount
    if amount is not None:
        total = amount
        bill = bill.model_copy(update={"DSKhoanNop": [bill.DSKhoanNop[0].model_copy(update={"SoTien": str(amount)})]})
    return str(conn.create(txn, total, BILL.description, bill, MAPPING.return_url).payment_url)


def faults(url: str, **config: Any) -> None:
    httpx.post(f"{url}/_admin/faults", json=config, timeout=5).raise_for_status()


def test_create_detail_pay_and_settle(platform: str) -> None:
    conn = connector(platform)
    first = create(conn, "D42LP")
    assert first and create(conn, "D42LP") == first
    held = conn.detail("D42LP")
    assert held is not None and held.status == UNPAID and held.trans_amount == BILL.amount
    assert conn.detail("D43LP") is None
    httpx.post(f"{platform}/_admin/pay", json={"transaction_id": "D42LP", "paid_at": "2026-11-20T09:15:00+07:00"},
               timeout=5).raise_for_status()
    paid = conn.detail("D42LP")
    assert paid is not None and paid.status == PAID and paid.trans_amount == BILL.amount and paid.transaction_code
    settlements = SettlementEndpoint(url=platform + SETTLEMENT_PATH, client_id=CLIENT,
                                     request_key=SecretStr(REQUEST_KEY), client=build_http_client(1.0, 2.0))
    [settled] = settlements.settled(date(2026, 11, 20))
    assert (settled.transaction_id, settled.trans_amount, settled.payment_time) == ("D42LP", BILL.amount,
                                                                                    "20261120091500")
    assert settled.transaction_code == paid.transaction_code
    assert settlements.settled(date(2026, 11, 21)) == []


def test_a_wrong_key_is_permanent_with_a_hint_and_never_shown(platform: str) -> None:
    for call in (lambda c: create(c, "D44LP"), lambda c: c.detail("D44LP")):
        with pytest.raises(Permanent) as caught:
            call(connector(platform, key="khoa-sai"))
        assert "error 1" in caught.value.reason and "request key" in caught.value.reason
        assert "khoa-sai" not in caught.value.reason and REQUEST_KEY not in caught.value.reason


def test_an_id_taken_with_another_amount_is_permanent(platform: str) -> None:
    conn = connector(platform)
    create(conn, "D45LP")
    with pytest.raises(Permanent, match="error 5"):
        create(conn, "D45LP", amount=BILL.amount + 10000)


@pytest.mark.parametrize(("config", "words"), [
    ({"busy_rate": 1}, "error 96"),
    ({"error_rate": 1, "error_status": 503}, "HTTP 503"),
    ({"error_rate": 1, "error_status": 400}, "HTTP 400"),
])
def test_faults_map_to_their_classes(platform: str, config: dict[str, Any], words: str) -> None:
    faults(platform, **config)
    expected = Permanent if config.get("error_status") == 400 else Retryable
    with pytest.raises(expected, match=words):
        create(connector(platform), "D46LP")


def test_a_create_that_hangs_after_applying_is_retryable_and_the_repeat_finds_it(platform: str) -> None:
    faults(platform, timeout_rate=1, hang_seconds=2)
    with pytest.raises(Retryable, match="timeout"):
        create(connector(platform, read=0.5), "D47LP")
    httpx.delete(f"{platform}/_admin/faults", timeout=5)
    assert create(connector(platform), "D47LP")
    [held] = httpx.get(f"{platform}/_admin/transactions", timeout=5).json()
    assert held["pay_calls"] == 2


def test_a_closed_port_is_retryable() -> None:
    from tests.harness import free_port

    with pytest.raises(Retryable, match="connection failed"):
        connector(f"http://127.0.0.1:{free_port()}").detail("D48LP")


def test_the_connector_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="http"):
        PlatformConnector(create_url="ftp://x", detail_url="http://x", client_id=CLIENT,
                          request_key=SecretStr(REQUEST_KEY), client=build_http_client(1.0, 1.0))


# --------------------------------------------------------------------------- the bank's settlement files


def test_a_bank_s_file_is_the_day_s_settlement_list(tmp_path: Path) -> None:
    # given the file the bank sent for the day, with a BOM, an extra column and a row of the next day
    (tmp_path / "20261120.csv").write_text(
        "\ufefftransaction_id,transaction_code,trans_amount,payment_time,kenh\n"
        "6f1c2a9b0d4e8f7a3b21,KP1,52000,20261120091500,ATM\n"
        "0123456789abcdef0123,,20000,20261121000001,QR\n", encoding="utf-8")
    # when the reconciliation reads it, then it has the day's row
    [item] = SettlementFiles(tmp_path).settled(date(2026, 11, 20))
    assert (item.transaction_id, item.transaction_code, item.trans_amount) == ("6f1c2a9b0d4e8f7a3b21", "KP1", 52000)


def test_a_missing_file_is_retried_and_a_malformed_one_refused_naming_the_line(tmp_path: Path) -> None:
    files = SettlementFiles(tmp_path)
    with pytest.raises(Retryable, match="no file for 2026-11-20 yet"):
        files.settled(date(2026, 11, 20))
    (tmp_path / "20261120.csv").write_text("transaction_id,amount\nX,1\n", encoding="utf-8")
    with pytest.raises(Permanent, match="no column trans_amount, payment_time"):
        files.settled(date(2026, 11, 20))
    (tmp_path / "20261120.csv").write_text("transaction_id,trans_amount,payment_time\nX,năm mươi,20261120\n",
                                           encoding="utf-8")
    with pytest.raises(Permanent, match="line 2: payment_time, trans_amount"):
        files.settled(date(2026, 11, 20))
