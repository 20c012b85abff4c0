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

import asyncio
import codecs
import contextlib
import json
import time
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from connectors import aio
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

if TYPE_CHECKING:
    import aiohttp


class WebhookConnector:
    """Posts to one subscriber URL."""

    def __init__(self, url: str, client: httpx.Client, pool: int = 100) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self._client = client
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None

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
        """Post every ``(body, headers)`` at once, on the connector loop, each ending by ``deadline`` seconds from
        now: its result or its ``DeliveryError`` (the same table as :meth:`post`), and how long it took (ms).
        ``on_end(index, outcome, ms)`` is called on the loop as each ends (it must not block)."""
        return aio.run(self._post_all(requests, deadline, on_end))

    async def _post_all(
        self, requests: Sequence[tuple[bytes, dict[str, str]]], deadline: float, on_end: AttemptEnded | None
    ) -> list[tuple[ConnectorResult | DeliveryError, float]]:
        import aiohttp

        if self._session is None:  # made on the loop it is used on
            self._session = build_session(self._pool)
        session = self._session
        proxy = env_proxy(self.url)
        configured = self._client.timeout
        timeout = aiohttp.ClientTimeout(total=deadline, sock_connect=min(configured.connect or deadline, deadline),
                                        sock_read=min(configured.read or deadline, deadline))

        async def one(body: bytes, headers: dict[str, str]) -> tuple[ConnectorResult | DeliveryError, float]:
            started = time.perf_counter()
            try:
                async with session.post(self.url, data=body, headers=headers, timeout=timeout, proxy=proxy,
                                        allow_redirects=False) as answer:
                    content = await answer.read()
                    status, content_type, charset = answer.status, answer.content_type, answer.charset
                    # an answer the table refuses, in the shape the shared table reads
                    refused = None if 200 <= status < 300 else httpx.Response(
                        status, headers=list(answer.headers.items()), content=content)
            except DeliveryError as exc:
                return exc, (time.perf_counter() - started) * 1000.0
            except (TimeoutError, aiohttp.ClientError) as exc:
                return _transport_error(exc), (time.perf_counter() - started) * 1000.0
            took = (time.perf_counter() - started) * 1000.0
            error = classify_http_status(refused) if refused is not None else None
            if error is not None:
                return error, took
            # delivered: read as httpx reads it on the single path (the charset named, else UTF-8), without the
            # cost of building its response
            return ConnectorResult(status_code=status, external_ref=_receipt_in(content_type, content),
                                   excerpt=excerpt(content.decode(_codec(charset), errors="replace"))), took

        async def reported(index: int, body: bytes, headers: dict[str, str]) -> tuple[
                ConnectorResult | DeliveryError, float]:
            try:
                ended = await one(body, headers)
            except Exception as exc:  # a bug here: this attempt's, not the batch's
                ended = Permanent(f"internal error: {type(exc).__name__}: {exc}"), 0.0
            if on_end is not None:
                with contextlib.suppress(Exception):  # the list returned still carries it
                    on_end(index, *ended)
            return ended

        outcomes = await asyncio.gather(*(reported(i, b, h) for i, (b, h) in enumerate(requests)),
                                        return_exceptions=True)  # a call cancelled: that attempt's end, not the batch's
        return [o if isinstance(o, tuple) else (Retryable(f"the call was cut: {type(o).__name__}"), 0.0)
                for o in outcomes]

    def close(self) -> None:
        self._client.close()
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):  # the loop may be gone with the process
                aio.run(session.close(), timeout=5)


# Concurrent drains of a slow destination each hold a batch's calls open: their connections are what limits the
# rate (a pool of 128 at 200 ms a call carries 640 calls a second), so the pool holds a few batches.
DRAINS_IN_FLIGHT = 4


def batch_connections(concurrency: int, batch: int) -> int:
    """Connections the batch path may open to one subscriber, per worker process."""
    return max(concurrency, batch * DRAINS_IN_FLIGHT)


def build_session(pool: int) -> aiohttp.ClientSession:
    """The batch path's client: aiohttp, whose pool costs a few microseconds a request where httpx's async pool
    spends most of a batch's CPU in connection bookkeeping (measured: ``bench/README.md``; encode/httpx#3215).
    Imported here, not at the top: every process that loads the registry would pay for it, only workers use it."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool),
        headers={"User-Agent": "motcua-relay/0.1"},
        auto_decompress=True,
        trust_env=False,  # the proxy is read once (env_proxy): aiohttp's own reading parses ~/.netrc per request
    )


def env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY, ALL_PROXY and NO_PROXY name for ``url``, as httpx reads them for the single
    path; ``None`` for a direct connection."""
    target = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(target.hostname or "", proxies):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return proxies.get(target.scheme) or proxies.get("all")


def _transport_error(exc: BaseException) -> DeliveryError:
    """aiohttp's exceptions as the same classes :func:`connectors.base.map_transport_errors` gives httpx's."""
    import aiohttp

    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return Retryable(f"timeout ({type(exc).__name__})")
    if isinstance(exc, aiohttp.InvalidURL):
        return Permanent(f"bad destination URL: {exc}")
    if isinstance(exc, aiohttp.ClientConnectionError):
        return Retryable(f"connection failed ({type(exc).__name__}: {exc})")
    return Retryable(f"HTTP transport error ({type(exc).__name__}: {exc})")


def _receipt_id(response: httpx.Response) -> str | None:
    return _receipt_in(response.headers.get("content-type", ""), response.content)


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
