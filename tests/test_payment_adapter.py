"""The payment adapter: assessed fees → bills at either provider (the platform's ``bill_info``, docs/contracts.md
M6–M9, and its 20-character transaction ids, M15), the portal's look-up answer, and the events that come back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from adapters.payment import (
    PaymentMapping,
    PaymentMappingError,
    bank_bill,
    bill_code,
    bill_code_of,
    bill_created_event,
    judge_payment,
    lookup_bill,
    paid_event,
    platform_bill,
    transaction_id,
)
from sandbox.workload import generate_day
from schemas.events import event_json, parse_event
from schemas.payment import TRANSACTION_ID_MAX, BillInfo

OPTIONS: dict[str, Any] = {"provider": "platform", "beneficiary_account": "3511.0.1053561",
                           "beneficiary_name": "UBND phường Hồng Gai", "beneficiary_bank": "KBNN Quảng Ninh",
                           "return_url": "https://motcua.halong.gov.vn/thanh-toan"}
MAPPING = PaymentMapping.from_options(OPTIONS)
ASSESSED = next(parse_event(e) for e in generate_day(200, day=date(2026, 11, 20), seed=3)
                if e["type"] == "fee.assessed")
ALLOWED = set(BillInfo.model_fields)


def test_the_bank_s_bill_code_is_the_fee_id_when_it_names_the_dossier_and_always_the_same() -> None:
    code = "000.21.00.H49-261120-0042"
    assert bill_code(code, f"{code}-LP") == f"{code}-LP"
    assert bill_code(code, "LP-1") == f"{code}-LP-1"
    long = bill_code(code, "PHI THAM DINH / 2026 / " + "x" * 40)
    assert long == bill_code(code, "PHI THAM DINH / 2026 / " + "x" * 40) and len(long) <= 50
    assert long.startswith(code) and " " not in long and "/" not in long
    assert bill_code_of("bank", code, f"{code}-LP") == f"{code}-LP"


def test_the_platform_s_transaction_id_fits_20_characters_and_is_the_same_on_every_attempt() -> None:
    # M15: the platform may cut a longer id; the dossier code alone is 25 characters
    dossier = "000.21.00.H49-261120-0042"
    first = transaction_id(dossier, f"{dossier}-LP")
    assert len(first) == TRANSACTION_ID_MAX and first.isalnum() and first == transaction_id(dossier, f"{dossier}-LP")
    assert bill_code_of("platform", dossier, f"{dossier}-LP") == first


def test_two_fees_whose_ids_would_collide_if_cut_get_two_transaction_ids() -> None:
    dossier = "000.21.00.H49-261120-0042"
    fees = (f"{dossier}-LP", f"{dossier}-PHI", f"{dossier}-LP-2")
    assert len({f"{dossier}-{fee}"[:TRANSACTION_ID_MAX] for fee in fees}) == 1  # what cutting would do
    assert len({transaction_id(dossier, fee) for fee in fees}) == 3
    # nor do two dossiers that share the fee id's text meet
    assert transaction_id("000.21.00.H49-261120-0042", "LP") != transaction_id("000.21.00.H49-261120-0043", "LP")


def test_a_platform_bill_is_the_platform_s_bill_info_of_the_fee() -> None:
    bill = platform_bill(ASSESSED, MAPPING, "Chứng thực bản sao")
    info = bill.bill_info
    wire = info.model_dump(mode="json", exclude_none=True)
    # M6/M7: the platform's PascalCase names and nothing else (no snake_case of ours)
    assert set(wire) <= ALLOWED and not any("_" in key for key in wire)
    assert {"procedure_code", "fee_lines", "payer_name", "beneficiary_account"}.isdisjoint(wire)
    # M9: the dossier, the applicant, the fee
    assert info.MaHoSo == ASSESSED.dossier_code and info.HoTenNguoiNop == ASSESSED.applicant.name
    assert bill.amount == int(ASSESSED.data.amount) and bill.transaction_id == transaction_id(
        ASSESSED.dossier_code, ASSESSED.data.fee_id)
    # M8: a PhiLePhi per fee line, with its amount as a number; DSKhoanNop adds up to the amount, in digits
    assert [(x.MaPhiLePhi, x.TenPhiLePhi, x.SoTien, x.LoaiPhiLePhi) for x in info.PhiLePhi] == [
        (x.code, x.name, int(x.amount), 2) for x in ASSESSED.data.lines]
    assert info.total == bill.amount and all(isinstance(x.SoTien, str) for x in info.DSKhoanNop)
    # whom the money goes to, for what service, from which unit
    assert (info.TKThuHuong, info.MaNHThuHuong, info.TenTKThuHuong) == (
        "3511.0.1053561", "KBNN Quảng Ninh", "UBND phường Hồng Gai")
    assert (info.MaDichVu, info.MaDonVi, info.TenDonVi) == ("2", ASSESSED.unit_code, "UBND phường Hồng Gai")
    assert (info.MaTTHC, info.MaDVC, info.TenTTHC, info.TenDVC) == (
        ASSESSED.procedure_code, ASSESSED.procedure_code, "Chứng thực bản sao", "Chứng thực bản sao")
    assert ASSESSED.dossier_code in info.NoiDungThanhToan and bill.description == info.NoiDungThanhToan


def test_the_destination_s_codes_fill_the_bill_and_a_procedure_without_a_name_shows_its_code() -> None:
    mapping = PaymentMapping.from_options({**OPTIONS, "service_type": "5", "agency_code": "000.00.00.H49",
                                           "agency_name": "Sở Tư pháp", "service_code_suffix": "-DVC",
                                           "fee_type": 1})
    info = platform_bill(ASSESSED, mapping).bill_info
    assert (info.MaDichVu, info.MaDonVi, info.TenDonVi, info.MaCoQuanQD) == (
        "5", "000.00.00.H49", "Sở Tư pháp", "000.00.00.H49")
    assert info.MaDVC == ASSESSED.procedure_code + "-DVC" and info.TenTTHC == ASSESSED.procedure_code
    assert {x.LoaiPhiLePhi for x in info.PhiLePhi} == {1}


def test_the_payer_s_optional_fields_are_sent_only_when_the_event_has_them() -> None:
    applicant = ASSESSED.applicant.model_copy(update={"id_number": None, "address": None})
    bare = platform_bill(ASSESSED.model_copy(update={"applicant": applicant}), MAPPING).bill_info
    assert bare.SoCMNDNguoiNop is None and bare.DiaChiNguoiNop is None and bare.TinhNguoiNop is None
    assert "SoCMNDNguoiNop" not in bare.model_dump(exclude_none=True)
    full = platform_bill(ASSESSED, MAPPING).bill_info
    address = ASSESSED.applicant.address
    assert address is not None and ASSESSED.applicant.id_number
    assert full.SoCMNDNguoiNop == ASSESSED.applicant.id_number and full.TinhNguoiNop == address.province
    assert full.DiaChiNguoiNop == f"{address.street}, {address.ward}"  # the commune in the address line


def test_the_portal_s_look_up_answers_the_bill_with_its_transaction_and_a_look_up_code() -> None:
    at = datetime(2026, 11, 20, 3, 4, 5, tzinfo=UTC)
    found = lookup_bill(ASSESSED, MAPPING, "UBND-HALONG", at, "Chứng thực bản sao")
    assert found.transaction_id == transaction_id(ASSESSED.dossier_code, ASSESSED.data.fee_id)
    assert found.client_id == "UBND-HALONG" and found.MaHoSo == ASSESSED.dossier_code
    assert found.MaTraCuuTT == f"{ASSESSED.dossier_code}20261120100405"  # the dossier, then Vietnam time
    assert found.DSKhoanNop == platform_bill(ASSESSED, MAPPING).bill_info.DSKhoanNop


def test_a_bank_bill_is_the_same_bill_in_the_bank_s_words() -> None:
    request = bank_bill(ASSESSED, PaymentMapping.from_options({**OPTIONS, "provider": "bank"}))
    assert request.billCode == bill_code(ASSESSED.dossier_code, ASSESSED.data.fee_id)
    assert request.amount == int(ASSESSED.data.amount) and request.payerName == ASSESSED.applicant.name
    assert ASSESSED.dossier_code in request.description


@pytest.mark.parametrize(("data", "words"), [({"amount": 0}, "zero"), ({"lines": []}, "no lines")])
def test_a_fee_that_cannot_be_billed_says_why(data: dict[str, Any], words: str) -> None:
    # model_copy does not validate: the schema already refuses a fee without lines, the adapter's guard is tested
    fee = ASSESSED.model_copy(update={"data": ASSESSED.data.model_copy(update=data)})
    with pytest.raises(PaymentMappingError, match=words):
        platform_bill(fee, MAPPING)


def test_bill_created_and_paid_are_events_of_the_payment_origin_with_deterministic_ids() -> None:
    code = platform_bill(ASSESSED, MAPPING).transaction_id
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
