"""The Standard Webhooks wire contract: signing and verifying a request.

Used both ways: the intake verifies what the one-stop software signs, and the webhook
connector signs what the relay posts to subscribers. The scheme is
``base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))`` sent as ``v1,<sig>`` in
``webhook-signature`` (several space-separated signatures allowed), the key being the
base64 part of a ``whsec_…`` secret. Compatible with the reference ``standardwebhooks``
package both ways.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
TOLERANCE_SECONDS = 5 * 60
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret


class SignatureError(Exception):
    """The request is not signed by a key we hold, or not within the tolerance window."""


class SignedHeaders(BaseModel):
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str

    def as_headers(self) -> dict[str, str]:
        return {
            HEADER_ID: self.webhook_id,
            HEADER_TIMESTAMP: self.webhook_timestamp,
            HEADER_SIGNATURE: self.webhook_signature,
        }


def secret_key(secret: str) -> bytes:
    """The raw HMAC key of a ``whsec_…`` secret (a bare base64 string is accepted too)."""
    material = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(material, validate=True)
    except ValueError as exc:
        raise ValueError("webhook secret is not valid base64 (expected whsec_<base64>)") from exc


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    to_sign = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest())


def sign(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> SignedHeaders:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = _signature(secret_key(secret), msg_id, ts, body)
    return SignedHeaders(webhook_id=msg_id, webhook_timestamp=ts, webhook_signature="v1," + sig.decode())


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check a request's signature against every allowed secret; return its ``webhook-id``.

    Raises :class:`SignatureError` naming what is wrong (never which key was tried).
    """
    msg_id = headers.get(HEADER_ID)
    timestamp = headers.get(HEADER_TIMESTAMP)
    signature = headers.get(HEADER_SIGNATURE)
    if not msg_id or not timestamp or not signature:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(timestamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not a Unix timestamp") from exc
    current = time.time() if now is None else now
    if ts < current - tolerance:
        raise SignatureError("webhook-timestamp is too old")
    if ts > current + tolerance:
        raise SignatureError("webhook-timestamp is too far in the future")
    offered = [part.split(",", 1)[1].encode() for part in signature.split() if part.startswith("v1,")]
    if not offered:
        raise SignatureError("no v1 signature in webhook-signature")
    for secret in secrets:
        expected = _signature(secret_key(secret), msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise SignatureError("no matching signature")
