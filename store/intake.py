"""Intake: events stored once by ``event_id``, and routed to their destinations' deliveries.

An event is committed before anything is queued (the transactional outbox): with a routing
callback its deliveries are created in the same transaction, otherwise the route task does it
later (:func:`route_event`). All times are passed in by the caller, so tests can run the
engine on a controlled clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from schemas.events import canonical_json
from store.prepared import insert_returning
from store.streams import (
    DestinationRules,
    ToEnqueue,
    delivery_row,
    has_open_predecessor,
    in_id_order,
    insert_deliveries,
    lock_streams,
    routed_keys,
    stream_key,
)
from store.tables import Status, deliveries, events

Choose = Callable[[dict[str, Any]], list[str]]
"""The routing rule: the names of the destinations a canonical event goes to (``RoutingConfig.destinations_for``)."""


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
    choose: Choose | None = None,
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
    choose: Choose | None,
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
            names = {r["event_id"]: choose(by_id[r["event_id"]][0]) for r in new_rows} if choose is not None else {}
            streams = {(r["dossier_code"], r["origin"]) for r in new_rows}
            if choose is not None:  # the streams this transaction decides on, locked before any row is written
                lock_streams(conn, engine, routed_keys(((by_id[eid][0], to) for eid, to in names.items()), rules))
            result = insert_returning(conn, events, new_rows, (events.c.id, events.c.event_id))
            inserted = {row.event_id: row.id for row in result}
            _wake_gap_waiters(conn, streams, now)
            if choose is not None:
                planned = [
                    delivery_row(inserted[eid], by_id[eid][0], name, rules[name], now)
                    for eid in inserted
                    for name in names[eid]
                ]
                chosen = insert_deliveries(conn, engine, planned, rules, now)
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
    choose: Choose,
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
    names = {eid: choose(p) for eid, p in by_id.items()}  # routing does not depend on the number
    with engine.begin() as conn:
        # the numbering's locks and the routed streams' (a superset: duplicates and late ones included), at once
        lock_streams(conn, engine, {f"{dossier}|numbered|{origin}" for dossier, origin in streams}
                     | routed_keys(((by_id[eid], to) for eid, to in names.items()), rules))
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
            result = insert_returning(conn, events, rows, (events.c.id, events.c.event_id))
            pks = {row.event_id: row.id for row in result}
            planned = [delivery_row(pks[p["event_id"]], p, name, rules[name], now)
                       for p in routed for name in names[p["event_id"]]]
            ready = insert_deliveries(conn, engine, planned, rules, now)
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
        .where(in_id_order(and_(tuple_(d.dossier_code, d.stream).in_(sorted(streams)), d.status == Status.PENDING,
                                d.next_attempt_at > now, d.enqueued_at.is_(None))))
        .values(next_attempt_at=now)
    )


def route_event(
    engine: Engine,
    event_pk: int,
    choose: Choose,
    rules: dict[str, DestinationRules],
    now: datetime,
) -> list[ToEnqueue]:
    """Create the event's delivery rows (once) and return those to enqueue now.

    ``choose(payload) -> list[str]`` names the destinations. A delivery of an ordered
    destination that still has an open predecessor is not enqueued: the predecessor's
    completion enqueues it.
    """
    with engine.begin() as conn:
        row = conn.execute(select(events.c.payload).where(events.c.id == event_pk)).one_or_none()
        if row is None:
            return []
        payload = json.loads(row.payload)
        names = choose(payload)
        made = set(conn.execute(select(deliveries.c.destination).where(deliveries.c.event_pk == event_pk)).scalars())
        locked = routed_keys([(payload, {*names, *made} & rules.keys())], rules)
        lock_streams(conn, engine, locked)  # before any row is written; routed_at read again under them
        if conn.execute(select(events.c.routed_at).where(events.c.id == event_pk)).scalar() is None:
            new = [delivery_row(event_pk, payload, name, rules[name], now) for name in names]
            if new:
                conn.execute(deliveries.insert(), new)
            conn.execute(update(events).where(events.c.id == event_pk).values(routed_at=now))
        open_rows = conn.execute(
            select(deliveries.c.id, deliveries.c.destination, deliveries.c.dossier_code, deliveries.c.stream,
                   deliveries.c.sequence).where(
                deliveries.c.event_pk == event_pk,
                deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
                or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
            ).order_by(deliveries.c.id)
        ).all()
        chosen: list[ToEnqueue] = []
        for d in open_rows:
            rule = rules.get(d.destination)
            if rule and rule.ordered and (
                stream_key(d.dossier_code, d.destination, d.stream) not in locked  # a reroute's, made meanwhile
                or has_open_predecessor(conn, d.dossier_code, d.destination, d.stream, d.sequence)
            ):
                continue
            chosen.append(ToEnqueue(d.id, d.destination))
        if open_rows:
            conn.execute(
                update(deliveries)
                .where(in_id_order(deliveries.c.id.in_([d.id for d in open_rows])))
                .values(enqueued_at=now)
            )
        return chosen
