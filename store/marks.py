"""Progress marks: per destination and entry, what the relay knows of a progress entry it sent (``unanswered``: a
call that may have landed; ``taken``). Written only for the ambiguous case, so an ordinary delivery costs one
read by primary key."""

from __future__ import annotations

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
