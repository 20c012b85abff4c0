"""The payment platform connector: its answer table row by row, and its calls against the simulator over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import DeliveryError, Permanent, Retryable, build_http_client
from connectors.payment import ANSWERS, PlatformConnector, classify_answer
from sandbox.payment import create_app
from schemas.payment import ANSWER_CODES, PAID, UNPAID, BillInfo, PlatformAnswer
from tests.servers import run_asgi

CLIENT, REQUEST_KEY, CALLBACK_KEY = "UBND-HALONG", "khoa-yeu-cau-bi-mat", "khoa-goi-lai"
BILL = BillInfo(procedure_code="2.000815.000.00.00.H22", unit_code="000.00.12.H22",
                dossier_code="000.00.12.H22-261120-0042", payer_name="Lê Văn Tám",
                beneficiary_account="7111", beneficiary_name="Kho bạc Nhà nước Hạ Long", beneficiary_bank="KBNN")

ANSWER_TABLE: list[tuple[str, type[DeliveryError] | None]] = [
    ("00", None), ("01", Permanent), ("02", Permanent), ("03", Permanent), ("04", Permanent), ("05", Permanent),
    ("96", Retryable), ("99", Retryable), ("42", Permanent),
]


@pytest.mark.parametrize(("code", "expected"), ANSWER_TABLE, ids=[c for c, _ in ANSWER_TABLE])
def test_answer_table_row(code: str, expected: type[DeliveryError] | None) -> None:
    error = classify_answer("register", PlatformAnswer(code=code, message="Lý do"), 200)
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
    return PlatformConnector(base_url=url, client_id=CLIENT, request_key=SecretStr(key),
                             client=build_http_client(1.0, read))


def faults(url: str, **config: Any) -> None:
    httpx.post(f"{url}/_admin/faults", json=config, timeout=5).raise_for_status()


def test_register_query_pay_and_settle(platform: str) -> None:
    conn = connector(platform)
    first = conn.register("D-42-LP", 52000, "https://motcua.example/kq", BILL)
    assert first.payment_url and conn.register("D-42-LP", 52000, "https://motcua.example/kq", BILL).payment_url \
        == first.payment_url
    held = conn.query("D-42-LP")
    assert held is not None and held.status == UNPAID
    assert conn.query("D-43-LP") is None
    httpx.post(f"{platform}/_admin/pay", json={"transaction_id": "D-42-LP", "paid_at": "2026-11-20T09:15:00+07:00"},
               timeout=5).raise_for_status()
    paid = conn.query("D-42-LP")
    assert paid is not None and paid.status == PAID and paid.trans_amount == 52000 and paid.gateway_trans_id
    assert [s.transaction_id for s in conn.settled(date(2026, 11, 20))] == ["D-42-LP"]
    assert conn.settled(date(2026, 11, 21)) == []


def test_a_wrong_key_is_permanent_with_a_hint_and_never_shown(platform: str) -> None:
    with pytest.raises(Permanent) as caught:
        connector(platform, key="khoa-sai").register("D-44-LP", 52000, "", BILL)
    assert "code 01" in caught.value.reason and "request key" in caught.value.reason
    assert "khoa-sai" not in caught.value.reason and REQUEST_KEY not in caught.value.reason


def test_an_id_taken_with_another_amount_is_permanent(platform: str) -> None:
    conn = connector(platform)
    conn.register("D-45-LP", 52000, "", BILL)
    with pytest.raises(Permanent, match="code 05"):
        conn.register("D-45-LP", 62000, "", BILL)


@pytest.mark.parametrize(("config", "words"), [
    ({"busy_rate": 1}, "code 96"),
    ({"error_rate": 1, "error_status": 503}, "HTTP 503"),
    ({"error_rate": 1, "error_status": 400}, "HTTP 400"),
])
def test_faults_map_to_their_classes(platform: str, config: dict[str, Any], words: str) -> None:
    faults(platform, **config)
    expected = Permanent if config.get("error_status") == 400 else Retryable
    with pytest.raises(expected, match=words):
        connector(platform).register("D-46-LP", 52000, "", BILL)


def test_a_register_that_hangs_after_applying_is_retryable_and_the_repeat_finds_it(platform: str) -> None:
    faults(platform, timeout_rate=1, hang_seconds=2)
    with pytest.raises(Retryable, match="timeout"):
        connector(platform, read=0.5).register("D-47-LP", 52000, "", BILL)
    httpx.delete(f"{platform}/_admin/faults", timeout=5)
    assert connector(platform).register("D-47-LP", 52000, "", BILL).payment_url
    [held] = httpx.get(f"{platform}/_admin/transactions", timeout=5).json()
    assert held["pay_calls"] == 2


def test_a_closed_port_is_retryable() -> None:
    from tests.harness import free_port

    with pytest.raises(Retryable, match="connection failed"):
        connector(f"http://127.0.0.1:{free_port()}").query("D-48-LP")
