"""Simulator of Zalo's Official Account APIs: OAuth v4 token refresh, ZNS template messages, signed webhooks.

The real paths (docs/domain.md "Zalo", docs/contracts.md "Zalo"), all served on one loopback base URL:

- ``POST /v4/oa/access_token`` (oauth.zaloapp.com), form ``app_id``, ``grant_type=refresh_token``,
  ``refresh_token``, header ``secret_key`` → ``{"access_token", "refresh_token", "expires_in": "90000"}``
  (a string as Zalo sends it, whole seconds rounded up). The refresh token presented is spent (single-use;
  reuse is refused and counted as ``refresh_token_reuse``); the previous access token lives on until its
  expiry. Refusals are HTTP 200 with ``error_name``, ``error_reason`` and ``error_description``; like the real
  endpoint, a refused refresh token (unknown, expired or already spent) comes **without a numeric** ``error``,
  the others with one::

      -14001  grant_type is not refresh_token, or refresh_token missing
      -14002  wrong app_id                   -14004  wrong secret_key
      (none)  refresh token unknown, expired or already spent ("Invalid refresh token")

- ``POST /message/template`` (business.openapi.zalo.me), header ``access_token``, JSON
  ``{"phone", "template_id", "template_data", "tracking_id"}`` → ``{"error": 0, "message": "Success",
  "data": {"msg_id", "sent_time": "<epoch ms>", "quota": {"dailyQuota", "remainingQuota"}}}``, else HTTP 200
  ``{"error", "message"}`` with the first failing check, in this order::

      -122  body is not a JSON object          -124  access token missing, unknown or expired
      -108  phone not ^84[35789]\\d{8}$         -109  template_id unknown (ids are strings)
      -131  template not approved (pending     -146  template disabled (poor sending quality)
            review or rejected)
      -111  template_data missing or empty     -112  a parameter missing, empty, not a string or number, not
                                                     in the template, over its type's cap, not of its type,
                                                     or a link outside a button (url) parameter: named with
                                                     its type and cap, never its value
       -32  rate limit (rate_per_second)       -133  22:00–06:00 Vietnam time, for a template not allowed at night
      -144  the OA's daily quota spent         -147  the template's daily limit reached
      -115  the ZNS account's balance spent    -118  phone has no Zalo account
      -141  user refuses ZNS from this OA      -100  unknown error (injected, before all checks)

  Each template parameter has a ZNS type (:data:`PARAM_TYPES`: its cap in characters and its form); a link is
  refused in any parameter but a ``url`` one (a button's link), as template review refuses it.
  Phones ending in ``000`` have no Zalo and phones ending in ``999`` refuse; ``POST /_admin/phones
  {"no_zalo": [...], "refusing": [...]}`` names more (each list given replaces its set). Like Zalo, a
  repeated ``tracking_id`` is accepted and only counted (``duplicate_tracking``). The daily quotas count
  successful sends of the current day in Vietnam (UTC+7), on the simulator's clock.

Default templates (:data:`DEFAULT_TEMPLATES`, every parameter required, typed): 300001 dossier received,
300002 supplement requested, 300003 fee to pay (its link a button's), 300004 result ready, 300005 refused,
300006 returned.

With ``POST /_admin/webhook {"url", "seen": false, "retry_scale": 1, "timeout_seconds": 2}`` each successful
send is followed, in the background, by a ``user_received_message`` event (and with ``seen`` a
``user_seen_message`` one) posted to ``url`` and signed ``X-ZEvent-Signature: mac=<hex>``, see
:func:`schemas.zalo.zevent_signature`. As Zalo does, an event not answered HTTP 200 within 2 s is posted again
after 30 s, 5 min, 15 min, 30 min and 1 h (:data:`WEBHOOK_RETRIES`, times ``retry_scale``; counted
``retries``); after the last one fails the webhook is disabled (``disabled``) until it is set again.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` (plain text) before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays, both on
both endpoints; ``unknown_error_rate`` answers ``-100`` before anything (ZNS only);
``access_ttl_seconds`` is the lifetime of access tokens issued from then on.

Admin: ``POST /_admin/tokens`` (a fresh pair, as when the OA admin authorises the app),
``POST /_admin/expire`` (every access token issued so far expires now), ``GET /_admin/messages
?tracking_id=&phone=``, ``GET /_admin/stats``, ``POST /_admin/quota {"daily", "used"}``,
``GET|POST /_admin/balance {"messages": N | null}`` (how many more sends the account can pay for; null:
unlimited), ``GET /_admin/templates``, ``POST /_admin/templates/{id} {"status": "ENABLE" | "DISABLE" |
"PENDING_REVIEW" | "REJECT", "daily_quota", "used", "night"}``, ``POST|DELETE /_admin/clock {"at": iso}``
(the clock its rules read runs on from ``at``), ``GET|POST /_admin/phones``, ``POST|DELETE /_admin/webhook``,
``POST /_admin/reset`` (messages, counters, faults, phone sets, balance, template states, clock, webhook and
tokens). State lives in memory on the app's event loop. Nothing is logged per request, so no personal data can
reach a log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.faults import (
    ActiveFaults,
    Background,
    BaseFaults,
    add_fault_routes,
    add_state_routes,
    error_response,
    json_body,
    latency_and_error,
    locations,
)
from schemas.vietnam import VN_TZ
from schemas.zalo import OAUTH_PATH, ZNS_PATH, zevent_signature

SIGNATURE_HEADER = "X-ZEvent-Signature"
REFRESH_TTL_SECONDS = 90 * 86400
WEBHOOK_TIMEOUT = httpx.Timeout(10.0, connect=3.0, pool=60.0)
WEBHOOK_ANSWER_WITHIN = 2.0  # seconds Zalo waits for the webhook's 200
WEBHOOK_RETRIES = (30.0, 300.0, 900.0, 1800.0, 3600.0)  # then the webhook is disabled
NIGHT = (22, 6)  # hours, Vietnam time: some templates are refused then (-133)
PHONE_PATTERN = r"^84[35789][0-9]{8}$"
_PHONE = re.compile(PHONE_PATTERN)
_JSON = "application/json"

# The ZNS parameter types, as Zalo checks a send against the template it approved: the cap in characters, and the
# form (a pattern the whole value must match; None: any text). Kept here, apart from the relay's own table
# (schemas/zalo.py), so that the relay's validation is checked by an independent reading of the rules.
PARAM_TYPES: Mapping[str, tuple[int, re.Pattern[str] | None]] = MappingProxyType({
    "customer_name": (30, None),
    "phone_number": (15, re.compile(r"\+?[0-9][0-9 .]*")),
    "address": (200, None),
    "code": (30, re.compile(r"\S+")),
    "custom_label": (30, None),
    "transaction_status": (30, None),
    "contact": (50, None),
    "salutation": (5, None),
    "product_name": (200, None),
    "amount": (20, re.compile(r"[0-9][0-9.,  ]*(?:[  ]?(?:đ|₫|VND|VNĐ|vnđ))?")),
    "time": (20, re.compile(r"(?:[0-2][0-9]:[0-5][0-9](?::[0-5][0-9])? ?)?(?:[0-3][0-9]/[01][0-9]/[0-9]{4})?")),
    "otp": (10, re.compile(r"[0-9A-Za-z]{4,10}")),
    "url": (200, re.compile(r"https?://\S+")),
    "currency": (12, re.compile(r"[0-9]+")),
    "transfer_note": (90, re.compile(r"[0-9A-Za-z ]+")),
})
_LINK = re.compile(r"(?i)(?:https?://|www\.)|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:vn|com|net|org|gov|edu|info|io|me|ly)"
                   r"(?:/|\b)")

DEFAULT_TEMPLATES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    template_id: MappingProxyType(params) for template_id, params in {
        "300001": {"ten_cong_dan": "customer_name", "ma_ho_so": "code", "ten_thu_tuc": "product_name",
                   "ngay_hen_tra": "time"},
        "300002": {"ten_cong_dan": "customer_name", "ma_ho_so": "code", "noi_dung_bo_sung": "product_name",
                   "han_bo_sung": "product_name"},
        "300003": {"ten_cong_dan": "customer_name", "ma_ho_so": "code", "so_tien": "amount",
                   "link_thanh_toan": "url"},
        "300004": {"ten_cong_dan": "customer_name", "ma_ho_so": "code", "hinh_thuc_nhan": "product_name"},
        "300005": {"ten_cong_dan": "customer_name", "ma_ho_so": "code", "ly_do": "product_name"},
        "300006": {"ten_cong_dan": "customer_name", "ma_ho_so": "code"},
    }.items()
})

RATE_LIMITED, UNKNOWN_ERROR, BAD_PHONE, BAD_TEMPLATE, EMPTY_DATA, BAD_DATA = -32, -100, -108, -109, -111, -112
OUT_OF_BALANCE, NO_ZALO, BAD_BODY, BAD_TOKEN, NOT_APPROVED, AT_NIGHT = -115, -118, -122, -124, -131, -133
REFUSES_ZNS, QUOTA_SPENT, TEMPLATE_DISABLED, TEMPLATE_QUOTA_SPENT = -141, -144, -146, -147
BAD_GRANT, BAD_APP_ID, BAD_SECRET = -14001, -14002, -14004
BAD_REFRESH_TOKEN = "refresh_token"  # answered without a number, as Zalo does

_OAUTH_ERRORS: Mapping[int | str, tuple[str, str]] = {
    BAD_GRANT: ("Invalid parameter", "grant_type must be refresh_token and refresh_token is required"),
    BAD_APP_ID: ("Invalid app id", "app_id is invalid"),
    BAD_SECRET: ("Invalid secret key", "secret_key is invalid"),
    BAD_REFRESH_TOKEN: ("Invalid refresh token", "refresh_token is invalid or expired"),
}
TemplateStatus = Literal["ENABLE", "DISABLE", "PENDING_REVIEW", "REJECT"]


class FaultConfig(BaseFaults):
    """Faults injected into Zalo's answers."""

    unknown_error_rate: float = Field(0.0, ge=0, le=1)
    access_ttl_seconds: float | None = Field(None, gt=0, le=30 * 86400)


class WebhookConfig(BaseModel):
    """Where the simulator posts its signed events, whether a ``user_seen_message`` follows each receipt, and how
    its retries are scaled (1: Zalo's 30 s … 1 h; tests make them short) and how long it waits for the 200."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+")
    seen: bool = False
    retry_scale: float = Field(1.0, ge=0, le=1)
    timeout_seconds: float = Field(WEBHOOK_ANSWER_WITHIN, gt=0, le=30)


_Phone = Annotated[str, Field(pattern=PHONE_PATTERN)]


class PhoneSets(BaseModel):
    """Phones without a Zalo account and phones refusing ZNS; a list given replaces its set."""

    model_config = ConfigDict(extra="forbid")

    no_zalo: list[_Phone] | None = None
    refusing: list[_Phone] | None = None


class QuotaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily: int | None = Field(None, ge=0)
    used: int | None = Field(None, ge=0)


class BalanceConfig(BaseModel):
    """How many more sends the ZNS account can pay for; ``None``: as many as it likes."""

    model_config = ConfigDict(extra="forbid")

    messages: int | None = Field(..., ge=0)


class TemplateChange(BaseModel):
    """A template's state at Zalo: approved or not, its daily limit and what it used today, allowed at night."""

    model_config = ConfigDict(extra="forbid")

    status: TemplateStatus | None = None
    daily_quota: int | None = Field(None, ge=0)  # null: no daily limit of its own
    used: int | None = Field(None, ge=0)
    night: bool | None = None


class ClockConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime


@dataclass
class TemplateState:
    params: Mapping[str, str]
    status: TemplateStatus = "ENABLE"
    daily_quota: int | None = None
    used: int = 0
    night: bool = False


_ActiveFaults = ActiveFaults[FaultConfig]


class _Bucket:
    """A token bucket holding up to one second of sends (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _zns(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}


def _oauth_error(code: int | str, description: str) -> dict[str, Any]:
    name, reason = _OAUTH_ERRORS[code]
    numbered = {"error": code} if isinstance(code, int) else {}
    return {**numbered, "error_name": name, "error_reason": reason, "error_description": description}


def _epoch_ms() -> str:
    return str(time.time_ns() // 1_000_000)


def _filled(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _type_problem(kind: str, value: Any) -> str | None:
    """What is wrong with one filled value for its ZNS type, in Zalo's words (never the value itself)."""
    cap, form = PARAM_TYPES[kind]
    text = value if isinstance(value, str) else format(value, "g")
    if len(text) > cap:
        return f"dài {len(text)} ký tự, vượt giới hạn {cap} ký tự của kiểu {kind}"
    if kind != "url" and _LINK.search(text):
        return "chứa liên kết: liên kết chỉ được đặt trong nút (tham số kiểu url)"
    if form is not None and not form.fullmatch(text.strip()):
        return f"sai định dạng kiểu {kind}"
    return None


def _data_problems(params: Mapping[str, str], data: Mapping[str, Any]) -> str | None:
    """What is wrong with ``template_data``, naming parameters only: their values are personal data."""
    missing = [p for p in params if data.get(p) is None or (isinstance(data[p], str) and not data[p].strip())]
    wrong = [p for p in params if p not in missing and not _filled(data[p])]
    extra = [key for key in data if key not in params]
    typed = [f"tham số {p} ({params[p]}) {problem}" for p in params if p not in missing and p not in wrong
             if (problem := _type_problem(params[p], data[p]))]
    parts = ["thiếu tham số " + ", ".join(missing)] if missing else []
    parts += ["sai giá trị tham số " + ", ".join(wrong)] if wrong else []
    parts += ["tham số không có trong template: " + ", ".join(extra)] if extra else []
    parts += typed
    return "Dữ liệu template không hợp lệ: " + "; ".join(parts) if parts else None


class ZaloState:
    """Tokens, recorded messages, phone rules, quotas, balance, templates, clock, counters, faults and webhook
    target of one OA."""

    def __init__(
        self, *, app_id: str, app_secret: str, oa_secret_key: str, templates: Mapping[str, Mapping[str, str]],
        access_ttl_seconds: float, daily_quota: int, rate_per_second: float | None, start_at: datetime | None,
    ) -> None:
        for template_id, params in templates.items():
            if not isinstance(params, Mapping):
                raise TypeError(f"parameters of template {template_id!r} must map each name to its ZNS type")
            unknown = sorted(set(params.values()) - set(PARAM_TYPES))
            if unknown:
                raise ValueError(f"template {template_id!r}: unknown parameter types {unknown} "
                                 f"(known: {', '.join(PARAM_TYPES)})")
        self.app_id = app_id
        self.app_secret = app_secret
        self.oa_secret_key = oa_secret_key
        self.template_params = {str(k): dict(v) for k, v in templates.items()}
        self.default_ttl = access_ttl_seconds
        self.default_quota = daily_quota
        self.rate_per_second = rate_per_second
        self.default_offset = 0.0 if start_at is None else start_at.timestamp() - time.time()
        self.generation = 0
        self.background = Background(WEBHOOK_TIMEOUT)
        self.reset()

    def reset(self) -> None:
        """Forget everything; events still in flight no longer count."""
        self.generation += 1
        self.offset = self.default_offset
        self.access: dict[str, float] = {}
        self.refresh_tokens: dict[str, float] = {}
        self.spent: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.tracking_ids: set[str] = set()
        self.no_zalo: set[str] = set()
        self.refusing: set[str] = set()
        self.daily_quota = self.default_quota
        self.quota_day = self.today()
        self.quota_used = 0
        self.balance: int | None = None
        self.templates = {tid: TemplateState(params) for tid, params in self.template_params.items()}
        self.bucket = _Bucket(self.rate_per_second) if self.rate_per_second else None
        self.faults: _ActiveFaults | None = None
        self.webhook: WebhookConfig | None = None
        self.webhook_disabled = False
        self.counters: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()

    # ------------------------------------------------------------------ the clock its rules read (night, the day)

    def now(self) -> float:
        return time.time() + self.offset

    def local(self) -> datetime:
        return datetime.fromtimestamp(self.now(), VN_TZ)

    def today(self) -> date:
        return self.local().date()

    def at_night(self) -> bool:
        hour = self.local().hour
        return hour >= NIGHT[0] or hour < NIGHT[1]

    # ------------------------------------------------------------------ admin views

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "sent": c["sent"], "duplicate_tracking": c["duplicate_tracking"],
            "refresh": {"ok": c["refresh_ok"], "refused": c["refresh_refused"]},
            "refresh_token_reuse": c["refresh_token_reuse"], "token_expired": c["token_expired"],
            "answers": dict(self.answers),
            "faults": {"error": c["fault_error"], "unknown_error": c["fault_unknown_error"]},
            "webhooks": {"ok": c["webhook_ok"], "failed": c["webhook_failed"], "retries": c["webhook_retries"],
                         "disabled": self.webhook_disabled},
            "quota": self.quota(),
            "balance": self.balance,
        }

    def quota(self) -> dict[str, int]:
        today = self.today()
        if today != self.quota_day:
            self.quota_day, self.quota_used = today, 0
            for template in self.templates.values():
                template.used = 0
        return {"daily": self.daily_quota, "used": self.quota_used}

    def set_quota(self, config: QuotaConfig) -> None:
        self.quota()
        if config.daily is not None:
            self.daily_quota = config.daily
        if config.used is not None:
            self.quota_used = config.used

    def template_views(self) -> dict[str, dict[str, Any]]:
        self.quota()
        return {tid: {"params": dict(t.params), "status": t.status, "daily_quota": t.daily_quota, "used": t.used,
                      "night": t.night} for tid, t in self.templates.items()}

    def change_template(self, template_id: str, change: TemplateChange) -> bool:
        template = self.templates.get(template_id)
        if template is None:
            return False
        self.quota()
        if change.status is not None:
            template.status = change.status
        if "daily_quota" in change.model_fields_set:
            template.daily_quota = change.daily_quota
        if change.used is not None:
            template.used = change.used
        if change.night is not None:
            template.night = change.night
        return True

    def phones(self) -> dict[str, list[str]]:
        return {"no_zalo": sorted(self.no_zalo), "refusing": sorted(self.refusing)}

    # ------------------------------------------------------------------ OAuth

    def issue(self) -> dict[str, Any]:
        """A new (access, refresh) pair in Zalo's answer shape."""
        configured = self.faults.config.access_ttl_seconds if self.faults else None
        ttl = configured if configured is not None else self.default_ttl
        now = time.monotonic()
        if len(self.access) > 10_000:
            self.access = {token: until for token, until in self.access.items() if until > now - 3600}
        access, refresh = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
        self.access[access] = now + ttl
        self.refresh_tokens[refresh] = now + REFRESH_TTL_SECONDS
        return {"access_token": access, "refresh_token": refresh, "expires_in": str(math.ceil(ttl))}

    def expire_all(self) -> int:
        now = time.monotonic()
        self.access = {token: min(until, now) for token, until in self.access.items()}
        return len(self.access)

    def refresh(self, secret_key: str | None, form: Mapping[str, str]) -> dict[str, Any]:
        answer = self._refresh(secret_key, form)
        self.counters["refresh_refused" if "error_name" in answer else "refresh_ok"] += 1
        return answer

    def _refresh(self, secret_key: str | None, form: Mapping[str, str]) -> dict[str, Any]:
        if not hmac.compare_digest(form.get("app_id", "").encode(), self.app_id.encode()):
            return _oauth_error(BAD_APP_ID, "Ứng dụng không tồn tại")
        if not hmac.compare_digest((secret_key or "").encode(), self.app_secret.encode()):
            return _oauth_error(BAD_SECRET, "Khóa bí mật của ứng dụng không đúng")
        token = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token" or not token:
            return _oauth_error(BAD_GRANT, "Tham số không hợp lệ")
        if token in self.spent:
            self.counters["refresh_token_reuse"] += 1
            return _oauth_error(BAD_REFRESH_TOKEN, "Refresh token không hợp lệ hoặc đã hết hạn")
        until = self.refresh_tokens.pop(token, None)
        if until is None or until <= time.monotonic():
            return _oauth_error(BAD_REFRESH_TOKEN, "Refresh token không hợp lệ hoặc đã hết hạn")
        self.spent.add(token)
        return self.issue()

    # ------------------------------------------------------------------ ZNS

    def send(self, token: str | None, body: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """One ZNS send: the answer, and the recorded message when it was sent."""
        if not isinstance(body, dict):
            return _zns(BAD_BODY, "Body request không đúng định dạng JSON"), None
        until = self.access.get(token or "")
        if until is None:
            return _zns(BAD_TOKEN, "Access token không hợp lệ"), None
        if until <= time.monotonic():
            self.counters["token_expired"] += 1
            return _zns(BAD_TOKEN, "Access token đã hết hạn"), None
        phone = body.get("phone")
        if not isinstance(phone, str) or not _PHONE.match(phone):
            return _zns(BAD_PHONE, "Số điện thoại không hợp lệ"), None
        template_id = body.get("template_id")
        template = self.templates.get(template_id) if isinstance(template_id, str) else None
        if template is None:
            return _zns(BAD_TEMPLATE, "ID của template không hợp lệ"), None
        if template.status in ("PENDING_REVIEW", "REJECT"):
            return _zns(NOT_APPROVED, "Mẫu ZNS chưa được phê duyệt"), None
        if template.status == "DISABLE":
            return _zns(TEMPLATE_DISABLED, "Mẫu ZNS này đã bị vô hiệu hóa do chất lượng gửi tin kém"), None
        data = body.get("template_data")
        if data is None or data == {}:
            return _zns(EMPTY_DATA, "Dữ liệu template rỗng"), None
        if not isinstance(data, dict):
            return _zns(BAD_DATA, "Dữ liệu template không hợp lệ: template_data phải là đối tượng JSON"), None
        problem = _data_problems(template.params, data)
        if problem:
            return _zns(BAD_DATA, problem), None
        if self.bucket is not None and not self.bucket.take():
            return _zns(RATE_LIMITED, "vượt quá giới hạn request"), None
        if not template.night and self.at_night():
            return _zns(AT_NIGHT, "Mẫu ZNS này không được phép gửi vào ban đêm (từ 22h-6h)"), None
        quota = self.quota()
        if quota["used"] >= quota["daily"]:
            return _zns(QUOTA_SPENT, "Vượt quá giới hạn số tin ZNS được gửi trong ngày của OA"), None
        if template.daily_quota is not None and template.used >= template.daily_quota:
            return _zns(TEMPLATE_QUOTA_SPENT, "Mẫu ZNS đã vượt giới hạn gửi tin trong ngày"), None
        if self.balance is not None and self.balance <= 0:
            return _zns(OUT_OF_BALANCE, "Tài khoản ZNS không đủ số dư"), None
        refusal = self.refusal(phone)
        if refusal is not None:
            return refusal, None
        tracking = body.get("tracking_id")
        tracking_id = None if tracking is None else str(tracking)
        if tracking_id is not None:
            if tracking_id in self.tracking_ids:
                self.counters["duplicate_tracking"] += 1
            self.tracking_ids.add(tracking_id)
        self.quota_used += 1
        template.used += 1
        if self.balance is not None:
            self.balance -= 1
        self.counters["sent"] += 1
        message = {
            "msg_id": uuid.uuid4().hex, "phone": phone, "template_id": template_id, "template_data": data,
            "tracking_id": tracking_id, "sent_time": _epoch_ms(),
        }
        self.messages.append(message)
        remaining = max(0, self.daily_quota - self.quota_used)
        quota_answer = {"dailyQuota": str(self.daily_quota), "remainingQuota": str(remaining)}
        data_answer = {"msg_id": message["msg_id"], "sent_time": message["sent_time"], "quota": quota_answer}
        return _zns(0, "Success", data=data_answer), message

    def refusal(self, phone: str) -> dict[str, Any] | None:
        """The answer for a phone that cannot get ZNS: the admin's sets first, then the default rule."""
        if phone in self.no_zalo or (phone not in self.refusing and phone.endswith("000")):
            return _zns(NO_ZALO, "Số điện thoại chưa đăng ký tài khoản Zalo")
        if phone in self.refusing or phone.endswith("999"):
            return _zns(REFUSES_ZNS, "Người dùng từ chối nhận tin ZNS từ Official Account")
        return None

    def recipient_id(self, phone: str) -> str:
        """An opaque numeric user id, stable per phone and OA, that does not reveal the phone."""
        digest = hmac.new(self.oa_secret_key.encode(), phone.encode(), hashlib.sha256).hexdigest()
        return str(int(digest[:15], 16))

    # ------------------------------------------------------------------ webhook

    def start_events(self, message: dict[str, Any]) -> None:
        """Post the receipt (and seen) events in the background, if a webhook is configured and enabled."""
        if self.webhook is None:
            return
        self.background.spawn(self._post_events(self.webhook, message, self.generation))

    async def _post_events(self, target: WebhookConfig, message: dict[str, Any], generation: int) -> None:
        msg_id, tracking_id = message["msg_id"], message["tracking_id"]
        events = [("user_received_message", {"msg_id": msg_id, "tracking_id": tracking_id})]
        if target.seen:
            events.append(("user_seen_message", {"msg_ids": [msg_id], "tracking_id": tracking_id}))
        for event_name, content in events:
            timestamp = _epoch_ms()
            payload = {
                "app_id": self.app_id, "event_name": event_name, "timestamp": timestamp, "message": content,
                "recipient": {"id": self.recipient_id(message["phone"])},
            }
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            headers = {
                "content-type": _JSON,
                SIGNATURE_HEADER: zevent_signature(self.app_id, body, timestamp, self.oa_secret_key),
            }
            ok = await self._post_with_retries(target, body, headers, generation)
            if generation != self.generation:
                return
            self.counters["webhook_ok" if ok else "webhook_failed"] += 1

    async def _post_with_retries(self, target: WebhookConfig, body: bytes, headers: dict[str, str],
                                 generation: int) -> bool:
        """Zalo's delivery of one event: 200 within the time allowed, else again on the schedule; after the last
        retry fails, the webhook is disabled."""
        for delay in (0.0, *WEBHOOK_RETRIES):
            if delay:
                await asyncio.sleep(delay * target.retry_scale)
                if generation != self.generation or self.webhook is not target:
                    return False  # reset, replaced or disabled meanwhile
                self.counters["webhook_retries"] += 1
            if await self.background.post_status(target.url, body, headers, target.timeout_seconds) == 200:
                return True
        if self.webhook is target and generation == self.generation:
            self.webhook, self.webhook_disabled = None, True
        return False


def create_app(
    *,
    app_id: str,
    app_secret: str,
    oa_secret_key: str,
    templates: Mapping[str, Mapping[str, str]] | None = None,
    access_ttl_seconds: float = 90000,
    daily_quota: int = 100000,
    rate_per_second: float | None = None,
    start_at: datetime | None = None,
) -> FastAPI:
    """Build the Zalo simulator; ``templates`` (template_id → each parameter's ZNS type) defaults to
    :data:`DEFAULT_TEMPLATES`, ``rate_per_second`` None means no rate limit, ``start_at`` sets the clock its rules
    read (the night rule, the day the quotas count) running from that moment, so that the demo and the tests play
    a working day whatever the hour; the times it answers (``sent_time``, events' ``timestamp``) stay real."""
    state = ZaloState(
        app_id=app_id, app_secret=app_secret, oa_secret_key=oa_secret_key,
        templates=DEFAULT_TEMPLATES if templates is None else templates, access_ttl_seconds=access_ttl_seconds,
        daily_quota=daily_quota, rate_per_second=rate_per_second, start_at=start_at,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: Zalo OA", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.zalo = state

    async def injected(faults: _ActiveFaults | None) -> Response | None:
        status = await latency_and_error(faults)
        if status is None:
            return None
        state.counters["fault_error"] += 1
        return Response("injected fault", status_code=status, media_type="text/plain")

    @app.post(OAUTH_PATH)
    async def refresh(request: Request) -> Response:
        failed = await injected(state.faults)
        if failed is not None:
            return failed
        fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        form = {key: values[-1] for key, values in fields.items()}
        return JSONResponse(state.refresh(request.headers.get("secret_key"), form))

    @app.post(ZNS_PATH)
    async def send(request: Request) -> Response:
        faults = state.faults
        failed = await injected(faults)
        if failed is not None:
            return failed
        if faults is not None and faults.draw(faults.config.unknown_error_rate):
            state.counters["fault_unknown_error"] += 1
            answer, message = _zns(UNKNOWN_ERROR, "lỗi không xác định"), None
        else:
            answer, message = state.send(request.headers.get("access_token"), await json_body(request))
        state.answers[str(answer["error"])] += 1
        if message is not None:
            state.start_events(message)
        return JSONResponse(answer)

    @app.post("/_admin/tokens")
    async def tokens() -> dict[str, Any]:
        return state.issue()

    @app.post("/_admin/expire")
    async def expire() -> dict[str, int]:
        return {"expired": state.expire_all()}

    @app.get("/_admin/messages")
    async def messages(tracking_id: str | None = None, phone: str | None = None) -> list[dict[str, Any]]:
        return [
            m for m in state.messages
            if (tracking_id is None or m["tracking_id"] == tracking_id) and (phone is None or m["phone"] == phone)
        ]

    @app.post("/_admin/quota")
    async def set_quota(config: QuotaConfig) -> dict[str, int]:
        state.set_quota(config)
        return state.quota()

    @app.get("/_admin/balance")
    async def get_balance() -> dict[str, int | None]:
        return {"messages": state.balance}

    @app.post("/_admin/balance")
    async def set_balance(config: BalanceConfig) -> dict[str, int | None]:
        state.balance = config.messages
        return {"messages": state.balance}

    @app.get("/_admin/templates")
    async def get_templates() -> dict[str, dict[str, Any]]:
        return state.template_views()

    @app.post("/_admin/templates/{template_id}")
    async def change_template(template_id: str, change: TemplateChange) -> Response:
        if not state.change_template(template_id, change):
            return error_response(404, "no such template")
        return JSONResponse(state.template_views()[template_id])

    @app.post("/_admin/clock")
    async def set_clock(config: ClockConfig) -> Response:
        if config.at.tzinfo is None:
            return error_response(422, "give the time with its offset (+07:00)")
        state.offset = config.at.timestamp() - time.time()
        return JSONResponse({"now": state.local().isoformat()})

    @app.delete("/_admin/clock")
    async def clear_clock() -> dict[str, str]:
        state.offset = state.default_offset
        return {"now": state.local().isoformat()}

    @app.get("/_admin/phones")
    async def get_phones() -> dict[str, list[str]]:
        return state.phones()

    @app.post("/_admin/phones")
    async def set_phones(request: Request) -> Response:
        try:
            config = PhoneSets.model_validate(await json_body(request))
        except ValidationError as exc:  # the default 422 would echo the phone numbers
            return error_response(422, "invalid phone sets: " + locations(exc))
        if config.no_zalo is not None:
            state.no_zalo = set(config.no_zalo)
        if config.refusing is not None:
            state.refusing = set(config.refusing)
        return JSONResponse(state.phones())

    @app.post("/_admin/webhook")
    async def set_webhook(request: Request) -> Response:
        try:
            state.webhook = WebhookConfig.model_validate(await json_body(request))
        except ValidationError as exc:
            return error_response(422, "invalid webhook configuration: " + locations(exc))
        state.webhook_disabled = False
        return JSONResponse(state.webhook.model_dump())

    @app.delete("/_admin/webhook")
    async def clear_webhook() -> dict[str, str]:
        state.webhook = None
        return {"status": "cleared"}

    add_fault_routes(app, state, FaultConfig)

    add_state_routes(app, state)
    return app

