"""Simulator of an SMS brandname gateway: the fallback when a citizen's phone has no Zalo.

Every real gateway (the carriers' and the resellers') has its own contract; this simulator defines a
generic one, and the relay's connector maps its codes in one table. JSON over HTTP:

``POST /api/v1/sms/send``, header ``Authorization: Bearer <api_key>``, ``{"brandname", "phone", "message",
"request_id"}`` → ``{"code": "00", "message": "OK", "sms_id"}``. ``request_id`` is the client's idempotency
key: the same one again answers the first ``sms_id`` with ``"duplicate": true`` and sends nothing (counted
as ``duplicates``). Refusals, with the first failing check in this order::

    HTTP 401 {"code": "401"}  Authorization missing, not Bearer, or a wrong key
    11  body is not a JSON object, or request_id is not a string of 1 to 100 characters
    12  brandname is not registered to this account
    13  phone is not a Vietnamese mobile in international form without plus (84 + 9 digits)
    14  message is not a string, empty, or longer than 612 characters (Vietnamese allowed)

Business refusals are HTTP 200 ``{"code", "message"}``; messages name fields, never their values (phones
and texts are personal data). A sent message is recorded with its segment count (GSM-7: 160, or 153 per
part; Vietnamese needs UCS-2: 70, or 67 per part).

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` (503, plain text) before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays.

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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.faults import ActiveFaults, BaseFaults, add_fault_routes, add_state_routes, json_body
from schemas.sms import BAD_BRANDNAME, BAD_MESSAGE, BAD_PHONE, BAD_REQUEST, MAX_LENGTH, OK, SEND_PATH

_PHONE = re.compile(r"^84[35789][0-9]{8}$")


class FaultConfig(BaseFaults):
    """Faults injected into the gateway's answers."""



_ActiveFaults = ActiveFaults[FaultConfig]


def _reply(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}


def segments(text: str) -> int:
    """How many SMS parts ``text`` takes: GSM-7 when it is plain ASCII, else UCS-2."""
    single, part = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // part)


class SmsState:
    """Sent messages by request id, counters and faults of one gateway account."""

    def __init__(self, *, api_key: str, brandname: str) -> None:
        self.api_key = api_key
        self.brandname = brandname
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
            "faults": {"error": c["fault_error"]},
        }

    def authorised(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.api_key.encode())

    def send(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            return _reply(BAD_REQUEST, "Yêu cầu không phải đối tượng JSON")
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 100:
            return _reply(BAD_REQUEST, "Thiếu hoặc sai request_id")
        brandname = body.get("brandname")
        if brandname != self.brandname:
            return _reply(BAD_BRANDNAME, "Brandname chưa được đăng ký")
        phone = body.get("phone")
        if not isinstance(phone, str) or not _PHONE.match(phone):
            return _reply(BAD_PHONE, "Số điện thoại không hợp lệ")
        text = body.get("message")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_LENGTH:
            return _reply(BAD_MESSAGE, f"Nội dung tin nhắn rỗng hoặc dài quá {MAX_LENGTH} ký tự")
        first = self.by_request.get(request_id)
        if first is not None:
            self.counters["duplicates"] += 1
            return _reply(OK, "OK", sms_id=first["sms_id"], duplicate=True)
        message = {
            "sms_id": uuid.uuid4().hex, "request_id": request_id, "brandname": brandname, "phone": phone,
            "message": text, "segments": segments(text), "sent_time": str(time.time_ns() // 1_000_000),
        }
        self.messages.append(message)
        self.by_request[request_id] = message
        self.counters["sent"] += 1
        return _reply(OK, "OK", sms_id=message["sms_id"])


def create_app(*, api_key: str, brandname: str = "UBND-HALONG") -> FastAPI:
    """Build the SMS gateway simulator for one account: its API key and its one registered brandname."""
    state = SmsState(api_key=api_key, brandname=brandname)
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
            state.answers["401"] += 1
            return JSONResponse(_reply("401", "Sai hoặc thiếu API key"), status_code=401)
        answer = state.send(await json_body(request))
        state.answers[answer["code"]] += 1
        return JSONResponse(answer)

    @app.get("/_admin/messages")
    async def messages(request_id: str | None = None, phone: str | None = None) -> list[dict[str, Any]]:
        return [
            m for m in state.messages
            if (request_id is None or m["request_id"] == request_id) and (phone is None or m["phone"] == phone)
        ]

    add_fault_routes(app, state, FaultConfig)

    add_state_routes(app, state)
    return app
