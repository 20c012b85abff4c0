"""Statements executed many below SQLAlchemy's per-row handling (``store/prepared.py``) write what
``conn.execute`` writes, on both ledgers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, func, select, update

from schemas.events import canonical_json
from store import intake
from store.prepared import execute, execute_many, insert_returning
from store.tables import Status, deliveries, events
from tests.test_ledger import RULES, T0, make_event, to

_SET = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == Status.PENDING)
    .values(next_attempt_at=bindparam("b_next"), last_error=bindparam("b_error"), lease_until=None,
            updated_at=bindparam("b_now"))
)


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(deliveries.c.id, deliveries.c.status, deliveries.c.next_attempt_at, deliveries.c.last_error,
                   deliveries.c.lease_until, deliveries.c.updated_at).order_by(deliveries.c.id))]


def test_execute_many_writes_what_execute_writes_and_counts_the_rows_it_changed(engine: Engine) -> None:
    # given four pending deliveries, one of them made not pending
    for n in range(4):
        intake.ingest_and_route(engine, [make_event(1, dossier=f"000.21.00.H49-240315-000{n + 1}")], T0,
                                to("onestop"), RULES)
    ids = [r[0] for r in _rows(engine)]
    with engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id == ids[3]).values(status=Status.DEAD))
    rows = [{"b_id": i, "b_next": T0 + timedelta(seconds=k), "b_error": f"réason {k}", "b_now": T0}
            for k, i in enumerate(ids)]
    # when the first two are written by execute_many, the last two by SQLAlchemy's own executemany
    with engine.begin() as conn:
        changed = execute_many(conn, _SET, rows[:2])
        conn.execute(_SET, rows[2:])
    # then every row reads back alike (an aware time stored as UTC, the literal None, the WHERE's literal status),
    # and the count is of the rows changed (not the dead one)
    after = _rows(engine)
    assert changed == 2
    assert [r[2:] for r in after[:3]] == [(T0 + timedelta(seconds=k), f"réason {k}", None, T0) for k in range(3)]
    assert after[3][1] == Status.DEAD and after[3][2] is None
    with engine.begin() as conn:
        assert execute_many(conn, _SET, []) == 0


def test_execute_many_refuses_an_expanding_list(engine: Engine) -> None:
    statement = update(deliveries).where(deliveries.c.id.in_(bindparam("ids", expanding=True))).values(replays=1)
    with engine.begin() as conn, pytest.raises(ValueError, match="expanding"):
        execute_many(conn, statement, [{"ids": [1]}])


def test_execute_runs_an_upsert_sqlalchemy_cannot_cache_and_returns_its_rows(engine: Engine) -> None:
    from store.audit.chain import GENESIS
    from store.audit.ledger import _TAKE_HEAD

    statement = _TAKE_HEAD[engine.dialect.name]
    assert statement._generate_cache_key() is None  # why it is executed here: conn.execute compiles it every time
    with engine.begin() as conn:
        first = execute(conn, statement, {"chain": "bench", "now": T0}).one()
        again = execute(conn, statement, {"chain": "bench", "now": T0 + timedelta(seconds=1)}).one()
    assert tuple(first) == tuple(again) == (0, GENESIS)


def _event_rows(n: int, first: int) -> list[dict[str, Any]]:
    out = []
    for k in range(n):
        payload = make_event(1, dossier=f"000.21.00.H49-240315-{first + k:04d}")
        text_form = canonical_json(payload)
        out.append(intake._event_row(payload, text_form, f"{first + k:064x}", T0 + timedelta(seconds=k),
                                     routed=True))
    return out


def test_insert_returning_writes_what_sqlalchemy_writes_and_returns_each_rows_ids_in_order(
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg._queries

    # given psycopg's conversions of statements it does not keep counted (PostgreSQL)
    uncached: list[int] = []
    convert = psycopg._queries._query2pg_nocache
    monkeypatch.setattr(psycopg._queries, "_query2pg_nocache",
                        lambda *args, **kwargs: uncached.append(1) or convert(*args, **kwargs))
    mine, theirs = _event_rows(60, 1), _event_rows(60, 61)
    # when sixty events are inserted by insert_returning, sixty by SQLAlchemy's own insert().returning()
    with engine.begin() as conn:
        returned = insert_returning(conn, events, mine, (events.c.id, events.c.event_id))
        conn.execute(events.insert().returning(events.c.id), theirs).all()
        assert insert_returning(conn, events, [], (events.c.id,)) == []
    # then each row's id and event_id came back in the rows' order, under the columns' names
    assert [r.event_id for r in returned] == [r["event_id"] for r in mine]
    assert len({r.id for r in returned}) == 60
    # and the rows read back alike (the aware times stored as UTC), the whole batch converted by psycopg once and kept
    columns = [c for c in events.c if c.name not in ("id", "event_id", "dossier_code")]
    with engine.connect() as conn:
        stored = {r.event_id: r for r in conn.execute(select(events))}
    for row in mine + theirs:
        assert [getattr(stored[row["event_id"]], c.name) for c in columns] == [row.get(c.name) for c in columns]
    assert stored[mine[0]["event_id"]].id == returned[0].id
    if engine.dialect.name == "postgresql":
        assert len(uncached) == 1  # SQLAlchemy's sixty-row statement: 780 placeholders, split anew each time


def test_insert_returning_raises_what_sqlalchemy_raises_for_a_duplicate_and_shows_no_row(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    # given an event stored
    rows = _event_rows(2, 200)
    with engine.begin() as conn:
        insert_returning(conn, events, rows[:1], (events.c.id,))
    # when it is inserted again, with another (the intake racing another request with the same event)
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        insert_returning(conn, events, rows, (events.c.id, events.c.event_id))
    # then SQLAlchemy's IntegrityError says so (ingest_and_route retries on it), without the rows' text, and
    # nothing of the batch is stored
    if engine.dialect.name == "postgresql":
        assert "Nguyễn" not in str(caught.value) and "0912345678" not in str(caught.value)
    with engine.connect() as conn:
        assert conn.execute(select(events.c.event_id)).scalars().all() == [rows[0]["event_id"]]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite's BEGIN IMMEDIATE: writers never race
def test_an_intake_racing_another_with_the_same_event_retries_and_finds_it_stored(
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given another request storing the same event between this one's look for it and its insert (its streams' locks)
    event = make_event(1, dossier="000.21.00.H49-240315-0300")
    lock, raced, other = intake.lock_streams, [], []

    def racing(conn: Any, engine_: Engine, keys: Any) -> None:
        if not raced:
            raced.append(True)  # once: the other request's own locks are taken as usual
            other.append(intake.ingest_and_route(engine, [event], T0, to("onestop"), RULES))
        lock(conn, engine_, keys)

    monkeypatch.setattr(intake, "lock_streams", racing)
    # when this one goes on with its insert
    stored, _ = intake.ingest_and_route(engine, [event], T0, to("onestop"), RULES)
    # then the duplicate key made it try again (SQLAlchemy's IntegrityError), and the second try found the event
    assert not other[0][0][0].duplicate
    assert [(s.event_id, s.duplicate) for s in stored] == [(event["event_id"], True)]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1
