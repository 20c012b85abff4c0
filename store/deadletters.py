"""Dead letters: the deliveries that gave up, found by filter, with their last answer, and replayed.

Nothing is deleted: a replay gives matching dead letters a new attempt budget and deadline,
counts the replay, and returns them to be enqueued; their earlier attempts stay on record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, Select, func, or_, select, update

from store.audit.ledger import append, last_entries, outcome_entry
from store.streams import ToEnqueue
from store.tables import Status, attempts, deliveries, events


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    destination: str | None = None
    dossier_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None
    ids: tuple[int, ...] = ()

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [deliveries.c.status == Status.DEAD]
        if self.destination:
            clauses.append(deliveries.c.destination == self.destination)
        if self.dossier_code:
            clauses.append(deliveries.c.dossier_code == self.dossier_code)
        if self.since:
            clauses.append(deliveries.c.updated_at >= self.since)
        if self.until:
            clauses.append(deliveries.c.updated_at < self.until)
        if self.reason:
            clauses.append(deliveries.c.last_error.contains(self.reason, autoescape=True))
        if self.ids:
            clauses.append(deliveries.c.id.in_(self.ids))
        return clauses


def dead_letters(engine: Engine, flt: DeadLetterFilter, limit: int = 500,
                 before: tuple[datetime, int] | None = None) -> list[Row[Any]]:
    """The newest dead letters first; ``before`` (the last row's ``updated_at`` and ``id``) pages on."""
    clauses = flt.where()
    if before is not None:
        moment, row_id = before
        clauses.append(or_(deliveries.c.updated_at < moment,
                           (deliveries.c.updated_at == moment) & (deliveries.c.id < row_id)))
    with engine.connect() as conn:
        return list(conn.execute(_listing().where(*clauses)
                                 .order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc())
                                 .limit(limit)).all())


def replayable(engine: Engine, flt: DeadLetterFilter) -> list[Row[Any]]:
    """Every dead letter :func:`replay` would take with ``flt`` (no limit), in the order it takes them, as
    :func:`dead_letters` lists them; read only (``motcua-relay replay --dry-run``)."""
    with engine.connect() as conn:
        return list(conn.execute(_listing().where(*flt.where()).order_by(deliveries.c.id)).all())


def _listing() -> Select[Any]:
    return select(
        deliveries.c.id, deliveries.c.destination, deliveries.c.dossier_code, deliveries.c.sequence,
        deliveries.c.attempts, deliveries.c.replays, deliveries.c.updated_at,
        deliveries.c.last_status_code, deliveries.c.last_error, events.c.event_id, events.c.type,
    ).join(events, events.c.id == deliveries.c.event_pk)


def last_answers(engine: Engine, delivery_ids: list[int]) -> dict[int, str]:
    """Each delivery's last attempt: its HTTP status and the (masked) excerpt of the answer."""
    if not delivery_ids:
        return {}
    with engine.connect() as conn:
        last = (select(attempts.c.delivery_id, func.max(attempts.c.number).label("n"))
                .where(attempts.c.delivery_id.in_(delivery_ids)).group_by(attempts.c.delivery_id).subquery())
        latest = (last.c.delivery_id == attempts.c.delivery_id) & (last.c.n == attempts.c.number)
        rows = conn.execute(select(attempts.c.delivery_id, attempts.c.response_excerpt, attempts.c.status_code)
                            .join(last, latest))
        return {r.delivery_id: (f"HTTP {r.status_code} " if r.status_code else "") + (r.response_excerpt or "")
                for r in rows}


def replay(
    engine: Engine, flt: DeadLetterFilter, deadlines: dict[str, float], now: datetime
) -> list[ToEnqueue]:
    """Give matching dead letters a fresh attempt budget and deadline; nothing is deleted."""
    with engine.begin() as conn:  # no stream lock: the claim decides the order (rows in id order, as everywhere)
        rows = conn.execute(select(deliveries.c.id, deliveries.c.destination, deliveries.c.replays,
                                   events.c.event_id, events.c.content_hash)
                            .join(events, events.c.id == deliveries.c.event_pk).where(*flt.where())
                            .order_by(deliveries.c.id)).all()
        replayed = []
        for row in rows:
            changed = conn.execute(
                update(deliveries)
                .where(deliveries.c.id == row.id, deliveries.c.status == Status.DEAD)
                .values(
                    status=Status.PENDING, budget_used=0, replays=deliveries.c.replays + 1, next_attempt_at=None,
                    enqueued_at=now, updated_at=now, lease_until=None,
                    deadline_at=now + timedelta(seconds=deadlines.get(row.destination, 72 * 3600)),
                )
            ).rowcount
            if changed:
                replayed.append(row)
        # each replay's entry names the entry that made the delivery a dead letter: its provenance
        dead_letters = last_entries(conn, [r.id for r in replayed])
        append(conn, [outcome_entry(
            delivery_id=r.id, event_id=r.event_id, event_hash=r.content_hash, destination=r.destination,
            status="replayed", at=now, reason=None, replays=r.replays + 1,
            links={"dead_letter": dead_letters.get(r.id)},
        ) for r in replayed], now)
    return [ToEnqueue(r.id, r.destination) for r in replayed]
