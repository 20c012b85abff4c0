"""Simulator of Zalo's Official Account APIs: OAuth v4 token refresh, ZNS template messages, signed webhooks.

The real paths (DOMAIN.md "Zalo"), all served on one loopback base URL:

- ``POST /v4/oa/access_token`` (oauth.zaloapp.com), form ``app_id``, ``grant_type=refresh_token``,
  ``refresh_token``, header ``secret_key`` → ``{"access_token", "refresh_token", "expires_in": "90000"}``
  (a string as Zalo sends it, whole seconds rounded up). The refresh token presented is spent (single-use;
  reuse is refused and counted as ``refresh_token_reuse``); the previous access token lives on until its
  expiry. Refusals are HTTP 200 ``{"error", "error_name", "error_reason", "error_description"}``::

      -14001  grant_type is not refresh_token, or refresh_token missing
      -14002  wrong app_id                   -14004  wrong secret_key
      -14014  refresh token unknown, expired or already spent

- ``POST /message/template`` (business.openapi.zalo.me), header ``access_token``, JSON
  ``{"phone", "template_id", "template_data", "tracking_id"}`` → ``{"error": 0, "message": "Success",
  "data": {"msg_id", "sent_time": "<epoch ms>", "quota": {"dailyQuota", "remainingQuota"}}}``, else HTTP 200
  ``{"error", "message"}`` with the first failing check, in this order::

      -122  body is not a JSON object         -124  access token missing, unknown or expired
      -108  phone not ^84[35789]\\d{8}$        -109  template_id unknown (ids are strings)
      -111  template_data missing or empty    -112  a parameter missing, empty, not a string or number,
       -32  rate limit (rate_per_second)            or not in the template (named, never its value)
      -144  daily quota spent                 -118  phone has no Zalo account
      -141  user refuses ZNS from this OA     -100  unknown error (injected, before all checks)

  Phones ending in ``000`` have no Zalo and phones ending in ``999`` refuse; ``POST /_admin/phones
  {"no_zalo": [...], "refusing": [...]}`` names more (each list given replaces its set). Like Zalo, a
  repeated ``tracking_id`` is accepted and only counted (``duplicate_tracking``). The daily quota counts
  successful sends of the current day in Vietnam (UTC+7).

Default templates (:data:`DEFAULT_TEMPLATES`, every parameter required): 300001 dossier received,
300002 supplement requested, 300003 fee to pay, 300004 result ready, 300005 refused, 300006 returned.

With ``POST /_admin/webhook {"url", "seen": false}`` each successful send is followed, in the background
and with one try (counted ``ok`` or ``failed``), by a ``user_received_message`` event (and with ``seen``
a ``user_seen_message`` one) posted to ``url`` and signed ``X-ZEvent-Signature: mac=<hex>``, see
:func:`schemas.zalo.zevent_signature`.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` (plain text) before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays, both on
both endpoints; ``unknown_error_rate`` answers ``-100`` before anything (ZNS only);
``access_ttl_seconds`` is the lifetime of access tokens issued from then on.

Admin: ``POST /_admin/tokens`` (a fresh pair, as when the OA admin authorises the app),
``POST /_admin/expire`` (every access token issued so far expires now), ``GET /_admin/messages
?tracking_id=&phone=``, ``GET /_admin/stats``, ``POST /_admin/quota {"daily", "used"}``,
``GET|POST /_admin/phones``, ``POST|DELETE /_admin/webhook``, ``POST /_admin/reset`` (messages,
counters, faults, phone sets, webhook and tokens). State lives in memory on the app's event loop.
Nothing is logged per request, so no personal data can reach a log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Annotated, Any
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
from schemas.vietnam import vn_today
from schemas.zalo import OAUTH_PATH, ZNS_PATH, zevent_signature

SIGNATURE_HEADER = "X-ZEvent-Signature"
REFRESH_TTL_SECONDS = 90 * 86400
WEBHOOK_TIMEOUT = httpx.Timeout(10.0, connect=3.0, pool=60.0)
PHONE_PATTERN = r"^84[35789][0-9]{8}$"
_PHONE = re.compile(PHONE_PATTERN)
_JSON = "application/json"

DEFAULT_TEMPLATES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "300001": ("ten_cong_dan", "ma_ho_so", "ten_thu_tuc", "ngay_hen_tra"),
    "300002": ("ten_cong_dan", "ma_ho_so", "noi_dung_bo_sung", "han_bo_sung"),
    "300003": ("ten_cong_dan", "ma_ho_so", "so_tien", "link_thanh_toan"),
    "300004": ("ten_cong_dan", "ma_ho_so", "hinh_thuc_nhan"),
    "300005": ("ten_cong_dan", "ma_ho_so", "ly_do"),
    "300006": ("ten_cong_dan", "ma_ho_so"),
})

RATE_LIMITED, UNKNOWN_ERROR, BAD_PHONE, BAD_TEMPLATE, EMPTY_DATA, BAD_DATA = -32, -100, -108, -109, -111, -112
NO_ZALO, BAD_BODY, BAD_TOKEN, REFUSES_ZNS, QUOTA_SPENT = -118, -122, -124, -141, -144
BAD_GRANT, BAD_APP_ID, BAD_SECRET, BAD_REFRESH_TOKEN = -14001, -14002, -14004, -14014

_OAUTH_ERRORS = {
    BAD_GRANT: ("Invalid parameter", "grant_type must be refresh_token and refresh_token is required"),
    BAD_APP_ID: ("Invalid app id", "app_id is invalid"),
    BAD_SECRET: ("Invalid secret key", "secret_key is invalid"),
    BAD_REFRESH_TOKEN: ("Invalid refresh token", "refresh_token is invalid or expired"),
}


class FaultConfig(BaseFaults):
    """Faults injected into Zalo's answers."""

    unknown_error_rate: float = Field(0.0, ge=0, le=1)
    access_ttl_seconds: float | None = Field(None, gt=0, le=30 * 86400)


class WebhookConfig(BaseModel):
    """Where the simulator posts its signed events, and whether a ``user_seen_message`` follows each receipt."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+")
    seen: bool = False


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


def _oautherror_response(code: int, description: str) -> dict[str, Any]:
    name, reason = _OAUTH_ERRORS[code]
    return {"error": code, "error_name": name, "error_reason": reason, "error_description": description}


def _epoch_ms() -> str:
    return str(time.time_ns() // 1_000_000)


def _filled(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _data_problems(params: Sequence[str], data: Mapping[str, Any]) -> str | None:
    """What is wrong with ``template_data``, naming parameters only: their values are personal data."""
    missing = [p for p in params if data.get(p) is None or (isinstance(data[p], str) and not data[p].strip())]
    wrong = [p for p in params if p not in missing and not _filled(data[p])]
    extra = [key for key in data if key not in params]
    parts = ["thiếu tham số " + ", ".join(missing)] if missing else []
    parts += ["sai giá trị tham số " + ", ".join(wrong)] if wrong else []
    parts += ["tham số không có trong template: " + ", ".join(extra)] if extra else []
    return "Dữ liệu template không hợp lệ: " + "; ".join(parts) if parts else None


class ZaloState:
    """Tokens, recorded messages, phone rules, quota, counters, faults and webhook target of one OA."""

    def __init__(
        self, *, app_id: str, app_secret: str, oa_secret_key: str, templates: Mapping[str, Sequence[str]],
        access_ttl_seconds: float, daily_quota: int, rate_per_second: float | None,
    ) -> None:
        for template_id, params in templates.items():
            if isinstance(params, str):
                raise TypeError(f"parameters of template {template_id!r} must be a sequence of names, not a string")
        self.app_id = app_id
        self.app_secret = app_secret
        self.oa_secret_key = oa_secret_key
        self.templates = {str(k): tuple(v) for k, v in templates.items()}
        self.default_ttl = access_ttl_seconds
        self.default_quota = daily_quota
        self.rate_per_second = rate_per_second
        self.generation = 0
        self.background = Background(WEBHOOK_TIMEOUT)
        self.reset()

    def reset(self) -> None:
        """Forget everything; events still in flight no longer count."""
        self.generation += 1
        self.access: dict[str, float] = {}
        self.refresh_tokens: dict[str, float] = {}
        self.spent: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.tracking_ids: set[str] = set()
        self.no_zalo: set[str] = set()
        self.refusing: set[str] = set()
        self.daily_quota = self.default_quota
        self.quota_day = vn_today()
        self.quota_used = 0
        self.bucket = _Bucket(self.rate_per_second) if self.rate_per_second else None
        self.faults: _ActiveFaults | None = None
        self.webhook: WebhookConfig | None = None
        self.counters: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "sent": c["sent"], "duplicate_tracking": c["duplicate_tracking"],
            "refresh": {"ok": c["refresh_ok"], "refused": c["refresh_refused"]},
            "refresh_token_reuse": c["refresh_token_reuse"], "token_expired": c["token_expired"],
            "answers": dict(self.answers),
            "faults": {"error": c["fault_error"], "unknown_error": c["fault_unknown_error"]},
            "webhooks": {"ok": c["webhook_ok"], "failed": c["webhook_failed"]},
            "quota": self.quota(),
        }

    def quota(self) -> dict[str, int]:
        today = vn_today()
        if today != self.quota_day:
            self.quota_day, self.quota_used = today, 0
        return {"daily": self.daily_quota, "used": self.quota_used}

    def set_quota(self, config: QuotaConfig) -> None:
        self.quota()
        if config.daily is not None:
            self.daily_quota = config.daily
        if config.used is not None:
            self.quota_used = config.used

    def phones(self) -> dict[str, list[str]]:
        return {"no_zalo": sorted(self.no_zalo), "refusing": sorted(self.refusing)}

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
        self.counters["refresh_refused" if "error" in answer else "refresh_ok"] += 1
        return answer

    def _refresh(self, secret_key: str | None, form: Mapping[str, str]) -> dict[str, Any]:
        if not hmac.compare_digest(form.get("app_id", "").encode(), self.app_id.encode()):
            return _oautherror_response(BAD_APP_ID, "Ứng dụng không tồn tại")
        if not hmac.compare_digest((secret_key or "").encode(), self.app_secret.encode()):
            return _oautherror_response(BAD_SECRET, "Khóa bí mật của ứng dụng không đúng")
        token = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token" or not token:
            return _oautherror_response(BAD_GRANT, "Tham số không hợp lệ")
        if token in self.spent:
            self.counters["refresh_token_reuse"] += 1
            return _oautherror_response(BAD_REFRESH_TOKEN, "Refresh token không hợp lệ hoặc đã hết hạn")
        until = self.refresh_tokens.pop(token, None)
        if until is None or until <= time.monotonic():
            return _oautherror_response(BAD_REFRESH_TOKEN, "Refresh token không hợp lệ hoặc đã hết hạn")
        self.spent.add(token)
        return self.issue()

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
        params = self.templates.get(template_id) if isinstance(template_id, str) else None
        if params is None:
            return _zns(BAD_TEMPLATE, "ID của template không hợp lệ"), None
        data = body.get("template_data")
        if data is None or data == {}:
            return _zns(EMPTY_DATA, "Dữ liệu template rỗng"), None
        if not isinstance(data, dict):
            return _zns(BAD_DATA, "Dữ liệu template không hợp lệ: template_data phải là đối tượng JSON"), None
        problem = _data_problems(params, data)
        if problem:
            return _zns(BAD_DATA, problem), None
        if self.bucket is not None and not self.bucket.take():
            return _zns(RATE_LIMITED, "vượt quá giới hạn request"), None
        quota = self.quota()
        if quota["used"] >= quota["daily"]:
            return _zns(QUOTA_SPENT, "Vượt quá giới hạn số tin ZNS được gửi trong ngày của OA"), None
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

    def start_events(self, message: dict[str, Any]) -> None:
        """Post the receipt (and seen) events in the background, if a webhook is configured."""
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
            ok = await self.background.post(target.url, body, headers)
            if generation == self.generation:
                self.counters["webhook_ok" if ok else "webhook_failed"] += 1



def create_app(
    *,
    app_id: str,
    app_secret: str,
    oa_secret_key: str,
    templates: Mapping[str, Sequence[str]] | None = None,
    access_ttl_seconds: float = 90000,
    daily_quota: int = 100000,
    rate_per_second: float | None = None,
) -> FastAPI:
    """Build the Zalo simulator; ``templates`` (template_id → its required parameters) defaults to
    :data:`DEFAULT_TEMPLATES`, ``rate_per_second`` None means no rate limit."""
    state = ZaloState(
        app_id=app_id, app_secret=app_secret, oa_secret_key=oa_secret_key,
        templates=DEFAULT_TEMPLATES if templates is None else templates, access_ttl_seconds=access_ttl_seconds,
        daily_quota=daily_quota, rate_per_second=rate_per_second,
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
        return JSONResponse(state.webhook.model_dump())

    @app.delete("/_admin/webhook")
    async def clear_webhook() -> dict[str, str]:
        state.webhook = None
        return {"status": "cleared"}

    add_fault_routes(app, state, FaultConfig)

    add_state_routes(app, state)
    return app
