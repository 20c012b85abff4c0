"""Canonical event → signed-webhook request. Pure: the connector does the I/O."""

from __future__ import annotations

import json
from typing import Any

from schemas.webhook import SignedHeaders, sign


def webhook_body(event: dict[str, Any]) -> bytes:
    """The subscriber receives the canonical event itself, compact UTF-8 JSON."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def webhook_headers(
    event: dict[str, Any], idempotency_key: str, secret: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers, with the delivery's idempotency key as the message id."""
    signed: SignedHeaders = sign(secret, idempotency_key, body, timestamp)
    return {
        **signed.as_headers(),
        "Idempotency-Key": idempotency_key,
        "Content-Type": "application/json",
        "X-Motcua-Event-Type": str(event["type"]),
    }
