"""The payment adapter: assessed fees → bills at either provider, and the events that come back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from adapters.payment import (
    PaymentMapping,
    PaymentMappingError,
    bank_bill,
    bill_code,
    bill_created_event,
    judge_payment,
    paid_event,
    platform_bill,
)
from sandbox.workload import generate_day
from schemas.events import event_json, parse_event

OPTIONS: dict[str, Any] = {"provider": "platform", "beneficiary_account": "3511.0.1053561",
                           "beneficiary_name": "UBND thành phố Hạ Long", "beneficiary_bank": "KBNN Quảng Ninh",
                           "return_url": "https://motcua.halong.gov.vn/thanh-toan"}
MAPPING = PaymentMapping.from_options(OPTIONS)
ASSESSED = next(parse_event(e) for e in generate_day(200, day=date(2026, 11, 20), seed=3)
                if e["type"] == "fee.assessed")


def test_the_bill_code_is_the_fee_id_when_it_names_the_dossier_and_always_the_same() -> None:
    code = "000.00.12.H22-261120-0042"
    assert bill_code(code, f"{code}-LP") == f"{code}-LP"
    assert bill_code(code, "LP-1") == f"{code}-LP-1"
    long = bill_code(code, "PHI THAM DINH / 2026 / " + "x" * 40)
    assert long == bill_code(code, "PHI THAM DINH / 2026 / " + "x" * 40) and len(long) <= 50
    assert long.startswith(code) and " " not in long and "/" not in long


def test_a_platform_bill_carries_the_fee_lines_the_payer_and_the_beneficiary() -> None:
    code, amount, info = platform_bill(ASSESSED, MAPPING)
    assert code == bill_code(ASSESSED.dossier_code, ASSESSED.data.fee_id)
    assert amount == int(ASSESSED.data.amount) == sum(x.amount for x in info.fee_lines)
    assert info.payer_name == ASSESSED.applicant.name and info.dossier_code == ASSESSED.dossier_code
    assert (info.beneficiary_account, info.beneficiary_bank) == ("3511.0.1053561", "KBNN Quảng Ninh")


def test_a_bank_bill_is_the_same_bill_in_the_bank_s_words() -> None:
    request = bank_bill(ASSESSED, PaymentMapping.from_options({**OPTIONS, "provider": "bank"}))
    assert request.billCode == platform_bill(ASSESSED, MAPPING)[0]
    assert request.amount == int(ASSESSED.data.amount) and request.payerName == ASSESSED.applicant.name
    assert ASSESSED.dossier_code in request.description


@pytest.mark.parametrize(("data", "words"), [({"amount": 0}, "zero"), ({"lines": []}, "no lines")])
def test_a_fee_that_cannot_be_billed_says_why(data: dict[str, Any], words: str) -> None:
    # model_copy does not validate: the schema already refuses a fee without lines, the adapter's guard is tested
    fee = ASSESSED.model_copy(update={"data": ASSESSED.data.model_copy(update=data)})
    with pytest.raises(PaymentMappingError, match=words):
        platform_bill(fee, MAPPING)


def test_bill_created_and_paid_are_events_of_the_payment_origin_with_deterministic_ids() -> None:
    code = platform_bill(ASSESSED, MAPPING)[0]
    at = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    created = event_json(bill_created_event(ASSESSED, MAPPING, code, "https://pay.example/?txn=1", at))
    paid = event_json(paid_event(ASSESSED, MAPPING, code, "KP100000001", at))
    assert created == event_json(bill_created_event(ASSESSED, MAPPING, code, "https://pay.example/?txn=1", at))
    assert (created["event_id"], paid["event_id"]) == (f"payment:{code}:bill_created", f"payment:{code}:paid")
    for event in (created, paid):
        parsed = parse_event(event)
        assert parsed.origin == "payment" and parsed.dossier_code == ASSESSED.dossier_code
    assert created["data"]["payment_url"] == "https://pay.example/?txn=1"
    assert paid["data"]["transaction_id"] == "KP100000001" and paid["data"]["provider"] == "platform"


@pytest.mark.parametrize(("bill", "paid", "status", "judgement"), [
    (52000, 52000, True, "paid"), (52000, 5200, True, "amount_mismatch"), (52000, 520000, True, "amount_mismatch"),
    (52000, 52000, False, "not_paid"),
])
def test_only_the_exact_amount_is_paid(bill: int, paid: int, status: bool, judgement: str) -> None:
    assert judge_payment(bill, paid, status) == judgement


def test_the_mapping_refuses_an_unknown_provider_and_a_missing_beneficiary() -> None:
    with pytest.raises(ValueError, match="not one of"):
        PaymentMapping.from_options({**OPTIONS, "provider": "momo"})
    with pytest.raises(ValueError, match="beneficiary_account"):
        PaymentMapping.from_options({k: v for k, v in OPTIONS.items() if k != "beneficiary_account"})
