"""Zalo ZNS notifications: one template message per lifecycle event the citizen consented to hear about.

The message (``config/zalo.toml``) is sent with a ``tracking_id`` derived from the event and template; before a
repeated send, the receipts the Official Account's webhook brought are checked, and a message Zalo reported
received is not sent again. Outside office hours (``quiet_hours``, default 21:00–07:00 Vietnam time) and while
the daily quota is spent, deliveries wait without spending attempts. A phone without Zalo (or a citizen who
refuses ZNS) gets an SMS instead: a delivery of its own to the ``fallback`` destination, and this one ends
``superseded`` saying so.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Annotated

import redis
import structlog
from pydantic import SecretStr, field_validator

from adapters.zalo import MappingError, QuietHours, message_for, next_midnight
from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from config.zalo_templates import load_templates
from connectors.base import ConnectorResult, Permanent, Rerouted, build_http_client
from connectors.credentials import TokenPair, TokenPairStore
from connectors.zalo import QuotaSpent, Unreachable, ZaloConnector
from schemas.events import Event
from services.base import Context, Deliverer
from store import receipts

log = structlog.get_logger(__name__)

DEFAULT_ZNS_URL = "http://127.0.0.1:8703"
DEFAULT_QUIET_HOURS = "21:00-07:00"


class ZaloOptions(ServiceOptions):
    """A Zalo Official Account: the app that sends for it, its templates, when it may send, its SMS fallback."""

    url: HttpUrl = DEFAULT_ZNS_URL
    oauth_url: HttpUrl | None = None
    app_id: Annotated[SecretStr, Secret("MOTCUA_ZALO_APP_ID")]  # the Zalo app that sends for the OA
    app_secret: Annotated[SecretStr, Secret("MOTCUA_ZALO_APP_SECRET")]
    # verifies the OA webhook's X-ZEvent-Signature
    oa_secret_key: Annotated[SecretStr | None, Secret("MOTCUA_ZALO_OA_SECRET_KEY", required=False)] = None
    templates_file: str | None = None
    quiet_hours: str = DEFAULT_QUIET_HOURS
    fallback: str | None = None
    renew_ahead_seconds: float = 3600.0

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        QuietHours.parse(value)
        return value


class ZaloDeliverer(Deliverer[ZaloOptions]):
    """Adapter + connector for one Official Account."""

    def __init__(self, destination: Destination, options: ZaloOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.templates = load_templates(options.templates_file)
        self.quiet = QuietHours.parse(options.quiet_hours)
        self.fallback = options.fallback
        self._redis = context.redis
        self._quota_key = f"{context.settings.redis_prefix}:zalo:{destination.name}:quota_spent_until"
        self._quota_until = 0.0  # without Redis, this process's knowledge
        self.connector = ZaloConnector(
            zns_url=options.url, oauth_url=options.oauth_url or options.url,
            app_id=options.app_id.get_secret_value(), app_secret=options.app_secret,
            client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                     context.settings.worker_concurrency),
            pairs=TokenPairStore(context.redis, context.settings.redis_prefix), name=pair_name(destination.name),
            renew_ahead=options.renew_ahead_seconds,
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

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        try:
            message = message_for(event, self.templates)
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        already = receipts.received(self.context.engine, message.tracking_id)
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
        self.connector.close()


def pair_name(destination: str) -> str:
    """Where a Zalo destination's token pair is kept (``TokenPairStore``)."""
    return f"zalo:{destination}"


def set_token(pairs: TokenPairStore, destination: str, access_token: str, refresh_token: str,
              expires_in: float) -> None:
    """Store the Official Account's first pair (or a new one after a refresh token was lost)."""
    pairs.put(pair_name(destination), TokenPair(access_token, refresh_token, time.time() + expires_in))
