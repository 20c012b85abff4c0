"""Signed webhooks to any subscriber: the one-stop software itself, a provincial data warehouse, a citizen app.

Out (``kind = "webhook"``): the canonical event goes out as the ledger holds it, signed the Standard Webhooks way
with the subscriber's ``whsec_`` secret, the delivery's idempotency key as the message id (``adapters/webhook.py``
signs, ``connectors/webhook.py`` posts and reads the answer). Its simulator is the one-stop software
(``sandbox/onestop.py``), which subscribes to every webhook destination.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import SecretStr

from adapters.webhook import webhook_body, webhook_headers
from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from connectors.base import ConnectorResult, build_http_client
from connectors.webhook import WebhookConnector
from schemas.events import Event
from services.base import Configured, Context, Deliverer, DemoPlay, NotReady, Service, Simulator, Stage


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
            options.url, build_http_client(timeouts.connect, timeouts.read, context.settings.worker_concurrency))

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        body = webhook_body(event)
        return self._connector.post(body, webhook_headers(event, idempotency_key, self._secret, body))

    def close(self) -> None:
        self._connector.close()


def _onestop(configured: list[Configured], **_: Any) -> Any:
    """The one-stop software, subscribed to every webhook destination with its secret."""
    from sandbox.onestop import create_app

    secrets = {c.destination.name: c.options.secret.get_secret_value() for c in configured  # type: ignore[attr-defined]
               }
    if not secrets:
        raise NotReady("no subscriber secrets in the environment (see the secret_env of each webhook destination)")
    return create_app(secrets)


def _demo(stage: Stage, names: list[str]) -> DemoPlay:
    from services.webhook.demo import configure

    return configure(stage, names)


SERVICE = Service(
    kind="webhook",
    title="signed webhook subscribers (the one-stop software, a data warehouse)",
    deliverer=WebhookDeliverer,
    options=WebhookOptions,
    simulators=(Simulator("one-stop software", "port", 8701, _onestop),),
    demo=_demo,
)
