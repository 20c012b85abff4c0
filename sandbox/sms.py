"""Simulator of an SMS brandname gateway: the fallback when a citizen's phone has no Zalo.

Every real gateway (the carriers' and the resellers') has its own contract; this simulator defines a
generic one, and the relay's connector maps its codes in one table. JSON over HTTP:

``POST /api/v1/sms/send``, header ``Authorization: Bearer <api_key>``, ``{"brandname", "phone", "message",
"request_id"}`` → ``{"code": "00", "message": "OK", "sms_id"}``. ``request_id`` is the client's idempotency
key: the same one again sends nothing (counted as ``duplicates``) and is answered as the gateway's
``dialect`` does. Refusals, with the first failing check in this order::

    HTTP 401 {"code": "401"}  Authorization missing, not Bearer, or a wrong key
    11  body is not a JSON object, or request_id is not a string of 1 to 100 characters
    12  brandname is not registered to this account
    13  phone is not a Vietnamese mobile in international form without plus (84 + 9 digits)
    14  message is not a string, empty, or longer than 612 characters (Vietnamese allowed)

Dialects (``create_app(dialect=…)``):

- ``generic``: the answers above; a repeated ``request_id`` is answered the first ``sms_id`` with
  ``"duplicate": true``.
- ``esms``: the answers of eSMS's family (``schemas.sms``): ``{"CodeResult", "CountRegenerate", "SMSID" |
  "ErrorMessage"}``, ``100`` for a sent SMS, ``124`` "Duplicate RequestId" (no ``SMSID``) for a repeated
  ``request_id``, and eSMS's codes where it names one: ``101`` for a wrong key (HTTP 200, as eSMS answers it),
  ``104`` brandname, ``108`` phone; the request checks eSMS's table has no code for keep ``11`` and ``14``.

Business refusals are HTTP 200; messages name fields, never their values (phones and texts are personal
data). A sent message is recorded with its segment count (GSM-7: 160, or 153 per part; Vietnamese needs
UCS-2: 70, or 67 per part).

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` (503, plain text) before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays;
``timeout_rate`` takes the send (the SMS goes), then hangs ``hang_seconds`` before answering (the answer a
client with a shorter read timeout never gets).

Admin: ``GET /_admin/messages?request_id=&phone=``, ``GET /_admin/stats``, ``POST /_admin/reset``
(messages, request ids, counters, faults). State lives in memory on the app's event loop. Nothing is
logged per request, so no personal data can reach a log.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from sandbox.faults import ActiveFaults, BaseFaults, add_fault_routes, add_state_routes, json_body
from schemas import sms
from schemas.sms import BAD_BRANDNAME, BAD_MESSAGE, BAD_PHONE, BAD_REQUEST, MAX_LENGTH, OK, SEND_PATH

_PHONE = re.compile(r"^84[35789][0-9]{8}$")
UNAUTHORISED = "401"
Dialect = Literal["generic", "esms"]

# the generic codes as eSMS numbers them (those it has a code for)
_ESMS = {OK: sms.ESMS_SENT, BAD_BRANDNAME: sms.ESMS_BRANDNAME, BAD_PHONE: sms.ESMS_BAD_PHONE,
         UNAUTHORISED: sms.ESMS_AUTH_FAILED}


class FaultConfig(BaseFaults):
    """Faults injected into the gateway's answers."""

    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(30.0, ge=0, le=3600)


_ActiveFaults = ActiveFaults[FaultConfig]


@dataclass(frozen=True)
class Answer:
    """What the gateway decided, before the dialect words it."""

    code: str
    message: str
    sms_id: str | None = None
    duplicate: bool = False

    def render(self, dialect: Dialect) -> tuple[dict[str, Any], int]:
        """The JSON body and the HTTP status in ``dialect``."""
        if dialect == "esms":
            if self.duplicate:
                return {"CodeResult": sms.ESMS_DUPLICATE, "CountRegenerate": 0,
                        "ErrorMessage": sms.ESMS_CODES[sms.ESMS_DUPLICATE]}, 200
            code = _ESMS.get(self.code, self.code)
            if code == sms.ESMS_SENT:
                return {"CodeResult": code, "CountRegenerate": 0, "SMSID": self.sms_id}, 200
            return {"CodeResult": code, "CountRegenerate": 0, "ErrorMessage": self.message}, 200
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.sms_id is not None:
            body["sms_id"] = self.sms_id
        if self.duplicate:
            body["duplicate"] = True
        return body, 401 if self.code == UNAUTHORISED else 200


def segments(text: str) -> int:
    """How many SMS parts ``text`` takes: GSM-7 when it is plain ASCII, else UCS-2."""
    single, part = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // part)


class SmsState:
    """Sent messages by request id, counters and faults of one gateway account."""

    def __init__(self, *, api_key: str, brandname: str, dialect: Dialect = "generic") -> None:
        self.api_key = api_key
        self.brandname = brandname
        self.dialect: Dialect = dialect
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.by_request: dict[str, dict[str, Any]] = {}
        self.faults: _ActiveFaults | None = None
        self.counters: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "sent": c["sent"], "duplicates": c["duplicates"], "answers": dict(self.answers),
            "faults": {"error": c["fault_error"], "timeout": c["fault_timeout"]},
        }

    def authorised(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.api_key.encode())

    def send(self, body: Any) -> Answer:
        if not isinstance(body, dict):
            return Answer(BAD_REQUEST, "Yêu cầu không phải đối tượng JSON")
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 100:
            return Answer(BAD_REQUEST, "Thiếu hoặc sai request_id")
        brandname = body.get("brandname")
        if brandname != self.brandname:
            return Answer(BAD_BRANDNAME, "Brandname chưa được đăng ký")
        phone = body.get("phone")
        if not isinstance(phone, str) or not _PHONE.match(phone):
            return Answer(BAD_PHONE, "Số điện thoại không hợp lệ")
        text = body.get("message")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_LENGTH:
            return Answer(BAD_MESSAGE, f"Nội dung tin nhắn rỗng hoặc dài quá {MAX_LENGTH} ký tự")
        first = self.by_request.get(request_id)
        if first is not None:
            self.counters["duplicates"] += 1
            return Answer(OK, "OK", sms_id=first["sms_id"], duplicate=True)
        message = {
            "sms_id": uuid.uuid4().hex, "request_id": request_id, "brandname": brandname, "phone": phone,
            "message": text, "segments": segments(text), "sent_time": str(time.time_ns() // 1_000_000),
        }
        self.messages.append(message)
        self.by_request[request_id] = message
        self.counters["sent"] += 1
        return Answer(OK, "OK", sms_id=message["sms_id"])


def create_app(*, api_key: str, brandname: str = "UBND-HALONG", dialect: Dialect = "generic") -> FastAPI:
    """Build the SMS gateway simulator for one account: its API key, its one registered brandname, and how it
    words its answers (``generic`` or ``esms``)."""
    state = SmsState(api_key=api_key, brandname=brandname, dialect=dialect)
    app = FastAPI(title="motcua-relay sandbox: SMS brandname gateway", docs_url=None, redoc_url=None)
    app.state.sms = state

    @app.post(SEND_PATH)
    async def send(request: Request) -> Response:
        faults = state.faults
        if faults is not None:
            if faults.config.latency_ms or faults.config.latency_jitter_ms:
                await asyncio.sleep(faults.latency())
            if faults.draw(faults.config.error_rate):
                state.counters["fault_error"] += 1
                return Response("injected fault", status_code=faults.config.error_status, media_type="text/plain")
        if not state.authorised(request.headers.get("authorization")):
            answer = Answer(UNAUTHORISED, "Sai hoặc thiếu API key")
        else:
            answer = state.send(await json_body(request))
        body, status = answer.render(state.dialect)
        state.answers[str(body.get("code", body.get("CodeResult")))] += 1
        if faults is not None and faults.draw(faults.config.timeout_rate):
            state.counters["fault_timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return JSONResponse(body, status_code=status)

    @app.get("/_admin/messages")
    async def messages(request_id: str | None = None, phone: str | None = None) -> list[dict[str, Any]]:
        return [
            m for m in state.messages
            if (request_id is None or m["request_id"] == request_id) and (phone is None or m["phone"] == phone)
        ]

    add_fault_routes(app, state, FaultConfig)

    add_state_routes(app, state)
    return app
