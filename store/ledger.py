"""Ledger operations: every state change of an event or a delivery is one short transaction here.

The delivery engine (``tasks/``) decides; this module records atomically. All times are
passed in by the caller, so tests can run the engine on a controlled clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, exists, func, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError

from store.tables import (
    DEAD,
    DELIVERED,
    FINAL_STATUSES,
    IN_FLIGHT,
    OPEN_STATUSES,
    PENDING,
    RETRYING,
    SUPERSEDED,
    attempts,
    deliveries,
    events,
)

# --------------------------------------------------------------------------- intake


class IngestConflict(Exception):
    """An ``event_id`` already stored with different content."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(f"event_id already used with different content: {', '.join(event_ids)}")
        self.event_ids = event_ids


@dataclass(frozen=True, slots=True)
class Ingested:
    event_id: str
    pk: int
    duplicate: bool


def canonical_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def ingest(engine: Engine, payloads: Sequence[dict[str, Any]], now: datetime) -> list[Ingested]:
    """Store a batch of validated canonical events atomically (routing left to ``route_event``).

    A repeated ``event_id`` with the same content is a duplicate (kept as it is); with
    different content the whole batch is refused with :class:`IngestConflict`.
    """
    return ingest_and_route(engine, payloads, now)[0]


def ingest_and_route(
    engine: Engine,
    payloads: Sequence[dict[str, Any]],
    now: datetime,
    choose: Any = None,
    rules: dict[str, DestinationRules] | None = None,
) -> tuple[list[Ingested], list[ToEnqueue]]:
    """Store a batch and, with ``choose``, create its deliveries in the same transaction.

    An event and its deliveries then appear together or not at all, and the intake can
    queue the deliveries at once instead of a routing task per event. Returns the stored
    events and the deliveries that may go now (the first open one of each ordered stream).
    """
    for attempt in range(3):
        try:
            return _ingest_once(engine, payloads, now, choose, rules or {})
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _ingest_once(
    engine: Engine,
    payloads: Sequence[dict[str, Any]],
    now: datetime,
    choose: Any,
    rules: dict[str, DestinationRules],
) -> tuple[list[Ingested], list[ToEnqueue]]:
    hashed = [(p, canonical_json(p)) for p in payloads]
    by_id: dict[str, tuple[dict[str, Any], str, str]] = {}
    conflicts: list[str] = []
    for payload, text_form in hashed:
        digest = hashlib.sha256(text_form.encode("utf-8")).hexdigest()
        seen = by_id.get(payload["event_id"])
        if seen is not None and seen[2] != digest:
            conflicts.append(payload["event_id"])
        by_id[payload["event_id"]] = (payload, text_form, digest)
    if conflicts:
        raise IngestConflict(sorted(set(conflicts)))
    with engine.begin() as conn:
        existing = {
            row.event_id: row
            for row in conn.execute(
                select(events.c.id, events.c.event_id, events.c.content_hash).where(
                    events.c.event_id.in_(list(by_id))
                )
            )
        }
        conflicts = [eid for eid, row in existing.items() if row.content_hash != by_id[eid][2]]
        if conflicts:
            raise IngestConflict(sorted(conflicts))
        new_rows = [
            _event_row(payload, text_form, digest, now, routed=choose is not None)
            for eid, (payload, text_form, digest) in by_id.items()
            if eid not in existing
        ]
        inserted: dict[str, int] = {}
        chosen: list[ToEnqueue] = []
        if new_rows:
            result = conn.execute(events.insert().returning(events.c.id, events.c.event_id), new_rows)
            inserted = {row.event_id: row.id for row in result}
            _wake_gap_waiters(conn, {(r["dossier_code"], r["origin"]) for r in new_rows}, now)
            if choose is not None:
                planned = [
                    _delivery_row(inserted[eid], by_id[eid][0], name, rules[name], now)
                    for eid in inserted
                    for name in choose(by_id[eid][0])
                ]
                chosen = _insert_deliveries(conn, engine, planned, rules, now)
    out = [Ingested(eid, row.id, True) for eid, row in existing.items()]
    out += [Ingested(eid, pk, False) for eid, pk in inserted.items()]
    return out, chosen


def _event_row(payload: dict[str, Any], text_form: str, digest: str, now: datetime, *, routed: bool) -> dict[str, Any]:
    return {
        "event_id": payload["event_id"],
        "type": payload["type"],
        "origin": payload.get("origin", "onestop"),
        "unit_code": payload["unit_code"],
        "dossier_code": payload["dossier_code"],
        "procedure_code": payload["procedure_code"],
        "sequence": payload["sequence"],
        "occurred_at": datetime.fromisoformat(payload["occurred_at"]),
        "received_at": now,
        "content_hash": digest,
        "payload": text_form,
        "enqueued_at": now,
        "routed_at": now if routed else None,
    }


@dataclass
class Numbered:
    """What :func:`ingest_numbered` did with a batch."""

    stored: list[str]
    duplicates: list[str]
    late: list[str]
    ready: list[ToEnqueue]


def ingest_numbered(
    engine: Engine,
    payloads: Sequence[dict[str, Any]],
    now: datetime,
    choose: Any,
    rules: dict[str, DestinationRules],
    *,
    in_arrival_order: bool = False,
) -> Numbered:
    """Store events a service reported, numbering each new one in its (dossier, origin) stream.

    Statuses pushed by a callback and found again by polling carry no sequence of their
    own; the ledger gives each new ``event_id`` the stream's next number, so the ordered
    destinations see a gap-free stream. ``payloads`` come in the order they happened (their
    ``sequence`` is replaced). An ``event_id`` already stored is a duplicate, whatever its
    content; a new event older than the newest one stored in its stream is *late*: it is
    kept for the record under the newest one's number and routed nowhere, so it never
    overwrites newer news and leaves no gap in the numbers the destinations see.

    ``in_arrival_order`` numbers every new event next, whatever its time: for news that never goes
    stale (a payment recovered by the reconciliation days later must still reach the one-stop software).
    """
    by_id: dict[str, dict[str, Any]] = {}
    for payload in payloads:
        by_id.setdefault(payload["event_id"], payload)
    streams = sorted({(p["dossier_code"], p.get("origin", "onestop")) for p in by_id.values()})
    with engine.begin() as conn:
        _lock_streams(conn, engine, (f"{dossier}|numbered|{origin}" for dossier, origin in streams))
        existing = set(conn.execute(select(events.c.event_id).where(events.c.event_id.in_(list(by_id)))).scalars())
        tops: dict[tuple[str, str], tuple[int, datetime | None]] = {}
        for dossier, origin in streams:
            top, newest = conn.execute(
                select(func.max(events.c.sequence), func.max(events.c.occurred_at))
                .where(events.c.dossier_code == dossier, events.c.origin == origin)
            ).one()
            tops[(dossier, origin)] = (top or 0, newest)  # UTCDateTime: max() keeps the column's type
        rows: list[dict[str, Any]] = []
        routed: list[dict[str, Any]] = []
        late: list[dict[str, Any]] = []
        for eid, payload in by_id.items():
            if eid in existing:
                continue
            key = (payload["dossier_code"], payload.get("origin", "onestop"))
            top, newest = tops[key]
            at = datetime.fromisoformat(payload["occurred_at"])
            is_late = not in_arrival_order and newest is not None and at < newest
            numbered = {**payload, "sequence": top if is_late else top + 1}
            if not is_late:
                tops[key] = (top + 1, max(at, newest) if newest is not None else at)
            text_form = canonical_json(numbered)
            rows.append(_event_row(numbered, text_form, hashlib.sha256(text_form.encode()).hexdigest(), now,
                                   routed=True))
            (late if is_late else routed).append(numbered)
        ready: list[ToEnqueue] = []
        if rows:
            result = conn.execute(events.insert().returning(events.c.id, events.c.event_id), rows)
            pks = {row.event_id: row.id for row in result}
            planned = [_delivery_row(pks[p["event_id"]], p, name, rules[name], now)
                       for p in routed for name in choose(p)]
            ready = _insert_deliveries(conn, engine, planned, rules, now)
    return Numbered(stored=[r["event_id"] for r in rows], duplicates=sorted(existing),
                    late=[p["event_id"] for p in late], ready=ready)


def _wake_gap_waiters(conn: Connection, streams: set[tuple[str, str]], now: datetime) -> None:
    """Deliveries of these dossiers' streams that wait for a missing sequence are due again now.

    The missing event may be one routed elsewhere (a fee for the portal): no delivery of this
    destination finishes to kick the waiter, so without this it would wait out the whole gap.
    The claim checks the gap again, so waking one too early only costs a look.
    """
    d = deliveries.c
    conn.execute(
        update(deliveries)
        .where(tuple_(d.dossier_code, d.stream).in_(sorted(streams)), d.status == PENDING,
               d.next_attempt_at > now, d.enqueued_at.is_(None))
        .values(next_attempt_at=now)
    )


def _delivery_row(
    event_pk: int, payload: dict[str, Any], name: str, rule: DestinationRules, now: datetime
) -> dict[str, Any]:
    return {
        "event_pk": event_pk,
        "destination": name,
        "dossier_code": payload["dossier_code"],
        "stream": payload.get("origin", "onestop"),
        "sequence": payload["sequence"],
        "status": PENDING,
        "attempts": 0,
        "budget_used": 0,
        "replays": 0,
        "deadline_at": now + timedelta(seconds=rule.deadline_seconds),
        "created_at": now,
        "updated_at": now,
        "enqueued_at": now,
        "idempotency_key": f"{payload['event_id']}:{name}",
    }


def _lock_streams(conn: Connection, engine: Engine, keys: Iterable[str]) -> None:
    """Serialise, per (dossier, destination, stream), deciding who goes next (PostgreSQL).

    Without it, a new sequence N+1 committed while N finishes can be missed by both:
    N+1 sees N still open and waits, N's completion does not yet see N+1.
    SQLite's ``BEGIN IMMEDIATE`` already serialises every writer.
    """
    ordered = sorted(set(keys))
    if ordered and engine.dialect.name == "postgresql":
        conn.execute(
            text("SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM unnest(CAST(:keys AS text[])) AS k"),
            {"keys": ordered},
        )


def _stream_key(dossier: str, destination: str, stream: str) -> str:
    return f"{dossier}|{destination}|{stream}"


def _insert_deliveries(
    conn: Connection, engine: Engine, planned: list[dict[str, Any]], rules: dict[str, DestinationRules],
    now: datetime,
) -> list[ToEnqueue]:
    """Insert delivery rows; return those that may go now (heads of their ordered streams)."""
    if not planned:
        return []
    rows = conn.execute(
        deliveries.insert().returning(
            deliveries.c.id, deliveries.c.destination, deliveries.c.dossier_code, deliveries.c.stream,
            deliveries.c.sequence,
        ),
        planned,
    ).all()
    ordered = [r for r in rows if rules[r.destination].ordered]
    _lock_streams(conn, engine, (_stream_key(r.dossier_code, r.destination, r.stream) for r in ordered))
    heads: dict[tuple[str, str, str], int] = {}
    if ordered:
        for dossier, destination, stream, first in conn.execute(
            select(deliveries.c.dossier_code, deliveries.c.destination, deliveries.c.stream,
                   func.min(deliveries.c.sequence))
            .where(
                deliveries.c.dossier_code.in_({r.dossier_code for r in ordered}),
                deliveries.c.status.in_(OPEN_STATUSES),
            )
            .group_by(deliveries.c.dossier_code, deliveries.c.destination, deliveries.c.stream)
        ):
            heads[(dossier, destination, stream)] = first
    return [
        ToEnqueue(r.id, r.destination)
        for r in rows
        if not rules[r.destination].ordered or heads.get((r.dossier_code, r.destination, r.stream)) == r.sequence
    ]


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class DestinationRules:
    """What the ledger needs to know of a destination's configuration."""

    name: str
    ordered: bool
    deadline_seconds: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class ToEnqueue:
    delivery_id: int
    destination: str


def route_event(
    engine: Engine,
    event_pk: int,
    choose: Any,
    rules: dict[str, DestinationRules],
    now: datetime,
) -> list[ToEnqueue]:
    """Create the event's delivery rows (once) and return those to enqueue now.

    ``choose(payload) -> list[str]`` names the destinations. A delivery of an ordered
    destination that still has an open predecessor is not enqueued: the predecessor's
    completion enqueues it.
    """
    with engine.begin() as conn:
        row = conn.execute(
            select(events.c.payload, events.c.routed_at, events.c.dossier_code, events.c.origin,
                   events.c.sequence, events.c.event_id).where(events.c.id == event_pk)
        ).one_or_none()
        if row is None:
            return []
        if row.routed_at is None:
            payload = json.loads(row.payload)
            new = [_delivery_row(event_pk, payload, name, rules[name], now) for name in choose(payload)]
            if new:
                conn.execute(deliveries.insert(), new)
            conn.execute(update(events).where(events.c.id == event_pk).values(routed_at=now))
        open_rows = conn.execute(
            select(deliveries.c.id, deliveries.c.destination, deliveries.c.dossier_code, deliveries.c.stream,
                   deliveries.c.sequence).where(
                deliveries.c.event_pk == event_pk,
                deliveries.c.status.in_((PENDING, RETRYING)),
                or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
            )
        ).all()
        _lock_streams(conn, engine, (_stream_key(d.dossier_code, d.destination, d.stream) for d in open_rows
                                     if rules.get(d.destination) and rules[d.destination].ordered))
        chosen: list[ToEnqueue] = []
        for d in open_rows:
            rule = rules.get(d.destination)
            if rule and rule.ordered and _has_open_predecessor(conn, d.dossier_code, d.destination, d.stream,
                                                               d.sequence):
                continue
            chosen.append(ToEnqueue(d.id, d.destination))
        if open_rows:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_([d.id for d in open_rows]))
                .values(enqueued_at=now)
            )
        return chosen


def _has_open_predecessor(conn: Connection, dossier: str, destination: str, stream: str, sequence: int) -> bool:
    return bool(
        conn.execute(
            select(
                exists().where(
                    deliveries.c.dossier_code == dossier,
                    deliveries.c.destination == destination,
                    deliveries.c.stream == stream,
                    deliveries.c.sequence < sequence,
                    deliveries.c.status.in_(OPEN_STATUSES),
                )
            )
        ).scalar()
    )


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    destination: str
    attempt_id: int
    attempt_number: int
    idempotency_key: str
    payload: dict[str, Any]
    received_at: datetime
    deadline_at: datetime
    budget_used: int
    dossier_code: str = ""
    stream: str = ""
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Nothing to send now: ``state`` is skip, superseded, waiting or dead."""

    state: str
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
            select(deliveries, events.c.payload, events.c.received_at, events.c.origin)
            .join(events, events.c.id == deliveries.c.event_pk)
            .where(deliveries.c.id == delivery_id)
        ).one_or_none()
        if d is None:
            return NotClaimed("skip", "no such delivery")
        lost = d.status == IN_FLIGHT and d.lease_until is not None and d.lease_until <= now
        if d.status not in (PENDING, RETRYING) and not lost:
            return NotClaimed("skip", f"delivery is {d.status}")
        if d.next_attempt_at is not None and d.next_attempt_at > now + timedelta(seconds=1):
            return NotClaimed("skip", "not due yet", d.next_attempt_at)
        if lost:
            _close_lost_attempt(conn, delivery_id, d.attempts)
        if rules.ordered:
            _lock_streams(conn, engine, [_stream_key(d.dossier_code, d.destination, d.stream)])
            verdict = _ordering_verdict(conn, d, now, gap_wait_seconds)
            if verdict is not None:
                return verdict
        if d.budget_used >= rules.max_attempts:
            reason = f"gave up: {d.budget_used} attempts started without an answer (worker lost each time)"
            _set(conn, delivery_id, now, status=DEAD, last_error=reason, lease_until=None)
            return NotClaimed("dead", reason)
        number = d.attempts + 1
        _set(conn, delivery_id, now, status=IN_FLIGHT, attempts=number, budget_used=d.budget_used + 1,
             lease_until=now + timedelta(seconds=lease_seconds))
        attempt_id = conn.execute(
            attempts.insert().returning(attempts.c.id),
            {"delivery_id": delivery_id, "number": number, "started_at": now},
        ).scalar_one()
        return Claimed(
            delivery_id=delivery_id,
            destination=d.destination,
            attempt_id=attempt_id,
            attempt_number=number,
            idempotency_key=d.idempotency_key,
            payload=json.loads(d.payload),
            received_at=d.received_at,
            deadline_at=d.deadline_at,
            budget_used=d.budget_used + 1,
            dossier_code=d.dossier_code,
            stream=d.stream,
            sequence=d.sequence,
        )


def _ordering_verdict(conn: Connection, d: Any, now: datetime, gap_wait_seconds: float) -> NotClaimed | None:
    """Superseded, waiting, or ``None`` (may go): one aggregate over the stream's deliveries."""
    seq = deliveries.c.sequence
    newer_sent, older_open, previous = conn.execute(
        select(
            func.max(seq).filter(seq > d.sequence, deliveries.c.status.in_((IN_FLIGHT, DELIVERED))),
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
        _set(conn, d.id, now, status=SUPERSEDED, last_error=reason, lease_until=None)
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


def _close_lost_attempt(conn: Connection, delivery_id: int, number: int) -> None:
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

    status: str  # delivered | retrying | dead
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
        if outcome.status == DELIVERED:
            values["delivered_at"] = now
        result = conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id == claimed.delivery_id,
                deliveries.c.status == IN_FLIGHT,
                deliveries.c.attempts == claimed.attempt_number,
            )
            .values(**values)
        )
        if result.rowcount == 0 or outcome.status not in FINAL_STATUSES or not rules.ordered:
            return []
        position = _Position(claimed.dossier_code, claimed.destination, claimed.stream, claimed.sequence)
        _lock_streams(conn, engine, [_stream_key(*position[:3])])
        return _successor(conn, position, now)


class _Position(NamedTuple):
    dossier_code: str
    destination: str
    stream: str
    sequence: int


def _successor(conn: Connection, d: _Position, now: datetime) -> list[ToEnqueue]:
    nxt = conn.execute(
        select(deliveries.c.id, deliveries.c.destination)
        .where(
            deliveries.c.dossier_code == d.dossier_code,
            deliveries.c.destination == d.destination,
            deliveries.c.stream == d.stream,
            deliveries.c.sequence > d.sequence,
            deliveries.c.status.in_((PENDING, RETRYING)),
        )
        .order_by(deliveries.c.sequence)
        .limit(1)
    ).one_or_none()
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
        position = _Position(*row)
        _lock_streams(conn, engine, [_stream_key(*position[:3])])
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
        row = _delivery_row(event_pk, json.loads(payload), destination, rules[destination], now)
        ready = _insert_deliveries(conn, engine, [row], rules, now)
        new_id = conn.execute(
            select(deliveries.c.id).where(deliveries.c.event_pk == event_pk, deliveries.c.destination == destination)
        ).scalar_one()
    return new_id, ready


def defer(engine: Engine, delivery_id: int, until: datetime, reason: str, now: datetime) -> None:
    """Postpone a delivery without spending an attempt (breaker open, quota spent)."""
    with engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.status.in_((PENDING, RETRYING)))
            .values(next_attempt_at=until, enqueued_at=None, last_error=reason, updated_at=now)
        )


# --------------------------------------------------------------------------- sweeper


@dataclass(frozen=True, slots=True)
class SweepResult:
    events_to_route: list[int]
    deliveries_to_enqueue: list[ToEnqueue]
    leases_expired: int


def sweep(engine: Engine, now: datetime, requeue_after: float, batch: int) -> SweepResult:
    """Find work that is due but not queued: unrouted events, due retries, lost leases."""
    stale = now - timedelta(seconds=requeue_after)
    with engine.begin() as conn:
        lost = conn.execute(
            select(deliveries.c.id, deliveries.c.attempts).where(
                deliveries.c.status == IN_FLIGHT, deliveries.c.lease_until <= now
            ).limit(batch)
        ).all()
        for row in lost:
            _close_lost_attempt(conn, row.id, row.attempts)
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == row.id, deliveries.c.status == IN_FLIGHT)
                .values(status=RETRYING, next_attempt_at=now, enqueued_at=None, lease_until=None,
                        updated_at=now, last_error="worker lost during the attempt (lease expired)")
            )
        unrouted = list(
            conn.execute(
                select(events.c.id).where(
                    events.c.routed_at.is_(None),
                    or_(events.c.enqueued_at.is_(None), events.c.enqueued_at <= stale),
                ).order_by(events.c.id).limit(batch)
            ).scalars()
        )
        if unrouted:
            conn.execute(update(events).where(events.c.id.in_(unrouted)).values(enqueued_at=now))
        due = conn.execute(
            select(deliveries.c.id, deliveries.c.destination).where(
                deliveries.c.status.in_((PENDING, RETRYING)),
                or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
                or_(deliveries.c.enqueued_at.is_(None), deliveries.c.enqueued_at <= stale),
            ).order_by(deliveries.c.dossier_code, deliveries.c.sequence).limit(batch)
        ).all()
        if due:
            conn.execute(
                update(deliveries).where(deliveries.c.id.in_([d.id for d in due])).values(enqueued_at=now)
            )
    return SweepResult(unrouted, [ToEnqueue(d.id, d.destination) for d in due], len(lost))


# --------------------------------------------------------------------------- dead letters


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    destination: str | None = None
    dossier_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None
    ids: tuple[int, ...] = ()

    def where(self) -> list[Any]:
        clauses: list[Any] = [deliveries.c.status == DEAD]
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
                 before: tuple[datetime, int] | None = None) -> list[Any]:
    """The newest dead letters first; ``before`` (the last row's ``updated_at`` and ``id``) pages on."""
    clauses = flt.where()
    if before is not None:
        moment, row_id = before
        clauses.append(or_(deliveries.c.updated_at < moment,
                           (deliveries.c.updated_at == moment) & (deliveries.c.id < row_id)))
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    deliveries.c.id, deliveries.c.destination, deliveries.c.dossier_code, deliveries.c.sequence,
                    deliveries.c.attempts, deliveries.c.replays, deliveries.c.updated_at,
                    deliveries.c.last_status_code, deliveries.c.last_error, events.c.event_id, events.c.type,
                )
                .join(events, events.c.id == deliveries.c.event_pk)
                .where(*clauses)
                .order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc())
                .limit(limit)
            ).all()
        )


def replay(
    engine: Engine, flt: DeadLetterFilter, deadlines: dict[str, float], now: datetime
) -> list[ToEnqueue]:
    """Give matching dead letters a fresh attempt budget and deadline; nothing is deleted."""
    with engine.begin() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.destination).where(*flt.where())).all()
        for row in rows:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == row.id, deliveries.c.status == DEAD)
                .values(
                    status=PENDING, budget_used=0, replays=deliveries.c.replays + 1, next_attempt_at=None,
                    enqueued_at=now, updated_at=now, lease_until=None,
                    deadline_at=now + timedelta(seconds=deadlines.get(row.destination, 72 * 3600)),
                )
            )
    return [ToEnqueue(r.id, r.destination) for r in rows]


# --------------------------------------------------------------------------- reading


def describe_attempt(attempt: Any, separator: str = ", ") -> str:
    """One attempt in words: its outcome, the HTTP status, how long, the error (already masked), the reference."""
    parts = [attempt.outcome or "in flight"]
    if attempt.status_code:
        parts.append(f"HTTP {attempt.status_code}")
    if attempt.duration_ms is not None:
        parts.append(f"{attempt.duration_ms:.0f} ms")
    text_form = separator.join(parts)
    if attempt.error:
        text_form += f" — {attempt.error}"
    if attempt.external_ref:
        text_form += f" (ref {attempt.external_ref})"
    return text_form


def dossier_trace(engine: Engine, dossier_code: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Every event, delivery and attempt of one dossier."""
    with engine.connect() as conn:
        evs = conn.execute(
            select(events.c.id, events.c.event_id, events.c.type, events.c.origin, events.c.unit_code,
                   events.c.sequence, events.c.occurred_at, events.c.received_at, events.c.payload)
            .where(events.c.dossier_code == dossier_code)
            .order_by(events.c.sequence, events.c.id)
        ).all()
        dels = conn.execute(
            select(deliveries).where(deliveries.c.dossier_code == dossier_code).order_by(deliveries.c.id)
        ).all()
        atts = conn.execute(
            select(attempts, deliveries.c.destination)
            .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
            .where(deliveries.c.dossier_code == dossier_code)
            .order_by(attempts.c.started_at, attempts.c.id)
        ).all()
    return list(evs), list(dels), list(atts)


def status_counts(engine: Engine, since: datetime | None = None) -> dict[str, dict[str, int]]:
    """``{destination: {status: count}}``, optionally for deliveries created since a time."""
    query = select(deliveries.c.destination, deliveries.c.status, func.count()).group_by(
        deliveries.c.destination, deliveries.c.status
    )
    if since is not None:
        query = query.where(deliveries.c.created_at >= since)
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for destination, status, count in conn.execute(query):
            out.setdefault(destination, {})[status] = count
    return out


def dead_counts(engine: Engine) -> dict[str, int]:
    """Dead letters per destination (for the metrics: a number that only grows until someone replays)."""
    query = (select(deliveries.c.destination, func.count()).where(deliveries.c.status == DEAD)
             .group_by(deliveries.c.destination))
    with engine.connect() as conn:
        return {destination: int(count) for destination, count in conn.execute(query)}


def open_backlog(engine: Engine, now: datetime) -> dict[str, tuple[int, float]]:
    """Per destination: open deliveries and the age in seconds of the oldest one."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.destination, func.count(), func.min(deliveries.c.created_at))
            .where(deliveries.c.status.in_(OPEN_STATUSES))
            .group_by(deliveries.c.destination)
        ).all()
    out: dict[str, tuple[int, float]] = {}
    for destination, count, oldest in rows:
        if isinstance(oldest, str):  # SQLite aggregates bypass the column type
            oldest = datetime.fromisoformat(oldest).replace(tzinfo=now.tzinfo)
        elif oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        out[destination] = (count, (now - oldest).total_seconds() if oldest else 0.0)
    return out


def latencies_ms(engine: Engine, since: datetime | None = None) -> list[float]:
    """Intake → delivered, in milliseconds, for delivered deliveries (for summaries)."""
    query = select(deliveries.c.delivered_at, events.c.received_at).join(
        events, events.c.id == deliveries.c.event_pk
    ).where(deliveries.c.status == DELIVERED)
    if since is not None:
        query = query.where(deliveries.c.created_at >= since)
    with engine.connect() as conn:
        return [(d - r).total_seconds() * 1000.0 for d, r in conn.execute(query)]
