"""Signed webhooks to any subscribed HTTP endpoint (the one-stop software, a data warehouse …).

Transport only: the connector posts the body and headers it is given and maps the answer; the
body and its Standard Webhooks signature are the adapter's (``adapters/webhook.py``), put together
with the connector by the webhook deliverer.

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

import httpx

from connectors.base import (
    ConnectorResult,
    build_http_client,
    call_timeout,
    classify_http_status,
    excerpt,
    map_transport_errors,
)


class WebhookConnector:
    """Posts to one subscriber URL."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self._client = client

    @classmethod
    def from_options(cls, url: str, connect: float, read: float, pool: int) -> WebhookConnector:
        """A connector with its own HTTP client (``pool`` connections, the timeouts in seconds)."""
        return cls(url, build_http_client(connect, read, pool))

    def post(self, body: bytes, headers: dict[str, str]) -> ConnectorResult:
        """Post ``body`` with ``headers``: the answer as a result, or the ``DeliveryError`` of the table above."""
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
