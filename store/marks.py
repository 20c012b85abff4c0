"""Marks: per destination and entry, what the relay knows of something it sent that the service offers no look-up
for. The portal's progress entries (``unanswered``: a call that may have landed; ``taken``), written only for the
ambiguous case, so an ordinary delivery costs one read by primary key; the post's orders (``order:<number>``:
``sent`` before the call, ``taken`` once the post holds it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from store.tables import progress_marks

ENTRY_MAX = 200


def get_mark(engine: Engine, destination: str, entry: str) -> str | None:
    """The entry's state, or ``None`` when no attempt left a mark."""
    c = progress_marks.c
    with engine.connect() as conn:
        return conn.execute(select(c.state).where(c.destination == destination,
                                                  c.entry == entry)).scalar_one_or_none()


def set_mark(engine: Engine, destination: str, entry: str, state: str, now: datetime) -> None:
    """Mark the entry (create the row the first time; a second attempt inserting at once updates it)."""
    c = progress_marks.c
    for tries_left in (1, 0):
        try:
            with engine.begin() as conn:
                moved = conn.execute(update(progress_marks).where(c.destination == destination, c.entry == entry)
                                     .values(state=state, updated_at=now)).rowcount
                if not moved:
                    conn.execute(progress_marks.insert().values(destination=destination, entry=entry, state=state,
                                                                updated_at=now))
            return
        except IntegrityError:  # inserted meanwhile by another attempt: update it
            if not tries_left:
                raise


def mark_changed_at(engine: Engine, destination: str, entry: str) -> datetime | None:
    """When the entry's mark was last set, or ``None`` without one."""
    c = progress_marks.c
    with engine.connect() as conn:
        return conn.execute(select(c.updated_at).where(c.destination == destination,
                                                       c.entry == entry)).scalar_one_or_none()


def promote_marks(engine: Engine, destination: str, entries: Iterable[str], old: str, new: str,
                  now: datetime) -> int:
    """Move these entries' marks from ``old`` to ``new`` (others are left as they are); how many moved."""
    wanted = sorted(set(entries))
    if not wanted:
        return 0
    c = progress_marks.c
    moved = 0
    with engine.begin() as conn:
        for start in range(0, len(wanted), 500):
            moved += conn.execute(update(progress_marks).where(
                c.destination == destination, c.entry.in_(wanted[start:start + 500]), c.state == old,
            ).values(state=new, updated_at=now)).rowcount
    return moved
