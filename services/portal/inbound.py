"""Online dossiers in: citizens' submissions on the national portal become ``dossier.submitted`` events.

They come two ways, both to :func:`ingest_online`: pulled by the beat job for the units a destination names in
``pull_units`` (a cursor per unit in the ledger), and pushed to ``POST /v1/callbacks/portal``. Both make the same
deterministic event (origin ``portal``), so a dossier seen twice is stored once and reaches the one-stop
software once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError

from adapters.portal import PortalMapping, online_event
from schemas.portal import OnlineDossier
from schemas.privacy import error_fields
from services.base import Context
from services.feeds import Page, Tally, follow
from services.portal.deliver import PortalDeliverer
from store.intake import IngestConflict

log = structlog.get_logger(__name__)


@dataclass
class OnlineIntake(Tally):
    """What became of a batch of online dossiers."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    changed: list[str] = field(default_factory=list)


def ingest_online(ctx: Context, rows: Sequence[Any], mapping: PortalMapping,
                  now: datetime | None = None) -> OnlineIntake:
    """Store online dossiers as ``dossier.submitted`` events and queue their deliveries.

    A record that cannot make a valid event is counted and logged (codes and field names only), not stored; one
    whose event is already stored with different content (the portal changed the dossier after it was first
    seen) keeps its first version and is reported as changed.
    """
    report = OnlineIntake()
    events = []
    for row in rows:
        try:
            dossier = OnlineDossier.model_validate(row)
            events.append(online_event(dossier, mapping, ctx.settings.code_patterns))
        except ValidationError as exc:
            report.rejected += 1
            code = row.get("MaHoSo") if isinstance(row, dict) else None
            log.warning("portal.online_rejected", dossier_code=code, fields=error_fields(exc)[:10])
    while events:
        try:
            stored = ctx.ingest(events, now)
        except IngestConflict as exc:
            report.changed += exc.event_ids
            log.warning("portal.online_changed", event_ids=exc.event_ids)
            events = [e for e in events if e.event_id not in exc.event_ids]
            continue
        report.stored += sum(1 for s in stored if not s.duplicate)
        report.duplicates += sum(1 for s in stored if s.duplicate)
        break
    return report


@dataclass
class PullReport:
    """One pull of one destination: per unit, the cursor reached and what was stored."""

    pages: int = 0
    pulled: int = 0
    intake: OnlineIntake = field(default_factory=OnlineIntake)
    cursors: dict[str, int] = field(default_factory=dict)


def cursor_name(destination: str, unit: str) -> str:
    return f"portal:{destination}:online:{unit}"


def run_pull(portal: PortalDeliverer, now: datetime | None = None) -> PullReport:
    """Pull every unit's new online dossiers, page by page; each unit's cursor moves after each stored page."""
    ctx, report = portal.context, PullReport()
    for unit in portal.options.pull_units:

        def read(position: str, unit: str = unit) -> Page[dict[str, Any]]:
            rows, more = portal.connector.online(unit, int(position), portal.options.pull_page,
                                                portal.options.online_service)
            return Page(rows, str(max([int(position), *(int(r.get("ThuTu", 0)) for r in rows)])), more)

        def store(rows: Sequence[dict[str, Any]]) -> None:
            report.intake.add(ingest_online(ctx, rows, portal.mapping, now))

        run = follow(ctx.engine, cursor_name(portal.name, unit), read, store)
        report.pages += run.pages
        report.pulled += run.items
        report.cursors[unit] = int(run.position)
    return report


def pull(portal: PortalDeliverer) -> dict[str, Any]:
    """The beat job's step for one destination."""
    pulled = run_pull(portal)
    return {"pulled": pulled.pulled, "stored": pulled.intake.stored, "duplicates": pulled.intake.duplicates,
            "rejected": pulled.intake.rejected, "cursors": pulled.cursors}
