"""Appending to the audit chain, inside the transaction that records what the entry says.

A chain's head row is locked last in its transaction (after the streams' locks and the deliveries' rows, as
everywhere), by an upsert that returns it: one statement takes the lock and reads the head, one inserts the
entries (executed many), one moves the head. A batch appends all its entries under that one lock.

An engine may be told not to append (:func:`unaudited`: ``MOTCUA_AUDIT_CHAIN=false``); the benchmark compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store.audit.chain import (
    GENESIS,
    EntryKind,
    OutcomeStatus,
    attempt_content,
    canonical,
    digest,
    entry_hash,
    outcome_content,
)
from store.prepared import execute, execute_many
from store.tables import attempts, audit_entries, audit_heads, deliveries, events

OPTION = "motcua_audit_chain"


def unaudited(engine: Engine) -> Engine:
    """The same engine (pool, events), with the chain off: its transactions append nothing."""
    return engine.execution_options(**{OPTION: False})


def enabled(conn: Connection) -> bool:
    return bool(conn.get_execution_options().get(OPTION, True))


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry to append: its chain (the destination), kind, the rows it is about, and its content."""

    chain: str
    kind: EntryKind
    delivery_id: int
    attempt_id: int | None
    content: dict[str, Any]


def attempt_entry(
    *, attempt_id: int, delivery_id: int, event_id: str, event_hash: str, destination: str, number: int,
    started_at: datetime, duration_ms: float | None, outcome: str | None, status_code: int | None,
    external_ref: str | None, excerpt: str | None, error: str | None, status: str | None, replays: int,
) -> Entry:
    content = attempt_content(
        attempt_id=attempt_id, delivery_id=delivery_id, event_id=event_id, event_hash=event_hash,
        destination=destination, number=number, started_at=started_at, duration_ms=duration_ms, outcome=outcome,
        status_code=status_code, external_ref=external_ref, excerpt=excerpt, error=error, status=status,
        replays=replays,
    )
    return Entry(destination, "attempt", delivery_id, attempt_id, content)


def outcome_entry(
    *, delivery_id: int, event_id: str, event_hash: str, destination: str, status: OutcomeStatus, at: datetime,
    reason: str | None, replays: int, links: dict[str, Any] | None = None,
) -> Entry:
    content = outcome_content(delivery_id=delivery_id, event_id=event_id, event_hash=event_hash,
                              destination=destination, status=status, at=at, reason=reason, replays=replays,
                              links=links)
    return Entry(destination, "outcome", delivery_id, None, content)


def _take_head(dialect: str) -> Any:
    """Insert a chain's head at its start, or touch it (which locks the row): either way, return it."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(audit_heads).values(chain=bindparam("chain"), seq=0, hash=GENESIS,
                                           updated_at=bindparam("now", type_=audit_heads.c.updated_at.type))
    return statement.on_conflict_do_update(
        index_elements=[audit_heads.c.chain], set_={"chain": statement.excluded.chain}
    ).returning(audit_heads.c.seq, audit_heads.c.hash)


_TAKE_HEAD = {name: _take_head(name) for name in ("postgresql", "sqlite")}
_INSERT_ENTRY = audit_entries.insert().values({name: bindparam(name) for name in (
    "chain", "seq", "kind", "delivery_id", "attempt_id", "recorded_at", "content", "prev_hash", "hash")})
_MOVE_HEAD = (update(audit_heads).where(audit_heads.c.chain == bindparam("b_chain"))
              .values(seq=bindparam("b_seq"), hash=bindparam("b_hash"), updated_at=bindparam("b_now")))


def append(conn: Connection, entries: Iterable[Entry], now: datetime) -> None:
    """Append ``entries`` to their chains, in order: call it last in the transaction (a head's lock comes after
    every other lock). Chains are taken in name order, so that transactions appending to several never deadlock."""
    if not enabled(conn):
        return
    by_chain: dict[str, list[Entry]] = {}
    for entry in entries:
        by_chain.setdefault(entry.chain, []).append(entry)
    for chain in sorted(by_chain):
        seq, prev = execute(conn, _TAKE_HEAD[conn.dialect.name], {"chain": chain, "now": now}).one()
        rows = []
        for entry in by_chain[chain]:
            text = canonical(entry.content)
            seq += 1
            hashed = entry_hash(chain, seq, prev, digest(text))
            rows.append({"chain": chain, "seq": seq, "kind": entry.kind, "delivery_id": entry.delivery_id,
                         "attempt_id": entry.attempt_id, "recorded_at": now, "content": text, "prev_hash": prev,
                         "hash": hashed})
            prev = hashed
        execute_many(conn, _INSERT_ENTRY, rows)
        conn.execute(_MOVE_HEAD, {"b_chain": chain, "b_seq": seq, "b_hash": prev, "b_now": now})


def lost_attempt_entries(conn: Connection, ids: Sequence[int]) -> list[Entry]:
    """The entries of attempts just closed as lost (``ids``: the attempts'), from their rows."""
    if not ids:
        return []
    rows = conn.execute(attempt_rows().where(attempts.c.id.in_(list(ids))).order_by(attempts.c.id)).all()
    return [attempt_entry_of_row(r, status=None) for r in rows]


def attempt_rows() -> Select[Any]:
    """Attempt rows joined to what their entries also say: the delivery's destination and replays, the event's id
    and content hash (what :func:`attempt_entry_of_row` reads)."""
    return (select(attempts, deliveries.c.destination, deliveries.c.replays, events.c.event_id, events.c.content_hash)
            .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
            .join(events, events.c.id == deliveries.c.event_pk))


def attempt_entry_of_row(r: Row[Any], *, status: str | None) -> Entry:
    """An attempt's entry from its row joined to its delivery's and event's (``destination``, ``replays``,
    ``event_id``, ``content_hash``)."""
    return attempt_entry(
        attempt_id=r.id, delivery_id=r.delivery_id, event_id=r.event_id, event_hash=r.content_hash,
        destination=r.destination, number=r.number, started_at=r.started_at, duration_ms=r.duration_ms,
        outcome=r.outcome, status_code=r.status_code, external_ref=r.external_ref, excerpt=r.response_excerpt,
        error=r.error, status=status, replays=r.replays,
    )


def last_entries(conn: Connection, delivery_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each delivery's last entry, as a link (``{chain, seq, hash}``), for those that have one."""
    if not delivery_ids:
        return {}
    e = audit_entries.c
    rows = conn.execute(select(e.delivery_id, e.chain, e.seq, e.hash).where(e.delivery_id.in_(list(delivery_ids)))
                        .order_by(e.delivery_id, e.seq)).all()
    return {r.delivery_id: {"chain": r.chain, "seq": r.seq, "hash": r.hash} for r in rows}
