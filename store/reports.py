"""Reports read from the ledger: what a province is scored on.

The portal sync report (``motcua-relay report portal --date D``) counts, per unit, the
dossiers that had a lifecycle event on day ``D`` (Vietnam time) routed to a portal
destination, and how far each got:

- **synced**: every one of its deliveries that day is final and none is dead;
- **failed**: at least one delivery is dead (a dead letter an operator must look at);
- **pending**: otherwise (something is still open: waiting, retrying, in flight).

Lag is measured per delivered event, from the event (``occurred_at``) to the portal's
acceptance (``delivered_at``), and from the relay's receipt of the event to that
acceptance (the relay's own share). Percentiles are nearest-rank.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any

from sqlalchemy import Engine, func, select, text

from schemas.vietnam import day_bounds
from store.tables import OPEN_STATUSES, Status, deliveries, events


@dataclass(frozen=True)
class SyncRow:
    """One unit's line of the portal sync report (``unit`` is "TOTAL" on the last line)."""

    unit: str
    dossiers: int
    synced: int
    pending: int
    failed: int
    events: int
    delivered: int
    superseded: int
    lag_p50_s: float | None
    lag_p99_s: float | None
    relay_p50_s: float | None
    relay_p99_s: float | None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..1) of unsorted values; ``None`` for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def seconds_between(engine: Engine, later: Any, earlier: Any) -> Any:
    """``later - earlier`` in seconds, computed by the database (no datetime object per row in Python)."""
    if engine.dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def portal_sync_report(engine: Engine, destinations: list[str], day: date) -> list[SyncRow]:
    """Per unit (sorted), then a TOTAL line, for the deliveries to ``destinations`` of events on ``day``."""
    if engine.dialect.name == "postgresql":
        return _portal_sync_in_sql(engine, destinations, day)
    start, end = day_bounds(day)
    d, e = deliveries.c, events.c
    query = (
        select(e.unit_code, d.dossier_code, d.status, seconds_between(engine, d.delivered_at, e.occurred_at),
               seconds_between(engine, d.delivered_at, e.received_at))
        .join(events, e.id == d.event_pk)
        .where(d.destination.in_(destinations), e.occurred_at >= start, e.occurred_at < end)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    by_unit: dict[str, list[tuple[str, str, float | None, float | None]]] = {}
    for unit, dossier, status, lag, relay in rows:
        by_unit.setdefault(unit, []).append((dossier, status, lag, relay))
    lines = [_line(unit, items) for unit, items in sorted(by_unit.items())]
    lines.append(_line("TOTAL", [item for items in by_unit.values() for item in items]))
    return lines


_SYNC_SQL = """
WITH day AS (
    SELECT e.unit_code, d.dossier_code, d.status,
           extract(epoch FROM d.delivered_at - e.occurred_at) AS lag,
           extract(epoch FROM d.delivered_at - e.received_at) AS relay
    FROM deliveries d JOIN events e ON e.id = d.event_pk
    WHERE d.destination = ANY(:destinations) AND e.occurred_at >= :start AND e.occurred_at < :end
), per_event AS (
    SELECT coalesce(unit_code, 'TOTAL') AS unit, count(*) AS events,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'superseded') AS superseded,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY lag) FILTER (WHERE status = 'delivered') AS lag_p50,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY lag) FILTER (WHERE status = 'delivered') AS lag_p99,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY relay) FILTER (WHERE status = 'delivered') AS relay_p50,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY relay) FILTER (WHERE status = 'delivered') AS relay_p99
    FROM day GROUP BY GROUPING SETS ((unit_code), ())
), per_dossier AS (
    SELECT unit_code, dossier_code, bool_or(status = 'dead') AS failed,
           bool_or(status IN ('pending', 'in_flight', 'retrying')) AS open
    FROM day GROUP BY unit_code, dossier_code
), dossiers AS (
    SELECT coalesce(unit_code, 'TOTAL') AS unit, count(DISTINCT dossier_code) AS dossiers,
           count(DISTINCT dossier_code) FILTER (WHERE failed) AS failed,
           count(DISTINCT dossier_code) FILTER (WHERE open AND NOT failed) AS pending
    FROM per_dossier GROUP BY GROUPING SETS ((unit_code), ())
)
SELECT p.*, d.dossiers, d.failed, d.pending FROM per_event p JOIN dossiers d USING (unit)
ORDER BY p.unit = 'TOTAL', p.unit
"""


def _portal_sync_in_sql(engine: Engine, destinations: list[str], day: date) -> list[SyncRow]:
    """The same report aggregated by PostgreSQL (a busy province's day is tens of thousands of rows;
    ``percentile_disc`` is the nearest rank, as :func:`percentile`)."""
    start, end = day_bounds(day)

    def rounded(value: Any) -> float | None:
        return None if value is None else round(float(value), 3)

    with engine.connect() as conn:
        rows = conn.execute(text(_SYNC_SQL), {"destinations": destinations, "start": start, "end": end}).all()
    lines = [SyncRow(unit=r.unit, dossiers=r.dossiers, synced=r.dossiers - r.failed - r.pending, pending=r.pending,
                     failed=r.failed, events=r.events, delivered=r.delivered, superseded=r.superseded,
                     lag_p50_s=rounded(r.lag_p50), lag_p99_s=rounded(r.lag_p99), relay_p50_s=rounded(r.relay_p50),
                     relay_p99_s=rounded(r.relay_p99)) for r in rows]
    if not lines or lines[-1].unit != "TOTAL":  # no rows at all: the empty TOTAL line, as the Python path gives
        lines.append(_line("TOTAL", []))
    return lines


def _line(unit: str, items: list[tuple[str, str, float | None, float | None]]) -> SyncRow:
    states: dict[str, set[str]] = {}
    lag: list[float] = []
    relay: list[float] = []
    for dossier, status, lag_s, relay_s in items:
        states.setdefault(dossier, set()).add(status)
        if status == Status.DELIVERED and lag_s is not None and relay_s is not None:
            lag.append(float(lag_s))
            relay.append(float(relay_s))
    failed = sum(1 for s in states.values() if Status.DEAD in s)
    pending = sum(1 for s in states.values() if Status.DEAD not in s and s & set(OPEN_STATUSES))

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return SyncRow(
        unit=unit,
        dossiers=len(states),
        synced=len(states) - failed - pending,
        pending=pending,
        failed=failed,
        events=len(items),
        delivered=sum(1 for item in items if item[1] == Status.DELIVERED),
        superseded=sum(1 for item in items if item[1] == Status.SUPERSEDED),
        lag_p50_s=rounded(percentile(lag, 0.5)),
        lag_p99_s=rounded(percentile(lag, 0.99)),
        relay_p50_s=rounded(percentile(relay, 0.5)),
        relay_p99_s=rounded(percentile(relay, 0.99)),
    )


def sync_report_csv(rows: list[SyncRow]) -> str:
    """The report as CSV (UTF-8, one header line), for a spreadsheet."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(SyncRow)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return out.getvalue()
