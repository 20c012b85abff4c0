"""The webhook deliverer: the event, as the ledger holds it, signed with the subscriber's secret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import SecretStr

from adapters.webhook import webhook_body, webhook_headers
from config.options import HttpUrl, Secret, ServiceOptions, secret_variable
from config.routing import Destination
from connectors.base import AttemptEnded, ConnectorResult, DeliveryError, build_http_client
from connectors.webhook import WebhookConnector, batch_connections
from schemas.events import Event
from schemas.webhook import secret_key
from services.base import Context, Deliverer
from services.checks import NOT_READY, READY, Finding, reach


class WebhookOptions(ServiceOptions):
    url: HttpUrl
    secret: Annotated[SecretStr, Secret()]  # the subscriber's whsec_ secret: its variable is named by secret_env


class WebhookDeliverer(Deliverer[WebhookOptions]):
    """The event, as stored, to one subscriber URL."""

    def __init__(self, destination: Destination, options: WebhookOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        timeouts = destination.timeouts
        self._secret = options.secret.get_secret_value()
        self._connector = WebhookConnector(
            options.url, build_http_client(timeouts.connect, timeouts.read, context.settings.worker_concurrency),
            batch_connections(context.settings.worker_concurrency, context.settings.delivery_batch))

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        body = webhook_body(event)
        return self._connector.post(body, webhook_headers(event, idempotency_key, self._secret, body))

    def deliver_batch(
        self, items: Sequence[tuple[Event, str]], deadline: float, on_end: AttemptEnded | None = None
    ) -> list[tuple[ConnectorResult | DeliveryError, float]]:
        requests = []
        for event, key in items:
            body = webhook_body(event)
            requests.append((body, webhook_headers(event, key, self._secret, body)))
        return self._connector.post_many(requests, deadline, on_end)

    def check(self, timeout: float) -> list[Finding]:
        """The subscriber answers a ``HEAD`` (doctor posts nothing: its path and our signature are judged by the first
        delivery), and the secret is a ``whsec_`` one the signature can be made with."""
        variable = secret_variable(self.destination, WebhookOptions, "secret") or "secret_env"
        try:
            secret_key(self._secret)
            secret = Finding("secret", variable, READY, "a whsec_ secret the events are signed with")
        except ValueError as exc:
            secret = Finding("secret", variable, NOT_READY, f"{exc}: every delivery would fail")
        return [reach(self.options.url, timeout), secret]

    def close(self) -> None:
        self._connector.close()
