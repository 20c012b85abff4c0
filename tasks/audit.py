"""The audit chain's beat job (a signed checkpoint every minute while the chains grow, every hour at least) and its
fail-closed gate (docs/audit.md).

A checkpoint that cannot be made is an error in the log (``audit.checkpoint_failed``) and shows in the metrics'
``motcua_audit_checkpoint_age_seconds``, which the shipped Prometheus rules alert on. With
``MOTCUA_AUDIT_FAIL_CLOSED``, deliveries stop while the newest complete checkpoint (signed, and time-stamped when an
authority is configured) is older than ``MOTCUA_AUDIT_FAIL_CLOSED_AFTER_SECONDS``: they wait, spending no attempt,
as X-Road stops its message exchange when it cannot time-stamp its log.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from config.settings import Settings
from connectors.tsa import TimestampClient
from services.base import Hold
from store.audit.checkpoints import Signer, SigningKeyError, last_complete_at, make_checkpoint
from tasks.app import app
from tasks.runtime import Runtime, get_runtime

log = structlog.get_logger(__name__)

GATE_CACHE_SECONDS = 5.0  # how long a drain trusts its last look at the newest checkpoint
FAIL_CLOSED_RECHECK_SECONDS = 30.0  # how long a delivery held by fail-closed waits before it is looked at again


@app.task(name="relay.audit_checkpoint")
def checkpoint() -> dict[str, Any]:
    """Sign the audit chains' heads, when they moved or the last checkpoint is an hour old."""
    rt = get_runtime()
    with rt.exclusive("audit-checkpoint", timeout=120.0) as mine:
        return run_checkpoint(rt) if mine else {"skipped": True}


def run_checkpoint(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    settings = rt.settings
    if not settings.audit_chain:
        return {"made": None, "why": "the audit chain is off (MOTCUA_AUDIT_CHAIN=false)"}
    try:
        signer = signer_of(settings)
    except SigningKeyError as exc:
        log.error("audit.checkpoint_failed", error=f"MOTCUA_AUDIT_SIGNING_KEY: {exc}",
                  hint="`motcua-relay audit keygen` makes a key")
        return {"made": None, "error": str(exc)}
    if signer is None:
        log.error("audit.checkpoint_failed", error="no signing key (MOTCUA_AUDIT_SIGNING_KEY)",
                  hint="`motcua-relay audit keygen` makes a key; until then the chains grow unsigned")
        return {"made": None, "error": "no signing key"}
    client = timestamp_client(settings)
    try:
        made = make_checkpoint(rt.engine, signer, now or datetime.now(UTC),
                               idle_every=settings.audit_idle_checkpoint_seconds,
                               timestamp=client.stamp if client is not None else None)
    except Exception as exc:
        log.error("audit.checkpoint_failed", error=str(exc))
        raise
    finally:
        if client is not None:
            client.close()
    if made is None:
        return {"made": None}
    if made.stamp_error is not None:
        log.error("audit.timestamp_failed", checkpoint=made.number, error=made.stamp_error,
                  hint="the checkpoint is signed without a time-stamp; check MOTCUA_AUDIT_TSA_URL")
    log.info("audit.checkpoint", checkpoint=made.number, chains=made.chains, stamped=made.stamped)
    return {"made": made.number, "chains": made.chains, "stamped": made.stamped}


def signer_of(settings: Settings) -> Signer | None:
    key = settings.audit_signing_key
    return None if key is None else _signer(key.get_secret_value())


@functools.lru_cache(maxsize=4)
def _signer(text: str) -> Signer:
    return Signer.from_text(text)


def tsa_certificates(settings: Settings) -> list[str]:
    """The authority's certificates, PEM, one string each, from ``MOTCUA_AUDIT_TSA_CERTIFICATE_FILE``."""
    path = settings.audit_tsa_certificate_file
    if path is None:
        return []
    return split_pem(Path(path).read_text())


def split_pem(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + end + "\n" for part in text.split(end) if "-----BEGIN" in part]


def timestamp_client(settings: Settings) -> TimestampClient | None:
    if not settings.audit_tsa_url:
        return None
    return TimestampClient(settings.audit_tsa_url, timeout=10.0,
                           certificates_pem=tsa_certificates(settings) or None)


def checkpoint_age(rt: Runtime, now: datetime) -> float | None:
    """Seconds since the newest complete checkpoint (``inf`` when none was made); ``None`` with the chain off."""
    if not rt.settings.audit_chain:
        return None
    last = last_complete_at(rt.engine, stamped=bool(rt.settings.audit_tsa_url))
    return math.inf if last is None else max(0.0, (now - last).total_seconds())


class Gate:
    """Whether deliveries may go (fail-closed): the newest complete checkpoint's age, looked up at most every
    :data:`GATE_CACHE_SECONDS` per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked = -1e18
        self._last: datetime | None = None
        self._closed = False

    def hold(self, rt: Runtime, now: datetime) -> Hold | None:
        """The hold every delivery waits under now (until :data:`FAIL_CLOSED_RECHECK_SECONDS` from now, saying
        why), or ``None``; logged once each time the gate closes."""
        settings = rt.settings
        if not (settings.audit_fail_closed and settings.audit_chain):
            return None
        with self._lock:
            if time.monotonic() - self._checked > GATE_CACHE_SECONDS:
                self._last = last_complete_at(rt.engine, stamped=bool(settings.audit_tsa_url))
                self._checked = time.monotonic()
            last = self._last
        limit = timedelta(seconds=settings.audit_fail_closed_after_seconds)
        if last is not None and now - last <= limit:
            self._closed = False
            return None
        since = "none was ever made" if last is None else f"the last was made at {last:%Y-%m-%d %H:%M:%S} UTC"
        why = f"audit: no complete checkpoint for {limit.total_seconds():g} s ({since}); fail-closed"
        if not self._closed:
            self._closed = True
            log.warning("delivery.audit_fail_closed", reason=why)
        return Hold(until=now + timedelta(seconds=FAIL_CLOSED_RECHECK_SECONDS), why=why)


gate = Gate()
