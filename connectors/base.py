"""What every connector shares: the error classes, the result record and HTTP plumbing.

The error classes decide what happens to a delivery::

    DeliveryError                 an attempt failed; ``reason`` says why in words an operator reads
    ├── Retryable                 timeouts, connection errors, 408/425/429/5xx, documented transient codes
    ├── Permanent                 validation and business rejections: dead-letter at once
    ├── AuthExpired               the credential expired: refresh it once, then retry
    ├── Rerouted                  this channel cannot reach the recipient: a delivery to ``destination``
    │                             (a fallback such as SMS) replaces this one
    └── Paused                    not this message's fault: the destination cannot take any message now (its
                                  account's balance is spent, a template is disabled): wait, spend no attempt,
                                  never dead-letter

Every connector maps its service's answers to these in one table, and
:func:`map_transport_errors` translates the transport's own exceptions, so that no
httpx or zeep exception ever reaches the delivery engine.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

EXCERPT_LIMIT = 1000


class DeliveryError(Exception):
    """An attempt that did not deliver. Subclasses say what to do about it."""

    outcome: ClassVar[str] = "error"

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = None,
        excerpt: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.excerpt = excerpt
        self.retry_after = retry_after

    def within(self, what: str) -> DeliveryError:
        """The same error, its reason prefixed with what was being done (``"bank CreateBill: HTTP 503"``)."""
        self.reason = f"{what}: {self.reason}"
        self.args = (self.reason,)
        return self


class Retryable(DeliveryError):
    outcome = "retryable"


class Permanent(DeliveryError):
    outcome = "permanent"


class AuthExpired(DeliveryError):
    outcome = "auth_expired"


class Rerouted(DeliveryError):
    outcome = "rerouted"

    def __init__(self, reason: str, *, destination: str, **kwargs: Any) -> None:
        super().__init__(reason, **kwargs)
        self.destination = destination


class Paused(DeliveryError):
    """The destination cannot take any message now, whatever the message (an account out of balance, a template
    disabled): the delivery waits ``retry_after`` seconds and the attempt does not count against its budget.

    ``condition`` names the cause for operators and metrics (``"balance"``). ``sent`` is False when the deliverer
    held the delivery without calling the service (another delivery already met the condition): the engine then
    records no attempt at all; when True the attempt row is kept, for the audit, with the service's answer.
    """

    outcome = "paused"

    def __init__(self, reason: str, *, condition: str, sent: bool = True, **kwargs: Any) -> None:
        super().__init__(reason, **kwargs)
        self.condition = condition
        self.sent = sent


@dataclass(frozen=True, slots=True)
class ConnectorResult:
    """A successful call, as stored in the attempt row."""

    status_code: int | None
    external_ref: str | None = None
    excerpt: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# One attempt of a batch has ended: its index in the batch, its result or error, and how long it took (ms).
AttemptEnded = Callable[[int, ConnectorResult | DeliveryError, float], None]


def excerpt(text: str | bytes | None, limit: int = EXCERPT_LIMIT) -> str | None:
    """The head of a response body, for the attempt row (masking is the caller's job)."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def classify_http_status(response: httpx.Response) -> DeliveryError | None:
    """The generic HTTP answer table; connectors refine it with their service's codes."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    body = excerpt(response.text)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (408, 425, 429) or status >= 500:
        return Retryable(f"HTTP {status}", status_code=status, excerpt=body, retry_after=retry_after)
    return Permanent(f"HTTP {status} rejected", status_code=status, excerpt=body)


@contextmanager
def map_transport_errors() -> Iterator[None]:
    """Translate httpx's exceptions into our classes (``raise … from exc``)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise Retryable(f"timeout ({type(exc).__name__})") from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        raise Retryable(f"connection failed ({type(exc).__name__}: {exc})") from exc
    except httpx.UnsupportedProtocol as exc:
        raise Permanent(f"bad destination URL: {exc}") from exc
    except httpx.HTTPError as exc:
        raise Retryable(f"HTTP transport error ({type(exc).__name__}: {exc})") from exc


_attempt_deadline: ContextVar[float | None] = ContextVar("attempt_deadline", default=None)


@contextmanager
def attempt_deadline(seconds: float | None) -> Iterator[None]:
    """Every call made inside ends within ``seconds`` from now (``None``: no limit).

    An attempt that makes several calls (look up, update, append) must end within its
    deadline: its lease is renewed only that long, after which the sweeper starts a second attempt.
    """
    token = _attempt_deadline.set(time.monotonic() + seconds if seconds else None)
    try:
        yield
    finally:
        _attempt_deadline.reset(token)


def call_timeout(configured: httpx.Timeout) -> httpx.Timeout:
    """The configured timeouts, cut to what is left of the attempt; ``Retryable`` when nothing is."""
    deadline = _attempt_deadline.get()
    if deadline is None:
        return configured
    left = deadline - time.monotonic()
    if left < 1.0:
        raise Retryable("the attempt ran out of time before its next call (MOTCUA_ATTEMPT_DEADLINE_SECONDS)")

    def cut(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(connect=cut(configured.connect), read=cut(configured.read),
                         write=cut(configured.write), pool=cut(configured.pool))


def post_json(
    client: httpx.Client, url: str, what: str, *, headers: dict[str, str] | None = None,
    json: Any = None, data: dict[str, str] | None = None,
) -> tuple[Any, httpx.Response]:
    """POST and read a JSON answer: transport errors and HTTP statuses mapped (``what`` names the call
    in reasons), the attempt's deadline kept, a body that is not JSON retried (a gateway's error page)."""
    with map_transport_errors():
        response = client.post(url, json=json, data=data, headers=headers, timeout=call_timeout(client.timeout))
    error = classify_http_status(response)
    if error is not None:
        raise error.within(what)
    try:
        return response.json(), response
    except ValueError as exc:
        raise Retryable(f"{what}: the answer is not JSON", status_code=response.status_code,
                        excerpt=excerpt(response.text)) from exc


def request_envelope(
    client: httpx.Client, method: str, url: str, what: str, *, envelope_key: str = "code", json: Any = None,
    params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], int]:
    """Call a JSON API that answers its errors in an envelope (``{"code": …}``), whatever the HTTP status.

    An answer with ``envelope_key`` is returned for the service's own table to judge, 4xx/5xx included
    (their code says more than the status); one without it goes by the HTTP table, and a 2xx that is
    not a JSON object is retried (a gateway's page). ``what`` names the call in reasons.
    """
    with map_transport_errors():
        response = client.request(method, url, json=json, params=params, headers=headers,
                                  timeout=call_timeout(client.timeout))
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and (envelope_key in payload or response.status_code < 400):
        return payload, response.status_code
    error = classify_http_status(response)
    if error is None:
        error = Retryable("the answer is not JSON", status_code=response.status_code,
                          excerpt=excerpt(response.text))
    raise error.within(what)


def build_http_client(connect: float, read: float, max_connections: int = 100) -> httpx.Client:
    """A pooled client with explicit connect and read timeouts; built once per destination."""
    return httpx.Client(
        timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=connect + read),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers={"User-Agent": "motcua-relay/0.1"},
        follow_redirects=False,
    )


class Stopwatch:
    """Milliseconds since creation."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self._start) * 1000.0
