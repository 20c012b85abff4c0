"""The portal sync report's figures, computed in the database on both engines, against hand-made deliveries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, insert

from store.reports import portal_sync_report
from store.tables import deliveries, events

DAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # 12:00 in Vietnam


def add(engine: Engine, n: int, unit: str, dossier: str, status: str, lag: float | None) -> None:
    occurred = NOON + timedelta(minutes=n)
    received = occurred + timedelta(seconds=0.25)
    with engine.begin() as conn:
        pk = conn.execute(insert(events).values(
            event_id=f"e{n}", type="dossier.received", origin="onestop", unit_code=unit, dossier_code=dossier,
            procedure_code="1.000894", sequence=n, occurred_at=occurred, received_at=received,
            content_hash="0" * 64, payload="{}").returning(events.c.id)).scalar_one()
        conn.execute(insert(deliveries).values(
            event_pk=pk, destination="portal", dossier_code=dossier, stream="onestop", sequence=n, status=status,
            attempts=1, budget_used=1, replays=0, deadline_at=occurred + timedelta(days=3), created_at=received,
            updated_at=received, delivered_at=None if lag is None else occurred + timedelta(seconds=lag),
            idempotency_key=f"e{n}:portal"))


def test_the_sync_report_counts_dossiers_and_measures_lag_per_unit(engine: Engine) -> None:
    add(engine, 1, "U1", "D1", "delivered", 1.5)
    add(engine, 2, "U1", "D1", "delivered", 2.5)
    add(engine, 3, "U1", "D2", "dead", None)
    add(engine, 4, "U1", "D3", "retrying", None)
    add(engine, 5, "U2", "D4", "delivered", 10.0)
    add(engine, 6, "U2", "D4", "superseded", None)
    u1, u2, total = portal_sync_report(engine, ["portal"], DAY)
    assert (u1.unit, u1.dossiers, u1.synced, u1.pending, u1.failed, u1.events, u1.delivered) == ("U1", 3, 1, 1, 1, 4, 2)
    assert (u1.lag_p50_s, u1.lag_p99_s, u1.relay_p50_s, u1.relay_p99_s) == (1.5, 2.5, 1.25, 2.25)
    assert (u2.dossiers, u2.synced, u2.superseded, u2.lag_p50_s) == (1, 1, 1, 10.0)
    assert (total.unit, total.dossiers, total.events, total.lag_p99_s) == ("TOTAL", 4, 6, 10.0)
    assert portal_sync_report(engine, ["portal"], date(2026, 11, 21))[-1].events == 0
