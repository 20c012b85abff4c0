"""The outbox sweep: work that is due but not queued (unrouted events, due retries, lost leases).

Enqueueing after the commit can fail (a crash, the broker down); the sweeper finds what was
missed, marks it queued and returns it for the beat task to enqueue again. It also names every
destination that has work due now, for the beat task to ring: a doorbell whose drain was lost (its
message prefetched by a worker that died, or emptied with the broker) is rung again as soon as its
flag lapses, not a requeue period later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, exists, or_, select, update

from store.audit.ledger import append, lost_attempt_entries
from store.deliveries import close_lost_attempt
from store.streams import ToEnqueue
from store.tables import Status, deliveries, events


@dataclass(frozen=True, slots=True)
class SweepResult:
    events_to_route: list[int]
    deliveries_to_enqueue: list[ToEnqueue]
    leases_expired: int
    destinations_due: list[str] = field(default_factory=list)


def sweep(
    engine: Engine, now: datetime, requeue_after: float, batch: int, destinations: Sequence[str] = ()
) -> SweepResult:
    """Find work that is due but not queued: unrouted events, due retries, lost leases; and which of
    ``destinations`` have deliveries due now."""
    stale = now - timedelta(seconds=requeue_after)
    with engine.begin() as conn:
        # rows another transaction holds are skipped (the next sweep sees them): the sweep never waits, so it
        # takes no part in a deadlock; it takes no stream lock, and a delivery's row before its attempt's
        lost = conn.execute(
            select(deliveries.c.id, deliveries.c.attempts).where(
                deliveries.c.status == Status.IN_FLIGHT, deliveries.c.lease_until <= now
            ).order_by(deliveries.c.id).limit(batch).with_for_update(skip_locked=True)
        ).all()
        closed: list[int] = []
        for row in lost:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == row.id, deliveries.c.status == Status.IN_FLIGHT)
                .values(status=Status.RETRYING, next_attempt_at=now, enqueued_at=None, lease_until=None,
                        updated_at=now, last_error="worker lost during the attempt (lease expired)")
            )
            closed += close_lost_attempt(conn, row.id, row.attempts)
        unrouted = list(
            conn.execute(
                select(events.c.id).where(
                    events.c.routed_at.is_(None),
                    or_(events.c.enqueued_at.is_(None), events.c.enqueued_at <= stale),
                ).order_by(events.c.id).limit(batch).with_for_update(skip_locked=True)
            ).scalars()
        )
        if unrouted:
            conn.execute(update(events).where(events.c.id.in_(unrouted)).values(enqueued_at=now))
        due = conn.execute(
            select(deliveries.c.id, deliveries.c.destination).where(
                deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
                or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
                or_(deliveries.c.enqueued_at.is_(None), deliveries.c.enqueued_at <= stale),
            ).order_by(deliveries.c.dossier_code, deliveries.c.sequence).limit(batch).with_for_update(skip_locked=True)
        ).all()
        if due:
            conn.execute(
                update(deliveries).where(deliveries.c.id.in_([d.id for d in due])).values(enqueued_at=now)
            )
        busy = [name for name in destinations if conn.execute(select(exists().where(
            deliveries.c.destination == name, deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
            or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
        ))).scalar()]
        append(conn, lost_attempt_entries(conn, closed), now)  # the chains' locks last
    return SweepResult(unrouted, [ToEnqueue(d.id, d.destination) for d in due], len(lost), busy)
