"""Canonical event → signed-webhook request. Pure: the connector does the I/O."""

from __future__ import annotations

from schemas.events import Event, canonical_json, event_json
from schemas.webhook import SignedHeaders, sign


def webhook_body(event: Event) -> bytes:
    """The subscriber receives the canonical event itself: the very bytes the ledger stores (its canonical JSON:
    sorted keys, compact, UTF-8), so what a subscriber hashes is what the ledger holds."""
    return canonical_json(event_json(event)).encode("utf-8")


def webhook_headers(
    event: Event, idempotency_key: str, secret: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers, with the delivery's idempotency key as the message id."""
    signed: SignedHeaders = sign(secret, idempotency_key, body, timestamp)
    return {
        **signed.as_headers(),
        "Idempotency-Key": idempotency_key,
        "Content-Type": "application/json",
        "X-Motcua-Event-Type": event.type,
    }
