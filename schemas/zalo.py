"""Payloads of Zalo: ZNS template messages, the OA's OAuth v4 token refresh, and the signed webhook events.

As docs/domain.md gives them: ``POST {zns}/message/template`` with header ``access_token`` and
``{phone, template_id, template_data, tracking_id}``, success ``error == 0`` with
``data.msg_id``; ``POST {oauth}/v4/oa/access_token`` (form ``app_id``, ``grant_type``,
``refresh_token``; header ``secret_key``) answering a new access token *and a new refresh
token* (the old one is spent); webhook events signed ``X-ZEvent-Signature: mac=`` + SHA-256
of ``app_id + raw_body + timestamp + oa_secret_key``.

The template configuration a province edits (``config/zalo.toml``) is validated by
:class:`TemplateConfig` here too, with the ZNS parameter types (:data:`PARAM_TYPES`) its
parameters are declared with.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from schemas.vietnam import LAST_EPOCH_MS, LAST_YEAR
from schemas.wire import storable

# Where the calls are, under the ZNS base URL (business.openapi.zalo.me) and the OAuth one (oauth.zaloapp.com).
ZNS_PATH = "/message/template"
OAUTH_PATH = "/v4/oa/access_token"

# ZNS answer codes (Zalo's "Cách xử lý mã lỗi"), the ones the relay acts on; the class of each
# is in connectors/zalo.py, in one table.
TOKEN_INVALID = -124
RATE_LIMITED = -32
UNKNOWN_ERROR = -100
QUOTA_SPENT = -144
NO_ZALO_ACCOUNT = -118
CANNOT_RECEIVE = -119
REFUSES_OA = -141
OUT_OF_BALANCE = -115
TEMPLATE_NOT_APPROVED = -131
AT_NIGHT = -133
TEMPLATE_DISABLED = -146
TEMPLATE_QUOTA_SPENT = -147
# OAuth v4 refresh errors (also answered without a number: then error_name says which)
REFRESH_TOKEN_INVALID = -14014
APP_REFUSED = frozenset({-14002, -14004})

# {path}, {path:format}, {path:format|fallback when the field is absent}
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.]*)(?::([a-z_]+))?(?:\|([^}]*))?\}")
FORMATS = ("date", "datetime", "money", "join", "label")


@dataclass(frozen=True)
class ParamType:
    """A ZNS parameter type: its cap in characters and, for some, the form a value must have."""

    cap: int
    form: re.Pattern[str] | None = None
    looks: str = ""  # the form in words, for a refusal's reason


# The parameter types ZNS templates declare (Zalo Cloud's table of parameter formats, "Các định dạng dữ liệu khi
# truyền vào tham số", and the create-template API's types): each value sent must fit its type. The caps of
# customer_name, phone_number, address, code and amount are the ones docs/contracts.md quotes; the other caps and the
# forms are Zalo's table as integrators quote it, an assumption kept in this one table. "text" is not Zalo's: it is
# what an undeclared parameter is taken to be (any text without a link, up to its max_length or 200).
PARAM_TYPES: dict[str, ParamType] = {
    "customer_name": ParamType(30),
    "phone_number": ParamType(15, re.compile(r"\+?[0-9][0-9 .]*"), "digits"),
    "address": ParamType(200),
    "code": ParamType(30, re.compile(r"\S+"), "a code without spaces"),
    "custom_label": ParamType(30),
    "transaction_status": ParamType(30),
    "contact": ParamType(50),
    "salutation": ParamType(5),
    "product_name": ParamType(200),
    "amount": ParamType(20, re.compile(r"[0-9][0-9., ]*(?: ?(?:đ|₫|VND|VNĐ))?"), "a number, maybe with đ or VND"),
    "time": ParamType(20, re.compile(r"(?:[0-2][0-9]:[0-5][0-9](?::[0-5][0-9])?(?: |$))?"
                                     r"(?:[0-3][0-9]/[01][0-9]/[0-9]{4})?"), "HH:mm[:ss] and/or dd/MM/yyyy"),
    "otp": ParamType(10, re.compile(r"[0-9A-Za-z]{4,10}"), "4 to 10 letters or digits"),
    "url": ParamType(200, re.compile(r"https?://\S+"), "an http(s) link"),  # a button's link: the only place for one
    "currency": ParamType(12, re.compile(r"[0-9]+"), "whole đồng in digits"),
    "transfer_note": ParamType(90, re.compile(r"[0-9A-Za-z ]+"), "letters, digits and spaces without diacritics"),
    "text": ParamType(200),
}
# a link, wherever it is in a text: template review refuses one outside a button (url) parameter
LINK = re.compile(r"(?i)(?:https?://|www\.)|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:vn|com|net|org|gov|edu|info|io|me|ly)"
                  r"(?:/|\b)")


def infer_type(name: str, text: str) -> str:
    """The type of a parameter the templates file does not declare, from what fills it: a date alone is a time,
    an amount alone an amount, a link (or a parameter named link…/url…) a button's url, anything else text."""
    alone = PLACEHOLDER.fullmatch(text.strip())
    if alone and alone.group(3) is None and alone.group(2) in ("date", "datetime"):
        return "time"
    if alone and alone.group(3) is None and alone.group(2) == "money":
        return "amount"
    if text.strip().startswith(("http://", "https://")) or name.startswith(("link", "url")):
        return "url"
    return "text"


def zevent_signature(app_id: str, body: bytes, timestamp: str, oa_secret_key: str) -> str:
    """The ``X-ZEvent-Signature`` value: ``mac=`` + SHA-256 hex of app_id, raw body, timestamp, OA secret key.

    A plain hash, not an HMAC, as Zalo specifies it.
    """
    digest = hashlib.sha256(app_id.encode() + body + timestamp.encode() + oa_secret_key.encode())
    return "mac=" + digest.hexdigest()


class _Zalo(BaseModel):
    model_config = ConfigDict(extra="allow")


class ZnsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str = Field(pattern=r"^84\d{9}$")
    template_id: str = Field(min_length=1, max_length=40)
    template_data: dict[str, str]
    tracking_id: str = Field(min_length=1, max_length=48)


class ZnsAnswer(_Zalo):
    """``{"error": 0, "message": ..., "data": {"msg_id", "sent_time", "quota": {...}}}``."""

    error: int = 0
    message: str | None = None
    data: dict[str, Any] | None = None

    @property
    def msg_id(self) -> str | None:
        value = (self.data or {}).get("msg_id")
        return str(value) if value is not None else None


class TokenAnswer(_Zalo):
    """The refresh answer: a new pair, or a refusal: ``error_name`` / ``error_reason`` / ``error_description``,
    with a negative ``error`` or without any (both shapes come as HTTP 200)."""

    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: int | None = None
    error: int = 0
    error_name: str | None = None
    error_reason: str | None = None
    error_description: str | None = None

    @field_validator("expires_in", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> int | None:  # Zalo sends "90000", a string
        return int(value) if value not in (None, "") else None


class ZaloEventMessage(_Zalo):
    """The message an event is about: its ids as Zalo gave them, and the ``tracking_id`` we sent it with (at most
    48 characters; the receipts keep 64, Zalo's message ids 100)."""

    msg_id: str | None = Field(None, max_length=100)
    msg_ids: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list)
    tracking_id: str | None = Field(None, max_length=64)


def event_timestamp(data: Any) -> str:
    """An event's ``timestamp`` as the signature covers it: Zalo's string (a number read as its digits), else ``""``
    (also for text with a NUL or a lone surrogate: no sender signed that)."""
    value = data.get("timestamp") if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and storable(value) else ""


class ZaloEvent(_Zalo):
    """A webhook event the OA receives (``user_received_message``, ``user_seen_message`` …). ``timestamp`` is
    milliseconds since the epoch in ASCII digits (Zalo sends a string; a number is read as its digits)."""

    app_id: str
    event_name: str
    timestamp: str
    message: ZaloEventMessage = ZaloEventMessage()

    @field_validator("timestamp", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("timestamp")
    @classmethod
    def _milliseconds(cls, value: str) -> str:
        if not (value.isascii() and value.isdigit() and int(value) <= LAST_EPOCH_MS):
            raise PydanticCustomError("zalo_timestamp", "milliseconds since the epoch in ASCII digits, before the "
                                      "year {end}", {"end": LAST_YEAR + 1})
        return value

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(int(self.timestamp) / 1000, UTC)


class TemplateSpec(BaseModel):
    """One event type's message: the ZNS template and how to fill each of its parameters."""

    model_config = ConfigDict(extra="forbid")

    template_id: str = Field(min_length=1, max_length=40)
    data: dict[str, str] = Field(description="parameter → text with {event.path[:format]} placeholders")
    types: dict[str, str] = Field(default_factory=dict, description="parameter → its ZNS type (PARAM_TYPES); "
                                  "an undeclared one is inferred (infer_type)")
    max_length: dict[str, int] = Field(default_factory=dict, description="a tighter cap than the type's")
    shorten: list[str] = Field(
        default_factory=list,
        description="cut from the left to their max_length instead of refused (a name ends with the given name)",
    )
    sms: str | None = Field(None, description="the SMS text when the citizen has no Zalo (same placeholders)")

    @model_validator(mode="after")
    def _placeholders(self) -> TemplateSpec:
        for name, text in {**self.data, **({"sms": self.sms} if self.sms else {})}.items():
            for match in PLACEHOLDER.finditer(text):
                if match.group(2) and match.group(2) not in FORMATS:
                    raise ValueError(f"{name}: unknown format {match.group(2)!r} (known: {', '.join(FORMATS)})")
        for name, kind in self.types.items():
            if name not in self.data:
                raise ValueError(f"types: {name} is not a parameter of the template")
            if kind not in PARAM_TYPES:
                raise ValueError(f"types: {name}: unknown ZNS type {kind!r} (known: {', '.join(PARAM_TYPES)})")
        return self

    def param_type(self, name: str) -> tuple[str, int]:
        """A parameter's type (declared, else inferred) and its cap (the type's, or a tighter ``max_length``)."""
        kind = self.types.get(name) or infer_type(name, self.data[name])
        cap = PARAM_TYPES[kind].cap
        if kind == "text" and name in self.max_length:  # an undeclared type: the file's cap is the only one known
            return kind, self.max_length[name]
        return kind, min(cap, self.max_length.get(name, cap))


class TemplateConfig(BaseModel):
    """``config/zalo.toml``: templates per event type, and the labels ``{…:label}`` looks up."""

    model_config = ConfigDict(extra="forbid")

    templates: dict[str, TemplateSpec]
    labels: dict[str, str] = Field(default_factory=dict)
