"""A generic SMS brandname gateway: the fallback when a citizen's phone has no Zalo account.

Vietnamese carriers' brandname gateways all take much the same request; the one the simulator
defines (``sandbox/sms.py``; its payloads in :mod:`schemas.sms`) is ``POST {url}`` with
``Authorization: Bearer <key>`` and ``{"brandname", "phone", "message", "request_id"}``, where
``request_id`` is our idempotency key. A province's gateway that names things differently changes
``schemas/sms.py`` and this module, nothing else.

A repeated ``request_id`` sends nothing again, and the gateways say so in two ways: the generic one
answers the first SMS's ``sms_id`` again, and eSMS answers ``124`` "Duplicate RequestId". Either way the
SMS went, once: an attempt whose answer was lost (a timeout after the gateway took it) is repeated and
ends delivered, with the ``sms_id`` the answer carries or else the request id as the external reference.

Answer table (``ANSWERS``, both answer shapes, tested row by row in ``tests/test_sms_connector.py``):

=================================  ============  ==============================================
answer                             class         why
=================================  ============  ==============================================
"00" (generic), "100" (eSMS)       sent          ``sms_id`` / ``SMSID`` is the external reference
"124" (eSMS) Duplicate RequestId   duplicate     sent by an earlier attempt: delivered, not
                                                 refused; the request id when no ``SMSID``
a sent code without an sms id      Retryable     the repeat is answered duplicate
"11" bad request, "14" empty or    Permanent     this message cannot go
too long, "13" / "108" invalid
phone, "99" phone blocked (eSMS)
"12" / "104" unknown brandname,    Permanent     the gateway account is misconfigured: an
"101" wrong ApiKey/SecretKey,                    operator fixes it
"102" no price list, "118" / "300"
message type, "140" IP not
whitelisted, "146" template, "177"
network not registered, "301"
"103" not enough balance (eSMS)    Retryable     an operator tops the account up: messages wait
                                                 an hour at a time, none dies of it
other codes                        Permanent     shown with the code and "(unknown code)"
HTTP 401/403                       Permanent     the API key is wrong: an operator fixes it
HTTP 5xx/429, timeouts             Retryable     (base table)
=================================  ============  ==============================================

A destination whose gateway answers other codes for a sent SMS or a repeated id names them in its options
(``success_codes``, ``duplicate_codes``: :class:`services.sms.deliver.SmsOptions`); they take precedence over
the table.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import (
    DeliveryError,
    Permanent,
    Retryable,
    excerpt,
    post_json,
)
from schemas import sms

SENT, DUPLICATE = "sent", "duplicate"
BALANCE_WAIT = 3600.0  # seconds between attempts while the account has no credit

Outcome = str | type[DeliveryError]
ANSWERS: dict[str, Outcome] = {
    # the generic gateway (sandbox/sms.py)
    sms.OK: SENT,
    **dict.fromkeys((sms.BAD_REQUEST, sms.BAD_BRANDNAME, sms.BAD_PHONE, sms.BAD_MESSAGE), Permanent),
    # eSMS (schemas.sms.ESMS_CODES)
    sms.ESMS_SENT: SENT,
    sms.ESMS_DUPLICATE: DUPLICATE,
    sms.ESMS_BALANCE: Retryable,
    **dict.fromkeys((sms.ESMS_PHONE_BLOCKED, sms.ESMS_AUTH_FAILED, sms.ESMS_NO_PRICE, sms.ESMS_BRANDNAME,
                     sms.ESMS_BAD_PHONE, "118", "140", "146", "177", "300", "301"), Permanent),
}


@dataclass(frozen=True)
class SmsSent:
    sms_id: str
    excerpt: str | None
    duplicate: bool = False


def answer_table(success_codes: Collection[str] = (), duplicate_codes: Collection[str] = ()) -> dict[str, Outcome]:
    """:data:`ANSWERS` with a destination's own codes for a sent SMS and a repeated request id."""
    return {**ANSWERS, **dict.fromkeys(success_codes, SENT), **dict.fromkeys(duplicate_codes, DUPLICATE)}


def classify_sms(answer: sms.SmsAnswer, answers: dict[str, Outcome] = ANSWERS,
                 status_code: int = 200) -> str | DeliveryError:
    """:data:`SENT`, :data:`DUPLICATE`, or the error the answer's code means (the table above)."""
    outcome = answers.get(answer.code, Permanent)
    if outcome == SENT and not answer.sms_id:
        outcome = Retryable
    if isinstance(outcome, str):
        return outcome
    words = answer.message or sms.ESMS_CODES.get(answer.code)
    reason = f"SMS gateway code {answer.code}" + (f" — {words}" if words else "")
    if answer.code not in answers:
        reason += " (unknown code)"
    elif outcome is Retryable and answers.get(answer.code) == SENT:
        reason += " without an sms id"
    retry_after = BALANCE_WAIT if answer.code == sms.ESMS_BALANCE and outcome is Retryable else None
    return outcome(reason, status_code=status_code, retry_after=retry_after,
                   excerpt=excerpt(answer.model_dump_json(exclude_none=True)))


class SmsConnector:
    def __init__(self, *, url: str, api_key: SecretStr, brandname: str, client: httpx.Client,
                 success_codes: Collection[str] = (), duplicate_codes: Collection[str] = ()) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"SMS gateway URL must be http(s): {url!r}")
        self.url = url
        self._key = api_key
        self._brandname = brandname
        self._client = client
        self.answers = answer_table(success_codes, duplicate_codes)

    def send(self, phone: str, text: str, request_id: str) -> SmsSent:
        body = {"brandname": self._brandname, "phone": phone, "message": text[:sms.MAX_LENGTH],
                "request_id": request_id}
        payload, response = post_json(self._client, self.url, "SMS gateway", json=body,
                                      headers={"Authorization": f"Bearer {self._key.get_secret_value()}"})
        try:
            answer = sms.SmsAnswer.model_validate(payload)
        except ValidationError as exc:
            raise Retryable("SMS gateway: the answer is not the gateway's JSON") from exc
        outcome = classify_sms(answer, self.answers, response.status_code)
        if isinstance(outcome, DeliveryError):
            outcome.excerpt = excerpt(response.text)
            raise outcome
        if outcome == DUPLICATE:
            return SmsSent(answer.sms_id or request_id, excerpt(response.text), duplicate=True)
        assert answer.sms_id is not None  # classify_sms: a sent code without one is Retryable
        replayed = (answer.model_extra or {}).get("duplicate") is True  # the generic gateway's repeat
        return SmsSent(answer.sms_id, excerpt(response.text), duplicate=replayed)

    def close(self) -> None:
        self._client.close()
