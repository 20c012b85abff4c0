"""Statements run with many rows at once, their parameters made ready below SQLAlchemy's per-row handling.

SQLAlchemy's ``conn.execute(statement, rows)`` prepares each row's parameters through its generic path (every
parameter looked up, defaulted and converted, dictionary by dictionary): for a batch's ends, a third of the time the
engine spends in the ledger (``bench/README.md``, the engine alone). :func:`execute_many` compiles a module-level
statement once per dialect, keeps the converters of the parameters each row gives and the converted values of the
statement's own literals, and hands the driver its rows in the driver's own form (tuples for SQLite's ``?``, mappings
for psycopg's ``%(name)s``): the same SQL, the same values, the same events (``before_cursor_execute``) as
``conn.execute`` would give, one driver ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, CursorResult, Table, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    order: tuple[str, ...] | None  # positional drivers: each placeholder's parameter, in the statement's order
    given: tuple[tuple[str, Callable[[Any], Any] | None], ...]  # what each row gives, and its converter
    fixed: dict[str, Any]  # the statement's own literals (``status = 'in_flight'``), converted once


_prepared: dict[tuple[int, str], tuple[UpdateBase, _Prepared]] = {}


def execute_many(conn: Connection, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]) -> int:
    """Run ``statement`` once per row of ``rows`` (each names every parameter the statement leaves open), in one
    driver ``executemany``; the rows it changed (the driver's sum). For statements built once, at import: they are
    compiled once per dialect and kept for the process's life."""
    if not rows:
        return 0
    prepared = _prepare(statement, conn.dialect)
    result = conn.exec_driver_sql(prepared.sql, [_driver_form(prepared, row) for row in rows])
    return int(result.rowcount or 0)


def execute(conn: Connection, statement: UpdateBase, row: Mapping[str, Any]) -> CursorResult[Any]:
    """Run ``statement`` once with ``row``, compiled once per dialect: for a statement SQLAlchemy cannot cache (its
    upserts have no cache key, so ``conn.execute`` compiles them anew every time). Its rows come back as the driver
    gives them, unconverted (numbers and text are as they are; a time would be the driver's form)."""
    prepared = _prepare(statement, conn.dialect)
    return conn.exec_driver_sql(prepared.sql, _driver_form(prepared, row))


def insert_returning(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
                     returning: Sequence[Column[Any]]) -> list[Any]:
    """Insert ``rows`` (each with the same keys, column names of ``table``) and return ``returning`` of each, as rows
    whose attributes are the columns' names, in the order of ``rows``.

    On PostgreSQL (psycopg) one statement of one row, executed many in pipeline mode, each returning its row: psycopg
    converts a statement's ``%(name)s`` placeholders once and keeps it (it keeps none longer than 4,096 characters or
    with more than 50 parameters), where the multi-row VALUES statement SQLAlchemy makes of many rows (1,300
    placeholders for 100 events) was split anew at every request, half of the intake's CPU in the ledger. Elsewhere,
    and for a returned column whose type converts what the driver gives, SQLAlchemy's own ``insert().returning()``.
    The driver's cursor runs it: SQLAlchemy's cursor events do not see it."""
    if not rows:
        return []
    dialect = conn.dialect
    keys = tuple(rows[0])
    if dialect.name != "postgresql" or dialect.driver != "psycopg" \
            or any(col.type._cached_result_processor(dialect, None) is not None for col in returning):
        return list(conn.execute(table.insert().returning(*returning), list(rows)).all())
    statement = _insert_of(table, keys, tuple(returning))
    prepared = _prepare(statement, dialect)
    from psycopg.rows import namedtuple_row

    params = [_driver_form(prepared, {f"p_{k}": row[k] for k in keys}) for row in rows]
    found: list[Any] = []
    driver = conn.connection.driver_connection
    try:
        with driver.cursor(row_factory=namedtuple_row) as cursor:  # type: ignore[union-attr]
            cursor.executemany(prepared.sql, params, returning=True)
            while True:
                found.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
    except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy raises the driver's errors: IntegrityError for a
        # duplicate key (the intake retries on it), OperationalError…; without the rows (the citizens' events)
        raise DBAPIError.instance(prepared.sql, params, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
                                  dialect=dialect, ismulti=True) from exc
    return found


_inserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], UpdateBase] = {}


def _insert_of(table: Table, keys: tuple[str, ...], returning: tuple[Column[Any], ...]) -> UpdateBase:
    """The one-row insert of ``keys`` into ``table``, returning ``returning``: made once (its compiled form is kept
    by :func:`_prepare`, by the statement's identity)."""
    key = (table.name, keys, tuple(col.name for col in returning))
    found = _inserts.get(key)
    if found is None:
        found = _inserts[key] = table.insert().values(
            {k: bindparam(f"p_{k}", type_=table.c[k].type, required=True) for k in keys}).returning(*returning)
    return found


def _driver_form(prepared: _Prepared, row: Mapping[str, Any]) -> Any:
    values = dict(prepared.fixed)
    for name, convert in prepared.given:
        value = row[name]
        values[name] = value if convert is None or value is None else convert(value)
    return values if prepared.order is None else tuple(values[n] for n in prepared.order)


def _prepare(statement: UpdateBase, dialect: Dialect) -> _Prepared:
    key = (id(statement), dialect.name)
    found = _prepared.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect)
    if compiled.escaped_bind_names:
        raise ValueError(f"parameter names the driver cannot take as they are: {sorted(compiled.escaped_bind_names)}")
    defaults = compiled.construct_params(_check=False)
    given: list[tuple[str, Callable[[Any], Any] | None]] = []
    fixed: dict[str, Any] = {}
    for bind, name in compiled.bind_names.items():
        if bind.expanding:
            raise ValueError(f"{name}: an expanding IN list cannot be executed many")
        convert = bind.type._cached_bind_processor(dialect)
        if bind.required:
            given.append((name, convert))
        else:
            value = defaults[name]
            fixed[name] = value if convert is None or value is None else convert(value)
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
    prepared = _Prepared(compiled.string, order, tuple(given), fixed)
    _prepared[key] = (statement, prepared)  # the statement kept too: its id is never another's while it lives
    return prepared
