"""Deliveries: one attempt at a time, claimed, finished, released, deferred or rerouted, each in one short
transaction.

The delivery engine (``tasks/``) decides; this module records atomically. A claim takes a
lease and starts an attempt row, or says why not (ordering, not due, already done), and hands
on the stored event parsed once into its model; the attempt's end writes the outcome and hands
the stream on to its successor, or, when the attempt does not count (the destination is paused),
releases the delivery with its budget as it was. All times are passed in by the caller, so tests
can run the engine on a controlled clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Row, func, or_, select, update

from schemas.events import Event, parse_stored_json
from schemas.privacy import error_fields
from store.streams import (
    DestinationRules,
    Position,
    ToEnqueue,
    delivery_row,
    insert_deliveries,
    lock_streams,
    next_open,
    stream_key,
)
from store.tables import FINAL_STATUSES, OPEN_STATUSES, Status, attempts, deliveries, events


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for one attempt, with its event parsed from the ledger's text.

    ``event`` is ``None`` only when the stored text no longer parses (a schema changed under it):
    ``unreadable`` then says why, and the engine ends the attempt as a permanent failure.
    """

    delivery_id: int
    destination: str
    attempt_id: int
    attempt_number: int
    idempotency_key: str
    event_id: str
    event: Event | None
    received_at: datetime
    deadline_at: datetime
    budget_used: int
    dossier_code: str = ""
    stream: str = ""
    sequence: int = 0
    unreadable: str | None = None


# Not a Status: skip and waiting leave the delivery as it was; superseded and dead are the status it got instead.
NotClaimedState = Literal["skip", "waiting", "superseded", "dead"]


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Nothing to send now: ``state`` is skip, superseded, waiting or dead."""

    state: NotClaimedState
    reason: str
    until: datetime | None = None


def claim(
    engine: Engine,
    delivery_id: int,
    rules: DestinationRules,
    now: datetime,
    lease_seconds: float,
    gap_wait_seconds: float,
) -> Claimed | NotClaimed:
    """Take a delivery for one attempt, or say why not (ordering, not due, already done)."""
    with engine.begin() as conn:
        d = conn.execute(
            select(deliveries, events.c.event_id, events.c.payload, events.c.received_at, events.c.origin)
            .join(events, events.c.id == deliveries.c.event_pk)
            .where(deliveries.c.id == delivery_id)
        ).one_or_none()
        if d is None:
            return NotClaimed("skip", "no such delivery")
        lost = d.status == Status.IN_FLIGHT and d.lease_until is not None and d.lease_until <= now
        if d.status not in (Status.PENDING, Status.RETRYING) and not lost:
            return NotClaimed("skip", f"delivery is {d.status}")
        if d.next_attempt_at is not None and d.next_attempt_at > now + timedelta(seconds=1):
            return NotClaimed("skip", "not due yet", d.next_attempt_at)
        if lost:
            close_lost_attempt(conn, delivery_id, d.attempts)
        if rules.ordered:
            lock_streams(conn, engine, [stream_key(d.dossier_code, d.destination, d.stream)])
            verdict = _ordering_verdict(conn, d, now, gap_wait_seconds)
            if verdict is not None:
                return verdict
        if d.budget_used >= rules.max_attempts:
            reason = f"gave up: {d.budget_used} attempts started without an answer (worker lost each time)"
            _set(conn, delivery_id, now, status=Status.DEAD, last_error=reason, lease_until=None)
            return NotClaimed("dead", reason)
        number = d.attempts + 1
        _set(conn, delivery_id, now, status=Status.IN_FLIGHT, attempts=number, budget_used=d.budget_used + 1,
             lease_until=now + timedelta(seconds=lease_seconds))
        attempt_id = conn.execute(
            attempts.insert().returning(attempts.c.id),
            {"delivery_id": delivery_id, "number": number, "started_at": now},
        ).scalar_one()
    # Parsed once, here, outside the transaction (it holds the stream's lock): the deliverer and the
    # excerpt's masking share this model.
    event, unreadable = _parsed(d.payload)
    return Claimed(
        delivery_id=delivery_id,
        destination=d.destination,
        attempt_id=attempt_id,
        attempt_number=number,
        idempotency_key=d.idempotency_key,
        event_id=d.event_id,
        event=event,
        received_at=d.received_at,
        deadline_at=d.deadline_at,
        budget_used=d.budget_used + 1,
        dossier_code=d.dossier_code,
        stream=d.stream,
        sequence=d.sequence,
        unreadable=unreadable,
    )


def _parsed(text: str) -> tuple[Event | None, str | None]:
    """The stored event as its model, or why it cannot be (field paths only: the values may be personal)."""
    try:
        return parse_stored_json(text), None
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors(include_url=False, include_input=False)):
            return None, "the stored event is not JSON"
        payload = json.loads(text)
        kind = str(payload.get("type")) if isinstance(payload, dict) else "an event"
        # the union's errors start with the type's tag: the paths are the type's own fields
        fields = [f.removeprefix(f"{kind}.") for f in error_fields(exc, "type")]
        return None, f"the stored event no longer parses as {kind}: {', '.join(fields)}"


def _ordering_verdict(conn: Connection, d: Row[Any], now: datetime, gap_wait_seconds: float) -> NotClaimed | None:
    """Superseded, waiting, or ``None`` (may go): one aggregate over the stream's deliveries."""
    seq = deliveries.c.sequence
    newer_sent, older_open, previous = conn.execute(
        select(
            func.max(seq).filter(seq > d.sequence, deliveries.c.status.in_((Status.IN_FLIGHT, Status.DELIVERED))),
            func.count().filter(seq < d.sequence, deliveries.c.status.in_(OPEN_STATUSES)),
            func.max(seq).filter(seq < d.sequence),
        ).where(
            deliveries.c.dossier_code == d.dossier_code,
            deliveries.c.destination == d.destination,
            deliveries.c.stream == d.stream,
        )
    ).one()
    if newer_sent is not None:
        reason = f"superseded: sequence {newer_sent} already sent to {d.destination}"
        _set(conn, d.id, now, status=Status.SUPERSEDED, last_error=reason, lease_until=None)
        return NotClaimed("superseded", reason)
    if older_open:
        _set(conn, d.id, now, enqueued_at=now)
        return NotClaimed("waiting", "an earlier sequence is still open")
    if d.sequence > 1 and previous != d.sequence - 1:
        # The destination has not seen the sequence just before: was it never received, or routed elsewhere?
        present, unrouted = conn.execute(
            select(func.count(func.distinct(events.c.sequence)),
                   func.count(events.c.id).filter(events.c.routed_at.is_(None))).where(
                events.c.dossier_code == d.dossier_code,
                events.c.origin == d.origin,
                events.c.sequence < d.sequence,
            )
        ).one()
        if unrouted:
            _set(conn, d.id, now, enqueued_at=now)
            return NotClaimed("waiting", "an earlier event is not routed yet")
        until = d.received_at + timedelta(seconds=gap_wait_seconds)
        if present < d.sequence - 1 and until > now:
            _set(conn, d.id, now, next_attempt_at=until, enqueued_at=None)
            return NotClaimed("waiting", f"sequences before {d.sequence} not received yet", until)
    return None


def close_lost_attempt(conn: Connection, delivery_id: int, number: int) -> None:
    """The attempt a lost worker left open (its lease expired) ends as ``lost``."""
    conn.execute(
        update(attempts)
        .where(attempts.c.delivery_id == delivery_id, attempts.c.number == number, attempts.c.outcome.is_(None))
        .values(outcome="lost", error="worker lost during the attempt (lease expired)")
    )


def _set(conn: Connection, delivery_id: int, now: datetime, **values: Any) -> None:
    conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(updated_at=now, **values))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended and what the delivery becomes."""

    status: Status  # delivered, retrying, superseded or dead
    attempt_outcome: str
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    external_ref: str | None = None
    next_attempt_at: datetime | None = None


def finish(
    engine: Engine, claimed: Claimed, outcome: Outcome, rules: DestinationRules, now: datetime
) -> list[ToEnqueue]:
    """Record an attempt's end; return the successor to enqueue when the delivery is final."""
    with engine.begin() as conn:
        conn.execute(
            update(attempts)
            .where(attempts.c.id == claimed.attempt_id)
            .values(
                duration_ms=outcome.duration_ms,
                outcome=outcome.attempt_outcome,
                status_code=outcome.status_code,
                error=outcome.error,
                response_excerpt=outcome.excerpt,
                external_ref=outcome.external_ref,
            )
        )
        values: dict[str, Any] = {
            "status": outcome.status,
            "updated_at": now,
            "lease_until": None,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "next_attempt_at": outcome.next_attempt_at,
            "enqueued_at": None,
        }
        if outcome.external_ref:
            values["external_ref"] = outcome.external_ref
        if outcome.status == Status.DELIVERED:
            values["delivered_at"] = now
        result = conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id == claimed.delivery_id,
                deliveries.c.status == Status.IN_FLIGHT,
                deliveries.c.attempts == claimed.attempt_number,
            )
            .values(**values)
        )
        if result.rowcount == 0 or outcome.status not in FINAL_STATUSES or not rules.ordered:
            return []
        position = Position(claimed.dossier_code, claimed.destination, claimed.stream, claimed.sequence)
        lock_streams(conn, engine, [stream_key(*position[:3])])
        return _successor(conn, position, now)


def release(engine: Engine, claimed: Claimed, outcome: Outcome, now: datetime, *, record: bool) -> bool:
    """End an attempt that does not count: the destination could take no message (paused), which is not this
    delivery's fault. The delivery waits until ``outcome.next_attempt_at`` with the attempt budget it had before
    the claim, so a pause never brings it closer to a dead letter.

    With ``record`` (the service was called and answered the condition) the attempt row stays, with its outcome,
    for the audit; without (the deliverer held it and sent nothing) the row is removed, as if never claimed.
    False when the lease was lost meanwhile (the delivery is another attempt's now).
    """
    with engine.begin() as conn:
        number = claimed.attempt_number if record else claimed.attempt_number - 1
        result = conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id == claimed.delivery_id,
                deliveries.c.status == Status.IN_FLIGHT,
                deliveries.c.attempts == claimed.attempt_number,
            )
            .values(
                status=Status.RETRYING if claimed.budget_used > 1 else Status.PENDING,
                attempts=number,
                budget_used=claimed.budget_used - 1,
                lease_until=None,
                next_attempt_at=outcome.next_attempt_at,
                enqueued_at=None,
                last_error=outcome.error,
                updated_at=now,
                **({"last_status_code": outcome.status_code} if record else {}),
            )
        )
        if record:
            conn.execute(
                update(attempts)
                .where(attempts.c.id == claimed.attempt_id)
                .values(duration_ms=outcome.duration_ms, outcome=outcome.attempt_outcome,
                        status_code=outcome.status_code, error=outcome.error, response_excerpt=outcome.excerpt)
            )
        elif result.rowcount:
            conn.execute(attempts.delete().where(attempts.c.id == claimed.attempt_id))
    return bool(result.rowcount)


def wake(engine: Engine, destination: str, reason_like: str, now: datetime) -> list[ToEnqueue]:
    """The waiting deliveries of ``destination`` whose reason matches ``reason_like`` (SQL ``LIKE``), made due now
    and marked queued, to enqueue: what a pause held, once it is lifted (those already queued stay as they are)."""
    with engine.begin() as conn:
        ids = conn.execute(
            update(deliveries)
            .where(
                deliveries.c.destination == destination,
                deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
                deliveries.c.last_error.like(reason_like),
                or_(deliveries.c.next_attempt_at > now, deliveries.c.enqueued_at.is_(None)),  # not queued already
            )
            .values(next_attempt_at=now, enqueued_at=now, updated_at=now)
            .returning(deliveries.c.id)
        ).scalars().all()
    return [ToEnqueue(i, destination) for i in sorted(ids)]


def _successor(conn: Connection, d: Position, now: datetime) -> list[ToEnqueue]:
    nxt = next_open(conn, d)
    if nxt is None:
        return []
    _set(conn, nxt.id, now, enqueued_at=now)
    return [ToEnqueue(nxt.id, nxt.destination)]


def kick_successor(engine: Engine, delivery_id: int, now: datetime) -> list[ToEnqueue]:
    """The next open delivery of the same (dossier, destination, stream), to enqueue now."""
    with engine.begin() as conn:
        row = conn.execute(
            select(deliveries.c.dossier_code, deliveries.c.destination, deliveries.c.stream, deliveries.c.sequence)
            .where(deliveries.c.id == delivery_id)
        ).one()
        position = Position(*row)
        lock_streams(conn, engine, [stream_key(*position[:3])])
        return _successor(conn, position, now)


def reroute(
    engine: Engine, delivery_id: int, destination: str, rules: dict[str, DestinationRules], now: datetime
) -> tuple[int | None, list[ToEnqueue]]:
    """A delivery of the same event to ``destination`` (a fallback channel), created once.

    Returns its id (``None`` when it already existed) and whether it may go now.
    """
    with engine.begin() as conn:
        event_pk, payload = conn.execute(
            select(events.c.id, events.c.payload).join(deliveries, deliveries.c.event_pk == events.c.id)
            .where(deliveries.c.id == delivery_id)
        ).one()
        existing = conn.execute(
            select(deliveries.c.id).where(deliveries.c.event_pk == event_pk, deliveries.c.destination == destination)
        ).scalar_one_or_none()
        if existing is not None:
            return None, []
        row = delivery_row(event_pk, json.loads(payload), destination, rules[destination], now)
        ready = insert_deliveries(conn, engine, [row], rules, now)
        new_id = conn.execute(
            select(deliveries.c.id).where(deliveries.c.event_pk == event_pk, deliveries.c.destination == destination)
        ).scalar_one()
    return new_id, ready


def defer(engine: Engine, delivery_id: int, until: datetime, reason: str, now: datetime) -> None:
    """Postpone a delivery without spending an attempt (breaker open, quota spent)."""
    with engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.status.in_((Status.PENDING, Status.RETRYING)))
            .values(next_attempt_at=until, enqueued_at=None, last_error=reason, updated_at=now)
        )
