"""Signed checkpoints of the audit chain's heads (docs/audit.md).

A checkpoint is made when a chain moved since the last one (the beat job runs every minute), or when the last is an
hour old even if nothing moved, so that an inspector can tell a quiet hour from a gap. Its body is signed with the
relay's Ed25519 key and, when a time-stamping authority is configured, time-stamped (RFC 3161): the time-stamp is
asked for outside any transaction, and a checkpoint it could not get is still made and signed, without one (an
alert, and what fail-closed counts).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from store.audit.chain import GENESIS, Head, checkpoint_body, checkpoint_heads, digest, key_id
from store.tables import audit_checkpoints, audit_heads


class SigningKeyError(ValueError):
    """The configured signing key cannot be read (its text is never repeated)."""


@dataclass(frozen=True)
class Signer:
    """The relay's Ed25519 checkpoint key."""

    private: Ed25519PrivateKey

    @classmethod
    def from_text(cls, text: str) -> Signer:
        """A PKCS#8 PEM private key, or the base64 of its raw 32 bytes (what ``audit keygen`` prints)."""
        text = text.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_private_key(text.encode(), password=None)
            else:
                raw = base64.b64decode(text, validate=True)
                if len(raw) != 32:
                    raise SigningKeyError(f"the key is {len(raw)} bytes, not Ed25519's 32")
                key = Ed25519PrivateKey.from_private_bytes(raw)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, SigningKeyError):
                raise
            raise SigningKeyError("not a PEM private key nor the base64 of 32 bytes") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"a {type(key).__name__.removesuffix('PrivateKey').removeprefix('_')} key, "
                                  "not Ed25519")
        return cls(key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    def private_text(self) -> str:
        raw = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        return base64.b64encode(raw).decode()

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def public_raw(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_pem(self) -> str:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def key_id(self) -> str:
        return key_id(self.public_raw)

    def sign(self, body: str) -> str:
        return base64.b64encode(self.private.sign(body.encode())).decode()


@dataclass(frozen=True, slots=True)
class Made:
    """A checkpoint made: its number and time, how many chains it names, whether it is time-stamped (and why not)."""

    number: int
    made_at: datetime
    chains: int
    stamped: bool
    stamp_error: str | None = None


@dataclass(frozen=True, slots=True)
class Latest:
    number: int
    made_at: datetime
    hash: str
    heads: dict[str, Head]
    stamped: bool


def latest(engine: Engine) -> Latest | None:
    """The newest checkpoint, with the heads it named."""
    c = audit_checkpoints.c
    with engine.connect() as conn:
        row = conn.execute(select(c.number, c.made_at, c.hash, c.body, c.tsa_token)
                           .order_by(c.number.desc()).limit(1)).one_or_none()
    if row is None:
        return None
    return Latest(row.number, row.made_at, row.hash, checkpoint_heads(json.loads(row.body)), row.tsa_token is not None)


def last_complete_at(engine: Engine, *, stamped: bool) -> datetime | None:
    """When the newest checkpoint was made (with ``stamped``, the newest with a time-stamp)."""
    c = audit_checkpoints.c
    query = select(func.max(c.made_at))
    with engine.connect() as conn:
        return conn.execute(query.where(c.tsa_token.is_not(None)) if stamped else query).scalar()


def heads(engine: Engine) -> dict[str, Head]:
    with engine.connect() as conn:
        return {r.chain: Head(r.seq, r.hash) for r in conn.execute(select(audit_heads.c.chain, audit_heads.c.seq,
                                                                          audit_heads.c.hash))}


def make_checkpoint(
    engine: Engine, signer: Signer, now: datetime, *, idle_every: float = 3600.0,
    timestamp: Callable[[bytes], bytes] | None = None,
) -> Made | None:
    """A new checkpoint of every chain's head, when one moved since the last or the last is ``idle_every`` seconds
    old; ``None`` when none was due (or another process made this number meanwhile).

    ``timestamp(digest) -> token`` asks a time-stamping authority (its failure is said in ``stamp_error``; the
    checkpoint is made without a token)."""
    current = heads(engine)
    last = latest(engine)
    if last is not None and last.heads == current and now - last.made_at < timedelta(seconds=idle_every):
        return None
    number = 1 if last is None else last.number + 1
    body = checkpoint_body(number, now, current, last.hash if last is not None else GENESIS, signer.key_id)
    token: str | None = None
    stamp_error: str | None = None
    if timestamp is not None:
        try:
            token = base64.b64encode(timestamp(bytes.fromhex(digest(body)))).decode()
        except Exception as exc:  # whatever the authority did wrong, the checkpoint is still made and signed
            stamp_error = str(exc) or type(exc).__name__
    try:
        with engine.begin() as conn:
            conn.execute(audit_checkpoints.insert().values(
                number=number, made_at=now, body=body, hash=digest(body), signature=signer.sign(body),
                key_id=signer.key_id, public_key=signer.public_pem, tsa_token=token))
    except IntegrityError:  # another beat made this number first
        return None
    return Made(number, now, len(current), token is not None, stamp_error)
