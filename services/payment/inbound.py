"""Payments in, and each day's reconciliation ("đối soát").

A payment is learnt from the provider's callback (:mod:`services.payment.callbacks`), from the query of bills left
without one (the beat job ``relay.payment.unanswered``), or from the reconciliation (``relay.payment.reconcile``
each morning, or ``motcua-relay reconcile --date D``). All three go through :func:`record_payment`: the bill's
amount makes a ``fee.paid`` event whose id is the bill's, stored before the bill is marked paid, so it reaches the
one-stop software exactly once whichever way, and however often, the payment is reported; another amount puts the
bill in quarantine, never paid.

When is a payment made? The bank's callback and its query say (``vnp_PayDate``, ``paidAt``), and so does a
settlement list; the national payment platform's callback and detail answer do not (docs/contracts.md M12), so a
payment learnt from them is dated when the relay learns it: the callback's receipt, the query's answer. That
date is the ``fee.paid`` event's ``paid_at``, the bill's and the callback's row, and the day the reconciliation
looks for a callback the settlement list lacks; the list's own time dates what only the reconciliation finds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from adapters.payment import (
    BillView,
    CallbackView,
    Reconciliation,
    judge_payment,
    paid_event,
    reconcile,
)
from schemas.events import FeeAssessed, parse_stored
from schemas.vietnam import VN_TZ
from services.payment.deliver import Book, PaymentDeliverer
from services.payment.report import write_report
from store import payments, queries
from store.payments import PaidVia, Verdict
from store.reports import day_bounds
from store.tables import BillState

log = structlog.get_logger(__name__)


def record_payment(book: Book, code: str, transaction_id: str, amount: int, paid_at: datetime,
                   via: PaidVia) -> Verdict:
    """What a reported payment means for the bill, acted on: ``fee.paid`` once for the bill's amount (the event is
    stored before the bill is marked, so a crash between leaves it to the next report), quarantine for another
    amount, nothing for a repeat or a bill we never issued."""
    engine = book.context.engine
    bill = payments.get_bill(engine, code)
    if bill is None:
        log.warning("payment.unknown_bill", destination=book.name, bill_code=code, via=via)
        return "unknown_bill"
    now = datetime.now(UTC)
    if judge_payment(int(bill.amount), amount, True) == "amount_mismatch":
        if payments.quarantine(engine, code, transaction_id, amount, paid_at, via, now):
            log.warning("payment.amount_mismatch", destination=book.name, bill_code=code, bill_amount=bill.amount,
                        paid_amount=amount, via=via)
        return "amount_mismatch"
    if bill.state == BillState.QUARANTINED:
        return "amount_mismatch"
    if bill.state == BillState.PAID:
        return "repeat" if bill.transaction_id == transaction_id else "second_payment"
    assessed = parse_stored(queries.event_payload(engine, bill.assessed_event_id), kind=FeeAssessed)
    paid = paid_event(assessed, book.mapping, code, transaction_id, paid_at)
    book.context.ingest_numbered([paid], in_arrival_order=True)
    if payments.mark_paid(engine, code, transaction_id, amount, paid_at, via, now):
        log.info("payment.paid", destination=book.name, bill_code=code, via=via)
        return "paid"
    return "repeat"


def receive_callback(book: Book, scheme: str, code: str, transaction_id: str, amount: int, paid: bool,
                     paid_at: datetime | None) -> Verdict:
    """A verified callback: acted on (:func:`record_payment`) and kept with its verdict."""
    verdict: Verdict = "not_paid"
    if paid and paid_at is not None:
        verdict = record_payment(book, code, transaction_id, amount, paid_at, "callback")
    payments.record_callback(book.context.engine, destination=book.name, scheme=scheme, bill_code=code,
                             transaction_id=transaction_id, amount=amount, paid=paid, paid_at=paid_at,
                             verdict=verdict, now=datetime.now(UTC))
    return verdict


# --------------------------------------------------------------------------- bills without a callback


@dataclass
class QueryReport:
    asked: int = 0
    paid: int = 0
    mismatched: int = 0
    errors: list[str] = field(default_factory=list)


def query_unanswered(payer: PaymentDeliverer, now: datetime | None = None) -> QueryReport:
    """Ask the provider about issued bills left without a callback for ``query_after``; a paid one is recorded."""
    engine, options, book = payer.context.engine, payer.options, payer.book
    now = now or datetime.now(UTC)
    rows = payments.unanswered(engine, payer.name, now - timedelta(seconds=options.query_after),
                               now - timedelta(seconds=options.query_every),
                               now - timedelta(seconds=options.query_for), options.query_batch)
    report = QueryReport()
    checked: list[str] = []
    for row in rows:
        try:
            found = payer.query(row.bill_code)
        except Exception as exc:  # the provider's weather: the rest wait for the next run
            report.errors.append(f"{row.bill_code}: {exc}")
            break
        report.asked += 1
        checked.append(row.bill_code)
        if found is not None:
            verdict = record_payment(book, row.bill_code, found.transaction_id, found.amount, found.paid_at, "query")
            report.paid += verdict == "paid"
            report.mismatched += verdict == "amount_mismatch"
    payments.mark_checked(engine, checked, now)
    return report


def query_job(payer: PaymentDeliverer) -> dict[str, Any]:
    """The beat job's step for one destination."""
    report = query_unanswered(payer)
    return {"asked": report.asked, "paid": report.paid, "mismatched": report.mismatched,
            "errors": len(report.errors)}


# --------------------------------------------------------------------------- reconciliation


def run_reconciliation(payer: PaymentDeliverer, day: date) -> Reconciliation:
    """Fetch the provider's settled list for ``day``, match it, act on it (recover, quarantine) and store the day's
    lines in place of a previous run's."""
    engine, book = payer.context.engine, payer.book
    settled = payer.settled(day)
    for s in settled:  # act first: the recovered and held bills are then what the lines say
        if s.amount > 0:
            record_payment(book, s.bill_code, s.transaction_id, s.amount, s.paid_at, "reconciliation")
    heard = payments.callbacks_for(engine, payer.name, [s.bill_code for s in settled], day_bounds(day))
    listed = {s.bill_code for s in settled}
    # a callback is dated when it is received (the platform's carries no time), so one may come just after
    # midnight for a payment the previous day's list settled: it is on that day's line, no anomaly of this one
    settled_before = {line.bill_code for line in payments.stored_lines(engine, payer.name,
                                                                       (day - timedelta(days=1)).isoformat())
                      if line.settled_amount is not None}
    heard_paid = [h for h in heard if h.paid and (h.bill_code in listed or h.bill_code not in settled_before)]
    codes = [s.bill_code for s in settled] + [h.bill_code for h in heard_paid]
    bills = {code: BillView(code, int(row.amount), row.dossier_code, row.paid_via)
             for code, row in payments.bills_by_code(engine, codes).items()}
    lines = reconcile(day, settled, bills,
                      [CallbackView(h.bill_code, h.transaction_id, int(h.amount), h.paid_at) for h in heard_paid],
                      VN_TZ)
    payments.replace_lines(engine, payer.name, day.isoformat(), [line_row(line) for line in lines], datetime.now(UTC))
    return Reconciliation(payer.name, day, lines, sum(s.amount for s in settled))


def line_row(line: Any) -> dict[str, Any]:
    return {"outcome": line.outcome, "bill_code": line.bill_code, "transaction_id": line.transaction_id,
            "dossier_code": line.dossier_code, "bill_amount": line.bill_amount,
            "settled_amount": line.settled_amount, "callbacks": line.callbacks, "paid_at": line.paid_at,
            "note": line.note}


def yesterday(now: datetime | None = None) -> date:
    return ((now or datetime.now(UTC)).astimezone(VN_TZ) - timedelta(days=1)).date()


def reconcile_and_report(payer: PaymentDeliverer, day: date, directory: Path) -> tuple[Reconciliation, Path, Path]:
    """Reconcile ``day`` and write its CSV and spreadsheet in ``directory``."""
    result = run_reconciliation(payer, day)
    csv_path, xlsx_path = write_report(result, payer.provider, directory)
    return result, csv_path, xlsx_path


def reconcile_job(payer: PaymentDeliverer, day: str | None = None) -> dict[str, Any]:
    """The morning beat job's step for one destination: the previous day (Vietnam time), unless ``day`` is given."""
    which = date.fromisoformat(day) if day else yesterday()
    result, csv_path, xlsx_path = reconcile_and_report(payer, which, payer.context.settings.reports_dir)
    return {"day": which.isoformat(), "lines": len(result.lines), "anomalies": len(result.anomalies),
            "recovered": result.count("recovered"), "xlsx": str(xlsx_path), "csv": str(csv_path)}


def reconcile_hint(name: str, params: Mapping[str, Any]) -> str:
    """The command an operator reruns a failed morning reconciliation with."""
    day = params.get("day") or yesterday().isoformat()
    return f"motcua-relay reconcile --date {day} --destination {name}"
