"""Canonical fee events ⇄ payment providers' bills and payments (pure: no I/O).

Out: a ``fee.assessed`` event becomes one bill at the unit's provider — a transaction on the national
payment platform (:func:`platform_bill`: the platform's ``bill_info``, docs/contracts.md M6–M9), or a bill at the
bank's bill-collection service (:func:`bank_bill`). The bill's code is derived from the dossier and the fee
(:func:`bill_code_of`), the same on every attempt: the deliverer looks it up before creating it again, and
the provider refuses the code with another amount. At the platform the code is the ``transaction_id``,
which must hold in 20 characters (M15): :func:`transaction_id`.

Back: the bill becomes a ``fee.bill_created`` event carrying the payment link (for Zalo, when that
destination exists), and a verified payment becomes ``fee.paid``; both have deterministic ids
(``payment:<bill code>:bill_created``, ``payment:<bill code>:paid``), so a callback received five
times, or a payment also recovered by a query or the reconciliation, is one event. A payment for
another amount than the bill's is not a ``fee.paid``: :func:`judge_payment` says so. The portal's look-up
of a dossier's payment (``dptracuuthanhtoanhs``) is answered with :func:`lookup_bill`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from schemas.bank import BillRequest
from schemas.events import FeeAssessed, FeeBillCreated, FeeLine, FeePaid, parse_stored
from schemas.payment import TIME_FORMAT, TRANSACTION_ID_MAX, BillInfo, FeeItem, LookupBill, PaymentItem
from schemas.vietnam import VN_TZ, vnd

Provider = Literal["platform", "bank"]
PROVIDERS: tuple[Provider, ...] = ("platform", "bank")
BILL_CODE_MAX = 50
_BILL_CODE = re.compile(r"^[A-Za-z0-9._\-]{1,50}$")


class PaymentMappingError(ValueError):
    """An assessed fee that cannot become a bill (no lines, a zero amount): permanent, shown to the operator."""


@dataclass(frozen=True)
class PaymentMapping:
    """What a payment destination configures: the provider, whom the money goes to, where citizens return, and
    the platform's codes for the service and the collecting unit (``bill_info``'s ``MaDichVu``, ``MaDonVi``,
    ``TenDonVi``, ``MaDVC``, ``LoaiPhiLePhi``; each has a default, said where it is read)."""

    provider: Provider
    beneficiary_account: str
    beneficiary_name: str
    beneficiary_bank: str
    return_url: str = ""
    origin: str = "payment"
    service_type: str = "2"  # MaDichVu: 2 is fees and charges (thu phí, lệ phí), as OpenCPS configures it
    agency_code: str | None = None  # MaDonVi: by default the unit that assessed the fee
    agency_name: str | None = None  # TenDonVi: by default the beneficiary, the unit that collects
    service_code_suffix: str = ""  # MaDVC is MaTTHC followed by this (OpenCPS's MADVCAppend)
    fee_type: int = 2  # LoaiPhiLePhi: OpenCPS sends 2 for every line

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PaymentMapping:
        provider = str(options.get("provider", "platform"))
        if provider not in PROVIDERS:
            raise ValueError(f"payment provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        missing = [k for k in ("beneficiary_account", "beneficiary_name", "beneficiary_bank") if not options.get(k)]
        if missing:
            raise ValueError(f"payment destination needs {', '.join(missing)}")
        return cls(provider=provider,
                   beneficiary_account=str(options["beneficiary_account"]),
                   beneficiary_name=str(options["beneficiary_name"]),
                   beneficiary_bank=str(options["beneficiary_bank"]),
                   return_url=str(options.get("return_url") or ""),
                   origin=str(options.get("origin") or "payment"),
                   service_type=str(options.get("service_type") or "2"),
                   agency_code=str(options["agency_code"]) if options.get("agency_code") else None,
                   agency_name=str(options["agency_name"]) if options.get("agency_name") else None,
                   service_code_suffix=str(options.get("service_code_suffix") or ""),
                   fee_type=int(options.get("fee_type", 2)))


def bill_code(dossier_code: str, fee_id: str) -> str:
    """The bill's code at the bank: the fee id when it already names the dossier, else dossier-fee; a
    hash-shortened form when that is too long or holds characters providers refuse."""
    code = fee_id if fee_id.startswith(dossier_code) else f"{dossier_code}-{fee_id}"
    if _BILL_CODE.match(code):
        return code
    digest = hashlib.sha256(f"{dossier_code}|{fee_id}".encode()).hexdigest()[:16]
    prefix = re.sub(r"[^A-Za-z0-9._\-]", "", dossier_code)[: BILL_CODE_MAX - len(digest) - 1]
    return f"{prefix}-{digest}"


def transaction_id(dossier_code: str, fee_id: str) -> str:
    """The platform's ``transaction_id`` of a fee: the first 20 hex digits of SHA-256 over ``dossier|fee``.

    The platform may cut a longer id (M15), and a dossier code alone is 25 characters, so no readable form
    fits: cutting ``<dossier>-<fee>`` would give every fee of a dossier the same id. The digest is the same
    on every attempt (a retry registers the same transaction), differs for two fees whose ids share their
    first 20 characters, and is the bill's code in the ledger, so a callback finds its bill by it. With 80
    bits, the chance that two of ten million bills share an id is about 4 in 10^11, and the deliverer
    refuses such a meeting rather than mix the two up.
    """
    return hashlib.sha256(f"{dossier_code}|{fee_id}".encode()).hexdigest()[:TRANSACTION_ID_MAX]


def bill_code_of(provider: str, dossier_code: str, fee_id: str) -> str:
    """The bill's code at ``provider``: the platform's transaction id, or the bank's bill code."""
    return transaction_id(dossier_code, fee_id) if provider == "platform" else bill_code(dossier_code, fee_id)


def _assessed(event: FeeAssessed) -> tuple[str, int, list[FeeLine]]:
    data = event.data
    amount = int(data.amount)
    if amount <= 0:
        raise PaymentMappingError("the assessed fee is zero: there is nothing to bill")
    if not data.lines:  # the schema requires one; a model made without validation must not bill nothing
        raise PaymentMappingError("the assessed fee has no lines: the bill would not say what is paid for")
    return data.fee_id, amount, list(data.lines)


def payment_note(event: FeeAssessed) -> str:
    """What the citizen pays for, in words: the fee lines and the dossier (``description``, ``NoiDung``)."""
    names = "; ".join(x.name for x in event.data.lines)
    return f"{names} — hồ sơ {event.dossier_code}"[:500]


@dataclass(frozen=True)
class PlatformBill:
    """A fee as the platform's create-transaction carries it (the connector adds the partner's fields)."""

    transaction_id: str
    amount: int
    description: str
    bill_info: BillInfo


def platform_bill(event: FeeAssessed, mapping: PaymentMapping, procedure_name: str | None = None) -> PlatformBill:
    """The platform's transaction for a ``fee.assessed`` event (M6–M9).

    ``MaHoSo`` is the dossier, ``HoTenNguoiNop`` the applicant and ``trans_amount`` the fee. ``PhiLePhi`` has
    a line per fee line; ``DSKhoanNop`` is one payment of the whole amount, as OpenCPS sends it, so it adds up
    to ``trans_amount`` whatever the lines say. ``MaTTHC`` is the procedure's national code and ``MaDVC`` that
    code with the destination's suffix; ``TenTTHC`` and ``TenDVC`` are the procedure's name
    (``procedure_name``, which the deliverer finds among the dossier's events), else its code. The payer's ID
    number, address and province go in the optional fields when the event has them; ``MaCoQuanQD`` and
    ``TenCoQuanQD`` are the unit's, as OpenCPS's comment says they coincide. Nothing else is sent.
    """
    fee_id, amount, lines = _assessed(event)
    name = procedure_name or event.procedure_code
    unit_code = mapping.agency_code or event.unit_code
    unit_name = mapping.agency_name or mapping.beneficiary_name
    note = payment_note(event)
    applicant = event.applicant
    address = applicant.address
    street = ", ".join(p for p in (address.street, address.ward) if p) if address else ""
    info = BillInfo(
        MaDichVu=mapping.service_type, TKThuHuong=mapping.beneficiary_account, MaNHThuHuong=mapping.beneficiary_bank,
        TenTKThuHuong=mapping.beneficiary_name,
        PhiLePhi=[FeeItem(LoaiPhiLePhi=mapping.fee_type, MaPhiLePhi=x.code, TenPhiLePhi=x.name, SoTien=int(x.amount))
                  for x in lines],
        MaDonVi=unit_code, TenDonVi=unit_name, MaHoSo=event.dossier_code, MaTTHC=event.procedure_code,
        TenTTHC=name, MaDVC=event.procedure_code + mapping.service_code_suffix, TenDVC=name,
        NoiDungThanhToan=note, HoTenNguoiNop=applicant.name,
        DSKhoanNop=[PaymentItem(NoiDung=note, SoTien=str(amount))],
        SoCMNDNguoiNop=applicant.id_number or None, DiaChiNguoiNop=street or None,
        HuyenNguoiNop=(address.district or None) if address else None,
        TinhNguoiNop=(address.province or None) if address else None,
        MaCoQuanQD=unit_code, TenCoQuanQD=unit_name,
    )
    return PlatformBill(transaction_id(event.dossier_code, fee_id), amount, note, info)


def lookup_bill(event: FeeAssessed, mapping: PaymentMapping, client_id: str, at: datetime,
                procedure_name: str | None = None) -> LookupBill:
    """The portal's ``dptracuuthanhtoanhs`` answer for a bill still to pay: its bill_info, its transaction and
    client ids, and ``MaTraCuuTT``, the dossier code followed by the time asked (Vietnam), as OpenCPS builds it."""
    bill = platform_bill(event, mapping, procedure_name)
    return LookupBill(**bill.bill_info.model_dump(exclude_none=True), transaction_id=bill.transaction_id,
                      client_id=client_id,
                      MaTraCuuTT=event.dossier_code + at.astimezone(VN_TZ).strftime(TIME_FORMAT))


def bank_bill(event: FeeAssessed, mapping: PaymentMapping) -> BillRequest:
    """The ``CreateBill`` request of a ``fee.assessed`` event at the bank."""
    fee_id, amount, lines = _assessed(event)
    due = event.data.due_at
    names = "; ".join(x.name for x in lines)
    return BillRequest(
        billCode=bill_code(event.dossier_code, fee_id), amount=amount,
        payerName=event.applicant.name, description=f"{names} — hồ sơ {event.dossier_code}"[:500],
        dossierCode=event.dossier_code, unitCode=event.unit_code[:20],
        dueDate=due.date() if due else None,  # the day in the fee's own offset, as the one-stop software wrote it
    )


def _follow_up(assessed: FeeAssessed, kind: str, event_id: str, at: str, origin: str,
               data: dict[str, Any]) -> dict[str, Any]:
    """An event of the payment origin, built on the assessed fee's envelope (unit, procedure, applicant).
    Its ``sequence`` is a placeholder: the ledger numbers what a provider reports. Its codes are the stored
    fee's, checked when it came in, so they are not checked again."""
    return {
        "event_id": event_id, "type": kind, "origin": origin, "unit_code": assessed.unit_code,
        "dossier_code": assessed.dossier_code, "procedure_code": assessed.procedure_code, "sequence": 1,
        "occurred_at": at, "applicant": assessed.applicant, "data": data,  # the applicant validated already
    }


def bill_created_event(assessed: FeeAssessed, mapping: PaymentMapping, code: str, payment_url: str,
                       at: datetime) -> FeeBillCreated:
    """``fee.bill_created``: the bill the provider holds for the assessed fee, with its payment link."""
    data = assessed.data
    raw = _follow_up(assessed, "fee.bill_created", f"payment:{code}:bill_created", at.isoformat(), mapping.origin,
                     {"fee_id": data.fee_id, "amount": data.amount, "provider": mapping.provider,
                      "bill_code": code, "payment_url": payment_url,
                      **({"due_at": data.due_at} if data.due_at else {})})
    return parse_stored(raw, kind=FeeBillCreated)


def paid_event(assessed: FeeAssessed, mapping: PaymentMapping, code: str, transaction_id: str,
               paid_at: datetime) -> FeePaid:
    """``fee.paid`` for a payment of the bill's amount (see :func:`judge_payment`)."""
    data = assessed.data
    raw = _follow_up(assessed, "fee.paid", f"payment:{code}:paid", paid_at.isoformat(), mapping.origin,
                     {"fee_id": data.fee_id, "amount": data.amount, "provider": mapping.provider,
                      "transaction_id": transaction_id, "paid_at": paid_at.isoformat()})
    return parse_stored(raw, kind=FeePaid)


Judgement = Literal["paid", "amount_mismatch", "not_paid"]


def judge_payment(bill_amount: int, paid_amount: int, status_paid: bool) -> Judgement:
    """What a provider's report of a payment means for the bill: only the exact amount is paid."""
    if not status_paid:
        return "not_paid"
    return "paid" if paid_amount == bill_amount else "amount_mismatch"


# --------------------------------------------------------------------------- reconciliation ("đối soát")

Outcome = Literal["matched", "recovered", "not_settled", "amount_mismatch", "unknown", "duplicate"]
OUTCOMES: dict[Outcome, str] = {
    "matched": "Khớp (đã thanh toán, có thông báo)",
    "recovered": "Đã thanh toán, không nhận được thông báo: đã bổ sung",
    "not_settled": "Có thông báo, chưa được quyết toán",
    "amount_mismatch": "Sai số tiền: tạm giữ, chưa ghi nhận",
    "unknown": "Giao dịch không có hóa đơn",
    "duplicate": "Thanh toán trùng: cần hoàn tiền",
}
RECOVERED_NOTES = {
    "query": "paid, no callback came: found by the query of unanswered bills",
    "reconciliation": "paid, no callback came: recorded as paid by the reconciliation",
}
ANOMALIES: tuple[Outcome, ...] = ("recovered", "not_settled", "amount_mismatch", "unknown", "duplicate")


@dataclass(frozen=True)
class Settlement:
    """One line of the provider's list of a day's settled payments."""

    bill_code: str
    transaction_id: str
    amount: int
    paid_at: datetime


@dataclass(frozen=True)
class BillView:
    bill_code: str
    amount: int
    dossier_code: str
    paid_via: str | None = None


@dataclass(frozen=True)
class CallbackView:
    """A verified callback reporting a payment."""

    bill_code: str
    transaction_id: str
    amount: int
    paid_at: datetime | None


@dataclass(frozen=True)
class ReconciliationLine:
    outcome: Outcome
    bill_code: str
    transaction_id: str | None
    dossier_code: str | None
    bill_amount: int | None
    settled_amount: int | None
    callbacks: int
    paid_at: datetime | None
    note: str


@dataclass(frozen=True)
class Reconciliation:
    """A day's reconciliation of one destination: its lines and the total the provider settled."""

    destination: str
    day: date
    lines: list[ReconciliationLine]
    settled_total: int

    def count(self, outcome: str) -> int:
        return sum(1 for line in self.lines if line.outcome == outcome)

    @property
    def anomalies(self) -> list[ReconciliationLine]:
        return [line for line in self.lines if line.outcome in ANOMALIES]


def reconcile(day: date, settled: list[Settlement], bills: Mapping[str, BillView],
              callbacks: list[CallbackView], tz: Any) -> list[ReconciliationLine]:
    """Match a day's settled payments against the bills issued and the callbacks received.

    Each settled payment is one line: *matched* (the bill's amount, and a callback came), *recovered*
    (the bill's amount, no callback: the caller marks it paid), *amount_mismatch* (held, never paid),
    *unknown* (no bill of ours by that code), or *duplicate* (a later payment of a bill already paid
    that day). Each bill with a callback for a payment on ``day`` (in ``tz``) that the list does not
    hold is one more line: *not_settled*, or *unknown* for a bill never issued. A callback repeated
    is no anomaly: its count is on the bill's line.
    """
    heard: dict[str, list[CallbackView]] = {}
    for cb in callbacks:
        heard.setdefault(cb.bill_code, []).append(cb)
    by_bill: dict[str, list[Settlement]] = {}
    for s in sorted(settled, key=lambda s: (s.paid_at, s.transaction_id)):
        by_bill.setdefault(s.bill_code, []).append(s)
    lines: list[ReconciliationLine] = []
    for code, items in by_bill.items():
        bill = bills.get(code)
        count = len(heard.get(code, []))
        for n, item in enumerate(items):
            outcome: Outcome
            if bill is None:
                outcome = "unknown"
                note = "no bill was issued with this code" + (f"; {count} callback(s) received" if count else "")
            elif n > 0:
                outcome, note = "duplicate", f"paid again after {items[0].transaction_id}: refund it"
            elif item.amount != bill.amount:
                outcome = "amount_mismatch"
                note = f"paid {vnd(item.amount)} for a bill of {vnd(bill.amount)}: held, not marked paid"
            elif count:
                outcome, note = "matched", f"{count} callback(s)" if count > 1 else ""
            else:
                outcome, note = "recovered", RECOVERED_NOTES.get(bill.paid_via or "", RECOVERED_NOTES["reconciliation"])
            lines.append(ReconciliationLine(
                outcome, code, item.transaction_id, bill.dossier_code if bill else None,
                bill.amount if bill else None, item.amount, count, item.paid_at, note))
    for code, cbs in heard.items():
        on_day = [cb for cb in cbs if cb.paid_at is not None and cb.paid_at.astimezone(tz).date() == day]
        if code in by_bill or not on_day:
            continue
        bill = bills.get(code)
        last = on_day[-1]
        lines.append(ReconciliationLine(
            "unknown" if bill is None else "not_settled", code, last.transaction_id,
            bill.dossier_code if bill else None, bill.amount if bill else None, None, len(cbs), last.paid_at,
            ("a callback for a bill never issued; " if bill is None else "")
            + f"reported paid {vnd(last.amount)}, not in the provider's settlement list"))
    order = {name: i for i, name in enumerate(OUTCOMES)}
    return sorted(lines, key=lambda line: (order[line.outcome], line.paid_at or datetime.min.replace(tzinfo=tz),
                                           line.bill_code))
