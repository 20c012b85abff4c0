"""What the console's overview reads from the ledger: per destination, the last hour and day, and the hours.

"Delivered" counts deliveries that reached their destination in the window (``delivered_at``); "retrying"
and "dead" count deliveries in those states whose last change falls in the window (``updated_at``);
"failed attempts" count attempts that did not deliver, by when they started. Open work and its oldest age
come from :func:`store.ledger.open_backlog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from store.ledger import open_backlog
from store.tables import DEAD, DELIVERED, RETRYING, attempts, deliveries


@dataclass
class Window:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0


@dataclass
class DestinationOverview:
    name: str
    hour: Window = field(default_factory=Window)
    day: Window = field(default_factory=Window)
    open: int = 0
    oldest_seconds: float = 0.0


def _hour_bucket(engine: Engine, column: Any) -> Any:
    if engine.dialect.name == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%d %H:00:00", column)


def destinations(engine: Engine, names: list[str], now: datetime) -> list[DestinationOverview]:
    out = {name: DestinationOverview(name) for name in names}
    with engine.connect() as conn:
        for label, since in (("hour", now - timedelta(hours=1)), ("day", now - timedelta(days=1))):
            delivered = conn.execute(
                select(deliveries.c.destination, func.count())
                .where(deliveries.c.status == DELIVERED, deliveries.c.delivered_at >= since)
                .group_by(deliveries.c.destination))
            for name, count in delivered:
                getattr(out.setdefault(name, DestinationOverview(name)), label).delivered = int(count)
            for status in (RETRYING, DEAD):
                rows = conn.execute(
                    select(deliveries.c.destination, func.count())
                    .where(deliveries.c.status == status, deliveries.c.updated_at >= since)
                    .group_by(deliveries.c.destination))
                for name, count in rows:
                    setattr(getattr(out.setdefault(name, DestinationOverview(name)), label), status, int(count))
    for name, (count, age) in open_backlog(engine, now).items():
        entry = out.setdefault(name, DestinationOverview(name))
        entry.open, entry.oldest_seconds = count, age
    return sorted(out.values(), key=lambda d: d.name)


def hourly(engine: Engine, now: datetime, hours: int = 24) -> list[tuple[datetime, int, int]]:
    """``(hour, delivered, failed attempts)`` for the last ``hours`` hours (UTC), oldest first, gaps as zeros."""
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    delivered_bucket = _hour_bucket(engine, deliveries.c.delivered_at)
    failed_bucket = _hour_bucket(engine, attempts.c.started_at)
    with engine.connect() as conn:
        delivered: dict[Any, int] = {row[0]: int(row[1]) for row in conn.execute(
            select(delivered_bucket, func.count()).where(deliveries.c.delivered_at >= start)
            .group_by(delivered_bucket))}
        failed: dict[Any, int] = {row[0]: int(row[1]) for row in conn.execute(
            select(failed_bucket, func.count())
            .where(attempts.c.started_at >= start, attempts.c.outcome.is_not(None), attempts.c.outcome != DELIVERED)
            .group_by(failed_bucket))}

    def key(moment: datetime) -> Any:
        return moment.replace(tzinfo=None) if engine.dialect.name == "postgresql" else moment.strftime(
            "%Y-%m-%d %H:00:00")

    series = []
    for n in range(hours):
        hour = start + timedelta(hours=n)
        series.append((hour, int(delivered.get(key(hour), 0)), int(failed.get(key(hour), 0))))
    return series
