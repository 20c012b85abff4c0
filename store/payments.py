"""Fee collection in the ledger: the bills issued at payment providers, every callback they sent, and
the lines of each day's reconciliation.

A bill row is written once the provider holds the bill (``issued``); it becomes ``paid`` when a payment
of its amount is learnt (by a callback, a query or the reconciliation: ``paid_via``), or ``quarantined``
when a payment of another amount is reported — never paid, for an operator to settle. Every verified
callback is kept with its verdict, repeats included, so the reconciliation can say which payments came
without one. A rerun of a day's reconciliation replaces that day's lines in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from store.tables import BillState, bills, events, payment_callbacks, reconciliation_lines

Verdict = Literal["paid", "repeat", "second_payment", "amount_mismatch", "unknown_bill", "not_paid"]
PaidVia = Literal["callback", "query", "reconciliation"]


@dataclass(frozen=True)
class NewBill:
    bill_code: str
    destination: str
    provider: str
    dossier_code: str
    fee_id: str
    amount: int
    assessed_event_id: str
    payment_url: str | None
    external_ref: str | None


def record_bill(engine: Engine, bill: NewBill, now: datetime) -> bool:
    """Store an issued bill; False when it was already stored (a repeated delivery)."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(bills).values(**bill.__dict__, state=BillState.ISSUED, created_at=now, updated_at=now))
        return True
    except IntegrityError:
        return False


def get_bill(engine: Engine, bill_code: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(bills).where(bills.c.bill_code == bill_code)).first()


def bills_of_dossier(engine: Engine, destination: str, dossier_code: str) -> list[Any]:
    """The dossier's bills at ``destination``, oldest first (the portal's look-up of its payment)."""
    with engine.connect() as conn:
        return list(conn.execute(
            select(bills).where(bills.c.dossier_code == dossier_code, bills.c.destination == destination)
            .order_by(bills.c.created_at, bills.c.bill_code)))


def dossier_known(engine: Engine, dossier_code: str) -> bool:
    """Whether the ledger holds any event of the dossier."""
    with engine.connect() as conn:
        return conn.execute(select(events.c.id).where(events.c.dossier_code == dossier_code).limit(1)).first() \
            is not None


def bills_by_code(engine: Engine, codes: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    unique = sorted(set(codes))
    with engine.connect() as conn:
        for start in range(0, len(unique), 500):
            for row in conn.execute(select(bills).where(bills.c.bill_code.in_(unique[start:start + 500]))):
                found[row.bill_code] = row
    return found


def mark_paid(engine: Engine, bill_code: str, transaction_id: str, amount: int, paid_at: datetime, via: PaidVia,
              now: datetime) -> bool:
    """An issued bill becomes paid (the first report wins); False when it was not issued any more."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(bills).where(bills.c.bill_code == bill_code, bills.c.state == BillState.ISSUED)
            .values(state=BillState.PAID, transaction_id=transaction_id, paid_amount=amount, paid_at=paid_at,
                    paid_via=via, updated_at=now)
        ).rowcount
    return bool(changed)


def quarantine(engine: Engine, bill_code: str, transaction_id: str, amount: int, paid_at: datetime | None,
               via: PaidVia, now: datetime) -> bool:
    """A payment of another amount than the bill's: the bill is held for an operator, never paid."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(bills).where(bills.c.bill_code == bill_code, bills.c.state == BillState.ISSUED)
            .values(state=BillState.QUARANTINED, transaction_id=transaction_id, paid_amount=amount, paid_at=paid_at,
                    paid_via=via, updated_at=now)
        ).rowcount
    return bool(changed)


def record_callback(engine: Engine, *, destination: str, scheme: str, bill_code: str, transaction_id: str,
                    amount: int, paid: bool, paid_at: datetime | None, verdict: Verdict, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(payment_callbacks).values(
            destination=destination, scheme=scheme, bill_code=bill_code, transaction_id=transaction_id,
            amount=amount, paid=int(paid), paid_at=paid_at, received_at=now, verdict=verdict))


def callbacks_for(engine: Engine, destination: str, codes: Sequence[str] = (),
                  paid_between: tuple[datetime, datetime] | None = None) -> list[Any]:
    """The callbacks of these bills, and those of payments made in ``paid_between`` ([start, end)), oldest first."""
    conditions: list[Any] = []
    unique = sorted(set(codes))
    if unique:
        conditions.append(payment_callbacks.c.bill_code.in_(unique))
    if paid_between is not None:
        start, end = paid_between
        conditions.append((payment_callbacks.c.paid_at >= start) & (payment_callbacks.c.paid_at < end))
    if not conditions:
        return []
    with engine.connect() as conn:
        return list(conn.execute(
            select(payment_callbacks)
            .where(payment_callbacks.c.destination == destination, or_(*conditions))
            .order_by(payment_callbacks.c.id)
        ))


def unanswered(engine: Engine, destination: str, created_before: datetime, checked_before: datetime,
               created_after: datetime, limit: int) -> list[Any]:
    """Issued bills old enough to have been paid with no word from the provider, least recently checked first."""
    with engine.connect() as conn:
        return list(conn.execute(
            select(bills)
            .where(bills.c.destination == destination, bills.c.state == BillState.ISSUED,
                   bills.c.created_at < created_before, bills.c.created_at >= created_after,
                   or_(bills.c.checked_at.is_(None), bills.c.checked_at < checked_before))
            .order_by(bills.c.checked_at.is_not(None), bills.c.checked_at, bills.c.created_at)
            .limit(limit)
        ))


def mark_checked(engine: Engine, codes: Sequence[str], now: datetime) -> None:
    if codes:
        with engine.begin() as conn:
            conn.execute(update(bills).where(bills.c.bill_code.in_(list(codes))).values(checked_at=now))


def bill_counts(engine: Engine, destination: str | None = None) -> dict[str, int]:
    query = select(bills.c.state, func.count()).group_by(bills.c.state)
    if destination is not None:
        query = query.where(bills.c.destination == destination)
    with engine.connect() as conn:
        return {state: int(n) for state, n in conn.execute(query)}


def replace_lines(engine: Engine, destination: str, day: str, lines: Sequence[dict[str, Any]], now: datetime) -> None:
    """The day's reconciliation lines, replacing a previous run's (a rerun is idempotent)."""
    with engine.begin() as conn:
        conn.execute(delete(reconciliation_lines).where(reconciliation_lines.c.destination == destination,
                                                        reconciliation_lines.c.day == day))
        if lines:
            conn.execute(insert(reconciliation_lines),
                         [{**line, "destination": destination, "day": day, "run_at": now} for line in lines])


def stored_lines(engine: Engine, destination: str, day: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(
            select(reconciliation_lines)
            .where(reconciliation_lines.c.destination == destination, reconciliation_lines.c.day == day)
            .order_by(reconciliation_lines.c.id)
        ))
