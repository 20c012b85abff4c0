"""Payloads of the SMS brandname gateway: the fallback when a citizen's phone has no Zalo account.

Every real gateway (the carriers' and the resellers') has its own contract; the simulator in
``sandbox/sms.py`` defines a generic one and this module holds what its connector and simulator
share: ``POST {base}/api/v1/sms/send`` (:data:`SEND_PATH`) with ``Authorization: Bearer <api_key>`` and
``{"brandname", "phone", "message", "request_id"}``, answered by :class:`SmsAnswer`. A province's
gateway that names things differently changes this module, the connector and the simulator.

The answers come in two shapes, and :class:`SmsAnswer` reads both:

- the generic gateway's ``{"code", "message", "sms_id"}``, with the codes :data:`OK` … :data:`BAD_MESSAGE`; a
  repeated ``request_id`` is answered ``OK`` with the first ``sms_id`` (and ``"duplicate": true``);
- the reseller family eSMS publishes (developers.esms.vn, "Table of error codes"): ``{"CodeResult",
  "CountRegenerate", "SMSID" | "ErrorMessage"}``, with the codes of :data:`ESMS_CODES`. A repeated
  ``RequestId`` is answered :data:`ESMS_DUPLICATE` ("Duplicate RequestId") and sends nothing: a repeat of a
  request that went through. eSMS blocks a repeated id for 24 hours.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

SEND_PATH = "/api/v1/sms/send"
MAX_LENGTH = 612  # four concatenated messages without diacritics

# Answer codes (``code``) of the generic gateway.
OK, BAD_REQUEST, BAD_BRANDNAME, BAD_PHONE, BAD_MESSAGE = "00", "11", "12", "13", "14"

# eSMS's answer codes (``CodeResult``) that a send can get, in eSMS's words; the table's other rows belong to its
# other functions (voice, Zalo, look-ups).
ESMS_SENT, ESMS_DUPLICATE = "100", "124"
ESMS_PHONE_BLOCKED, ESMS_AUTH_FAILED, ESMS_NO_PRICE, ESMS_BALANCE = "99", "101", "102", "103"
ESMS_BRANDNAME, ESMS_BAD_PHONE = "104", "108"
ESMS_CODES: dict[str, str] = {
    ESMS_PHONE_BLOCKED: "The phone number is blocked in the system",
    ESMS_SENT: "The request has been successfully sent",
    ESMS_AUTH_FAILED: "Incorrect ApiKey or SecretKey",
    ESMS_NO_PRICE: "No price list available",
    ESMS_BALANCE: "Not enough balance to send message",
    ESMS_BRANDNAME: "Brandname does not exist",
    ESMS_BAD_PHONE: "Phone number is not in correct format",
    "118": "Unsupported message type",
    ESMS_DUPLICATE: "Duplicate RequestId",
    "140": "IP is not whitelisted for sending messages",
    "146": "Wrong customer care template",
    "177": "The network is not registered",
    "300": "Missing message type",
    "301": "Code of unsupported service",
}


class SmsAnswer(BaseModel):
    """A gateway's answer, in the generic shape or eSMS's (``CodeResult``, ``SMSID``, ``ErrorMessage``)."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(validation_alias=AliasChoices("code", "CodeResult"))
    message: str | None = Field(None, validation_alias=AliasChoices("message", "ErrorMessage"))
    sms_id: str | None = Field(None, validation_alias=AliasChoices("sms_id", "SMSID"))

    @field_validator("code", "sms_id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
