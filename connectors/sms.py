"""A generic SMS brandname gateway: the fallback when a citizen's phone has no Zalo account.

Vietnamese carriers' brandname gateways all take much the same request; the one the simulator
defines (``sandbox/sms.py``; its payloads in :mod:`schemas.sms`) is ``POST {url}`` with
``Authorization: Bearer <key>`` and ``{"brandname", "phone", "message", "request_id"}``, where
``request_id`` is our idempotency key (the gateway answers a repeated id with the first SMS, sending
nothing again). A province's gateway that names things differently changes ``schemas/sms.py`` and
this module, nothing else.

Answer table (``ANSWERS``, tested row by row in ``tests/test_zalo_connector.py``):

============================  ============  ==============================================
answer                        class         why
============================  ============  ==============================================
HTTP 2xx, ``code`` "00"       success       ``sms_id`` is the external reference
"12" unknown brandname        Permanent     the gateway account is misconfigured
"13" invalid phone            Permanent     this message cannot go
"14" empty or too long        Permanent     this message cannot go
other codes                   Permanent     shown with the code
HTTP 401/403                  Permanent     the API key is wrong: an operator fixes it
HTTP 5xx/429, timeouts        Retryable     (base table)
============================  ============  ==============================================
"""

from __future__ import annotations

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
from schemas.sms import BAD_BRANDNAME, BAD_MESSAGE, BAD_PHONE, MAX_LENGTH, OK, SmsAnswer

ANSWERS: dict[str, type[DeliveryError] | None] = {
    OK: None, BAD_BRANDNAME: Permanent, BAD_PHONE: Permanent, BAD_MESSAGE: Permanent,
}


@dataclass(frozen=True)
class SmsSent:
    sms_id: str
    excerpt: str | None


class SmsConnector:
    def __init__(self, *, url: str, api_key: SecretStr, brandname: str, client: httpx.Client) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"SMS gateway URL must be http(s): {url!r}")
        self.url = url
        self._key = api_key
        self._brandname = brandname
        self._client = client

    def send(self, phone: str, text: str, request_id: str) -> SmsSent:
        body = {"brandname": self._brandname, "phone": phone, "message": text[:MAX_LENGTH], "request_id": request_id}
        payload, response = post_json(self._client, self.url, "SMS gateway", json=body,
                                      headers={"Authorization": f"Bearer {self._key.get_secret_value()}"})
        try:
            answer = SmsAnswer.model_validate(payload)
        except ValidationError as exc:
            raise Retryable("SMS gateway: the answer is not the gateway's JSON") from exc
        if answer.code != OK or not answer.sms_id:
            error_class = ANSWERS.get(answer.code, Permanent) or Retryable
            raise error_class(f"SMS gateway code {answer.code}" + (f" — {answer.message}" if answer.message else "")
                              + ("" if answer.code in ANSWERS else " (unknown code)"),
                              status_code=response.status_code, excerpt=excerpt(response.text))
        return SmsSent(answer.sms_id, excerpt(response.text))

    def close(self) -> None:
        self._client.close()
