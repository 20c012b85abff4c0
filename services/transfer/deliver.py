"""The exchange's deliverer: a ``transfer.requested`` becomes one hop at the LGSP exchange, a ``transfer.result``
that names ``return_to`` is carried back down that hop.

The hop is looked up first (an attempt repeated after a timeout that landed sends nothing twice); its documents
are streamed from the origin's URLs to the exchange with their SHA-256 (one the exchange holds already is not sent
again; a later hop's come from the hop before, on the exchange); then the dossier is sent.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, ValidationError

from adapters.transfer import TransferError, hop_request
from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from config.units import load_directory
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.transfer import ExchangeConnector
from schemas import transfer as tx
from schemas.events import Event, TransferRequested, TransferResult
from schemas.privacy import error_fields
from services.base import Context, Deliverer

POLL_PAGE = 200


class TransferOptions(ServiceOptions):
    """The exchange: its URL, the relay's integration account, the unit directory hops are planned on."""

    url: HttpUrl
    username: str
    password: Annotated[SecretStr, Secret("MOTCUA_TRANSFER_PASSWORD")]
    units_file: str | None = None
    poll_page: int = Field(POLL_PAGE, ge=1, le=1000)


class TransferDeliverer(Deliverer[TransferOptions]):
    """Adapter + connector for the exchange."""

    def __init__(self, destination: Destination, options: TransferOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.directory = load_directory(options.units_file)
        timeouts = destination.timeouts
        self.connector = ExchangeConnector(
            base_url=options.url, username=options.username, password=options.password,
            client=build_http_client(timeouts.connect, timeouts.read, context.settings.worker_concurrency),
            connect_timeout=timeouts.connect, read_timeout=timeouts.read)

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        if isinstance(event, TransferRequested):
            return self._send(event)
        if isinstance(event, TransferResult) and event.data.return_to:
            back = event.data.return_to
            # as the exchange's wire model reads the document (its extra fields, a URL, kept)
            documents = [tx.DocumentRef.model_validate(d.model_dump(mode="json", exclude_none=True))
                         for d in event.data.documents]
            recorded = self.connector.return_result(back, event.data.outcome, documents)
            return ConnectorResult(status_code=200, external_ref=back,
                                   excerpt=f"result {'returned' if recorded else 'already returned'} down {back}")
        raise Permanent(f"the exchange takes transfer requests and results to return, not {event.type}")

    def _send(self, event: TransferRequested) -> ConnectorResult:
        try:
            request = hop_request(event, self.directory)
        except TransferError as exc:
            raise Permanent(str(exc)) from exc
        except ValidationError as exc:
            raise Permanent(f"the transfer would be invalid: {', '.join(error_fields(exc))}") from exc
        held = self.connector.get(request.transferId)
        if held is not None:
            return ConnectorResult(status_code=200, external_ref=request.transferId,
                                   excerpt=f"hop {request.fromUnit} → {request.toUnit} already at the exchange "
                                           f"({held.status})")
        sources = [d.url for d in event.data.documents]
        sent = 0
        for index, (document, url) in enumerate(zip(request.documents, sources, strict=True)):
            if self.connector.has_document(request.transferId, index, document.sha256):
                continue
            if request.previousTransferId:
                continue  # the exchange has it from the hop before
            if not url:
                raise Permanent(f"document {index} ({document.name}) has no URL to stream it from")
            sent += self.connector.upload(request.transferId, index, document, str(url))
        created = self.connector.send(request)
        return ConnectorResult(
            status_code=200, external_ref=request.transferId,
            excerpt=f"hop {request.fromUnit} → {request.toUnit} (for {request.finalUnit}) "
                    f"{'sent' if created else 'already sent'}; {len(request.documents)} documents, "
                    f"{sent} bytes streamed")

    def close(self) -> None:
        self.connector.close()
