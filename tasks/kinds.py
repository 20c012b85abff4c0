"""The registry of destination kinds: each pairs one adapter with one connector.

A new service registers one builder here under the ``kind`` its destinations name in
``config/relay.toml``; a builder takes the destination, the settings and the Redis client
(``None`` in memory mode) where shared credentials live. A deliverer takes the canonical
event and the delivery's idempotency key, and returns a :class:`ConnectorResult` or raises
a ``DeliveryError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import redis

from adapters.webhook import webhook_body, webhook_headers
from config.routing import Destination
from config.settings import Settings
from connectors.base import ConnectorResult, Permanent
from connectors.webhook import WebhookConnector


class Deliverer(Protocol):
    """Adapter + connector for one destination.

    A deliverer whose service uses expiring credentials also has ``refresh_auth()``: the
    engine calls it once when ``deliver`` raises ``AuthExpired``, then tries again. One whose
    service may only be called at some times has ``not_before(now)``, returning when and why
    the delivery waits (quiet hours, a spent daily quota): the engine defers it before claiming
    it, so no attempt is spent.
    """

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult: ...

    def close(self) -> None: ...


class WebhookDeliverer:
    """Signed webhook subscribers: the event goes out as it is (the adapter only signs it)."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None = None) -> None:
        url = destination.option("url")
        if not url:
            raise ValueError(f"destination {destination.name}: webhook needs a url")
        self._secret, self._secret_env = destination.secret("secret")
        self._connector = (
            WebhookConnector.from_options(
                url, destination.timeouts.connect, destination.timeouts.read, settings.worker_concurrency
            )
            if self._secret
            else None
        )

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        if self._connector is None or self._secret is None:
            raise Permanent(f"subscriber secret not configured: set {self._secret_env}")
        body = webhook_body(event)
        return self._connector.post(body, webhook_headers(event, idempotency_key, self._secret, body))

    def close(self) -> None:
        if self._connector is not None:
            self._connector.close()


Builder = Callable[[Destination, Settings, "redis.Redis | None"], Deliverer]


def _lazy(module: str, name: str) -> Builder:
    """The deliverer class ``name`` of ``module``, imported when first built: those modules import the
    Celery app, which this one must not."""

    def build(destination: Destination, settings: Settings, client: redis.Redis | None) -> Deliverer:
        deliverer: Deliverer = getattr(importlib.import_module(module), name)(destination, settings, client)
        return deliverer

    return build


KINDS: dict[str, Builder] = {
    "webhook": WebhookDeliverer,
    "portal": _lazy("tasks.portal", "PortalDeliverer"),
    "zalo": _lazy("tasks.zalo", "ZaloDeliverer"),
    "sms": _lazy("tasks.zalo", "SmsDeliverer"),
    "postal": _lazy("tasks.postal", "PostalDeliverer"),
    "payment": _lazy("tasks.payment", "PaymentDeliverer"),
    "transfer": _lazy("tasks.transfer", "TransferDeliverer"),
}


def build_deliverer(destination: Destination, settings: Settings, client: redis.Redis | None = None) -> Deliverer:
    """The deliverer of ``destination``; ``client`` is the Redis shared state (credentials) lives in."""
    try:
        builder = KINDS[destination.kind]
    except KeyError:
        raise ValueError(f"destination {destination.name}: unknown kind {destination.kind!r}") from None
    return builder(destination, settings, client)
