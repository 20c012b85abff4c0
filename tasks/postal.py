"""The postal service: orders out, statuses in.

Out (``kind = "postal"``): a pickup or delivery request becomes one order, looked up by its
order number before it is created, so an attempt repeated after a timeout that did land
creates nothing twice. A withdrawal, or a result handed over other than by post, cancels the
dossier's orders that exist and are still waiting for the postman; one delivered or returned
needs nothing, and one under way is a permanent error the desk must settle with the post
office (the reason says so).

In: statuses come pushed to ``POST /v1/callbacks/postal`` (signed) and, as the fallback, from
the beat job ``relay.postal.poll`` that reads the tracking list from a cursor kept in the
ledger. Both make the same ``postal.status`` event (its id is the order, status code and time),
which the ledger numbers in its order's stream (origin ``postal.pickup`` or ``postal.delivery``):
a status seen by both is stored once, and one older than what the stream already holds is kept
but not sent (it would overwrite newer news at the one-stop software).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from pydantic import SecretStr, ValidationError

from adapters.postal import (
    REQUEST_TYPES,
    AddressError,
    OrderError,
    PostalMapping,
    cancellations,
    order_for,
    order_number,
    parse_order_number,
    status_event,
    takes,
)
from config.admin_units import load_admin_units
from config.routing import Destination
from config.settings import Settings
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.postal import PostalConnector
from schemas.postal import CANCELLABLE_STATUSES, CANCELLED, FINAL_STATUSES, STATUS_MESSAGES, TrackingRecord
from schemas.privacy import error_fields
from store import intake, queries
from store.cursors import get_cursor, set_cursor
from tasks.app import app
from tasks.delivery import enqueue_deliveries
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)

POLL_PAGE = 200
REQUEST_OF = {purpose: kind for kind, purpose in REQUEST_TYPES.items()}


class PostalDeliverer:
    """Adapter + connector for one postal destination."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None) -> None:
        self.name = destination.name
        self.mapping = PostalMapping.from_options(destination.resolved_options())
        units_file = destination.option("admin_units_file")
        self.units = load_admin_units(str(units_file) if units_file else None)
        self.poll = bool(destination.option("poll", True))
        self.poll_page = int(destination.option("poll_page", POLL_PAGE))
        url = destination.option("url")
        if not url:
            raise ValueError(f"destination {destination.name}: the postal API needs a url")
        key, key_env = destination.secret("consumer_key", "MOTCUA_POSTAL_CONSUMER_KEY")
        secret, secret_env = destination.secret("consumer_secret", "MOTCUA_POSTAL_CONSUMER_SECRET")
        self._missing = [str(env) for env, value in ((key_env, key), (secret_env, secret)) if not value]
        self.connector: PostalConnector | None = None
        if not self._missing:
            self.connector = PostalConnector(
                base_url=str(url),
                customer_code=self.mapping.customer_code,
                consumer_key=str(key),
                consumer_secret=SecretStr(str(secret)),
                client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                         settings.worker_concurrency),
                tokens=TokenCache(client, settings.redis_prefix),
                credential_name=f"postal:{destination.name}",
            )

    def require(self) -> PostalConnector:
        if self.connector is None:
            raise Permanent(f"postal credentials not configured: set {' and '.join(self._missing)}")
        return self.connector

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        connector = self.require()
        if not takes(event):
            raise Permanent(f"the post takes pickup and delivery requests and their cancellations, "
                            f"not {event.get('type')}")
        if event["type"] in REQUEST_TYPES:
            return self._order(connector, event)
        return self._cancel(connector, event)

    def _order(self, connector: PostalConnector, event: dict[str, Any]) -> ConnectorResult:
        try:
            order = order_for(event, self.mapping, self.units)
        except (AddressError, OrderError) as exc:
            raise Permanent(str(exc)) from exc
        except ValidationError as exc:
            fields = error_fields(exc)
            raise Permanent(f"the order would be invalid: {', '.join(fields)}") from exc
        found = connector.lookup(order.orderNumber)
        created = False
        if found is None:
            found, created = connector.create(order)
        state = "created" if created else "already held by the post"
        return ConnectorResult(status_code=200, external_ref=f"{found.orderNumber} {found.itemCode}",
                               excerpt=f"{order.purpose} order {state}: item {found.itemCode}, "
                                       f"status {found.statusCode}, COD {found.codAmount}")

    def _cancel(self, connector: PostalConnector, event: dict[str, Any]) -> ConnectorResult:
        dossier = str(event["dossier_code"])
        requested = requested_orders(dossier)
        reason = str((event.get("data") or {}).get("reason") or
                     ("dossier withdrawn" if event["type"] == "dossier.withdrawn" else "result handed over in person"))
        done: list[str] = []
        for purpose in cancellations(event):
            if purpose not in requested:
                continue
            number = order_number(dossier, purpose, self.mapping)
            found = connector.lookup(number)
            if found is None:
                done.append(f"{number}: no order at the post")
            elif found.statusCode == CANCELLED:
                done.append(f"{number}: already cancelled")
            elif found.statusCode in FINAL_STATUSES:  # delivered or returned: nothing is under way any more
                done.append(f"{number}: nothing to cancel, the post reports it "
                            f"{STATUS_MESSAGES.get(found.statusCode, found.statusCode)!r}")
            elif found.statusCode not in CANCELLABLE_STATUSES:
                status = STATUS_MESSAGES.get(found.statusCode, found.statusCode)
                raise Permanent(f"{number} cannot be cancelled: the post reports it {status!r} "
                                f"({found.statusCode}); settle it with the post office")
            else:
                connector.cancel(number, reason)
                done.append(f"{number}: cancelled")
        if not done:
            purposes = cancellations(event)
            done.append("no postal order for this dossier" if not requested
                        else "nothing to cancel: the result goes by post" if not purposes
                        else f"no {' or '.join(purposes)} order to cancel")
        return ConnectorResult(status_code=200, external_ref=None, excerpt="; ".join(done))

    def close(self) -> None:
        if self.connector is not None:
            self.connector.close()


def requested_orders(dossier_code: str) -> set[str]:
    """The purposes of the postal requests the ledger holds for a dossier."""
    return {REQUEST_TYPES[k] for k in queries.event_types(get_runtime().engine, dossier_code, REQUEST_TYPES)}


# --------------------------------------------------------------------------- statuses in


@dataclass
class StatusIntake:
    """What became of a batch of tracking records."""

    stored: int = 0
    duplicates: int = 0
    late: int = 0
    ignored: int = 0
    unknown: list[str] = field(default_factory=list)


def _requests(dossiers: Iterable[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The request events that made our orders, by (dossier code, event type): the first of each."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for event in queries.event_payloads(get_runtime().engine, dossiers, REQUEST_TYPES, origin="onestop"):
        found.setdefault((event.dossier_code, event.type), event.payload)
    return found


def ingest_statuses(destination: str, records: list[TrackingRecord], now: datetime | None = None) -> StatusIntake:
    """Store tracking records of our orders as numbered ``postal.status`` events and queue their deliveries.

    A record of an order number we never made is counted and logged (the number only), not stored.
    """
    rt = get_runtime()
    deliverer = rt.deliverer(destination)
    if not isinstance(deliverer, PostalDeliverer):
        raise ValueError(f"destination {destination} is not a postal service")
    mapping = deliverer.mapping
    report = StatusIntake()
    ordered = sorted({r.id: r for r in records}.values(), key=lambda r: r.id)
    parsed = {r.id: parse_order_number(r.orderNumber, mapping) for r in ordered}
    requests = _requests(p[0] for p in parsed.values() if p)
    payloads: list[dict[str, Any]] = []
    for record in ordered:
        made = parsed[record.id]
        request = requests.get((made[0], REQUEST_OF[made[1]])) if made else None
        if request is None:
            report.unknown.append(record.orderNumber)
            continue
        try:
            payload = status_event(record, request, mapping, destination)
        except (ValueError, ValidationError) as exc:
            log.warning("postal.status_rejected", order_number=record.orderNumber,
                        status_code=record.statusCode, error=str(exc)[:300])
            report.unknown.append(record.orderNumber)
            continue
        if payload is None:
            report.ignored += 1
        else:
            payloads.append(payload)
    if report.unknown:
        log.warning("postal.unknown_orders", order_numbers=sorted(set(report.unknown))[:20],
                    count=len(report.unknown))
    if payloads:
        result = intake.ingest_numbered(rt.engine, payloads, now or datetime.now(UTC),
                                        rt.routing.destinations_for, rt.rules)
        report.stored, report.duplicates, report.late = len(result.stored), len(result.duplicates), len(result.late)
        if result.late:
            log.info("postal.late_statuses", event_ids=result.late[:20], count=len(result.late))
        enqueue_deliveries(result.ready, rt)
    return report


@dataclass
class PollReport:
    pages: int = 0
    records: int = 0
    intake: StatusIntake = field(default_factory=StatusIntake)
    cursor: int = 0


def cursor_name(destination: str) -> str:
    return f"postal:{destination}:tracking"


def run_poll(destination: str, now: datetime | None = None, max_pages: int = 50) -> PollReport:
    """Read the tracking list from the cursor, page by page; the cursor moves after each stored page."""
    rt = get_runtime()
    deliverer = rt.deliverer(destination)
    if not isinstance(deliverer, PostalDeliverer):
        raise ValueError(f"destination {destination} is not a postal service")
    connector = deliverer.require()
    name = cursor_name(destination)
    report = PollReport(cursor=int(get_cursor(rt.engine, name) or 0))
    for _ in range(max_pages):
        page = connector.tracking(report.cursor, deliverer.poll_page)
        report.pages += 1
        report.records += len(page.items)
        if page.items:
            batch = ingest_statuses(destination, page.items, now)
            for key in ("stored", "duplicates", "late", "ignored"):
                setattr(report.intake, key, getattr(report.intake, key) + getattr(batch, key))
            report.intake.unknown += batch.unknown
            report.cursor = max(report.cursor, page.lastId, *(r.id for r in page.items))
            set_cursor(rt.engine, name, str(report.cursor), now or datetime.now(UTC))
        if not page.hasMore or not page.items:
            break
    return report


@app.task(name="relay.postal.poll")
def poll_tracking() -> dict[str, Any]:
    """Beat job: read the tracking list of every postal destination that polls (the callbacks' fallback)."""
    rt = get_runtime()

    def step(name: str) -> dict[str, Any]:
        polled = run_poll(name)
        return {"records": polled.records, "stored": polled.intake.stored, "duplicates": polled.intake.duplicates,
                "late": polled.intake.late, "unknown": len(polled.intake.unknown), "cursor": polled.cursor}

    names = [n for n, d in rt.routing.destinations.items() if d.kind == "postal" and d.option("poll", True)]
    return rt.each_destination("postal-poll", 60, names, step, done="postal.polled", failed="postal.poll_failed",
                               noteworthy=lambda s: bool(s["stored"] or s["unknown"]))
