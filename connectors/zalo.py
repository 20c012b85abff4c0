"""Zalo: ZNS template messages with the Official Account's rotating token pair.

The access token is sent as a header; it lasts about 25 hours and is renewed with the refresh
token, which Zalo answers with a *new* refresh token — the old one is spent. The pair lives
in :class:`~connectors.credentials.TokenPairStore`; it is renewed ahead of expiry, under a
lock, and after Zalo says a token is invalid (once, then the call is repeated). This module
knows the transport and the codes, not what a dossier is (``adapters/zalo.py``).

Answer table (``ANSWERS``; tested row by row in ``tests/test_zalo_connector.py``):

==================================  ============  =============================================
ZNS ``error``                       class         what happens
==================================  ============  =============================================
0                                   success       ``data.msg_id`` is the external reference
-124 access token invalid/expired   AuthExpired   rotate the pair once, repeat; twice: retry later
-32 rate, -100 unknown (transient)  Retryable     Zalo's weather
-144 daily quota spent              QuotaSpent    wait until the next day (00:00, Vietnam time)
-133 no ZNS at night                Retryable     after 06:00
-118 no Zalo account, -119 cannot   Unreachable   this citizen cannot get ZNS: the deliverer falls
receive, -110 Zalo too old, -114                  back to SMS where configured
inactive, -139/-141 refuses ZNS
-101…-105 app invalid/inactive,     Permanent     every message will fail: logged as an error for
-135/-138/-140 no permission                      the operator
-106…-109, -111…-113, -131, -132    Permanent     this message is wrong (phone, template, data)
other codes                         Permanent     shown with the code, never retried forever
HTTP 5xx/429, timeouts, resets      Retryable     (base table)
==================================  ============  =============================================
OAuth refresh: -14014 (refresh token invalid or spent) and the app errors are ``Retryable`` with a
reason that asks for ``motcua-relay zalo set-token``: messages wait for the operator, none is lost.
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
    Permanent,
    Retryable,
    excerpt,
    post_json,
)
from connectors.credentials import NoTokenPair, TokenPair, TokenPairStore, call_renewing
from schemas.vietnam import VN_TZ
from schemas.zalo import OAUTH_PATH, REFRESH_TOKEN_INVALID, TOKEN_INVALID, ZNS_PATH, TokenAnswer, ZnsAnswer

log = structlog.get_logger(__name__)


class Unreachable(Permanent):
    """This recipient cannot get the message on this channel (no Zalo account, refuses ZNS)."""

    outcome = "unreachable"


class QuotaSpent(Retryable):
    """The Official Account's daily quota is spent: wait for the next day, do not fail."""

    outcome = "quota"


APP_BROKEN = {-101, -102, -103, -104, -105, -135, -138, -140}
ANSWERS: dict[int, type[DeliveryError] | None] = {
    0: None,
    -124: AuthExpired,
    -32: Retryable,
    -100: Retryable,
    -144: QuotaSpent,
    -133: Retryable,
    **dict.fromkeys((-118, -119, -110, -114, -139, -141), Unreachable),
    **dict.fromkeys(APP_BROKEN, Permanent),
    **dict.fromkeys((-106, -107, -108, -109, -111, -112, -113, -131, -132), Permanent),
}


def seconds_until_vn(hour: int, now: float | None = None) -> float:
    """Seconds from ``now`` until the next ``hour``:00 in Vietnam."""
    local = datetime.fromtimestamp(time.time() if now is None else now, VN_TZ)
    local_seconds = local.hour * 3600 + local.minute * 60 + local.second
    return float((hour * 3600 - local_seconds) % 86400 or 86400)


def classify_zns(answer: ZnsAnswer, status_code: int = 200) -> DeliveryError | None:
    """``None`` for success, else the class of the table above, with Zalo's message."""
    if answer.error == 0:
        return None
    error_class = ANSWERS.get(answer.error, Permanent)
    assert error_class is not None
    reason = f"Zalo ZNS error {answer.error}" + (f" — {answer.message}" if answer.message else "")
    if answer.error not in ANSWERS:
        reason += " (unknown code)"
    retry_after = None
    if error_class is QuotaSpent:
        retry_after = seconds_until_vn(0)
    elif answer.error == -133:
        retry_after = seconds_until_vn(6)
    elif answer.error == -32:
        retry_after = 1.0
    if answer.error in APP_BROKEN:
        log.error("zalo.app_misconfigured", code=answer.error, hint="check the app id, secret and OA link")
    return error_class(reason, status_code=status_code, retry_after=retry_after,
                       excerpt=excerpt(answer.model_dump_json(exclude_none=True)))


@dataclass(frozen=True)
class Sent:
    msg_id: str
    remaining_quota: int | None
    excerpt: str | None


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
            raise Retryable("no Zalo token pair stored: run `motcua-relay zalo set-token`") from None
        except (redis.RedisError, TimeoutError) as exc:  # the pair is safe in Redis; try again later
            raise Retryable(f"the Zalo token pair is out of reach ({type(exc).__name__}: {exc})") from exc

    def renew(self, stale: TokenPair) -> TokenPair:
        """After Zalo refused ``stale``: the pair another worker made, or a new one."""
        try:
            return self._pairs.rotate(self._name, stale, self._refresh)
        except NoTokenPair:
            raise Retryable("no Zalo token pair stored: run `motcua-relay zalo set-token`") from None
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
        if answer.error or not (answer.access_token and answer.refresh_token):
            spent = answer.error == REFRESH_TOKEN_INVALID
            log.error("zalo.refresh_refused", code=answer.error, name=answer.error_name,
                      hint="run `motcua-relay zalo set-token` with a new pair" if spent else None)
            raise Retryable(f"Zalo refused the token refresh ({answer.error} {answer.error_name or ''}".strip()
                            + "): messages wait until an operator runs `motcua-relay zalo set-token`")
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
        error = classify_zns(answer, status)
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
