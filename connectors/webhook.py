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

One attempt (:meth:`WebhookConnector.post`) goes through httpx; a batch's (:meth:`WebhookConnector.post_many`,
the engine's batch path) through libcurl's multi interface (:mod:`connectors.curl`), read by the same table: for
batches of 30 POSTs to a local uvicorn server, on a 2-core machine, libcurl spent 120–136 µs of the worker's CPU
per request where aiohttp spent 340–480 µs.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from connectors.base import (
    AttemptEnded,
    ConnectorResult,
    DeliveryError,
    Permanent,
    Retryable,
    build_http_client,
    call_timeout,
    classify_http_status,
    excerpt,
    map_transport_errors,
)
from connectors.curl import Answer, CurlBatchClient


class WebhookConnector:
    """Posts to one subscriber URL."""

    def __init__(self, url: str, client: httpx.Client, pool: int = 100) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self._client = client
        timeout = client.timeout  # the batch path keeps the single path's connect and read timeouts
        self._batch = CurlBatchClient(pool, timeout.connect, timeout.read)
        self._proxy = env_proxy(url)  # read once, as httpx reads the environment once, building its client

    @classmethod
    def from_options(cls, url: str, connect: float, read: float, pool: int) -> WebhookConnector:
        """A connector with its own HTTP client (``pool`` connections, the timeouts in seconds)."""
        return cls(url, build_http_client(connect, read, pool), pool)

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

    def post_many(
        self, requests: Sequence[tuple[bytes, dict[str, str]]], deadline: float, on_end: AttemptEnded | None = None
    ) -> list[tuple[ConnectorResult | DeliveryError, float]]:
        """Post every ``(body, headers)`` at once, in this thread (libcurl's multi interface), each ending by
        ``deadline`` seconds from now: its result or its ``DeliveryError`` (the same table as :meth:`post`), and how
        long it took (ms). ``on_end(index, outcome, ms)`` is called in this thread as each ends (it must not block:
        the batch's other calls wait for it). The proxy is the one the environment named when the connector was made,
        as for :meth:`post`."""
        outcomes: list[tuple[ConnectorResult | DeliveryError, float] | None] = [None] * len(requests)

        def ended(index: int, answer: Answer | DeliveryError, took: float) -> None:
            try:
                outcome = answer if isinstance(answer, DeliveryError) else _judged(answer)
            except Exception as exc:  # a bug here: this attempt's, not the batch's
                outcome = Permanent(f"internal error: {type(exc).__name__}: {exc}")
            outcomes[index] = outcome, took
            if on_end is not None:
                with contextlib.suppress(Exception):  # the list returned still carries it
                    on_end(index, outcome, took)

        self._batch.post_many(self.url, requests, deadline, ended, self._proxy)
        return [o if o is not None else (Retryable("the call was cut"), 0.0) for o in outcomes]

    def close(self) -> None:
        self._client.close()
        self._batch.close()


# Concurrent drains of a slow destination each hold a batch's calls open: their connections are what limits the
# rate (a pool of 128 at 200 ms a call carries 640 calls a second), so the pool holds a few batches.
DRAINS_IN_FLIGHT = 4


def batch_connections(concurrency: int, batch: int) -> int:
    """Connections the batch path may open to one subscriber: a batch's at most (the connector's client gives each
    batch running at once a multi of its own, each caching as many; :mod:`connectors.curl`)."""
    return max(concurrency, batch * DRAINS_IN_FLIGHT)


def env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY, ALL_PROXY and NO_PROXY name for ``url``, as httpx reads them for the single
    path; ``None`` for a direct connection."""
    target = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(target.hostname or "", proxies):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return proxies.get(target.scheme) or proxies.get("all")


def _judged(answer: Answer) -> ConnectorResult | DeliveryError:
    """An answer of the batch path by the table above, read as httpx reads it on the single path."""
    content_type = answer.header("content-type") or ""
    if not 200 <= answer.status < 300:
        # the shape the shared table reads; the body is decoded already, so no Content-Encoding to decode again
        refused = httpx.Response(answer.status, content=answer.body,
                                 headers=[(k, v) for k, v in answer.headers if k.lower() != "content-encoding"])
        error = classify_http_status(refused)
        if error is not None:
            return error
    # delivered: the charset named, else UTF-8, without the cost of building httpx's response
    return ConnectorResult(status_code=answer.status, external_ref=_receipt_in(content_type, answer.body),
                           excerpt=excerpt(answer.body.decode(_codec(_charset(content_type)), errors="replace")))


def _receipt_id(response: httpx.Response) -> str | None:
    return _receipt_in(response.headers.get("content-type", ""), response.content)


def _charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header, ``None`` without one."""
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _codec(charset: str | None) -> str:
    """The codec a response's charset names, UTF-8 when it names none or one Python does not know."""
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"


def _receipt_in(content_type: str, content: bytes) -> str | None:
    """The ``receipt_id`` (or ``id``) of a JSON answer: the delivery's external reference."""
    if "json" not in content_type:
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, dict):
        ref = data.get("receipt_id") or data.get("id")
        return str(ref)[:200] if ref is not None else None
    return None
