"""The units' answers in: beat reads the exchange's update list from a cursor kept in the ledger and turns each
update into its events (:func:`adapters.transfer.update_events`), numbered in arrival order in the dossier's
``transfer`` stream: ``transfer.accepted`` / ``refused`` / ``result`` back to the one-stop software, and the next
hop's ``transfer.requested`` when an intermediate unit accepted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from adapters.transfer import parse_transfer_id, update_events
from schemas import transfer as tx
from schemas.events import EventBase, TransferRequested, parse_stored
from schemas.privacy import error_fields
from services.feeds import Page, follow
from services.transfer.deliver import TransferDeliverer
from store import queries

log = structlog.get_logger(__name__)


@dataclass
class PollReport:
    pages: int = 0
    updates: int = 0
    stored: int = 0
    duplicates: int = 0
    unknown: list[str] = field(default_factory=list)
    cursor: int = 0


def cursor_name(destination: str) -> str:
    return f"transfer:{destination}:updates"


def store_updates(exchange: TransferDeliverer, updates: Sequence[tx.Update], report: PollReport) -> None:
    """The events of a page of updates, stored in arrival order; an update of a hop we never sent is counted."""
    hops = {u.transferId: parse_transfer_id(u.transferId) for u in updates}
    requests = _requests(exchange, {h[0] for h in hops.values() if h})
    events: list[EventBase] = []
    for update in updates:
        hop = hops[update.transferId]
        request = requests.get((hop[0], hop[1])) if hop else None
        if request is None:
            report.unknown.append(update.transferId)
            continue
        events += update_events(update, request, exchange.directory, exchange.context.settings.code_patterns)
    if events:
        result = exchange.context.ingest_numbered(events, in_arrival_order=True)
        report.stored += len(result.stored)
        report.duplicates += len(result.duplicates)


def _requests(exchange: TransferDeliverer, dossiers: set[str]) -> dict[tuple[str, str], TransferRequested]:
    """The hops' requests, by (dossier, sender): the latest of each, parsed once."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for stored in queries.event_payloads(exchange.context.engine, dossiers, ["transfer.requested"]):
        latest[(stored.dossier_code, stored.unit_code)] = stored.payload
    found: dict[tuple[str, str], TransferRequested] = {}
    for key, payload in latest.items():
        try:
            found[key] = parse_stored(payload, kind=TransferRequested)
        except ValidationError as exc:  # its hops' updates then count as unknown, and are logged as such
            log.warning("transfer.request_unreadable", dossier_code=key[0], fields=error_fields(exc)[:10])
    return found


def run_poll(exchange: TransferDeliverer) -> PollReport:
    """Read the exchange's updates from the cursor, page by page; the cursor moves after each stored page."""
    report = PollReport()

    def read(position: str) -> Page[tx.Update]:
        page = exchange.connector.updates(int(position), exchange.options.poll_page)
        return Page(page.updates, str(max(int(position), page.lastId)), page.hasMore)

    run = follow(exchange.context.engine, cursor_name(exchange.name), read,
                 lambda updates: store_updates(exchange, updates, report))
    report.pages, report.updates, report.cursor = run.pages, run.items, int(run.position)
    if report.unknown:
        log.warning("transfer.unknown_hops", transfer_ids=report.unknown[:20], count=len(report.unknown))
    return report


def poll(exchange: TransferDeliverer) -> dict[str, Any]:
    """The beat job's step for one destination."""
    polled = run_poll(exchange)
    return {"updates": polled.updates, "stored": polled.stored, "cursor": polled.cursor,
            "unknown": len(polled.unknown)}
