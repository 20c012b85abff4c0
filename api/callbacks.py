"""``POST /v1/callbacks/<service>``: what the outside services push back, verified with their own scheme.

Zalo (``/v1/callbacks/zalo``): the Official Account's webhook events, signed
``X-ZEvent-Signature: mac=`` + SHA-256 hex of ``app_id + raw_body + timestamp + oa_secret_key``
(a plain hash, as Zalo documents it; ``MOTCUA_ZALO_APP_ID``, ``MOTCUA_ZALO_OA_SECRET_KEY``),
compared in constant time. ``user_received_message`` and ``user_seen_message`` mark the message
with that ``tracking_id`` received or seen in the ledger's receipts; other events are
acknowledged and ignored. A bad signature is 401 and changes nothing; a repeated event is
harmless. 200 ``{"status": "recorded" | "already recorded" | "ignored"}``.

Portal (``/v1/callbacks/portal``, or ``/v1/callbacks/portal/{destination}`` when several portal
destinations are configured): online dossiers of one unit, ``schemas.portal.OnlineCallback``,
signed the Standard Webhooks way with the secret named by the destination's
``callback_secret_env`` (default ``MOTCUA_PORTAL_CALLBACK_SECRET``). The answer speaks the
portal's language — ``error_code`` "0" once the dossiers are in the ledger — and a pushed
dossier that the pull already brought (or a replayed push) is a harmless duplicate:

=====  ===================================================================================
code   when
=====  ===================================================================================
200    ``{"error_code": "0", "accepted": n, "duplicates": n, "rejected": n}``: stored
400    the body is not JSON or not the callback's shape (``error_code`` "03"), nothing stored
401    missing, bad or stale signature, or no secret configured (``error_code`` "01")
404    no such portal destination
413    the body is over the intake's size limit
=====  ===================================================================================

Postal (``/v1/callbacks/postal``, or ``/v1/callbacks/postal/{destination}``): order statuses the
post pushes, ``schemas.postal.TrackingPush``, signed the Standard Webhooks way with the secret
named by the destination's ``callback_secret_env`` (default ``MOTCUA_POSTAL_CALLBACK_SECRET``).
Each status of one of our orders becomes the ``postal.status`` event the tracking poller would
make of it, so a status pushed and polled, or pushed twice, is stored once. The answer speaks the
post's language (``code`` "00" once stored): 200 with ``stored``, ``duplicates``, ``late`` (older
than what the order's stream holds: kept, not sent), ``ignored`` (statuses not forwarded, like
"waiting for the postman") and ``unknown`` (order numbers that are not ours); 400 code "10" for a
body that is not a push; 401 code "01" for a missing, bad or stale signature; 403 code "30" for
another customer code; 404 for no such destination; 413 for a body over the size limit.
"""

from __future__ import annotations

import hmac
import json
import os
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from adapters.portal import PortalMapping
from api.intake import read_limited
from config.routing import Destination
from config.settings import Settings
from schemas import postal
from schemas.portal import INVALID_DATA, SESSION_INVALID, OnlineCallback
from schemas.privacy import error_fields
from schemas.webhook import SignatureError, verify
from schemas.zalo import ZaloEvent, zevent_signature
from store import receipts
from tasks.portal import ingest_online
from tasks.postal import ingest_statuses
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


def _answer(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message, **extra}, status_code=status)


def _destination(kind: str, name: str | None) -> Destination | None:
    """The destination of ``kind`` named ``name``, or the only one of that kind."""
    found = {n: d for n, d in get_runtime().routing.destinations.items() if d.kind == kind}
    if name is not None:
        return found.get(name)
    return next(iter(found.values())) if len(found) == 1 else None


def _verify_standard(dest: Destination, default_env: str, headers: Any, body: bytes) -> None:
    """Standard Webhooks verification with the destination's callback secret(s) (comma-separated
    while a key rotates); :class:`SignatureError` when it fails or no secret is configured."""
    configured, secret_env = dest.secret("callback_secret", default_env)
    secrets = (configured or "").replace(",", " ").split()
    if not secrets:
        raise SignatureError(f"no callback secret configured ({secret_env})")
    verify(secrets, headers, body)


RECEIPT_EVENTS = {"user_received_message": "received", "user_seen_message": "seen"}


@router.post("/zalo", summary="Zalo Official Account webhook events (signed X-ZEvent-Signature)")
async def zalo_callback(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    app_id = os.environ.get("MOTCUA_ZALO_APP_ID", "")
    oa_key = os.environ.get("MOTCUA_ZALO_OA_SECRET_KEY", "")
    body = await read_limited(request, settings.intake_max_body_bytes)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    if not app_id or not oa_key:
        log.warning("callback.zalo.not_configured", hint="set MOTCUA_ZALO_APP_ID and MOTCUA_ZALO_OA_SECRET_KEY")
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    try:
        event = ZaloEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        event = None
    given = request.headers.get("x-zevent-signature", "")
    expected = zevent_signature(app_id, body, event.timestamp if event else "", oa_key)
    if event is None or event.app_id != app_id or not hmac.compare_digest(given.encode(), expected.encode()):
        log.info("callback.zalo.bad_signature")
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    kind = RECEIPT_EVENTS.get(event.event_name)
    tracking = event.message.tracking_id
    if kind is None or not tracking:
        return JSONResponse({"status": "ignored"})
    msg_id = event.message.msg_id or (event.message.msg_ids[0] if event.message.msg_ids else None)
    at = datetime.fromtimestamp(int(event.timestamp) / 1000, UTC) if event.timestamp.isdigit() else datetime.now(UTC)
    first = await run_in_threadpool(receipts.record, get_runtime().engine, tracking, "zalo", kind, at, msg_id)  # type: ignore[arg-type]
    return JSONResponse({"status": "recorded" if first else "already recorded"})


@router.post("/portal", summary="Online dossiers pushed by the national portal (signed)")
async def portal_callback(request: Request) -> JSONResponse:
    return await _portal(request, None)


@router.post("/portal/{destination}", summary="Online dossiers pushed by one of several portals (signed)")
async def portal_callback_named(destination: str, request: Request) -> JSONResponse:
    return await _portal(request, destination)


async def _portal(request: Request, name: str | None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    dest = _destination("portal", name)
    if dest is None:
        return _answer(404, "09", "no such portal destination (name it in the path when there are several)")
    body = await read_limited(request, settings.intake_max_body_bytes)
    if body is None:
        return _answer(413, INVALID_DATA, f"body over {settings.intake_max_body_bytes} bytes")
    try:
        _verify_standard(dest, "MOTCUA_PORTAL_CALLBACK_SECRET", request.headers, body)
    except SignatureError as exc:
        log.info("callback.portal.bad_signature", reason=str(exc))
        return _answer(401, SESSION_INVALID, f"invalid signature: {exc}")
    try:
        pushed = OnlineCallback.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        fields = error_fields(exc) if isinstance(exc, ValidationError) else []
        return _answer(400, INVALID_DATA, "not an online-dossier callback", fields=fields[:20])
    rows = [d.model_dump(mode="json", exclude_none=True) for d in pushed.data]
    report = await run_in_threadpool(ingest_online, rows, PortalMapping.from_options(dest.options))
    log.info("callback.portal.stored", unit_code=pushed.madonvi, stored=report.stored,
             duplicates=report.duplicates, rejected=report.rejected)
    return _answer(200, "0", "Thành công", accepted=report.stored, duplicates=report.duplicates,
                   rejected=report.rejected, changed=report.changed)


@router.post("/postal", summary="Order statuses pushed by the postal service (signed)")
async def postal_callback(request: Request) -> JSONResponse:
    return await _postal(request, None)


@router.post("/postal/{destination}", summary="Order statuses pushed by one of several postal services (signed)")
async def postal_callback_named(destination: str, request: Request) -> JSONResponse:
    return await _postal(request, destination)


def _postal_answer(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status)


async def _postal(request: Request, name: str | None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    dest = _destination("postal", name)
    if dest is None:
        return _postal_answer(404, postal.ORDER_NOT_FOUND,
                              "no such postal destination (name it in the path when there are several)")
    body = await read_limited(request, settings.intake_max_body_bytes)
    if body is None:
        return _postal_answer(413, postal.INVALID_DATA, f"body over {settings.intake_max_body_bytes} bytes")
    try:
        _verify_standard(dest, "MOTCUA_POSTAL_CALLBACK_SECRET", request.headers, body)
    except SignatureError as exc:
        log.info("callback.postal.bad_signature", reason=str(exc))
        return _postal_answer(401, postal.TOKEN_INVALID, f"invalid signature: {exc}")
    try:
        pushed = postal.TrackingPush.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        fields = error_fields(exc) if isinstance(exc, ValidationError) else []
        return _postal_answer(400, postal.INVALID_DATA, "not a tracking push", fields=fields[:20])
    customer = dest.option("customer_code")
    if pushed.customerCode != customer:
        log.warning("callback.postal.other_customer", customer_code=pushed.customerCode)
        return _postal_answer(403, postal.CUSTOMER_REFUSED, "statuses of another customer code")
    report = await run_in_threadpool(ingest_statuses, dest.name, pushed.data)
    log.info("callback.postal.stored", stored=report.stored, duplicates=report.duplicates, late=report.late,
             unknown=len(report.unknown))
    return _postal_answer(200, postal.SUCCESS, "Thành công", stored=report.stored, duplicates=report.duplicates,
                          late=report.late, ignored=report.ignored, unknown=sorted(set(report.unknown)))
