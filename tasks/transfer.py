"""Inter-level transfer through the LGSP exchange: hops out, the units' answers in.

Out (``kind = "transfer"``): a ``transfer.requested`` becomes one hop at the exchange. The hop is looked up
first (an attempt repeated after a timeout that landed sends nothing twice); its documents are streamed from
the origin's URLs to the exchange with their SHA-256 (one the exchange holds already is not sent again; a
later hop's come from the hop before, on the exchange); then the dossier is sent. A ``transfer.result`` that
names ``return_to`` is carried back down that hop (``ReturnResult``).

In: beat's ``relay.transfer.poll`` reads the exchange's updates from a cursor kept in the ledger and turns
each into its events (:func:`adapters.transfer.update_events`), numbered in arrival order in the dossier's
``transfer`` stream: ``transfer.accepted`` / ``refused`` / ``result`` back to the one-stop software, and the
next hop's ``transfer.requested`` when an intermediate unit accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from pydantic import SecretStr, ValidationError

from adapters.transfer import TransferError, hop_request, parse_transfer_id, update_events
from config.routing import Destination
from config.settings import Settings
from config.units import load_directory
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.transfer import ExchangeConnector
from schemas import transfer as tx
from schemas.privacy import error_fields
from store import intake, queries
from store.cursors import get_cursor, set_cursor
from tasks.app import app
from tasks.delivery import enqueue_deliveries
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)
POLL_PAGE = 200


class TransferDeliverer:
    """Adapter + connector for the exchange."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None = None) -> None:
        self.name = destination.name
        options = destination.resolved_options()
        units_file = options.get("units_file")
        self.directory = load_directory(str(units_file) if units_file else None)
        self.poll_page = int(options.get("poll_page", POLL_PAGE))
        url, username = options.get("url"), options.get("username")
        if not url or not username:
            raise ValueError(f"destination {destination.name}: the LGSP exchange needs a url and a username")
        password, password_env = destination.secret("password", "MOTCUA_TRANSFER_PASSWORD")
        self._missing = [] if password else [str(password_env)]
        self.connector: ExchangeConnector | None = None
        if password:
            self.connector = ExchangeConnector(
                base_url=str(url), username=str(username), password=SecretStr(password),
                client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                         settings.worker_concurrency),
                connect_timeout=destination.timeouts.connect, read_timeout=destination.timeouts.read)

    def require(self) -> ExchangeConnector:
        if self.connector is None:
            raise Permanent(f"LGSP exchange credentials not configured: set {' and '.join(self._missing)}")
        return self.connector

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        connector = self.require()
        data = event.get("data") or {}
        if event.get("type") == "transfer.requested":
            return self._send(connector, event)
        if event.get("type") == "transfer.result" and data.get("return_to"):
            back = str(data["return_to"])
            documents = [tx.DocumentRef.model_validate(d) for d in data.get("documents") or []]
            recorded = connector.return_result(back, str(data.get("outcome") or "approved"), documents)
            return ConnectorResult(status_code=200, external_ref=back,
                                   excerpt=f"result {'returned' if recorded else 'already returned'} down {back}")
        raise Permanent(f"the exchange takes transfer requests and results to return, not {event.get('type')}")

    def _send(self, connector: ExchangeConnector, event: dict[str, Any]) -> ConnectorResult:
        try:
            request = hop_request(event, self.directory)
        except TransferError as exc:
            raise Permanent(str(exc)) from exc
        except ValidationError as exc:
            raise Permanent(f"the transfer would be invalid: {', '.join(error_fields(exc))}") from exc
        held = connector.get(request.transferId)
        if held is not None:
            return ConnectorResult(status_code=200, external_ref=request.transferId,
                                   excerpt=f"hop {request.fromUnit} → {request.toUnit} already at the exchange "
                                           f"({held.status})")
        sources = [d.get("url") for d in (event.get("data") or {}).get("documents") or []]
        sent = 0
        for index, (document, url) in enumerate(zip(request.documents, sources, strict=True)):
            if connector.has_document(request.transferId, index, document.sha256):
                continue
            if request.previousTransferId:
                continue  # the exchange has it from the hop before
            if not url:
                raise Permanent(f"document {index} ({document.name}) has no URL to stream it from")
            sent += connector.upload(request.transferId, index, document, str(url))
        created = connector.send(request)
        return ConnectorResult(
            status_code=200, external_ref=request.transferId,
            excerpt=f"hop {request.fromUnit} → {request.toUnit} (for {request.finalUnit}) "
                    f"{'sent' if created else 'already sent'}; {len(request.documents)} documents, "
                    f"{sent} bytes streamed")

    def close(self) -> None:
        if self.connector is not None:
            self.connector.close()


def transfer_deliverer(name: str) -> TransferDeliverer:
    deliverer = get_runtime().deliverer(name)
    if not isinstance(deliverer, TransferDeliverer):
        raise ValueError(f"destination {name} is not an LGSP exchange")
    return deliverer


def _hop_requests(dossiers: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The ``transfer.requested`` events of these dossiers, by (dossier, sending unit), the latest each."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for event in queries.event_payloads(get_runtime().engine, dossiers, ["transfer.requested"]):
        found[(event.dossier_code, event.unit_code)] = event.payload
    return found


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


def run_poll(destination: str, max_pages: int = 50) -> PollReport:
    """Read the exchange's updates from the cursor, page by page; the cursor moves after each stored page."""
    rt = get_runtime()
    deliverer = transfer_deliverer(destination)
    connector = deliverer.require()
    name = cursor_name(destination)
    report = PollReport(cursor=int(get_cursor(rt.engine, name) or 0))
    for _ in range(max_pages):
        page = connector.updates(report.cursor, deliverer.poll_page)
        report.pages += 1
        report.updates += len(page.updates)
        hops = {u.transferId: parse_transfer_id(u.transferId) for u in page.updates}
        requests = _hop_requests({h[0] for h in hops.values() if h})
        payloads: list[dict[str, Any]] = []
        for update in page.updates:
            hop = hops[update.transferId]
            request = requests.get((hop[0], hop[1])) if hop else None
            if request is None:
                report.unknown.append(update.transferId)
                continue
            payloads.extend(update_events(update, request, deliverer.directory, rt.settings.code_patterns))
        if payloads:
            result = intake.ingest_numbered(rt.engine, payloads, datetime.now(UTC), rt.routing.destinations_for,
                                            rt.rules, in_arrival_order=True)
            report.stored += len(result.stored)
            report.duplicates += len(result.duplicates)
            enqueue_deliveries(result.ready, rt)
        report.cursor = max(report.cursor, page.lastId)
        set_cursor(rt.engine, name, str(report.cursor), datetime.now(UTC))
        if not page.hasMore or not page.updates:
            break
    if report.unknown:
        log.warning("transfer.unknown_hops", transfer_ids=report.unknown[:20], count=len(report.unknown))
    return report


@app.task(name="relay.transfer.poll")
def poll_updates() -> dict[str, Any]:
    """Beat job: read the units' answers from every LGSP exchange destination (the cursor moves only after a
    stored page, so a failed read is read again next time)."""
    rt = get_runtime()

    def step(name: str) -> dict[str, Any]:
        polled = run_poll(name)
        return {"updates": polled.updates, "stored": polled.stored, "cursor": polled.cursor,
                "unknown": len(polled.unknown)}

    names = [n for n, d in rt.routing.destinations.items() if d.kind == "transfer"]
    return rt.each_destination("transfer-poll", 60, names, step, done="transfer.polled",
                               failed="transfer.poll_failed", noteworthy=lambda s: bool(s["stored"] or s["unknown"]))
