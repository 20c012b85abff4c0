"""The national portal: dossier sync and progress out, online dossiers in.

Out (``kind = "portal"``): each lifecycle event of a dossier is one delivery, applied in
OpenCPS's order — look the dossier up, create or update its record, and only then append
the event's progress entry, unless the portal already holds it (a repeated attempt after
a timeout whose call did land). The ledger's per-dossier ordering makes the entries arrive
in ``sequence`` order and supersedes a late one, so a stale status never overwrites a newer.

In: dossiers citizens submitted on the national portal are pulled by the beat job
``relay.portal.pull`` for the units a destination names in ``pull_units`` (a cursor per unit
in the ledger), and accepted from the portal's signed push at ``POST /v1/callbacks/portal``.
Both become the same deterministic ``dossier.submitted`` event (origin ``portal``), so a
dossier seen twice is stored once and reaches the one-stop software once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from pydantic import SecretStr, ValidationError

from adapters.portal import (
    MappingError,
    PortalMapping,
    dossier_record,
    online_event,
    progress_entry,
    progress_recorded,
    takes,
)
from config.routing import Destination, parse_duration
from config.settings import Settings
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.portal import PortalConnector
from schemas.portal import OnlineDossier
from schemas.privacy import error_fields
from store import intake
from store.cursors import get_cursor, set_cursor
from tasks.app import app
from tasks.delivery import enqueue_deliveries
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)

DEFAULT_AUTH_PATH = "/api/dvcqg/login"
DEFAULT_INTEGRATION_PATH = "/api/dvcqg/service"
DEFAULT_SESSION_TTL = "25m"
PULL_PAGE = 100


class PortalDeliverer:
    """Adapter + connector for one portal destination."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None) -> None:
        self.name = destination.name
        self.mapping = PortalMapping.from_options(destination.options)
        units = destination.option("pull_units", []) or []
        if isinstance(units, str):  # from the environment: "000.00.12.H22, 000.00.13.H22"
            units = units.replace(",", " ").split()
        self.pull_units: list[str] = [str(u) for u in units]
        self.pull_page = int(destination.option("pull_page", PULL_PAGE))
        url = destination.option("url")
        if not url:
            raise ValueError(f"destination {destination.name}: the portal needs a url")
        username, user_env = destination.secret("username", "MOTCUA_PORTAL_USERNAME")
        password, password_env = destination.secret("password", "MOTCUA_PORTAL_PASSWORD")
        self._missing = [str(name) for name, value in ((user_env, username), (password_env, password)) if not value]
        self.connector: PortalConnector | None = None
        if not self._missing:
            self.connector = PortalConnector(
                base_url=str(url),
                auth_path=str(destination.option("auth_path", DEFAULT_AUTH_PATH)),
                integration_path=str(destination.option("integration_path", DEFAULT_INTEGRATION_PATH)),
                dstcode=str(destination.option("dstcode", "DVCQG")),
                username=str(username),
                password=SecretStr(str(password)),
                client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                         settings.worker_concurrency),
                tokens=TokenCache(client, settings.redis_prefix),
                credential_name=f"portal:{destination.name}",
                session_ttl=parse_duration(destination.option("session_ttl", DEFAULT_SESSION_TTL)),
            )

    def require(self) -> PortalConnector:
        if self.connector is None:
            raise Permanent(f"portal credentials not configured: set {' and '.join(self._missing)}")
        return self.connector

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        """Look up, create or update the record, then append the progress entry once."""
        connector = self.require()
        if not takes(event, self.mapping):
            raise Permanent(f"the portal follows the status_map's lifecycle events, not {event.get('type')}")
        unit, code = event["unit_code"], event["dossier_code"]
        try:
            entry = progress_entry(event, self.mapping)
            current = connector.lookup(unit, code)
            record = dossier_record(event, current, self.mapping)
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        connector.sync(unit, record, updating=current is not None)
        appended = not progress_recorded(entry, current)
        if appended:
            connector.progress(unit, entry)
        return ConnectorResult(
            status_code=200,
            external_ref=code,
            excerpt=f"{'updated' if current else 'created'} with TrangThaiHoSo {record['TrangThaiHoSo']}; "
                    f"progress entry {'appended' if appended else 'already held'}",
        )

    def close(self) -> None:
        if self.connector is not None:
            self.connector.close()


# --------------------------------------------------------------------------- online dossiers in


@dataclass
class OnlineIntake:
    """What became of a batch of online dossiers."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    changed: list[str] = field(default_factory=list)


def ingest_online(rows: list[Any], mapping: PortalMapping, now: datetime | None = None) -> OnlineIntake:
    """Store online dossiers as ``dossier.submitted`` events and queue their deliveries.

    A record that cannot make a valid event is counted and logged (codes and field names only),
    not stored; one whose event is already stored with different content (the portal changed
    the dossier after it was first seen) keeps its first version and is reported as changed.
    """
    rt = get_runtime()
    report = OnlineIntake()
    events: list[dict[str, Any]] = []
    for row in rows:
        try:
            events.append(online_event(OnlineDossier.model_validate(row), mapping, rt.settings.code_patterns))
        except ValidationError as exc:
            report.rejected += 1
            fields = error_fields(exc)
            code = row.get("MaHoSo") if isinstance(row, dict) else None
            log.warning("portal.online_rejected", dossier_code=code, fields=fields[:10])
    now = now or datetime.now(UTC)
    while events:
        try:
            stored, ready = intake.ingest_and_route(rt.engine, events, now, rt.routing.destinations_for, rt.rules)
        except intake.IngestConflict as exc:
            report.changed += exc.event_ids
            log.warning("portal.online_changed", event_ids=exc.event_ids)
            events = [e for e in events if e["event_id"] not in exc.event_ids]
            continue
        report.stored += sum(1 for s in stored if not s.duplicate)
        report.duplicates += sum(1 for s in stored if s.duplicate)
        enqueue_deliveries(ready, rt)
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


def run_pull(destination: str, now: datetime | None = None, max_pages: int = 50) -> PullReport:
    """Pull every unit's new online dossiers, page by page; the cursor moves after each stored page."""
    rt = get_runtime()
    deliverer = rt.deliverer(destination)
    if not isinstance(deliverer, PortalDeliverer):
        raise ValueError(f"destination {destination} is not a portal")
    connector = deliverer.require()
    report = PullReport()
    for unit in deliverer.pull_units:
        name = cursor_name(destination, unit)
        position = int(get_cursor(rt.engine, name) or 0)
        for _ in range(max_pages):
            rows, more = connector.online(unit, position, deliverer.pull_page)
            report.pages += 1
            report.pulled += len(rows)
            if not rows:
                break
            batch = ingest_online(rows, deliverer.mapping, now)
            report.intake.stored += batch.stored
            report.intake.duplicates += batch.duplicates
            report.intake.rejected += batch.rejected
            report.intake.changed += batch.changed
            position = max([position, *(int(r.get("ThuTu", 0)) for r in rows)])
            set_cursor(rt.engine, name, str(position), now or datetime.now(UTC))
            if not more:
                break
        report.cursors[unit] = position
    return report


@app.task(name="relay.portal.pull")
def pull_online() -> dict[str, Any]:
    """Beat job: pull online dossiers for every portal destination that names ``pull_units``."""
    rt = get_runtime()

    def step(name: str) -> dict[str, Any]:
        pulled = run_pull(name)
        return {"pulled": pulled.pulled, "stored": pulled.intake.stored, "duplicates": pulled.intake.duplicates,
                "rejected": pulled.intake.rejected, "cursors": pulled.cursors}

    names = [n for n, d in rt.routing.destinations.items() if d.kind == "portal" and d.option("pull_units")]
    # a pull repeated at once only finds duplicates
    return rt.each_destination("portal-pull", 60, names, step, done="portal.pulled", failed="portal.pull_failed",
                               noteworthy=lambda s: bool(s["pulled"]))
