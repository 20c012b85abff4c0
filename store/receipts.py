"""Receipts: a channel's word that a message reached the citizen (Zalo ``user_received_message``) or was seen.

Keyed by the message's ``tracking_id`` (derived from the event and template), so a callback
repeated any number of times changes nothing more, and a delivery about to send again can
see that the first send did arrive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from store.tables import receipts


def record(engine: Engine, tracking_id: str, channel: str, kind: Literal["received", "seen"],
           at: datetime, msg_id: str | None = None) -> bool:
    """Note that ``tracking_id`` was received or seen (the first time counts); False if it was already noted."""
    column = receipts.c.received_at if kind == "received" else receipts.c.seen_at
    for _ in range(2):
        try:
            with engine.begin() as conn:
                row = conn.execute(select(receipts).where(receipts.c.tracking_id == tracking_id)).first()
                if row is None:
                    values: dict[str, Any] = {"tracking_id": tracking_id, "channel": channel, "msg_id": msg_id,
                                              "updated_at": at, column.name: at}
                    if kind == "seen":  # seen implies received
                        values["received_at"] = at
                    conn.execute(receipts.insert().values(**values))
                    return True
                if getattr(row, column.name) is not None:
                    return False
                changes: dict[str, Any] = {column.name: at, "updated_at": at}
                if kind == "seen" and row.received_at is None:
                    changes["received_at"] = at
                if msg_id and not row.msg_id:
                    changes["msg_id"] = msg_id
                conn.execute(update(receipts).where(receipts.c.tracking_id == tracking_id).values(**changes))
                return True
        except IntegrityError:
            continue  # inserted meanwhile by a repeated callback: read it again
    return False


def received(engine: Engine, tracking_id: str) -> Any:
    """The receipt row of ``tracking_id`` if the channel said it was received, else None."""
    with engine.connect() as conn:
        return conn.execute(
            select(receipts).where(receipts.c.tracking_id == tracking_id, receipts.c.received_at.is_not(None))
        ).first()


def for_messages(engine: Engine, msg_ids: list[str]) -> list[Any]:
    """The receipts of these messages (by the channel's message id), for a dossier's trace."""
    if not msg_ids:
        return []
    with engine.connect() as conn:
        return list(conn.execute(select(receipts).where(receipts.c.msg_id.in_(msg_ids))))


def counts(engine: Engine) -> tuple[int, int]:
    """How many receipts say the message was received, and how many that it was seen (every channel)."""
    with engine.connect() as conn:
        got, seen = conn.execute(select(func.count(receipts.c.received_at), func.count(receipts.c.seen_at))).one()
    return int(got), int(seen)
