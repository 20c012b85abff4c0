"""Zalo: ZNS template messages with the Official Account's rotating token pair.

The access token is sent as a header; it lasts about 25 hours and is renewed with the refresh
token, which Zalo answers with a *new* refresh token — the old one is spent. The pair lives
in :class:`~connectors.credentials.TokenPairStore`; it is renewed ahead of expiry, under a
lock, and after Zalo says a token is invalid (once, then the call is repeated). This module
knows the transport and the codes, not what a dossier is (``adapters/zalo.py``).

Answer table (``ANSWERS``; tested row by row in ``tests/test_zalo_connector.py``, and against the
simulator in ``tests/test_zalo_contract.py``):

==================================  =============  ============================================
ZNS ``error``                       class          what happens
==================================  =============  ============================================
0                                   success        ``data.msg_id`` is the external reference
-124 access token invalid/expired   AuthExpired    rotate the pair once, repeat; twice: retry later
-32 rate, -100 unknown (transient)  Retryable      Zalo's weather
-133 no ZNS at night (22:00–06:00)  Retryable      after 06:00
-115 ZNS balance insufficient       AccountPaused  the whole destination pauses ("balance") until a
                                                   probe goes through or an operator resumes it
-144 the OA's daily quota spent     QuotaSpent     the whole destination pauses until 00:00
-131 template not approved,         AccountPaused  that template pauses ("template_not_approved",
-146 template disabled (quality),                  "template_disabled", "template_daily_quota";
-147 template's daily limit                        the last until 00:00); the others go on
-118 no Zalo account, -119 cannot   Unreachable    this citizen cannot get ZNS: the deliverer falls
receive, -110 Zalo too old, -114                   back to SMS where configured
inactive, -139/-141 refuses ZNS
-101…-105 app invalid/inactive,     Permanent      every message will fail: logged as an error for
-117 template not this OA's,                       the operator (dead letters, replayed once fixed)
-135/-138/-140 no permission
-106…-109, -111…-113, -116, -132    Permanent      this message is wrong (phone, template, data)
other codes                         Permanent      shown with the code, never retried forever
HTTP 5xx/429, timeouts, resets      Retryable      (base table)
==================================  =============  ============================================

A pause (:class:`AccountPaused`, a :class:`~connectors.base.Paused`) is not the message's fault:
no attempt is spent and nothing is dead-lettered (``services/zalo/deliver.py`` holds, probes and
resumes). Codes -115, -131, -133 and -144 are in Zalo's published table ("Cách xử lý mã lỗi");
-146 and -147 are taken from the same table's later rows as integrators quote them, not confirmed
against Zalo's page here: an assumption, kept in this one table.

OAuth refresh: Zalo answers its refusals as HTTP 200 with ``error_name`` / ``error_reason`` /
``error_description``, with or without a numeric ``error``. A refused refresh token (-14014, or
no number and names saying the refresh token is invalid) pauses the destination
("token_refused") with a reason asking for ``motcua-relay zalo set-token``, which resumes it;
no stored pair at all is the same ("token_missing"); a refused app id or secret
("app_refused") asks for the app's configuration. Nothing is lost: messages wait.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import redis
import structlog
from pydantic import SecretStr, ValidationError

from connectors.base import (
    AuthExpired,
    DeliveryError,
    Paused,
    Permanent,
    Retryable,
    excerpt,
    post_json,
)
from connectors.credentials import NoTokenPair, TokenPair, TokenPairStore, call_renewing
from connectors.pauses import WHOLE
from schemas.vietnam import VN_TZ
from schemas.zalo import (
    APP_REFUSED,
    OAUTH_PATH,
    REFRESH_TOKEN_INVALID,
    TOKEN_INVALID,
    ZNS_PATH,
    TokenAnswer,
    ZnsAnswer,
)

log = structlog.get_logger(__name__)


class Unreachable(Permanent):
    """This recipient cannot get the message on this channel (no Zalo account, refuses ZNS)."""

    outcome = "unreachable"


class AccountPaused(Paused):
    """An account-level condition: no message of the ``scope`` (:data:`~connectors.pauses.WHOLE`, or a template
    id) can go until it clears; ``until`` (epoch seconds) when Zalo's answer says when (a daily limit: 00:00)."""

    def __init__(self, reason: str, *, condition: str, scope: str = WHOLE, until: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reason, condition=condition, **kwargs)
        self.scope = scope
        self.until = until


class QuotaSpent(AccountPaused):
    """The Official Account's daily quota is spent: the destination waits for the next day, fails nothing."""


# What each pause means and what the operator does about it (logs, `motcua-relay zalo status`, the alert).
CONDITIONS: dict[str, str] = {
    "balance": "the ZNS account's balance is spent: top up the Zalo Cloud Account that pays for the OA's ZNS",
    "oa_daily_quota": "the Official Account's daily ZNS quota is spent: messages go again at 00:00 Vietnam time",
    "template_daily_quota": "the template reached its daily limit: its messages go again at 00:00 Vietnam time",
    "template_disabled": "Zalo disabled the template (poor sending quality): have it re-enabled, or register "
                         "another in the templates file",
    "template_not_approved": "the template is not approved: have it approved, or fix its template_id",
    "token_refused": "Zalo refused the refresh token: store a new pair with `motcua-relay zalo set-token`",
    "token_missing": "no token pair is stored: run `motcua-relay zalo set-token`",
    "app_refused": "Zalo refused the app id or secret: check MOTCUA_ZALO_APP_ID and MOTCUA_ZALO_APP_SECRET",
}
# ZNS codes that pause: (condition, the scope is the template, ends at the next 00:00)
PAUSES: dict[int, tuple[str, bool, bool]] = {
    -115: ("balance", False, False),
    -144: ("oa_daily_quota", False, True),
    -131: ("template_not_approved", True, False),
    -146: ("template_disabled", True, False),
    -147: ("template_daily_quota", True, True),
}
APP_BROKEN = {-101, -102, -103, -104, -105, -117, -135, -138, -140}
ANSWERS: dict[int, type[DeliveryError] | None] = {
    0: None,
    -124: AuthExpired,
    -32: Retryable,
    -100: Retryable,
    -133: Retryable,
    -144: QuotaSpent,
    **dict.fromkeys((-115, -131, -146, -147), AccountPaused),
    **dict.fromkeys((-118, -119, -110, -114, -139, -141), Unreachable),
    **dict.fromkeys(APP_BROKEN, Permanent),
    **dict.fromkeys((-106, -107, -108, -109, -111, -112, -113, -116, -132), Permanent),
}


def seconds_until_vn(hour: int, now: float | None = None) -> float:
    """Seconds from ``now`` until the next ``hour``:00 in Vietnam."""
    local = datetime.fromtimestamp(time.time() if now is None else now, VN_TZ)
    local_seconds = local.hour * 3600 + local.minute * 60 + local.second
    return float((hour * 3600 - local_seconds) % 86400 or 86400)


def classify_zns(answer: ZnsAnswer, status_code: int = 200, template_id: str | None = None,
                 now: float | None = None) -> DeliveryError | None:
    """``None`` for success, else the class of the table above, with Zalo's message (a pause of a template's
    condition is scoped to ``template_id``)."""
    if answer.error == 0:
        return None
    error_class = ANSWERS.get(answer.error, Permanent)
    assert error_class is not None
    reason = f"Zalo ZNS error {answer.error}" + (f" — {answer.message}" if answer.message else "")
    if answer.error not in ANSWERS:
        reason += " (unknown code)"
    body = excerpt(answer.model_dump_json(exclude_none=True))
    if answer.error in PAUSES:
        condition, per_template, daily = PAUSES[answer.error]
        wait = seconds_until_vn(0, now) if daily else None
        until = (time.time() if now is None else now) + wait if wait is not None else None
        paused = QuotaSpent if error_class is QuotaSpent else AccountPaused
        return paused(reason, condition=condition, scope=(template_id or WHOLE) if per_template else WHOLE,
                      until=until, status_code=status_code, retry_after=wait, excerpt=body)
    retry_after = None
    if answer.error == -133:
        retry_after = seconds_until_vn(6, now)
    elif answer.error == -32:
        retry_after = 1.0
    if answer.error in APP_BROKEN:
        log.error("zalo.app_misconfigured", code=answer.error, hint="check the app id, secret, OA link and templates")
    return error_class(reason, status_code=status_code, retry_after=retry_after, excerpt=body)


def classify_refresh(answer: TokenAnswer) -> AccountPaused | Retryable:
    """A refused token refresh: the refresh token (numbered -14014, or named so without a number), the app's
    credentials, or anything else Zalo said (retried)."""
    said = " ".join(filter(None, (answer.error_name, answer.error_reason, answer.error_description))).lower()
    words = f"{answer.error or 'no code'}" + (f" {answer.error_name}" if answer.error_name else "")
    if answer.error == REFRESH_TOKEN_INVALID or (not answer.error and "refresh" in said and "token" in said):
        condition = "token_refused"
    elif answer.error in APP_REFUSED or (not answer.error and ("app" in said or "secret" in said)):
        condition = "app_refused"
    else:
        return Retryable(f"Zalo refused the token refresh ({words}): tried again later")
    return AccountPaused(f"Zalo refused the token refresh ({words}): messages wait; {CONDITIONS[condition]}",
                         condition=condition, excerpt=excerpt(answer.model_dump_json(exclude_none=True)))


@dataclass(frozen=True)
class Sent:
    msg_id: str
    remaining_quota: int | None
    excerpt: str | None


def no_pair() -> AccountPaused:
    return AccountPaused("no Zalo token pair stored: messages wait; run `motcua-relay zalo set-token`",
                         condition="token_missing", sent=False)


class ZaloConnector:
    """One Official Account: ZNS sends and the token pair's rotation."""

    def __init__(
        self,
        *,
        zns_url: str,
        oauth_url: str,
        app_id: str,
        app_secret: SecretStr,
        client: httpx.Client,
        pairs: TokenPairStore,
        name: str,
        renew_ahead: float = 3600.0,
    ) -> None:
        for url in (zns_url, oauth_url):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"Zalo URL must be http(s): {url!r}")
        self.send_url = zns_url.rstrip("/") + ZNS_PATH
        self.refresh_url = oauth_url.rstrip("/") + OAUTH_PATH
        self._app_id = app_id
        self._secret = app_secret
        self._client = client
        self._pairs = pairs
        self._name = name
        self._ahead = renew_ahead

    # ------------------------------------------------------------------ tokens

    def pair(self) -> TokenPair:
        """The pair to send with, renewed first when the access token is about to expire."""
        try:
            current = self._pairs.get(self._name)
            if current is None:
                raise NoTokenPair(self._name)
            if current.expires_within(self._ahead):
                current = self._pairs.rotate(self._name, current, self._refresh, ahead=self._ahead)
            return current
        except NoTokenPair:
            raise no_pair() from None
        except (redis.RedisError, TimeoutError) as exc:  # the pair is safe in Redis; try again later
            raise Retryable(f"the Zalo token pair is out of reach ({type(exc).__name__}: {exc})") from exc

    def renew(self, stale: TokenPair) -> TokenPair:
        """After Zalo refused ``stale``: the pair another worker made, or a new one."""
        try:
            return self._pairs.rotate(self._name, stale, self._refresh)
        except NoTokenPair:
            raise no_pair() from None
        except (redis.RedisError, TimeoutError) as exc:
            raise Retryable(f"the Zalo token pair is out of reach ({type(exc).__name__}: {exc})") from exc

    def _refresh(self, refresh_token: str) -> TokenPair:
        form = {"app_id": self._app_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
        payload, _ = post_json(self._client, self.refresh_url, "Zalo token refresh", data=form,
                               headers={"secret_key": self._secret.get_secret_value()})
        try:
            answer = TokenAnswer.model_validate(payload)
        except ValidationError as exc:
            raise Retryable("Zalo token refresh: the answer is not Zalo's JSON") from exc
        if answer.error or answer.error_name or not (answer.access_token and answer.refresh_token):
            error = classify_refresh(answer)
            log.error("zalo.refresh_refused", code=answer.error, name=answer.error_name,
                      hint=CONDITIONS[error.condition] if isinstance(error, AccountPaused) else None)
            raise error
        assert answer.access_token and answer.refresh_token
        return TokenPair(answer.access_token, answer.refresh_token, time.time() + (answer.expires_in or 90000))

    # ------------------------------------------------------------------ sending

    def send(self, phone: str, template_id: str, data: dict[str, str], tracking_id: str) -> Sent:
        """Send one template message; a refused token is rotated once and the send repeated."""
        body = {"phone": phone, "template_id": template_id, "template_data": data, "tracking_id": tracking_id}
        answer, status = call_renewing(
            lambda pair: self._post(pair, body),
            self.pair(),
            renew=self.renew,
            refused=lambda reply: reply[0].error == TOKEN_INVALID,
            log_event="zalo.token_refused", hint="rotating the pair once",
        )
        error = classify_zns(answer, status, template_id)
        if error is not None:
            raise error
        msg_id = answer.msg_id
        if not msg_id:
            raise Retryable("Zalo answered success without a msg_id", status_code=status)
        quota = (answer.data or {}).get("quota") or {}
        remaining = quota.get("remainingQuota")
        return Sent(msg_id, int(str(remaining)) if str(remaining).isdigit() else None,
                    excerpt(answer.model_dump_json(exclude_none=True)))

    def _post(self, pair: TokenPair, body: dict[str, Any]) -> tuple[ZnsAnswer, int]:
        payload, response = post_json(self._client, self.send_url, "Zalo ZNS", json=body,
                                      headers={"access_token": pair.access_token})
        try:
            return ZnsAnswer.model_validate(payload), response.status_code
        except ValidationError as exc:
            raise Retryable("Zalo ZNS: the answer is not Zalo's JSON", status_code=response.status_code,
                            excerpt=excerpt(response.text)) from exc

    def close(self) -> None:
        self._client.close()
