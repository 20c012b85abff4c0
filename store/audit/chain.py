"""The audit chain's form: how an entry and a checkpoint are written and hashed (no database, no network).

This module is the whole of what an inspector must trust besides SHA-256 and Ed25519, and
``docs/audit.md`` says the same in words. The relay writes with it; ``audit verify`` reads with it.

- An entry's ``content`` is canonical JSON (:func:`canonical`); personal data never enters it in clear:
  excerpts and error texts are there as their SHA-256 (:func:`optional_digest`).
- An entry's hash covers its chain, its number in the chain, the previous entry's hash and the SHA-256 of its
  content (:func:`entry_hash`), so a proof that an entry is in the chain needs only the digests of the entries
  after it, not their content.
- A checkpoint's body is canonical JSON naming every chain's head and the previous checkpoint's hash; the
  relay signs its bytes with Ed25519 and may have them time-stamped (RFC 3161, over their SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

FORMAT = "motcua-audit/1"
GENESIS = "0" * 64  # the hash before a chain's first entry, and before the first checkpoint

EntryKind = Literal["attempt", "outcome"]
# what an outcome entry records: a delivery's status changed without an attempt
OutcomeStatus = Literal["superseded", "dead", "replayed", "rerouted"]

# the attempt row's own fields in an attempt entry's content: what `audit verify` checks against the ledger's row
ATTEMPT_ROW_FIELDS = (
    "attempt_id", "delivery", "event", "event_hash", "destination", "attempt", "started_at", "duration_ms",
    "outcome", "status_code", "external_ref", "excerpt_hash", "error_hash",
)


def canonical(value: Any) -> str:
    """The one text of a JSON value: keys sorted, no spaces, UTF-8 as is, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(text: str | bytes) -> str:
    """SHA-256, in hex, of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def optional_digest(text: str | None) -> str | None:
    return None if text is None else digest(text)


def stamp(moment: datetime) -> str:
    """A time as the chain writes it: UTC, microseconds, ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the audit chain")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def read_stamp(text: str) -> datetime:
    """A time exactly as :func:`stamp` writes it (``strptime`` would take ``8:5:3.1Z`` too), and some eighty
    times faster than ``strptime``: an archive holds hundreds of thousands."""
    if not _STAMP.fullmatch(text):
        raise ValueError(f"not a time as the audit chain writes it (YYYY-MM-DDTHH:MM:SS.ffffffZ): {text!r}")
    return datetime.fromisoformat(text)


def entry_hash(chain: str, seq: int, prev_hash: str, content_digest: str) -> str:
    """The hash of entry ``seq`` of ``chain``: SHA-256 of the format's name, the chain, the number, the previous
    entry's hash and the content's SHA-256, one per line."""
    return digest(f"{FORMAT}\n{chain}\n{seq}\n{prev_hash}\n{content_digest}")


def attempt_content(
    *, attempt_id: int, delivery_id: int, event_id: str, event_hash: str, destination: str, number: int,
    started_at: datetime, duration_ms: float | None, outcome: str | None, status_code: int | None,
    external_ref: str | None, excerpt: str | None, error: str | None, status: str | None, replays: int,
) -> dict[str, Any]:
    """An attempt's entry: the attempt row's fields (:data:`ATTEMPT_ROW_FIELDS`) and what the delivery became
    (``status``; ``None`` when the attempt's end no longer changed it: its lease was lost meanwhile)."""
    return {
        "v": 1, "kind": "attempt", "attempt_id": attempt_id, "delivery": delivery_id, "event": event_id,
        "event_hash": event_hash, "destination": destination, "attempt": number, "started_at": stamp(started_at),
        "duration_ms": duration_ms, "outcome": outcome, "status_code": status_code,
        "external_ref": external_ref or None, "excerpt_hash": optional_digest(excerpt),
        "error_hash": optional_digest(error), "status": status, "replays": replays,
    }


def attempt_row_fields(content: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an attempt entry's content that its ledger row must still say."""
    return {name: content.get(name) for name in ATTEMPT_ROW_FIELDS}


def outcome_content(
    *, delivery_id: int, event_id: str, event_hash: str, destination: str, status: OutcomeStatus,
    at: datetime, reason: str | None, replays: int, links: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A delivery's status changed without an attempt: superseded or out of attempts at its claim, replayed from
    a dead letter (``links["dead_letter"]`` names the entry that made it one), rerouted (``links["to"]``)."""
    return {
        "v": 1, "kind": "outcome", "delivery": delivery_id, "event": event_id, "event_hash": event_hash,
        "destination": destination, "status": status, "at": stamp(at), "reason_hash": optional_digest(reason),
        "replays": replays, **(links or {}),
    }


class Head(NamedTuple):
    seq: int
    hash: str


def key_id(public_key_raw: bytes) -> str:
    """A signing key's name: the first 16 hex digits of the SHA-256 of its raw 32 bytes."""
    return digest(public_key_raw)[:16]


def checkpoint_body(number: int, made_at: datetime, heads: Mapping[str, Head], prev: str, key: str) -> str:
    """The text a checkpoint signs: its number, time, every chain's head, the previous checkpoint's hash (its
    body's SHA-256; :data:`GENESIS` before the first) and the signing key's id."""
    return canonical({
        "v": 1, "format": FORMAT, "checkpoint": number, "made_at": stamp(made_at),
        "heads": {chain: {"seq": head.seq, "hash": head.hash} for chain, head in sorted(heads.items())},
        "prev": prev, "key": key,
    })


def checkpoint_heads(body: Mapping[str, Any]) -> dict[str, Head]:
    return {chain: Head(int(h["seq"]), str(h["hash"])) for chain, h in body["heads"].items()}
