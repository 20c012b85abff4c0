"""``POST /v1/callbacks/zalo[/{destination}]``: the Official Account's webhook events, signed by Zalo.

``X-ZEvent-Signature: mac=`` + SHA-256 hex of ``app_id + raw_body + timestamp + oa_secret_key`` (a plain hash, as
Zalo documents it; the destination's ``app_id`` and ``oa_secret_key``, by default ``MOTCUA_ZALO_APP_ID`` and
``MOTCUA_ZALO_OA_SECRET_KEY``), compared in constant time. ``user_received_message`` and ``user_seen_message``
mark the message with that ``tracking_id`` received or seen in the ledger's receipts; other events are
acknowledged and ignored. A bad signature (or another app's event) is 401 and changes nothing; a signed body that
is not an event (no JSON, a ``timestamp`` that is not milliseconds in ASCII digits, ids longer than the ledger
keeps, text with a NUL) is 400 ``{"error", "fields"}`` naming them; a repeated event is harmless.
200 ``{"status": "recorded" | "already recorded" | "ignored"}``; 404 when there is no such Zalo destination.

Zalo waits 2 s for the 200, then posts the event again (after 30 s, 5 min, 15 min, 30 min, 1 h) and at last
disables the webhook. So the answer never waits longer than :data:`ANSWER_WITHIN` for the ledger: a write still
running then goes on in the background and the answer is 503, so that Zalo's retry finds it recorded (or records
it, if the write failed).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from schemas.zalo import ZaloEvent, event_timestamp, zevent_signature
from services.http import callback, context, find, read_json, read_limited, validated
from services.zalo.deliver import ZaloOptions
from store import receipts

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
RECEIPT_EVENTS = {"user_received_message": "received", "user_seen_message": "seen"}
ANSWER_WITHIN = 1.5  # seconds: Zalo counts an answer after 2 s as none
_writing: set[asyncio.Future[Any]] = set()  # ledger writes that outlived their answer


def _written_late(write: asyncio.Future[Any]) -> None:
    _writing.discard(write)
    if not write.cancelled() and write.exception() is not None:
        log.warning("callback.zalo.late_write_failed", error=str(write.exception()), hint="Zalo posts the event again")


@callback(router, "/zalo", "Zalo Official Account webhook events (signed X-ZEvent-Signature)")
async def zalo_callback(request: Request, name: str | None) -> JSONResponse:
    arrived = time.monotonic()  # Zalo's 2 s run from here, not from the write
    ctx = context(request)
    dest = find(ctx, "zalo", name)
    if dest is None:
        return JSONResponse({"error": "no such Zalo destination"}, status_code=404)
    body = await read_limited(request, ctx.settings.intake_max_body_bytes)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    options = ctx.options_of(ZaloOptions, dest)
    app_id = options.app_id.get_secret_value()
    if options.oa_secret_key is None:
        log.warning("callback.zalo.not_configured", hint="set MOTCUA_ZALO_OA_SECRET_KEY (the destination's "
                                                         "oa_secret_key)")
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    try:
        data = read_json(body)
    except ValueError:
        data = None
    given = request.headers.get("x-zevent-signature", "")
    expected = zevent_signature(app_id, body, event_timestamp(data), options.oa_secret_key.get_secret_value())
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.info("callback.zalo.bad_signature")
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    event = validated(ZaloEvent, data)
    if isinstance(event, list):
        log.info("callback.zalo.not_an_event", fields=event[:20])
        return JSONResponse({"error": "not a Zalo event", "fields": event[:20]}, status_code=400)
    if event.app_id != app_id:
        log.info("callback.zalo.bad_signature", reason="another app's event")
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    kind = RECEIPT_EVENTS.get(event.event_name)
    tracking = event.message.tracking_id
    if kind is None or not tracking:
        return JSONResponse({"status": "ignored"})
    msg_id = event.message.msg_id or (event.message.msg_ids[0] if event.message.msg_ids else None)
    write = asyncio.ensure_future(run_in_threadpool(receipts.record, ctx.engine, tracking, "zalo", kind,  # type: ignore[arg-type]
                                                    event.at, msg_id))
    try:
        first = await asyncio.wait_for(asyncio.shield(write), max(0.0, ANSWER_WITHIN - (time.monotonic() - arrived)))
    except TimeoutError:
        _writing.add(write)
        write.add_done_callback(_written_late)
        log.warning("callback.zalo.ledger_slow", within=ANSWER_WITHIN, hint="Zalo posts the event again")
        return JSONResponse({"error": "not recorded in time; post again"}, status_code=503)
    return JSONResponse({"status": "recorded" if first else "already recorded"})
