"""Zalo ZNS notifications: one template message per lifecycle event the citizen consented to hear about.

The message (``config/zalo.toml``) is sent with a ``tracking_id`` derived from the event and template; before a
repeated send, the receipts the Official Account's webhook brought are checked, and a message Zalo reported
received is not sent again. Outside office hours (``quiet_hours``, default 21:00–07:00 Vietnam time) deliveries
wait without spending attempts. A phone without Zalo (or a citizen who refuses ZNS) gets an SMS instead: a
delivery of its own to the ``fallback`` destination, and this one ends ``superseded`` saying so.

Account-level conditions (``connectors.zalo.AccountPaused``: the ZNS balance spent, the OA's or a template's daily
limit, a template disabled or not approved, the refresh token refused) pause the destination, or the template,
in Redis for every worker (``connectors.pauses``): its deliveries wait without spending attempts and are never
dead-lettered. A condition with a known end (a daily limit: 00:00) ends by itself; for the others one delivery
is let through every ``pause_probe_every`` seconds: when it goes through the pause is lifted and what it held is
released at once (:func:`resume`, also what ``motcua-relay zalo resume`` does). Held deliveries come back at
least every ``pause_recheck_every`` seconds in any case.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import redis
import structlog
from pydantic import SecretStr, field_validator

from adapters.zalo import MappingError, QuietHours, message_for, next_midnight
from config.options import Duration, HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from config.zalo_templates import load_templates
from connectors.base import ConnectorResult, Permanent, Rerouted, build_http_client
from connectors.credentials import TokenPair, TokenPairStore
from connectors.pauses import WHOLE, Pause, PauseStore
from connectors.zalo import CONDITIONS, AccountPaused, Unreachable, ZaloConnector
from schemas.events import Event
from services.base import Context, Deliverer, Hold, Probe
from services.checks import NOT_READY, READY, WARNING, Finding, reach
from store import deliveries, receipts

log = structlog.get_logger(__name__)

DEFAULT_ZNS_URL = "http://127.0.0.1:8703"
DEFAULT_QUIET_HOURS = "21:00-07:00"
HELD = "paused: "  # how the reason of every delivery a pause holds begins (what resume looks for)
# Zalo's lifetimes: an access token lives 25 h (its expires_in), the refresh token issued with it three months
ACCESS_TOKEN_SECONDS = 90000
REFRESH_TOKEN_SECONDS = 90 * 86400


class ZaloOptions(ServiceOptions):
    """A Zalo Official Account: the app that sends for it, its templates, when it may send, its SMS fallback,
    and how a pause is probed."""

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
    pause_probe_every: Duration = 60.0  # while paused, one message tries this often
    pause_recheck_every: Duration = 900.0  # held messages come back at least this often (a probe releases them)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        QuietHours.parse(value)
        return value

    @field_validator("pause_probe_every", "pause_recheck_every")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value


class ZaloDeliverer(Deliverer[ZaloOptions]):
    """Adapter + connector for one Official Account."""

    def __init__(self, destination: Destination, options: ZaloOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.templates = load_templates(options.templates_file)
        self.quiet = QuietHours.parse(options.quiet_hours)
        self.fallback = options.fallback
        self.pauses = PauseStore(context.redis, context.settings.redis_prefix)
        self._seen = threading.local()  # the pauses not_before read, for the deliver() that follows in this thread
        self.pairs = TokenPairStore(context.redis, context.settings.redis_prefix)
        self.connector = ZaloConnector(
            zns_url=options.url, oauth_url=options.oauth_url or options.url,
            app_id=options.app_id.get_secret_value(), app_secret=options.app_secret,
            client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                     context.settings.worker_concurrency),
            pairs=self.pairs, name=pair_name(destination.name),
            renew_ahead=options.renew_ahead_seconds,
        )

    # ------------------------------------------------------------------ when

    def not_before(self, now: datetime) -> Hold | Probe | None:
        """Quiet hours, or a pause of the whole destination: when the deliveries may go and why they wait, or
        the probe that this batch may send."""
        if self.quiet is not None and (until := self.quiet.until(now)) is not None:
            return Hold(until, f"quiet hours ({self.quiet.start:%H:%M}–{self.quiet.end:%H:%M}): sent at {until:%H:%M}")
        pauses = self.pauses.get(self.name, now.timestamp())
        self._seen.pauses = pauses
        whole = pauses.get(WHOLE)
        return self._hold(whole, now) if whole is not None else None

    def _hold(self, pause: Pause, now: datetime) -> Hold | Probe:
        """How long deliveries wait for ``pause``, and why; or the probe that may go now.

        Held for a pause with no known end, the first delivery held comes back at the next probe turn and the rest
        at the recheck: whatever else happens (a probe's own retry deferred by a batch that came first, a turn
        taken by a batch with nothing to send), a delivery is due when the turn comes."""
        since = datetime.fromtimestamp(pause.since, UTC)
        what = (f"{HELD}{_scope(pause)}{pause.reason} (since {since:%Y-%m-%d %H:%M} UTC); "
                f"{CONDITIONS.get(pause.condition, '')}")
        if pause.until is not None:
            until = datetime.fromtimestamp(pause.until, UTC)
            return Hold(until, f"{what}; sent from {until:%Y-%m-%d %H:%M} UTC")
        every = self.options.pause_probe_every
        if (token := self.pauses.take_turn(self.name, pause.scope, every)) is not None:
            return Probe(give_back=lambda: self.pauses.give_back(self.name, pause.scope, token))
        return Hold(now + timedelta(seconds=self.options.pause_recheck_every),
                    f"{what}; one message tries every {every:g} s, or `motcua-relay zalo resume`",
                    probe_at=now + timedelta(seconds=every))

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
        pauses = getattr(self._seen, "pauses", None)
        self._seen.pauses = None
        if pauses is None:
            pauses = self.pauses.get(self.name)
        template = pauses.get(message.template_id)
        now = datetime.now(UTC)
        if template is not None and isinstance(held := self._hold(template, now), Hold):
            raise AccountPaused(held.why.removeprefix(HELD), condition=template.condition, scope=template.scope,
                                sent=False, retry_after=max(1.0, (held.until - now).total_seconds()))
        try:
            sent = self.connector.send(message.phone, message.template_id, message.data, message.tracking_id)
        except AccountPaused as exc:
            raise self._paused(exc) from None
        except Unreachable as exc:
            if self.fallback and message.sms:
                raise Rerouted(exc.reason, destination=self.fallback, status_code=exc.status_code,
                               excerpt=exc.excerpt) from exc
            raise
        # a message went through: the account pays and the template is enabled again
        ended = [scope for scope in (WHOLE, message.template_id) if scope in pauses]
        if ended:
            resume(self.context, self.pauses, self.name, ended, by="a message went through")
        if sent.remaining_quota == 0:
            self._paused(AccountPaused("Zalo answered remainingQuota 0: the OA's daily quota is spent",
                                       condition="oa_daily_quota", until=next_midnight(now).timestamp()))
        return ConnectorResult(status_code=200, external_ref=sent.msg_id,
                               excerpt=f"tracking_id {message.tracking_id}; {sent.excerpt or ''}")

    def _paused(self, exc: AccountPaused) -> AccountPaused:
        """Record the condition for every worker; the error to end this attempt with (it does not count), waiting
        until the condition's end or the next probe."""
        pause, new = self.pauses.pause(self.name, Pause(exc.condition, exc.reason, time.time(), exc.until, exc.scope))
        if new:  # this delivery was the probe: the next one tries a probe interval from now
            self.pauses.probe(self.name, pause.scope, self.options.pause_probe_every)
            log.error("zalo.paused", destination=self.name, condition=pause.condition, scope=pause.scope,
                      reason=pause.reason, hint=CONDITIONS.get(pause.condition))
        wait = (pause.until - time.time()) if pause.until is not None else self.options.pause_probe_every
        exc.retry_after = max(1.0, wait)
        exc.reason = f"{_scope(pause)}{exc.reason}; {CONDITIONS.get(pause.condition, '')}"
        exc.args = (exc.reason,)
        return exc

    def check(self, timeout: float) -> list[Finding]:
        """ZNS and OAuth answer; a token pair is stored, and how long it has; no pause holds the destination.

        The pair is never renewed here: a renewal spends the single-use refresh token, and Zalo has no call that
        checks an access token without sending. So the app id and secret and the refresh token are tried by the
        next renewal, which the workers make ahead of the access token's expiry."""
        found = [reach(self.options.url, timeout, check="reachable (ZNS)")]
        if self.options.oauth_url and self.options.oauth_url.rstrip("/") != self.options.url.rstrip("/"):
            found.append(reach(self.options.oauth_url, timeout, check="reachable (OAuth)"))
        where = f"{self.context.settings.redis_prefix}:pair:{pair_name(self.name)}"
        try:
            pair = self.pairs.get(pair_name(self.name))
            pauses = self.pauses.get(self.name)
        except redis.RedisError as exc:
            return [*found, Finding("token pair", where, NOT_READY, f"Redis does not answer ({type(exc).__name__}): "
                                                                    "the pair and the pauses cannot be read")]
        found.append(_pair_finding(pair, where))
        for pause in pauses.values():
            since = datetime.fromtimestamp(pause.since, UTC)
            said = f"paused since {since:%Y-%m-%d %H:%M} UTC: {_scope(pause)}{pause.reason}"
            hint = CONDITIONS.get(pause.condition, "")
            if pause.until is not None:  # ends by itself (a daily limit)
                until = datetime.fromtimestamp(pause.until, UTC)
                found.append(Finding("pause", pause.condition, WARNING, f"{said}; until {until:%Y-%m-%d %H:%M} UTC"))
            else:
                found.append(Finding("pause", pause.condition, NOT_READY,
                                     f"{said}; {hint}; then `motcua-relay zalo resume`"))
        return found

    def close(self) -> None:
        self.connector.close()


def _pair_finding(pair: TokenPair | None, where: str) -> Finding:
    """What the stored pair says: none, a refresh token probably past its three months, or how long it has."""
    if pair is None:
        return Finding("token pair", where, NOT_READY, "no token pair is stored: messages would wait; store the OA's "
                                                       "first pair with `motcua-relay zalo set-token`")
    left = pair.expires_at - time.time()
    age = ACCESS_TOKEN_SECONDS - left
    if age > REFRESH_TOKEN_SECONDS:
        return Finding("token pair", where, WARNING,
                       f"the pair was issued about {age / 86400:.0f} days ago: its refresh token (three months) has "
                       "probably expired; store a new pair with `motcua-relay zalo set-token`")
    if left > 0:
        return Finding("token pair", where, READY, f"stored; the access token is valid for {left / 3600:.1f} h and "
                                                   "renewed ahead of that (doctor renews nothing)")
    return Finding("token pair", where, READY, f"stored; the access token expired {-left / 3600:.1f} h ago: the next "
                                               "message renews the pair with its refresh token")


def _scope(pause: Pause) -> str:
    return "" if pause.scope == WHOLE else f"template {pause.scope}: "


def resume(context: Context, pauses: PauseStore, destination: str, scopes: list[str] | None = None, *,
           by: str) -> tuple[list[Pause], int]:
    """Lift the destination's pauses (those of ``scopes``, or all) and queue at once what they held; the pauses
    this call ended and how many deliveries it released. Of several workers resuming at once, one releases."""
    ended = pauses.lift(destination, scopes)
    released = 0
    for pause in ended:
        like = f"{HELD}%" if pause.scope == WHOLE else f"{HELD}template {pause.scope}:%"
        woken = deliveries.wake(context.engine, destination, like, datetime.now(UTC))
        context.enqueue(woken)
        released += len(woken)
        log.warning("zalo.resumed", destination=destination, condition=pause.condition, scope=pause.scope, by=by,
                    paused_seconds=round(time.time() - pause.since), released=len(woken))
    return ended, released


def pair_name(destination: str) -> str:
    """Where a Zalo destination's token pair is kept (``TokenPairStore``)."""
    return f"zalo:{destination}"


def set_token(pairs: TokenPairStore, destination: str, access_token: str, refresh_token: str,
              expires_in: float) -> None:
    """Store the Official Account's first pair (or a new one after a refresh token was lost)."""
    pairs.put(pair_name(destination), TokenPair(access_token, refresh_token, time.time() + expires_in))
