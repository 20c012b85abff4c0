"""Zalo notifications to citizens, and their SMS fallback.

Out (``kind = "zalo"``): a lifecycle event the citizen consented to hear about becomes one ZNS
template message (``config/zalo.toml``), sent with a ``tracking_id`` derived from the event and
template. Before a repeated send, the receipts the Official Account's webhook brought are
checked: a message Zalo reported received is not sent again. Outside office hours
(``quiet_hours``, default 21:00–07:00 Vietnam time) and while the daily quota is spent,
deliveries wait, without spending attempts, until they may go. A phone without Zalo (or a
citizen who refuses ZNS) gets an SMS instead: a delivery of its own to the ``fallback``
destination (``kind = "sms"``), and the Zalo delivery ends ``superseded`` saying so.

In: ``POST /v1/callbacks/zalo`` (``api/callbacks.py``) records ``user_received_message`` and
``user_seen_message`` in the ledger's receipts.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from pydantic import SecretStr

from adapters.zalo import MappingError, QuietHours, message_for, next_midnight, normalise_phone
from adapters.zalo import fill as fill_text
from config.routing import Destination
from config.settings import Settings
from config.zalo_templates import load_templates
from connectors.base import ConnectorResult, Permanent, Rerouted, build_http_client
from connectors.credentials import TokenPairStore
from connectors.sms import SmsConnector
from connectors.zalo import QuotaSpent, Unreachable, ZaloConnector
from store import receipts
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)

DEFAULT_ZNS_URL = "http://127.0.0.1:8703"
DEFAULT_QUIET_HOURS = "21:00-07:00"


class ZaloDeliverer:
    """Adapter + connector for one Official Account."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None) -> None:
        self.name = destination.name
        self.templates = load_templates(destination.option("templates_file"))
        self.quiet = QuietHours.parse(str(destination.option("quiet_hours", DEFAULT_QUIET_HOURS)))
        self.fallback: str | None = destination.option("fallback")
        self._redis = client
        self._quota_key = f"{settings.redis_prefix}:zalo:{destination.name}:quota_spent_until"
        self._quota_until = 0.0  # without Redis, this process's knowledge
        app_id, app_env = destination.secret("app_id", "MOTCUA_ZALO_APP_ID")
        secret, secret_env = destination.secret("app_secret", "MOTCUA_ZALO_APP_SECRET")
        self._missing = [str(env) for value, env in ((app_id, app_env), (secret, secret_env)) if not value]
        self.connector: ZaloConnector | None = None
        if not self._missing:
            url = str(destination.option("url", DEFAULT_ZNS_URL))
            self.connector = ZaloConnector(
                zns_url=url,
                oauth_url=str(destination.option("oauth_url", url)),
                app_id=str(app_id),
                app_secret=SecretStr(str(secret)),
                client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                         settings.worker_concurrency),
                pairs=TokenPairStore(client, settings.redis_prefix),
                name=f"zalo:{destination.name}",
                renew_ahead=float(destination.option("renew_ahead_seconds", 3600)),
            )

    # ------------------------------------------------------------------ when

    def not_before(self, now: datetime) -> tuple[datetime, str] | None:
        """Quiet hours, or a spent daily quota: when the delivery may go, and why it waits."""
        if self.quiet is not None and (until := self.quiet.until(now)) is not None:
            return until, f"quiet hours ({self.quiet.start:%H:%M}–{self.quiet.end:%H:%M}): sent at {until:%H:%M}"
        spent_until = self._spent_until()
        if spent_until > now.timestamp():
            return (datetime.fromtimestamp(spent_until, UTC),
                    "Zalo daily quota spent: waiting for the next day's quota (00:00)")
        return None

    def _spent_until(self) -> float:
        if self._redis is None:
            return self._quota_until
        try:
            value = self._redis.get(self._quota_key)
        except redis.RedisError:
            return self._quota_until
        return float(value) if value else 0.0

    def _quota_spent(self, now: datetime) -> None:
        until = next_midnight(now).timestamp()
        self._quota_until = until
        log.warning("zalo.quota_spent", destination=self.name, until=datetime.fromtimestamp(until, UTC).isoformat())
        if self._redis is not None:
            with contextlib.suppress(redis.RedisError):  # this process still knows it
                self._redis.set(self._quota_key, str(until), exat=int(until) + 60)

    # ------------------------------------------------------------------ send

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        if self.connector is None:
            raise Permanent(f"Zalo app not configured: set {' and '.join(self._missing)}")
        try:
            message = message_for(event, self.templates)
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        engine = get_runtime().engine
        already = receipts.received(engine, message.tracking_id)
        if already is not None:  # an earlier attempt's send arrived (its answer was lost)
            return ConnectorResult(status_code=200, external_ref=already.msg_id,
                                   excerpt=f"already received by the citizen (tracking_id {message.tracking_id})")
        try:
            sent = self.connector.send(message.phone, message.template_id, message.data, message.tracking_id)
        except QuotaSpent:
            self._quota_spent(datetime.now(UTC))
            raise
        except Unreachable as exc:
            if self.fallback and message.sms:
                raise Rerouted(exc.reason, destination=self.fallback, status_code=exc.status_code,
                               excerpt=exc.excerpt) from exc
            raise
        if sent.remaining_quota == 0:
            self._quota_spent(datetime.now(UTC))
        return ConnectorResult(status_code=200, external_ref=sent.msg_id,
                               excerpt=f"tracking_id {message.tracking_id}; {sent.excerpt or ''}")

    def close(self) -> None:
        if self.connector is not None:
            self.connector.close()


class SmsDeliverer:
    """The SMS text of the event's template (``config/zalo.toml``, ``sms``) through a brandname gateway."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None) -> None:
        self.templates = load_templates(destination.option("templates_file"))
        key, key_env = destination.secret("api_key", "MOTCUA_SMS_API_KEY")
        url = destination.option("url")
        if not url:
            raise ValueError(f"destination {destination.name}: the SMS gateway needs a url")
        self._missing = key_env
        self.connector = SmsConnector(
            url=str(url), api_key=SecretStr(key), brandname=str(destination.option("brandname", "UBND")),
            client=build_http_client(destination.timeouts.connect, destination.timeouts.read, 16),
        ) if key else None

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        if self.connector is None:
            raise Permanent(f"SMS gateway not configured: set {self._missing}")
        spec = self.templates.templates.get(str(event.get("type")))
        if spec is None or not spec.sms:
            raise Permanent(f"no SMS text for {event.get('type')} in the templates file")
        applicant = event.get("applicant") or {}
        try:
            phone = normalise_phone(str(applicant.get("phone") or ""))
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        text = fill_text(spec.sms, event, self.templates.labels).strip()
        sent = self.connector.send(phone, text, idempotency_key)
        return ConnectorResult(status_code=200, external_ref=sent.sms_id, excerpt=sent.excerpt)

    def close(self) -> None:
        if self.connector is not None:
            self.connector.close()


def set_token(pairs: TokenPairStore, destination: str, access_token: str, refresh_token: str,
              expires_in: float) -> None:
    """Store the Official Account's first pair (or a new one after a refresh token was lost)."""
    from connectors.credentials import TokenPair

    pairs.put(f"zalo:{destination}", TokenPair(access_token, refresh_token, time.time() + expires_in))
