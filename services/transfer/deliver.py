"""The exchange's deliverer: a ``transfer.requested`` becomes one hop at the LGSP exchange, a ``transfer.result``
that names ``return_to`` is carried back down that hop.

The hop is looked up first (an attempt repeated after a timeout that landed sends nothing twice); its documents
are streamed from the origin's URLs to the exchange with their SHA-256 (one the exchange holds already is not sent
again; a later hop's come from the hop before, on the exchange); then the dossier is sent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError

from adapters.transfer import TransferError, hop_request
from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from config.units import load_directory
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.transfer import ExchangeConnector, GatewayToken, TokenAuth
from schemas import transfer as tx
from schemas.events import Event, TransferRequested, TransferResult
from schemas.privacy import error_fields
from services.base import Context, Deliverer
from services.checks import SKIPPED, Finding, reach, shown, then

POLL_PAGE = 200
# the transfer doctor looks up: no hop has it (a hop's id is made from its dossier and units)
PROBE_TRANSFER = "motcua-relay-doctor"
TOKEN_READ_SECONDS = 30.0  # a token endpoint answers at once; the destination's read timeout is for 200 MB scans


def _has_key(values: Any) -> bool:
    return bool(values.get("consumer_key"))


class TransferOptions(ServiceOptions):
    """The exchange: its URL, the relay's integration account, the unit directory hops are planned on, and the
    consumer key the LGSP's gateway in front of it gives its OAuth2 token for (``token_url``: default ``url`` +
    ``/token``). The key is optional, so that a table written before the gateway still loads, and the workers warn
    at start until it is set (:meth:`notices`); once it is, its secret is required."""

    url: HttpUrl
    username: str
    password: Annotated[SecretStr, Secret("MOTCUA_TRANSFER_PASSWORD")]
    token_url: HttpUrl | None = None
    consumer_key: str | None = None
    consumer_secret: Annotated[SecretStr | None, Secret("MOTCUA_TRANSFER_CONSUMER_SECRET", required=_has_key)] = None
    token_auth: TokenAuth = "client_secret_post"  # noqa: S105 (OpenCPS sends the key and secret in the form)
    units_file: str | None = None
    poll_page: int = Field(POLL_PAGE, ge=1, le=1000)

    def endpoint(self) -> str:
        """Where the gateway's token is asked for."""
        return self.token_url or self.url.rstrip("/") + tx.TOKEN_PATH

    def notices(self) -> list[str]:
        if self.consumer_key:
            return []
        unused = " (its consumer_secret is set, but unused without the key)" if self.consumer_secret else ""
        return [f"no consumer_key{unused}: calls go to the exchange without the OAuth2 token a province's LGSP "
                "gateway requires, and it refuses them (HTTP 401) until consumer_key and consumer_secret are set"]


def _token(gateway: GatewayToken, tokens: TokenCache, name: str) -> str:
    """A token from the gateway, kept as ``name`` in ``tokens`` (doctor's own) for the call that follows."""
    value, lifetime = gateway.obtain()
    tokens.put(name, value, lifetime)
    return f"the gateway granted a token for the consumer key (for {lifetime:.0f} s), not kept for the workers"


class TransferDeliverer(Deliverer[TransferOptions]):
    """Adapter + connector for the exchange."""

    def __init__(self, destination: Destination, options: TransferOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.directory = load_directory(options.units_file)
        _, self.connector = self._connectors(TokenCache(context.redis, context.settings.redis_prefix),
                                             context.settings.worker_concurrency)

    @property
    def credential_name(self) -> str:
        """Where the gateway's token is cached."""
        return f"transfer:{self.name}"

    def _connectors(self, tokens: TokenCache, connections: int) -> tuple[GatewayToken | None, ExchangeConnector]:
        """The gateway's token (when the destination has a consumer key) and the exchange behind it."""
        options, timeouts = self.options, self.destination.timeouts
        gateway = None
        if options.consumer_key and options.consumer_secret is not None:
            gateway = GatewayToken(
                token_url=options.endpoint(), consumer_key=options.consumer_key,
                consumer_secret=options.consumer_secret, auth=options.token_auth,
                client=build_http_client(timeouts.connect, min(timeouts.read, TOKEN_READ_SECONDS), 4),
                tokens=tokens, credential_name=self.credential_name)
        return gateway, ExchangeConnector(
            base_url=options.url, username=options.username, password=options.password,
            client=build_http_client(timeouts.connect, timeouts.read, connections),
            origin=build_http_client(timeouts.connect, timeouts.read, connections),
            connect_timeout=timeouts.connect, read_timeout=timeouts.read, gateway=gateway)

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

    def check(self, timeout: float) -> list[Finding]:
        """The exchange answers; the LGSP's gateway grants a token for the consumer key; and the exchange takes the
        integration account: a ``GetTransfer`` of an id no hop has (the WSDL loaded first, through the gateway) is
        answered "not found" only to an account it accepts. Nothing is sent, and the token is doctor's own (kept in
        this process only): the workers' cached one is left as it is."""
        options = self.options
        reached = reach(options.url, timeout)
        tokens = TokenCache(None, self.context.settings.redis_prefix)
        gateway, connector = self._connectors(tokens, 2)
        try:
            if gateway is None:
                token = Finding("gateway token", shown(options.endpoint()), SKIPPED,
                                "no consumer_key: calls go without the LGSP gateway's token (see the options' warning)")
            else:
                granted = gateway
                token = then(reached, "gateway token", granted.token_url, timeout,
                             lambda: _token(granted, tokens, self.credential_name))

            def look_up() -> str:
                said = "not found" if connector.get(PROBE_TRANSFER) is None else "a transfer"
                return (f"GetTransfer of an id no hop has was answered ({said}): the exchange accepts the account "
                        f"{options.username}")

            before = reached if token.status == SKIPPED else token
            account = then(before, "account", options.url.rstrip("/") + tx.ENDPOINT_PATH, timeout, look_up)
            return [reached, token, account]
        finally:
            connector.close()

    def close(self) -> None:
        self.connector.close()
