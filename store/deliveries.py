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

import functools
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Row,
    Select,
    all_,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement

from schemas.events import Event, parse_stored_json
from schemas.privacy import error_fields
from store.audit.ledger import Entry, append, attempt_entry, lost_attempt_entries, outcome_entry
from store.prepared import execute_many
from store.streams import (
    DestinationRules,
    Position,
    ToEnqueue,
    delivery_row,
    in_id_order,
    insert_deliveries,
    lock_streams,
    next_open,
    routed_keys,
    stream_key,
    try_lock_streams,
)
from store.tables import FINAL_STATUSES, OPEN_STATUSES, Status, attempts, deliveries, events, is_open


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
    started_at: datetime  # the attempt's (its claim's time)
    dossier_code: str = ""
    stream: str = ""
    sequence: int = 0
    unreadable: str | None = None
    event_hash: str = ""  # the event's content hash, and the delivery's replays: for its audit entries
    replays: int = 0


# Not a Status: skip and waiting leave the delivery as it was; superseded and dead are the status it got instead.
NotClaimedState = Literal["skip", "waiting", "superseded", "dead"]


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Nothing to send now: ``state`` is skip, superseded, waiting or dead."""

    state: NotClaimedState
    reason: str
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """What a claim of several deliveries took (``claimed``) and why the others were not taken (``refused``)."""

    claimed: list[Claimed]
    refused: dict[int, NotClaimed]


def claim(
    engine: Engine,
    delivery_id: int,
    rules: DestinationRules,
    now: datetime,
    lease_seconds: float,
    gap_wait_seconds: float,
) -> Claimed | NotClaimed:
    """Take a delivery for one attempt, or say why not (ordering, not due, already done)."""
    with engine.connect() as conn:
        destination = conn.execute(select(deliveries.c.destination).where(deliveries.c.id == delivery_id)).scalar()
    if destination is None:
        return NotClaimed("skip", "no such delivery")
    batch = claim_many(engine, destination, rules, now, lease_seconds, gap_wait_seconds, ids=[delivery_id])
    return batch.claimed[0] if batch.claimed else batch.refused.get(delivery_id, NotClaimed("skip", "no such delivery"))


def claim_many(
    engine: Engine,
    destination: str,
    rules: DestinationRules,
    now: datetime,
    lease_seconds: float,
    gap_wait_seconds: float,
    *,
    ids: Sequence[int] | None = None,
    limit: int = 100,
    exclude: Collection[int] = (),
) -> Batch:
    """Take deliveries of ``destination`` for one attempt each, in one transaction.

    With ``ids``, those deliveries: each gets its claim, or the reason it has none (not due, already done,
    waiting for an earlier sequence, superseded, out of attempts). Without, up to ``limit`` of the
    destination's due deliveries, oldest first: those behind an open earlier sequence of their stream are no
    candidates, nor those in ``exclude`` (what the caller already saw waiting); on PostgreSQL, rows another
    worker holds are skipped (``FOR UPDATE SKIP LOCKED``), and so are ordered streams whose lock another
    transaction holds (the intake or a finish deciding on them this moment).

    One lock order everywhere: a stream's advisory lock before any row lock.
    """
    postgres = engine.dialect.name == "postgresql"
    q = _claim_statements(engine.dialect.name, rules.ordered)
    params: dict[str, Any] = {"dest": destination, "now": now, "due_by": now + timedelta(seconds=1),
                              "limit": limit, "exclude": list(exclude), "ids": list(ids or ())}
    with engine.begin() as conn:
        if postgres:  # the streams' locks first (tried, for a drain), then the rows'
            candidates = conn.execute(q.drain_candidates if ids is None else q.candidates, params).all()
            if rules.ordered and candidates:
                keys = {stream_key(c.dossier_code, destination, c.stream) for c in candidates}
                if ids is None:  # a drain leaves to others the streams they decide on now
                    held = try_lock_streams(conn, keys)
                    candidates = [c for c in candidates if stream_key(c.dossier_code, destination, c.stream) in held]
                else:
                    lock_streams(conn, engine, keys)
            if not candidates:
                return Batch([], {})
            params["ids"] = [c.id for c in candidates]
            rows = conn.execute(q.rows_skip_locked if ids is None else q.rows, params).all()
        else:  # SQLite: BEGIN IMMEDIATE holds every writer off, so one query chooses and reads
            rows = conn.execute(q.drain_rows if ids is None else q.rows, params).all()
        audit: list[Entry] = []
        chosen, refused = _decide(conn, rows, rules, now, gap_wait_seconds, audit)
        attempt_ids = _take(conn, q, chosen, now, lease_seconds)
        append(conn, audit, now)
    return Batch(_claimed(chosen, attempt_ids, now), refused)


def _take(conn: Connection, q: _ClaimStatements, chosen: Sequence[Row[Any]], now: datetime,
          lease_seconds: float) -> list[int]:
    """Lease the chosen rows and start an attempt of each; the attempts' ids, in the rows' order."""
    if not chosen:
        return []
    taken = {"ids": [d.id for d in chosen], "now": now, "lease_until": now + timedelta(seconds=lease_seconds)}
    conn.execute(q.take, taken)
    # made from the rows just updated, then read back: an INSERT … RETURNING that keeps the rows' order is
    # one statement per row on SQLite; (delivery, number) names an attempt
    conn.execute(q.start_attempts, taken)
    numbered = {(r.delivery_id, r.number): r.id for r in conn.execute(q.started_attempts, taken)}
    return [numbered[(d.id, d.attempts + 1)] for d in chosen]


def _claimed(chosen: Sequence[Row[Any]], attempt_ids: Sequence[int], now: datetime) -> list[Claimed]:
    """The claims of rows taken at ``now``, each event parsed once, here, outside the transaction (it holds the
    streams' locks): the deliverer and the excerpt's masking share the model."""
    claimed: list[Claimed] = []
    for d, attempt_id in zip(chosen, attempt_ids, strict=True):
        event, unreadable = _parsed(d.payload)
        claimed.append(Claimed(
            delivery_id=d.id, destination=d.destination, attempt_id=attempt_id, attempt_number=d.attempts + 1,
            idempotency_key=d.idempotency_key, event_id=d.event_id, event=event, received_at=d.received_at,
            deadline_at=d.deadline_at, budget_used=d.budget_used + 1, dossier_code=d.dossier_code,
            stream=d.stream, sequence=d.sequence, unreadable=unreadable, started_at=now, event_hash=d.content_hash,
            replays=d.replays,
        ))
    return claimed


@dataclass(frozen=True, slots=True)
class _ClaimStatements:
    """The statements of a claim, built once per dialect and kind of destination, so that SQLAlchemy finds them
    compiled and psycopg prepares them: their text never changes (PostgreSQL takes the ids as one array)."""

    drain_candidates: Select[Any]  # PostgreSQL: due deliveries of a destination, their streams to lock
    candidates: Select[Any]  # PostgreSQL: the same for given ids
    rows_skip_locked: Select[Any]  # PostgreSQL: the candidates' rows, locked, skipping what others hold
    drain_rows: Select[Any]  # SQLite: due deliveries with their events, in one query
    rows: Select[Any]  # given ids with their events (locked, on PostgreSQL)
    take: Any
    start_attempts: Any
    started_attempts: Select[Any]
    successors: Select[Any]  # given ids with their events and whether each is due (locked, skipping, on PostgreSQL)
    stream_heads: Executable  # the first open deliveries of given streams (:func:`_stream_heads`)


@functools.cache
def _claim_statements(dialect: str, ordered: bool) -> _ClaimStatements:
    def among(column: Any, name: str, *, negate: bool = False) -> ColumnElement[bool]:
        if dialect == "postgresql":
            array = bindparam(name, type_=ARRAY(column.type))
            return column != all_(array) if negate else column == any_(array)
        listed: Any = bindparam(name, expanding=True)
        return column.not_in(listed) if negate else column.in_(listed)

    d = deliveries.c
    due = [d.destination == bindparam("dest"), _due()]
    if ordered:
        due.append(~_behind_open())
    drain = [*due, among(d.id, "exclude", negate=True)]
    given = [among(d.id, "ids"), d.destination == bindparam("dest")]
    limit = bindparam("limit", type_=Integer)
    wanted = select(d.id, d.dossier_code, d.stream)
    rows = _claim_query(ordered).where(among(d.id, "ids")).order_by(d.id)
    now = bindparam("now", type_=deliveries.c.updated_at.type)
    return _ClaimStatements(
        drain_candidates=wanted.where(*drain).order_by(d.id).limit(limit),
        candidates=wanted.where(*given),
        rows_skip_locked=rows.with_for_update(of=deliveries, skip_locked=True),
        drain_rows=_claim_query(ordered).where(*drain).order_by(d.id).limit(limit),
        rows=(rows.with_for_update(of=deliveries) if dialect == "postgresql"
              else _claim_query(ordered).where(*given).order_by(d.id)),
        take=update(deliveries).where(among(d.id, "ids")).values(
            status=Status.IN_FLIGHT, attempts=d.attempts + 1, budget_used=d.budget_used + 1,
            lease_until=bindparam("lease_until", type_=deliveries.c.lease_until.type), updated_at=now),
        start_attempts=attempts.insert().from_select(
            ["delivery_id", "number", "started_at"],
            select(d.id, d.attempts, bindparam("now", type_=attempts.c.started_at.type)).where(among(d.id, "ids")),
        ),
        started_attempts=select(attempts.c.id, attempts.c.delivery_id, attempts.c.number).where(
            among(attempts.c.delivery_id, "ids"), attempts.c.started_at == bindparam("now")),
        # by id alone, whether due said, not asked: as a condition, a ledger without statistics yet has the query
        # planned as a walk of every open delivery of the destination (see _stream_heads)
        successors=_locked(dialect, _claim_query(ordered).add_columns(and_(*due[1:]).label("due"))
                           .where(among(d.id, "ids")).order_by(d.id)),
        stream_heads=_stream_heads(dialect),
    )


def _stream_heads(dialect: str) -> Executable:
    """Of each stream ``(dossier, :dest, stream)`` of the given pairs (as :func:`_stream_pairs` makes them), the ids
    of its open delivery with the lowest sequence (and of any tied with it): a probe of the streams' index each,
    however many deliveries the destination has open.

    The successors of a transaction's streams were found among the destination's open deliveries by their dossier
    codes. Without statistics (a new ledger; a server without autovacuum) both databases planned that as a walk of
    every open delivery of the destination, each compared with every code: with 9,000 open, 543 ms a statement
    (mean) on PostgreSQL in the +200 ms bench, 5.6 ms unloaded on SQLite. Here each stream is looked up on its own,
    in an order that leaves no other plan: on PostgreSQL a ``LATERAL`` subquery with a ``LIMIT`` (not flattened
    into a join), on SQLite a ``CROSS JOIN`` (its left side the outer loop)."""
    if dialect == "postgresql":
        pairs = func.unnest(bindparam("dossiers", type_=ARRAY(deliveries.c.dossier_code.type)),
                            bindparam("streams", type_=ARRAY(deliveries.c.stream.type))).table_valued(
            "dossier", "stream").render_derived(name="pairs")
        first = deliveries.alias("first")
        head = (select(first.c.id)
                .where(first.c.dossier_code == pairs.c.dossier, first.c.destination == bindparam("dest"),
                       first.c.stream == pairs.c.stream, is_open(first.c.status))
                .order_by(first.c.sequence).fetch(1, with_ties=True).lateral("head"))
        return select(head.c.id).select_from(pairs).join(head, true())
    return text(
        "SELECT head.id FROM json_each(:pairs) AS pair CROSS JOIN deliveries AS head"
        " ON head.dossier_code = json_extract(pair.value, '$[0]') AND head.destination = :dest"
        " AND head.stream = json_extract(pair.value, '$[1]') AND head.status IN :open"
        " AND head.sequence = (SELECT min(first.sequence) FROM deliveries AS first"
        " WHERE first.dossier_code = head.dossier_code AND first.destination = head.destination"
        " AND first.stream = head.stream AND first.status IN :open)"
    ).bindparams(bindparam("open", value=[s.value for s in OPEN_STATUSES], expanding=True)).columns(id=Integer)


def _stream_pairs(dialect: str, streams: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of :func:`_stream_heads` for ``(dossier, stream)`` pairs."""
    if dialect == "postgresql":
        return {"dossiers": [dossier for dossier, _ in streams], "streams": [stream for _, stream in streams]}
    return {"pairs": json.dumps([list(pair) for pair in streams])}


def _locked(dialect: str, query: Select[Any]) -> Select[Any]:
    return query.with_for_update(of=deliveries, skip_locked=True) if dialect == "postgresql" else query


def _due() -> ColumnElement[bool]:
    """Due by ``:due_by``: open and not waiting for a later time, or in flight with its lease expired at ``:now``
    (its worker died). Open said as the partial index ``ix_deliveries_open`` says it, so that a claim walks the
    destination's open deliveries only, not every delivery it ever had."""
    return and_(is_open(deliveries.c.status), or_(
        and_(deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
             or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= bindparam("due_by"))),
        and_(deliveries.c.status == Status.IN_FLIGHT, deliveries.c.lease_until <= bindparam("now")),
    ))


def _same_stream(other: Any) -> ColumnElement[bool]:
    return and_(other.c.dossier_code == deliveries.c.dossier_code, other.c.destination == deliveries.c.destination,
                other.c.stream == deliveries.c.stream)


def _behind_open() -> ColumnElement[bool]:
    """An earlier sequence of the same stream is still open: this one must wait for it.

    A scalar subquery (``LIMIT 1``), not ``EXISTS``: PostgreSQL may turn an ``EXISTS`` into an anti-join
    over the destination's index, which a table without statistics yet (a new ledger) makes quadratic
    (measured: 978 ms for 3,000 open deliveries); the subquery always walks the stream's own index.
    """
    earlier = deliveries.alias("earlier")
    return (
        select(earlier.c.id)
        .where(_same_stream(earlier), earlier.c.sequence < deliveries.c.sequence, is_open(earlier.c.status))
        .limit(1)
        .scalar_subquery()
        .is_not(None)
    )


def _claim_query(ordered: bool) -> Select[Any]:
    """The deliveries with their events and, for an ordered destination, where each stands in its stream."""
    d = deliveries.c
    columns: list[Any] = [
        d.id, d.destination, d.dossier_code, d.stream, d.sequence, d.status, d.attempts, d.budget_used,
        d.next_attempt_at, d.lease_until, d.deadline_at, d.idempotency_key, d.replays,
        events.c.event_id, events.c.payload, events.c.received_at, events.c.origin, events.c.content_hash,
    ]
    if ordered:
        other = deliveries.alias("other")
        seq = other.c.sequence
        columns += [
            select(func.max(seq)).where(_same_stream(other), seq > deliveries.c.sequence,
                                        other.c.status.in_((Status.IN_FLIGHT, Status.DELIVERED)))
            .scalar_subquery().label("newer_sent"),
            select(func.count()).select_from(other).where(_same_stream(other), seq < deliveries.c.sequence,
                                                          is_open(other.c.status))
            .scalar_subquery().label("older_open"),
            select(func.max(seq)).where(_same_stream(other), seq < deliveries.c.sequence)
            .scalar_subquery().label("previous"),
        ]
    return select(*columns).join(events, events.c.id == deliveries.c.event_pk)


def _decide(
    conn: Connection, rows: Sequence[Row[Any]], rules: DestinationRules, now: datetime, gap_wait_seconds: float,
    audit: list[Entry],
) -> tuple[list[Row[Any]], dict[int, NotClaimed]]:
    """Which rows may be attempted now; the others' reasons (superseded, waiting, dead written here, and added
    to ``audit`` with the lost attempts closed here)."""
    chosen: list[Row[Any]] = []
    refused: dict[int, NotClaimed] = {}
    for d in rows:
        lost = d.status == Status.IN_FLIGHT and d.lease_until is not None and d.lease_until <= now
        if d.status not in (Status.PENDING, Status.RETRYING) and not lost:
            refused[d.id] = NotClaimed("skip", f"delivery is {d.status}")
            continue
        if d.next_attempt_at is not None and d.next_attempt_at > now + timedelta(seconds=1):
            refused[d.id] = NotClaimed("skip", "not due yet", d.next_attempt_at)
            continue
        if lost:
            audit += lost_attempt_entries(conn, close_lost_attempt(conn, d.id, d.attempts))
        if rules.ordered:
            verdict = _ordering_verdict(conn, d, now, gap_wait_seconds)
            if verdict is not None:
                refused[d.id] = verdict
                if verdict.state == "superseded":
                    audit.append(_outcome_of_row(d, "superseded", now, verdict.reason))
                continue
        if d.budget_used >= rules.max_attempts:
            reason = f"gave up: {d.budget_used} attempts started without an answer (worker lost each time)"
            _set(conn, d.id, now, status=Status.DEAD, last_error=reason, lease_until=None)
            refused[d.id] = NotClaimed("dead", reason)
            audit.append(_outcome_of_row(d, "dead", now, reason))
            continue
        chosen.append(d)
    return chosen, refused


def _outcome_of_row(d: Row[Any], status: Literal["superseded", "dead"], now: datetime, reason: str) -> Entry:
    return outcome_entry(delivery_id=d.id, event_id=d.event_id, event_hash=d.content_hash, destination=d.destination,
                         status=status, at=now, reason=reason, replays=d.replays)


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
    """Superseded, waiting, or ``None`` (may go), from where the claim query found the row in its stream."""
    newer_sent, older_open, previous = d.newer_sent, d.older_open, d.previous
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


def close_lost_attempt(conn: Connection, delivery_id: int, number: int) -> list[int]:
    """The attempt a lost worker left open (its lease expired) ends as ``lost``; its id (none when it had ended)."""
    return list(conn.execute(
        update(attempts)
        .where(attempts.c.delivery_id == delivery_id, attempts.c.number == number, attempts.c.outcome.is_(None))
        .values(outcome="lost", error="worker lost during the attempt (lease expired)")
        .returning(attempts.c.id)
    ).scalars())


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
    final = outcome.status in FINAL_STATUSES and rules.ordered
    position = Position(claimed.dossier_code, claimed.destination, claimed.stream, claimed.sequence)
    with engine.begin() as conn:
        if final:  # the stream's lock first, as everywhere (then the row's, by the update)
            lock_streams(conn, engine, [stream_key(*position[:3])])
        theirs = _record(conn, [(claimed, outcome)], now)
        successor = _successor(conn, position, now) if theirs and final else []
        append(conn, _attempt_entries([(claimed, outcome)], theirs), now)  # the chain's lock last
        return successor


@dataclass(frozen=True, slots=True)
class Chain:
    """What :func:`finish_waves` needs to claim, as it records a batch's ends, the next delivery of each stream that a
    delivered one leaves due (the claim's lease and the wait for a gap in the sequences)."""

    lease_seconds: float
    gap_wait_seconds: float


@dataclass(frozen=True, slots=True)
class Wave:
    """Ends of one batch's attempts to record, and whether (``chain``) their delivered ones claim their streams'
    next deliveries."""

    done: Sequence[tuple[Claimed, Outcome]]
    chain: Chain | None = None


def finish_many(
    engine: Engine, done: Sequence[tuple[Claimed, Outcome]], rules: DestinationRules, now: datetime,
    chain: Chain | None = None,
) -> Batch:
    """Record the ends of a batch's attempts in one transaction: :func:`finish_waves` of one wave."""
    return finish_waves(engine, [Wave(done, chain)], rules, now)[0]


def finish_waves(engine: Engine, waves: Sequence[Wave], rules: DestinationRules, now: datetime) -> list[Batch]:
    """Record the ends of waves of one destination's batches in one transaction (prepared statements, executed
    many), and their audit entries. Under the streams' locks, so that an intake adding a later sequence meanwhile
    either sees its predecessor final (and queues it) or is seen by the claim that follows.

    Of an ordered destination, a wave with a ``chain`` has the same transaction claim the next delivery of each
    stream whose delivery it ended delivered, when it is due: its stream's lock is already held, and its batch
    attempts it at once, instead of a later claim finding it a hop later. What is claimed for each wave (and why a
    stream's next one was not) is returned, in the waves' order; for a wave without ``chain``, or when none is due,
    the next claim of the destination finds them. The waves' chains are one runtime's: equal.
    """
    if len({w.chain for w in waves if w.chain is not None}) > 1:
        raise ValueError("the waves of one transaction chain with the same lease and gap wait")
    out = [Batch([], {}) for _ in waves]
    done = sorted((end for w in waves for end in w.done), key=lambda end: end[0].delivery_id)  # rows in id order
    if not done:
        return out
    chosen: list[Row[Any]] = []
    attempt_ids: list[int] = []
    refused: dict[int, NotClaimed] = {}
    owner: dict[tuple[str, str], int] = {}  # the wave each chained stream's successor goes to
    stream_of: dict[int, tuple[str, str]] = {}
    with engine.begin() as conn:
        if rules.ordered:
            lock_streams(conn, engine, [
                stream_key(c.dossier_code, c.destination, c.stream) for c, o in done if o.status in FINAL_STATUSES
            ])
        theirs = _record(conn, done, now)
        entries = _attempt_entries(done, theirs)
        if rules.ordered:
            owner = {(c.dossier_code, c.stream): n for n, w in enumerate(waves) if w.chain is not None
                     for c, o in w.done if o.status == Status.DELIVERED and c.delivery_id in theirs}
        chain = next((w.chain for w in waves if w.chain is not None), None)
        if owner and chain is not None:
            dialect = engine.dialect.name
            q = _claim_statements(dialect, True)
            ids = list(conn.execute(q.stream_heads, {"dest": done[0][0].destination,
                                                     **_stream_pairs(dialect, sorted(owner))}).scalars())
            due = {"ids": ids, "now": now, "due_by": now + timedelta(seconds=1)}
            rows = [r for r in conn.execute(q.successors, due) if r.due] if ids else []
            # another stream of the same dossier is not this transaction's to decide: its lock is not held
            rows = [r for r in rows if (r.dossier_code, r.stream) in owner]
            stream_of = {r.id: (r.dossier_code, r.stream) for r in rows}
            chosen, refused = _decide(conn, rows, rules, now, chain.gap_wait_seconds, entries)
            attempt_ids = _take(conn, q, chosen, now, chain.lease_seconds)
        append(conn, entries, now)
    for claimed in _claimed(chosen, attempt_ids, now):
        out[owner[(claimed.dossier_code, claimed.stream)]].claimed.append(claimed)
    for delivery_id, why in refused.items():
        out[owner[stream_of[delivery_id]]].refused[delivery_id] = why
    return out


_RECORD_ATTEMPT = (
    update(attempts)
    .where(attempts.c.id == bindparam("b_attempt"))
    .values(duration_ms=bindparam("b_duration"), outcome=bindparam("b_outcome"),
            status_code=bindparam("b_code"), error=bindparam("b_error"),
            response_excerpt=bindparam("b_excerpt"), external_ref=bindparam("b_ref"))
)
# the attempt's end counts only while the delivery is still this attempt's (its lease not lost meanwhile)
_RECORD_DELIVERY = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == Status.IN_FLIGHT,
           deliveries.c.attempts == bindparam("b_number"))
    .values(status=bindparam("b_status"), updated_at=bindparam("b_now"), lease_until=None,
            last_status_code=bindparam("b_code"), last_error=bindparam("b_error"),
            next_attempt_at=bindparam("b_next"), enqueued_at=None,
            external_ref=func.coalesce(bindparam("b_ref", type_=deliveries.c.external_ref.type),
                                       deliveries.c.external_ref),
            delivered_at=func.coalesce(bindparam("b_delivered", type_=deliveries.c.delivered_at.type),
                                       deliveries.c.delivered_at))
)


def _record(conn: Connection, done: Sequence[tuple[Claimed, Outcome]], now: datetime) -> set[int]:
    """Write their deliveries' new states, then the attempts' ends (rows before their attempts, as everywhere);
    the deliveries still theirs (the others' leases were lost meanwhile: only their attempts' ends are written)."""
    changed = execute_many(conn, _RECORD_DELIVERY, [
        {"b_id": c.delivery_id, "b_number": c.attempt_number, "b_status": o.status, "b_now": now,
         "b_code": o.status_code, "b_error": o.error, "b_next": o.next_attempt_at, "b_ref": o.external_ref or None,
         "b_delivered": now if o.status == Status.DELIVERED else None}
        for c, o in done
    ])
    execute_many(conn, _RECORD_ATTEMPT, [
        {"b_attempt": c.attempt_id, "b_duration": o.duration_ms, "b_outcome": o.attempt_outcome,
         "b_code": o.status_code, "b_error": o.error, "b_excerpt": o.excerpt, "b_ref": o.external_ref}
        for c, o in done
    ])
    ids = [c.delivery_id for c, _ in done]
    if changed >= len(done):
        return set(ids)
    # which ones (rare: a lease lost during the call): those this transaction just wrote, still at their number
    numbers = {c.delivery_id: c.attempt_number for c, _ in done}
    return {r.id for r in conn.execute(select(deliveries.c.id, deliveries.c.attempts).where(
        deliveries.c.id.in_(ids), deliveries.c.updated_at == now, deliveries.c.lease_until.is_(None)))
        if numbers[r.id] == r.attempts}


def _attempt_entries(done: Sequence[tuple[Claimed, Outcome]], theirs: Collection[int]) -> list[Entry]:
    return [_attempt_entry(c, o, o.status if c.delivery_id in theirs else None) for c, o in done]


def _attempt_entry(c: Claimed, o: Outcome, status: str | None) -> Entry:
    return attempt_entry(
        attempt_id=c.attempt_id, delivery_id=c.delivery_id, event_id=c.event_id, event_hash=c.event_hash,
        destination=c.destination, number=c.attempt_number, started_at=c.started_at,
        duration_ms=o.duration_ms, outcome=o.attempt_outcome, status_code=o.status_code,
        external_ref=o.external_ref, excerpt=o.excerpt, error=o.error, status=status, replays=c.replays,
    )


# a lease is renewed only while the delivery is still that attempt's
_RENEW_LEASE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == Status.IN_FLIGHT,
           deliveries.c.attempts == bindparam("b_number"))
    .values(lease_until=bindparam("b_until"))
)


def renew_leases(engine: Engine, held: Sequence[tuple[int, int]], until: datetime) -> int:
    """Extend the leases of attempts still running, ``(delivery_id, attempt_number)`` each, to ``until``; the
    number still theirs. Row locks only, taken in id order (no stream lock: a renewal changes no order), so it
    cannot deadlock with a claim or a finish, which take their stream locks before any row."""
    if not held:
        return 0
    with engine.begin() as conn:
        result = conn.execute(_RENEW_LEASE, [
            {"b_id": delivery_id, "b_number": number, "b_until": until} for delivery_id, number in sorted(held)
        ])
    return int(result.rowcount or 0)


def release(engine: Engine, claimed: Claimed, outcome: Outcome, now: datetime, *, record: bool) -> bool:
    """End an attempt that does not count: the destination could take no message (paused), which is not this
    delivery's fault. The delivery waits until ``outcome.next_attempt_at`` with the attempt budget it had before
    the claim, so a pause never brings it closer to a dead letter.

    With ``record`` (the service was called and answered the condition) the attempt row stays, with its outcome,
    for the audit (and its entry in the chain); without (the deliverer held it and sent nothing) the row is
    removed, as if never claimed.
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
            status = (Status.RETRYING if claimed.budget_used > 1 else Status.PENDING) if result.rowcount else None
            append(conn, [_attempt_entry(claimed, replace(outcome, external_ref=None), status)], now)
        elif result.rowcount:
            conn.execute(attempts.delete().where(attempts.c.id == claimed.attempt_id))
    return bool(result.rowcount)


def wake(engine: Engine, destination: str, reason_like: str, now: datetime) -> list[ToEnqueue]:
    """The waiting deliveries of ``destination`` whose reason matches ``reason_like`` (SQL ``LIKE``), made due now
    and marked queued, to enqueue: what a pause held, once it is lifted (those already queued stay as they are)."""
    with engine.begin() as conn:
        ids = conn.execute(
            update(deliveries)
            .where(in_id_order(and_(
                deliveries.c.destination == destination,
                deliveries.c.status.in_((Status.PENDING, Status.RETRYING)),
                deliveries.c.last_error.like(reason_like),
                or_(deliveries.c.next_attempt_at > now, deliveries.c.enqueued_at.is_(None)),  # not queued already
            )))
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


def reroute(
    engine: Engine, delivery_id: int, destination: str, rules: dict[str, DestinationRules], now: datetime
) -> tuple[int | None, list[ToEnqueue]]:
    """A delivery of the same event to ``destination`` (a fallback channel), created once.

    Returns its id (``None`` when it already existed) and whether it may go now.
    """
    with engine.begin() as conn:
        origin = conn.execute(
            select(events.c.id, events.c.payload, events.c.event_id, events.c.content_hash, deliveries.c.destination,
                   deliveries.c.replays)
            .join(deliveries, deliveries.c.event_pk == events.c.id).where(deliveries.c.id == delivery_id)
        ).one()
        event_pk, text_form = origin.id, origin.payload
        payload = json.loads(text_form)
        lock_streams(conn, engine, routed_keys([(payload, [destination])], rules))  # before "made yet?"
        existing = conn.execute(
            select(deliveries.c.id).where(deliveries.c.event_pk == event_pk, deliveries.c.destination == destination)
        ).scalar_one_or_none()
        if existing is not None:
            return None, []
        row = delivery_row(event_pk, payload, destination, rules[destination], now)
        ready = insert_deliveries(conn, engine, [row], rules, now)
        new_id = conn.execute(
            select(deliveries.c.id).where(deliveries.c.event_pk == event_pk, deliveries.c.destination == destination)
        ).scalar_one()
        append(conn, [outcome_entry(
            delivery_id=delivery_id, event_id=origin.event_id, event_hash=origin.content_hash,
            destination=origin.destination, status="rerouted", at=now, reason=None, replays=origin.replays,
            links={"to": {"delivery": new_id, "destination": destination}},
        )], now)
    return new_id, ready


DEFER_LIMIT = 2000  # deliveries postponed by one statement (a drain goes on while it postpones as many)


def defer_many(
    engine: Engine, destination: str, ids: Sequence[int] | None, until: Callable[[], datetime], reason: str,
    now: datetime, limit: int | None = None, ahead: float = 1.0, *, ordered: bool = False,
) -> list[int]:
    """Postpone deliveries of ``destination`` without spending an attempt: ``ids``, or (``None``) up to ``limit`` of
    those due within ``ahead`` seconds; ``until`` gives each its time (a breaker spreads them). The ids postponed, in
    the order their times were given: of an ``ordered`` destination, the ones a claim may take first (no earlier
    sequence of their stream open), so that a hold's first time, its probe's, goes to one that a probe can send."""
    with engine.begin() as conn:
        columns = [deliveries.c.id, _behind_open().label("behind")] if ordered else [deliveries.c.id]
        query = select(*columns).where(deliveries.c.destination == destination,
                                       deliveries.c.status.in_((Status.PENDING, Status.RETRYING)))
        if ids is None:
            query = query.where(_due()).order_by(deliveries.c.id).limit(limit or DEFER_LIMIT)
        else:
            query = query.where(deliveries.c.id.in_(list(ids))).order_by(deliveries.c.id)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(of=deliveries, skip_locked=ids is None)
        found = conn.execute(query, {"now": now, "due_by": now + timedelta(seconds=ahead)}).all()
        chosen = [r.id for r in sorted(found, key=lambda r: ordered and r.behind)]  # stable: else in id order
        times = {i: until() for i in chosen}
        if times:  # the rows written in id order, as everywhere
            conn.execute(_DEFER, [{"b_id": i, "b_until": times[i], "b_reason": reason, "b_now": now}
                                  for i in sorted(times)])
    return chosen


_DEFER = (  # executed many: no IN list (SQLAlchemy expands one per execution, which executemany refuses)
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"),
           or_(deliveries.c.status == Status.PENDING, deliveries.c.status == Status.RETRYING))
    .values(next_attempt_at=bindparam("b_until"), enqueued_at=None, last_error=bindparam("b_reason"),
            updated_at=bindparam("b_now"))
)


def defer(engine: Engine, delivery_id: int, until: datetime, reason: str, now: datetime) -> None:
    """Postpone a delivery without spending an attempt (breaker open, quota spent)."""
    with engine.begin() as conn:
        conn.execute(_DEFER, {"b_id": delivery_id, "b_until": until, "b_reason": reason, "b_now": now})
