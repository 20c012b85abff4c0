"""An RFC 3161 time-stamping authority (TSA): the client that has the audit chain's checkpoints time-stamped.

RFC 3161's HTTP transport (§3.4): ``POST {url}`` with ``Content-Type: application/timestamp-query`` and a DER
TimeStampReq, answered HTTP 200 ``application/timestamp-reply`` with a DER TimeStampResp. The request and the reply
are :mod:`schemas.timestamps`' (the module ``audit verify`` checks tokens with); this module only carries them.
The simulator is ``sandbox/tsa.py``.

What :meth:`TimestampClient.stamp` raises::

    TimestampUnavailable       no answer to read: a timeout, no connection, an HTTP status other than 200,
                               another content type (weather: try again at the next checkpoint)
    ValueError
    ├── TimestampRefused       the authority answered no: ``status`` and ``fail_info`` in RFC 3161's words
    │                          (``systemFailure`` is the authority's weather; the other bits are ours to fix)
    └── TimestampInvalid       the answer is not a TimeStampResp, its token does not echo our nonce, or (with
                               ``certificates_pem``) the token does not verify under the trusted certificates

Reasons name the authority by its host only: a TSA's URL may carry credentials in its user part or its query.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from types import TracebackType

import httpx

from schemas.timestamps import TimestampInvalid, TimestampRefused, reply_token, request, verify_token

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
CONNECT_TIMEOUT = 5.0  # seconds; never more than the whole timeout

__all__ = ["TimestampClient", "TimestampInvalid", "TimestampRefused", "TimestampUnavailable"]


class TimestampUnavailable(Exception):
    """The authority gave no answer to read; ``reason`` says why, without the URL's secrets."""

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class TimestampClient:
    """Time-stamps SHA-256 digests at one authority.

    ``timeout`` bounds each stage of the call (connect at most :data:`CONNECT_TIMEOUT`); a ``client`` given is
    used as it is and left open, else one is made and :meth:`close` closes it. With ``certificates_pem`` (the
    authority's certificates) each token is verified before it is returned.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, client: httpx.Client | None = None,
                 certificates_pem: Sequence[str] | None = None) -> None:
        self.url = url
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        self.certificates_pem = tuple(certificates_pem) if certificates_pem is not None else None
        self._own = client is None
        self._client = client if client is not None else httpx.Client(timeout=self.timeout, follow_redirects=False)
        self._where = httpx.URL(url).host or "the time-stamping authority"

    def stamp(self, digest: bytes) -> bytes:
        """A TimeStampToken (DER) over ``digest``, a SHA-256 (32 bytes)."""
        nonce = secrets.randbits(64)
        query = request(digest, nonce)
        try:
            response = self._client.post(self.url, content=query, headers={"Content-Type": QUERY_TYPE},
                                         timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise TimestampUnavailable(f"TSA {self._where}: timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise TimestampUnavailable(f"TSA {self._where}: no answer ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise TimestampUnavailable(f"TSA {self._where}: HTTP {response.status_code}",
                                       status_code=response.status_code)
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != REPLY_TYPE:
            raise TimestampUnavailable(f"TSA {self._where}: the answer is {media_type or 'untyped'}, not {REPLY_TYPE}",
                                       status_code=response.status_code)
        try:
            token = reply_token(response.content, nonce=nonce)
            if self.certificates_pem is not None:
                verify_token(token, digest, self.certificates_pem, nonce=nonce)
        except TimestampRefused as exc:
            raise TimestampRefused(f"TSA {self._where}: {exc.reason}", status=exc.status, fail_info=exc.fail_info,
                                   text=exc.text) from exc
        except TimestampInvalid as exc:
            raise TimestampInvalid(f"TSA {self._where}: {exc}") from exc
        return token

    def close(self) -> None:
        if self._own:
            self._client.close()

    def __enter__(self) -> TimestampClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

