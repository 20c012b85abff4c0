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
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from store.tables import DEAD, DELIVERED, OPEN_STATUSES, deliveries, events

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


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


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The Vietnam calendar day as a UTC interval [start, end)."""
    start = datetime.combine(day, time.min, VN_TZ).astimezone(UTC)
    return start, start + timedelta(days=1)


def portal_sync_report(engine: Engine, destinations: list[str], day: date) -> list[SyncRow]:
    """Per unit (sorted), then a TOTAL line, for the deliveries to ``destinations`` of events on ``day``."""
    start, end = day_bounds(day)
    d, e = deliveries.c, events.c
    query = (
        select(e.unit_code, d.dossier_code, d.status, e.occurred_at, e.received_at, d.delivered_at)
        .join(events, e.id == d.event_pk)
        .where(d.destination.in_(destinations), e.occurred_at >= start, e.occurred_at < end)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    by_unit: dict[str, list[tuple[str, str, datetime, datetime, datetime | None]]] = {}
    for unit, dossier, status, occurred, received, delivered in rows:
        by_unit.setdefault(unit, []).append((dossier, status, occurred, received, delivered))
    lines = [_line(unit, items) for unit, items in sorted(by_unit.items())]
    lines.append(_line("TOTAL", [item for items in by_unit.values() for item in items]))
    return lines


def _line(unit: str, items: list[tuple[str, str, datetime, datetime, datetime | None]]) -> SyncRow:
    states: dict[str, set[str]] = {}
    lag: list[float] = []
    relay: list[float] = []
    for dossier, status, occurred, received, delivered in items:
        states.setdefault(dossier, set()).add(status)
        if status == DELIVERED and delivered is not None:
            lag.append((delivered - occurred).total_seconds())
            relay.append((delivered - received).total_seconds())
    failed = sum(1 for s in states.values() if DEAD in s)
    pending = sum(1 for s in states.values() if DEAD not in s and s & set(OPEN_STATUSES))

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return SyncRow(
        unit=unit,
        dossiers=len(states),
        synced=len(states) - failed - pending,
        pending=pending,
        failed=failed,
        events=len(items),
        delivered=sum(1 for item in items if item[1] == DELIVERED),
        superseded=sum(1 for item in items if item[1] == "superseded"),
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
