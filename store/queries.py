"""Reading the ledger: a dossier's trace, counts per destination and status, the backlog, stored payloads.

Read-only queries for the CLI, the console, the metrics, the demo's summary and the tasks that
look back at events already stored (the request behind a status, the assessment behind a bill);
nothing here changes a row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Engine, Row, func, select

from store.tables import OPEN_STATUSES, Status, attempts, deliveries, events


def describe_attempt(attempt: Row[Any], separator: str = ", ") -> str:
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


def dossier_trace(engine: Engine, dossier_code: str) -> tuple[list[Row[Any]], list[Row[Any]], list[Row[Any]]]:
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
    query = (select(deliveries.c.destination, func.count()).where(deliveries.c.status == Status.DEAD)
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
    ).where(deliveries.c.status == Status.DELIVERED)
    if since is not None:
        query = query.where(deliveries.c.created_at >= since)
    with engine.connect() as conn:
        return [(d - r).total_seconds() * 1000.0 for d, r in conn.execute(query)]


# --------------------------------------------------------------------------- stored events


class StoredEvent(NamedTuple):
    """An event's identifying columns and its parsed payload."""

    dossier_code: str
    type: str
    unit_code: str
    payload: dict[str, Any]


def event_payload(engine: Engine, event_id: str) -> dict[str, Any]:
    """The payload of the event stored as ``event_id`` (it must exist)."""
    with engine.connect() as conn:
        payload = conn.execute(select(events.c.payload).where(events.c.event_id == event_id)).scalar_one()
    return dict(json.loads(payload))


def event_types(engine: Engine, dossier_code: str, types: Iterable[str]) -> set[str]:
    """Which of ``types`` the dossier has at least one event of."""
    with engine.connect() as conn:
        return set(conn.execute(
            select(events.c.type).distinct()
            .where(events.c.dossier_code == dossier_code, events.c.type.in_(list(types)))
        ).scalars())


def _events_of(dossier_codes: Iterable[str], types: Iterable[str], origin: str | None) -> list[ColumnElement[bool]]:
    """The ``where`` of the events of these types of these dossiers (only from ``origin`` if given)."""
    clauses: list[ColumnElement[bool]] = [events.c.dossier_code.in_(sorted(set(dossier_codes))),
                                          events.c.type.in_(list(types))]
    if origin is not None:
        clauses.append(events.c.origin == origin)
    return clauses


def event_payloads(engine: Engine, dossier_codes: Iterable[str], types: Iterable[str],
                   origin: str | None = None) -> list[StoredEvent]:
    """The events of these types of these dossiers (only from ``origin`` if given), oldest first."""
    with engine.connect() as conn:
        return [StoredEvent(row.dossier_code, row.type, row.unit_code, json.loads(row.payload))
                for row in conn.execute(
                    select(events.c.dossier_code, events.c.type, events.c.unit_code, events.c.payload)
                    .where(*_events_of(dossier_codes, types, origin)).order_by(events.c.id))]


def event_texts(engine: Engine, dossier_codes: Iterable[str], types: Iterable[str],
                origin: str | None = None) -> list[tuple[int, str]]:
    """The row id and stored text of the same events as :func:`event_payloads`, oldest first: for a reader that
    parses each once and remembers it by both (a stored event never changes)."""
    with engine.connect() as conn:
        return [(row.id, row.payload) for row in conn.execute(
            select(events.c.id, events.c.payload).where(*_events_of(dossier_codes, types, origin))
            .order_by(events.c.id))]


def event_ids(engine: Engine, event_type: str, since: datetime) -> set[str]:
    """The ids of the events of ``event_type`` the ledger received since ``since``."""
    with engine.connect() as conn:
        return set(conn.execute(select(events.c.event_id).where(events.c.type == event_type,
                                                                events.c.received_at >= since)).scalars())


def unrouted_count(engine: Engine, since: datetime) -> int:
    """How many events received since ``since`` are not routed yet."""
    query = select(func.count()).where(events.c.received_at >= since, events.c.routed_at.is_(None))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def deliveries_since(engine: Engine, since: datetime) -> list[dict[str, Any]]:
    """Every delivery created since ``since``, with its event's type and receipt time (for a run's summary)."""
    d = deliveries.c
    query = (select(d.destination, d.dossier_code, d.status, d.attempts, d.delivered_at, events.c.received_at,
                    events.c.type)
             .join(events, events.c.id == d.event_pk).where(d.created_at >= since))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
