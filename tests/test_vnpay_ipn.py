"""The VNPAY-style IPN over real HTTP: the bank simulator's QR gateway notifies the relay's
``/v1/callbacks/payment/vnpay``, signed as VNPAY's PHP sample signs (docs/contracts.md, "VNPAY-style IPN").

- paid means both ``vnp_ResponseCode`` and ``vnp_TransactionStatus`` are ``00``: an IPN without the status is
  taken (``00``) and recorded as not paid, no ``fee.paid``; the query of unanswered bills then finds the payment;
- the hash string is URL-encoded as VNPAY's samples encode it, so an order info with ``~ * ( ) !`` pays, and an
  IPN signed with Python's ``quote_plus`` (the relay's dialect before) is refused ``97``, changing nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from adapters.payment import bill_code
from schemas import payment as wire
from schemas.vietnam import VN_TZ
from services.payment.inbound import query_unanswered
from store import payments
from store.tables import BillState
from tasks.runtime import get_runtime
from tests.harness import drain, wait_for
from tests.payment_stack import (
    TMN,
    VNPAY_SECRET,
    amount_of,
    assessed_fees,
    ingest,
    later,
    payer,
    received,
    relay,
    verdicts,
)


@pytest.fixture
def bank(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from store.db import upgrade

    url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(url)
    with relay(url, redis_url, tmp_path, monkeypatch, "bank") as urls:
        yield urls


def billed(n: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``n`` assessed fees, billed at the bank; their bill codes."""
    fees = assessed_fees(n, seed=seed)
    ingest(fees)
    drain(later)
    return fees, [bill_code(f["dossier_code"], f["data"]["fee_id"]) for f in fees]


def bank_pay(urls: dict[str, Any], bill: str, **how: Any) -> None:
    httpx.post(f"{urls['provider']}/_admin/pay", json={"billCode": bill, **how}, timeout=5).raise_for_status()


def ipn_replies(urls: dict[str, Any], n: int) -> dict[str, int]:
    return dict(wait_for(lambda: (r := httpx.get(f"{urls['provider']}/_admin/stats", timeout=5).json()["ipn_replies"])
                         and sum(r.values()) >= n and r, 10, what=f"{n} IPN replies"))


def paid_bills(urls: dict[str, Any]) -> list[str]:
    """The bills the one-stop software heard paid, in order (a bank bill's code is its fee id)."""
    return [e["data"]["fee_id"] for e in received(urls["onestop"], "fee.paid")]


def test_an_ipn_without_transaction_status_is_not_paid_and_the_query_finds_the_payment(bank: dict[str, Any]) -> None:
    # given a bill the citizen pays, whose IPN carries vnp_ResponseCode 00 but no vnp_TransactionStatus
    _, [code] = billed(1, seed=11)
    bank_pay(bank, code, transaction_status=None)
    # when the relay takes it
    assert ipn_replies(bank, 1) == {"00": 1}
    drain(later)
    # then it is recorded as a payment not made: no fee.paid, the bill still issued
    assert verdicts(code) == ["not_paid"]
    assert paid_bills(bank) == []
    assert payments.get_bill(get_runtime().engine, code).state == BillState.ISSUED
    # and the query of bills without a paid callback asks the bank, which says paid: fee.paid once
    assert query_unanswered(payer()).paid == 1
    drain(later)
    assert paid_bills(bank) == [code]
    assert payments.get_bill(get_runtime().engine, code).state == BillState.PAID


def test_an_ipn_that_says_the_payment_failed_is_taken_and_not_paid(bank: dict[str, Any]) -> None:
    _, [code] = billed(1, seed=12)
    bank_pay(bank, code, transaction_status="02")
    assert ipn_replies(bank, 1) == {"00": 1}
    drain(later)
    assert verdicts(code) == ["not_paid"] and paid_bills(bank) == []


def test_an_order_info_with_the_characters_encoders_disagree_on_pays_once(bank: dict[str, Any]) -> None:
    # given a payment whose IPN's order info has ~ * ( ) !, signed as VNPAY's PHP sample signs it
    _, [code] = billed(1, seed=13)
    bank_pay(bank, code, order_info="Thanh toan ho so (le phi) ~*!", copies=2)
    # then the relay's hash string is the same: paid once, the repeat already confirmed
    assert ipn_replies(bank, 2) == {"00": 1, "02": 1}
    drain(later)
    assert paid_bills(bank) == [code] and sorted(verdicts(code)) == ["paid", "repeat"]  # the two race


def ipn(urls: dict[str, Any], params: dict[str, str], signature: str) -> dict[str, Any]:
    answer = httpx.get(f"{urls['api']}/v1/callbacks/payment/vnpay", params={**params, "vnp_SecureHash": signature},
                       timeout=10)
    assert answer.status_code == 200
    return dict(answer.json())


def test_an_ipn_hashed_with_pythons_quote_plus_is_refused_97_and_changes_nothing(bank: dict[str, Any]) -> None:
    # given an IPN for a real bill, its order info with a "~"
    [fee], [code] = billed(1, seed=14)
    params = {"vnp_TmnCode": TMN, "vnp_TxnRef": code, "vnp_Amount": str(amount_of(fee) * 100),
              "vnp_ResponseCode": "00", "vnp_TransactionStatus": "00", "vnp_TransactionNo": "14000077",
              "vnp_PayDate": datetime.now(VN_TZ).strftime("%Y%m%d%H%M%S"), "vnp_OrderInfo": "Le phi ~ ho so"}
    # when it is signed over the hash string Python's quote_plus builds (the relay's dialect before): "~" as is
    ours = "&".join(f"{k}={quote_plus(v)}" for k, v in sorted(params.items()))
    assert "%7E" in wire.vnpay_hash_data(params) and "~" in ours
    forged = hmac.new(VNPAY_SECRET.encode(), ours.encode(), hashlib.sha512).hexdigest()
    # then it is refused as a bad signature, and nothing is recorded
    assert ipn(bank, params, forged) == {"RspCode": "97", "Message": "Invalid signature"}
    assert verdicts(code) == []
    # while the same IPN signed as VNPAY's sample signs it pays
    assert ipn(bank, params, wire.vnpay_signature(VNPAY_SECRET, params))["RspCode"] == "00"
    drain(later)
    assert verdicts(code) == ["paid"] and paid_bills(bank) == [code]
