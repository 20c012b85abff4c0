"""Reading a service's feed from a cursor kept in the ledger: the one poller of the portal, the post and the exchange.

A feed is read page by page from the position the ledger's cursor holds; each page's items are stored first and
the cursor moves only then, so a crash between the two reads the page again (its events come back as duplicates
by ``event_id``). A page that the service says is the last, or an empty one, ends the run; so does ``max_pages``
(the rest waits for the next run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Generic, Self, TypeVar, cast

from sqlalchemy import Engine

from store.cursors import get_cursor, set_cursor

T = TypeVar("T")

MAX_PAGES = 50


class Tally:
    """A dataclass of counts (and lists) that adds up, field by field, what each batch of a feed came to."""

    def add(self, other: Self) -> None:
        for item in fields(cast(Any, self)):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a feed: its items, the position after it, and whether the service has more."""

    items: Sequence[T]
    position: str
    more: bool


@dataclass(frozen=True)
class FeedRun:
    """What one run read: pages, items, and where the cursor stands."""

    pages: int
    items: int
    position: str


def follow(engine: Engine, cursor: str, read: Callable[[str], Page[T]], store: Callable[[Sequence[T]], object], *,
           start: str = "0", max_pages: int = MAX_PAGES, now: Callable[[], datetime] | None = None) -> FeedRun:
    """Read the feed ``cursor`` names from its position (``start`` the first time), storing each page's items
    before the cursor moves past them."""
    clock = now or (lambda: datetime.now(UTC))
    position = get_cursor(engine, cursor) or start
    pages = items = 0
    for _ in range(max_pages):
        page = read(position)
        pages += 1
        items += len(page.items)
        if page.items:
            store(page.items)
        if page.position != position:
            set_cursor(engine, cursor, page.position, clock())
            position = page.position
        if not page.more or not page.items:
            break
    return FeedRun(pages, items, position)
