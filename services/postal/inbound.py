"""Statuses in: what the post reports of our orders becomes ``postal.status`` events.

They come pushed to ``POST /v1/callbacks/postal`` (signed) and, as the fallback, from the beat job that reads the
tracking list (RESTHeart pages after a 24-hex ObjectId ``lastId``, V9–V10) from a cursor kept in the ledger. The
list holds every record of the account, so a record of an order that is not ours (another customer code, a number
we never made) is counted and logged by its number only, never stored (V11). A record of one of our orders also
settles an order whose create was ambiguous (its mark ``sent`` becomes ``taken``: ``deliver.py``). Both make the
same event (its id is the order, status code and time), which the ledger numbers in its order's stream (origin
``postal.pickup`` or ``postal.delivery``): a status seen by both is stored once, and one older than what the
stream already holds is kept but not sent (it would overwrite newer news at the one-stop software).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from adapters.postal import REQUEST_TYPES, PostalMapping, parse_order_number, status_event
from schemas.events import PostalRequest, parse_stored
from schemas.postal import FIRST_ID, OBJECT_ID, TrackingRecord
from schemas.privacy import error_fields
from services.base import Context
from services.feeds import Page, Tally, follow
from services.postal.deliver import SENT, TAKEN, PostalDeliverer, order_mark
from store import queries
from store.marks import promote_marks

log = structlog.get_logger(__name__)

REQUEST_OF = {purpose: kind for kind, purpose in REQUEST_TYPES.items()}


@dataclass
class StatusIntake(Tally):
    """What became of a batch of tracking records."""

    stored: int = 0
    duplicates: int = 0
    late: int = 0
    ignored: int = 0
    unknown: list[str] = field(default_factory=list)


def ingest_statuses(ctx: Context, destination: str, mapping: PostalMapping, records: Sequence[TrackingRecord],
                    now: datetime | None = None) -> StatusIntake:
    """Store tracking records of ``destination``'s orders as numbered ``postal.status`` events and queue their
    deliveries. A record of an order number we never made is counted and logged (the number only), not stored.
    """
    report = StatusIntake()
    ordered = sorted({r.oid: r for r in records}.values(), key=lambda r: r.oid)
    parsed = {r.oid: parse_order_number(r.OrderNumber, mapping) if r.CustomerCode in (None, mapping.customer_code)
              else None for r in ordered}
    requests = _requests(ctx, {p[0] for p in parsed.values() if p})
    events = []
    seen: set[str] = set()
    for record in ordered:
        made = parsed[record.oid]
        request = requests.get((made[0], REQUEST_OF[made[1]])) if made else None
        if request is None:
            report.unknown.append(record.OrderNumber)
            continue
        seen.add(record.OrderNumber)
        try:
            event = status_event(record, request, mapping, destination)
        except (ValueError, ValidationError) as exc:
            log.warning("postal.status_rejected", order_number=record.OrderNumber,
                        status_code=record.StatusCode, error=str(exc)[:300])
            report.unknown.append(record.OrderNumber)
            continue
        if event is None:
            report.ignored += 1
        else:
            events.append(event)
    if report.unknown:
        log.warning("postal.unknown_orders", order_numbers=sorted(set(report.unknown))[:20],
                    count=len(report.unknown))
    if seen:
        promote_marks(ctx.engine, destination, map(order_mark, seen), SENT, TAKEN, now or datetime.now(UTC))
    if events:
        result = ctx.ingest_numbered(events, now)
        report.stored, report.duplicates, report.late = len(result.stored), len(result.duplicates), len(result.late)
        if result.late:
            log.info("postal.late_statuses", event_ids=result.late[:20], count=len(result.late))
    return report


def _requests(ctx: Context, dossiers: set[str]) -> dict[tuple[str, str], PostalRequest]:
    """The request events that made our orders, by (dossier, type): the first of each, parsed once."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for stored in queries.event_payloads(ctx.engine, dossiers, REQUEST_TYPES, origin="onestop"):
        first.setdefault((stored.dossier_code, stored.type), stored.payload)
    found: dict[tuple[str, str], PostalRequest] = {}
    for key, payload in first.items():
        try:
            request = parse_stored(payload)
        except ValidationError as exc:  # its statuses then count as unknown, and are logged as such
            log.warning("postal.request_unreadable", dossier_code=key[0], fields=error_fields(exc)[:10])
            continue
        if isinstance(request, PostalRequest):  # the query asked for these types only
            found[key] = request
    return found


@dataclass
class PollReport:
    pages: int = 0
    records: int = 0
    intake: StatusIntake = field(default_factory=StatusIntake)
    cursor: str = FIRST_ID


def cursor_name(destination: str) -> str:
    return f"postal:{destination}:tracking"


def run_poll(post: PostalDeliverer, now: datetime | None = None) -> PollReport:
    """Read the tracking list from the cursor, page by page; the cursor moves after each stored page to the last
    record's ``_id.$oid``. A page with fewer records than asked for, or none (no ``_embedded``), is the end.
    A cursor that is not an ObjectId (one kept by an older relay, which counted records) starts again from
    :data:`~schemas.postal.FIRST_ID`: what is read again is recognised by its event id."""
    report = PollReport()
    size = post.options.poll_page

    def read(position: str) -> Page[TrackingRecord]:
        start = position if OBJECT_ID.match(position) else FIRST_ID
        records = post.connector.tracking(start, size).records
        return Page(records, records[-1].oid if records else start, len(records) >= size)

    def store(records: Sequence[TrackingRecord]) -> None:
        report.intake.add(ingest_statuses(post.context, post.name, post.mapping, records, now))

    run = follow(post.context.engine, cursor_name(post.name), read, store, start=FIRST_ID)
    report.pages, report.records, report.cursor = run.pages, run.items, run.position
    return report


def poll(post: PostalDeliverer) -> dict[str, Any]:
    """The beat job's step for one destination."""
    polled = run_poll(post)
    return {"records": polled.records, "stored": polled.intake.stored, "duplicates": polled.intake.duplicates,
            "late": polled.intake.late, "unknown": len(polled.intake.unknown), "cursor": polled.cursor}
