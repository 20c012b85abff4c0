"""Ordered streams: what intake and the claims share about (dossier, destination, stream) sequences.

A destination that wants a dossier's events in order gets them one at a time, in ``sequence``
order, per stream (the events' origin). This module builds and inserts delivery rows, finds the
heads of their streams, and answers "is an earlier one still open?" and "which one goes next?".

**One lock order in the ledger** (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises every writer):

1. A transaction that decides who goes next in ordered streams (the intake adding deliveries, a route, a reroute,
   a claim, a final finish) takes those streams' advisory locks first: all of them in one :func:`lock_streams`
   call (or :func:`try_lock_streams`, which never waits), sorted by lock number, before it locks, inserts or
   updates any row, the events' included. Keys it learns only from rows are read first without a lock
   (:func:`routed_keys`, a select); rows of other streams it may touch afterwards are locked after, never before.
2. A transaction that decides nothing of the kind (a deferral, a release, a replay, a wake-up, a lease renewal,
   the sweep) takes no stream lock at all.
3. Rows: ``deliveries`` in ``id`` order (``FOR UPDATE … ORDER BY id``, statements executed many over sorted ids),
   then their ``attempts``. The sweep skips what another transaction holds (``SKIP LOCKED``): it never waits.

So no transaction ever waits for a stream's lock while holding a row another waits for under that lock (the
deadlock "waits for ExclusiveLock on advisory lock … blocked by process B; B waits for ShareLock on
transaction"), and two transactions' row locks never cross. ``tests/test_lock_order.py`` checks each transaction
against the rule and runs them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Row, exists, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from store.prepared import insert_returning
from store.tables import Status, deliveries, is_open


@dataclass(frozen=True, slots=True)
class DestinationRules:
    """What the ledger needs to know of a destination's configuration."""

    name: str
    ordered: bool
    deadline_seconds: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class ToEnqueue:
    """A delivery that may go now, for the caller to put on its destination's queue."""

    delivery_id: int
    destination: str


def delivery_row(
    event_pk: int, payload: dict[str, Any], name: str, rule: DestinationRules, now: datetime
) -> dict[str, Any]:
    """A new pending delivery of an event (its canonical ``payload``) to destination ``name``, queued now."""
    return {
        "event_pk": event_pk,
        "destination": name,
        "dossier_code": payload["dossier_code"],
        "stream": payload.get("origin", "onestop"),
        "sequence": payload["sequence"],
        "status": Status.PENDING,
        "attempts": 0,
        "budget_used": 0,
        "replays": 0,
        "deadline_at": now + timedelta(seconds=rule.deadline_seconds),
        "created_at": now,
        "updated_at": now,
        "enqueued_at": now,
        "idempotency_key": f"{payload['event_id']}:{name}",
    }


def lock_streams(conn: Connection, engine: Engine, keys: Iterable[str]) -> None:
    """Serialise, per (dossier, destination, stream), deciding who goes next (PostgreSQL): the transaction's
    first locks, as the module's lock order says, in the order of their numbers (two keys that hash alike are
    one lock, taken once).

    Without it, a new sequence N+1 committed while N finishes can be missed by both:
    N+1 sees N still open and waits, N's completion does not yet see N+1.
    SQLite's ``BEGIN IMMEDIATE`` already serialises every writer.
    """
    wanted = sorted(set(keys))
    if wanted and engine.dialect.name == "postgresql":
        conn.execute(
            text("SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtext(k) AS h"
                 " FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) AS numbers"),
            {"keys": wanted},
        )


def try_lock_streams(conn: Connection, keys: Iterable[str]) -> set[str]:
    """Take the locks of the streams no other transaction holds (PostgreSQL); the keys taken."""
    ordered = sorted(set(keys))
    if not ordered:
        return set()
    return set(conn.execute(
        text("SELECT k FROM unnest(CAST(:keys AS text[])) AS k WHERE pg_try_advisory_xact_lock(hashtext(k))"),
        {"keys": ordered},
    ).scalars())


def stream_key(dossier: str, destination: str, stream: str) -> str:
    """The name :func:`lock_streams` locks for one ordered stream."""
    return f"{dossier}|{destination}|{stream}"


def routed_keys(routes: Iterable[tuple[dict[str, Any], Iterable[str]]], rules: dict[str, DestinationRules]) -> set[str]:
    """The ordered streams that deliveries of canonical events (each with the names of its destinations) join,
    as :func:`delivery_row` makes them: what to lock before writing them."""
    return {stream_key(payload["dossier_code"], name, payload.get("origin", "onestop"))
            for payload, names in routes for name in names if rules[name].ordered}


def in_id_order(where: ColumnElement[bool]) -> ColumnElement[bool]:
    """``deliveries.id IN (…)`` of the rows ``where`` finds, locked first in ``id`` order: a multi-row update
    of deliveries that crosses no other transaction's row locks."""
    return deliveries.c.id.in_(
        select(deliveries.c.id).where(where).order_by(deliveries.c.id).with_for_update()
    )


def insert_deliveries(
    conn: Connection, engine: Engine, planned: list[dict[str, Any]], rules: dict[str, DestinationRules],
    now: datetime,
) -> list[ToEnqueue]:
    """Insert delivery rows; return those that may go now (heads of their ordered streams).

    Their streams are locked before the rows are written; a caller that wrote rows before locked them already.
    """
    if not planned:
        return []
    lock_streams(conn, engine, (stream_key(p["dossier_code"], p["destination"], p["stream"]) for p in planned
                                if rules[p["destination"]].ordered))
    rows = insert_returning(conn, deliveries, planned, (
        deliveries.c.id, deliveries.c.destination, deliveries.c.dossier_code, deliveries.c.stream,
        deliveries.c.sequence,
    ))
    ordered = [r for r in rows if rules[r.destination].ordered]
    heads: dict[tuple[str, str, str], int] = {}
    if ordered:
        for dossier, destination, stream, first in conn.execute(
            select(deliveries.c.dossier_code, deliveries.c.destination, deliveries.c.stream,
                   func.min(deliveries.c.sequence))
            .where(
                deliveries.c.dossier_code.in_({r.dossier_code for r in ordered}),
                is_open(deliveries.c.status),
            )
            .group_by(deliveries.c.dossier_code, deliveries.c.destination, deliveries.c.stream)
        ):
            heads[(dossier, destination, stream)] = first
    return [
        ToEnqueue(r.id, r.destination)
        for r in rows
        if not rules[r.destination].ordered or heads.get((r.dossier_code, r.destination, r.stream)) == r.sequence
    ]


def has_open_predecessor(conn: Connection, dossier: str, destination: str, stream: str, sequence: int) -> bool:
    """Whether an earlier sequence of the same stream is still open (it must go first)."""
    return bool(
        conn.execute(
            select(
                exists().where(
                    deliveries.c.dossier_code == dossier,
                    deliveries.c.destination == destination,
                    deliveries.c.stream == stream,
                    deliveries.c.sequence < sequence,
                    is_open(deliveries.c.status),
                )
            )
        ).scalar()
    )


class Position(NamedTuple):
    """Where a delivery stands in its ordered stream."""

    dossier_code: str
    destination: str
    stream: str
    sequence: int


def next_open(conn: Connection, d: Position) -> Row[tuple[int, str]] | None:
    """The open (pending or retrying) delivery that comes after ``d`` in its stream, if any."""
    return conn.execute(
        select(deliveries.c.id, deliveries.c.destination)
        .where(
            deliveries.c.dossier_code == d.dossier_code,
            deliveries.c.destination == d.destination,
            deliveries.c.stream == d.stream,
            deliveries.c.sequence > d.sequence,
            deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
        )
        .order_by(deliveries.c.sequence)
        .limit(1)
    ).one_or_none()
