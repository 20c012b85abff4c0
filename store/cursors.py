"""Feed cursors: the position up to which a pulled feed has been stored in the ledger.

A cursor moves only after what it covers is committed, so a crash between the two re-reads
a page; the events it yields are recognised as duplicates by ``event_id``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update

from store.tables import cursors


def get_cursor(engine: Engine, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(cursors.c.position).where(cursors.c.name == name)).scalar_one_or_none()


def set_cursor(engine: Engine, name: str, position: str, now: datetime) -> None:
    """Move the cursor (create it the first time)."""
    with engine.begin() as conn:
        moved = conn.execute(
            update(cursors).where(cursors.c.name == name).values(position=position, updated_at=now)
        ).rowcount
        if not moved:
            conn.execute(cursors.insert().values(name=name, position=position, updated_at=now))
