"""The registry of destination kinds: each pairs one adapter with one connector.

A new service registers one builder here under the ``kind`` its destinations name in
``config/relay.toml``. A deliverer takes the canonical event and the delivery's
idempotency key, and returns a :class:`ConnectorResult` or raises a ``DeliveryError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from config.routing import Destination
from config.settings import Settings
from connectors.base import ConnectorResult, Permanent
from connectors.webhook import WebhookConnector


class Deliverer(Protocol):
    """Adapter + connector for one destination.

    A deliverer whose service uses expiring credentials also has ``refresh_auth()``: the
    engine calls it once when ``deliver`` raises ``AuthExpired``, then tries again.
    """

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult: ...

    def close(self) -> None: ...


class WebhookDeliverer:
    """Signed webhook subscribers: the event goes out as it is (the adapter only signs it)."""

    def __init__(self, destination: Destination, settings: Settings) -> None:
        url = destination.option("url")
        if not url:
            raise ValueError(f"destination {destination.name}: webhook needs a url")
        secret_env = destination.option("secret_env")
        self._secret_env = secret_env
        secret = os.environ.get(secret_env) if secret_env else None
        self._connector = (
            WebhookConnector.from_options(
                url, secret, destination.timeouts.connect, destination.timeouts.read, settings.worker_concurrency
            )
            if secret
            else None
        )

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        if self._connector is None:
            raise Permanent(f"subscriber secret not configured: set {self._secret_env}")
        return self._connector.send(event, idempotency_key)

    def close(self) -> None:
        if self._connector is not None:
            self._connector.close()


KINDS: dict[str, Callable[[Destination, Settings], Deliverer]] = {
    "webhook": WebhookDeliverer,
}


def build_deliverer(destination: Destination, settings: Settings) -> Deliverer:
    try:
        builder = KINDS[destination.kind]
    except KeyError:
        raise ValueError(f"destination {destination.name}: unknown kind {destination.kind!r}") from None
    return builder(destination, settings)
