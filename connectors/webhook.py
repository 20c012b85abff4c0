"""Signed webhooks to any subscribed HTTP endpoint (the one-stop software, a data warehouse …).

Answer table (tested row by row in ``tests/test_webhook_connector.py``):

========================  ============  ==============================================
answer                    class         why
========================  ============  ==============================================
2xx                       delivered     the ``receipt_id`` / ``id`` in a JSON body is the external reference
408, 425, 429, 5xx        Retryable     the subscriber is busy or down; ``Retry-After`` honoured
401, 403                  Permanent     our signature or secret is wrong: an operator must fix the config
404, 405, 410             Permanent     the endpoint is gone or wrong
409, 422, other 4xx       Permanent     the subscriber refused this event
timeout, reset, refused   Retryable     weather
========================  ============  ==============================================
"""

from __future__ import annotations

from typing import Any

import httpx

from adapters.webhook import webhook_body, webhook_headers
from connectors.base import (
    ConnectorResult,
    Permanent,
    build_http_client,
    call_timeout,
    classify_http_status,
    excerpt,
    map_transport_errors,
)


class WebhookConnector:
    """Posts one event to one subscriber URL, signed with the subscriber's secret."""

    def __init__(self, url: str, secret: str, client: httpx.Client) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self._secret = secret
        self._client = client

    @classmethod
    def from_options(cls, url: str, secret: str | None, connect: float, read: float, pool: int) -> WebhookConnector:
        if not secret:
            raise Permanent("the subscriber's secret is not configured (set its secret_env variable)")
        return cls(url, secret, build_http_client(connect, read, pool))

    def send(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        body = webhook_body(event)
        headers = webhook_headers(event, idempotency_key, self._secret, body)
        with map_transport_errors():
            response = self._client.post(self.url, content=body, headers=headers,
                                         timeout=call_timeout(self._client.timeout))
        error = classify_http_status(response)
        if error is not None:
            raise error
        return ConnectorResult(
            status_code=response.status_code,
            external_ref=_receipt_id(response),
            excerpt=excerpt(response.text),
        )

    def close(self) -> None:
        self._client.close()


def _receipt_id(response: httpx.Response) -> str | None:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict):
        ref = data.get("receipt_id") or data.get("id")
        return str(ref)[:200] if ref is not None else None
    return None
