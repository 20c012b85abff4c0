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

Payments (``/v1/callbacks/payment/<scheme>``, or ``.../<scheme>/{destination}`` when several payment
destinations take that scheme): a payment reported by a provider, verified in constant time with the
destination's key, then judged against the bill (``tasks.payment.receive_callback``): the bill's amount
is ``fee.paid`` once, however often it is reported; another amount is quarantined and reported, never
paid; a bill we never issued is stored and reported. Every verified callback is kept with its verdict.

- ``platform``: the national payment platform's JSON ``schemas.payment.PlatformCallback``, checksum with
  the callback key (``callback_key_env``, default ``MOTCUA_PAYMENT_CALLBACK_KEY``; comma-separated while
  a key rotates), ``client_id`` the destination's. Reply ``{"return_code", "return_msg"}``: 0 once the
  callback is recorded (any verdict: the platform must stop sending it), -1 with HTTP 401 for a bad
  checksum or another client and with 400 for a body that is not a callback (the platform tries again).
- ``vnpay``: a VNPAY-style gateway's IPN, ``GET`` with ``vnp_*`` query parameters (``POST`` form fields
  are read too), HMAC-SHA512 over the sorted parameters with ``vnpay_secret_env`` (default
  ``MOTCUA_PAYMENT_VNPAY_SECRET``), ``vnp_TmnCode`` the destination's ``vnpay_tmn_code``. Always HTTP
  200 with ``{"RspCode", "Message"}``: ``00`` recorded, ``02`` already confirmed (a repeat), ``01`` no
  such bill (stored), ``04`` the amount differs (quarantined), ``97`` bad signature, ``99`` not an IPN.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from adapters.portal import PortalMapping
from api.intake import read_limited
from config.routing import Destination
from config.settings import Settings
from schemas import payment as pay
from schemas import postal
from schemas.portal import INVALID_DATA, SESSION_INVALID, OnlineCallback
from schemas.privacy import error_fields
from schemas.webhook import SignatureError, verify
from schemas.zalo import ZaloEvent, zevent_signature
from store import receipts
from tasks.payment import receive_callback
from tasks.portal import ingest_online
from tasks.postal import ingest_statuses
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


def _destination(kind: str, name: str | None,
                 takes: Callable[[Destination], bool] = lambda _: True) -> Destination | None:
    """The destination of ``kind`` (that ``takes`` the callback) named ``name``, or the only one."""
    found = {n: d for n, d in get_runtime().routing.destinations.items() if d.kind == kind and takes(d)}
    if name is not None:
        return found.get(name)
    return next(iter(found.values())) if len(found) == 1 else None


def _secrets(dest: Destination, key: str, default_env: str) -> tuple[list[str], str | None]:
    """The destination's secret(s) for ``key`` (comma-separated while a key rotates), and the variable's name."""
    configured, env = dest.secret(key, default_env)
    return (configured or "").replace(",", " ").split(), env


def _verify_standard(dest: Destination, default_env: str, headers: Any, body: bytes) -> None:
    """Standard Webhooks verification with the destination's callback secret(s); :class:`SignatureError`
    when it fails or no secret is configured."""
    secrets, secret_env = _secrets(dest, "callback_secret", default_env)
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


@dataclass(frozen=True)
class _Pushes:
    """How one service's signed pushes are received: its destination kind, the variable naming its
    secret, and the answer codes it understands (in its own envelope key)."""

    kind: str
    secret_env: str
    code_key: str
    no_destination: str
    invalid: str
    unsigned: str
    what: str

    def answer(self, status: int, code: str, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({self.code_key: code, "message": message, **extra}, status_code=status)


PORTAL = _Pushes("portal", "MOTCUA_PORTAL_CALLBACK_SECRET", "error_code", "09", INVALID_DATA, SESSION_INVALID,
                 "an online-dossier callback")
POSTAL = _Pushes("postal", "MOTCUA_POSTAL_CALLBACK_SECRET", "code", postal.ORDER_NOT_FOUND, postal.INVALID_DATA,
                 postal.TOKEN_INVALID, "a tracking push")
_Push = TypeVar("_Push", bound=BaseModel)


async def _receive(request: Request, name: str | None, pushes: _Pushes,
                   model: type[_Push]) -> tuple[Destination, _Push] | JSONResponse:
    """The destination and the verified push, or the answer refusing it (no destination, too large,
    a missing or bad signature, not the service's shape)."""
    settings: Settings = request.app.state.settings
    dest = _destination(pushes.kind, name)
    if dest is None:
        return pushes.answer(404, pushes.no_destination,
                             f"no such {pushes.kind} destination (name it in the path when there are several)")
    body = await read_limited(request, settings.intake_max_body_bytes)
    if body is None:
        return pushes.answer(413, pushes.invalid, f"body over {settings.intake_max_body_bytes} bytes")
    try:
        _verify_standard(dest, pushes.secret_env, request.headers, body)
    except SignatureError as exc:
        log.info(f"callback.{pushes.kind}.bad_signature", reason=str(exc))
        return pushes.answer(401, pushes.unsigned, f"invalid signature: {exc}")
    try:
        return dest, model.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        fields = error_fields(exc) if isinstance(exc, ValidationError) else []
        return pushes.answer(400, pushes.invalid, f"not {pushes.what}", fields=fields[:20])


async def _portal(request: Request, name: str | None) -> JSONResponse:
    received = await _receive(request, name, PORTAL, OnlineCallback)
    if isinstance(received, JSONResponse):
        return received
    dest, pushed = received
    rows = [d.model_dump(mode="json", exclude_none=True) for d in pushed.data]
    report = await run_in_threadpool(ingest_online, rows, PortalMapping.from_options(dest.options))
    log.info("callback.portal.stored", unit_code=pushed.madonvi, stored=report.stored,
             duplicates=report.duplicates, rejected=report.rejected)
    return PORTAL.answer(200, "0", "Thành công", accepted=report.stored, duplicates=report.duplicates,
                         rejected=report.rejected, changed=report.changed)


@router.post("/postal", summary="Order statuses pushed by the postal service (signed)")
async def postal_callback(request: Request) -> JSONResponse:
    return await _postal(request, None)


@router.post("/postal/{destination}", summary="Order statuses pushed by one of several postal services (signed)")
async def postal_callback_named(destination: str, request: Request) -> JSONResponse:
    return await _postal(request, destination)


async def _postal(request: Request, name: str | None) -> JSONResponse:
    received = await _receive(request, name, POSTAL, postal.TrackingPush)
    if isinstance(received, JSONResponse):
        return received
    dest, pushed = received
    customer = dest.option("customer_code")
    if pushed.customerCode != customer:
        log.warning("callback.postal.other_customer", customer_code=pushed.customerCode)
        return POSTAL.answer(403, postal.CUSTOMER_REFUSED, "statuses of another customer code")
    report = await run_in_threadpool(ingest_statuses, dest.name, pushed.data)
    log.info("callback.postal.stored", stored=report.stored, duplicates=report.duplicates, late=report.late,
             unknown=len(report.unknown))
    return POSTAL.answer(200, postal.SUCCESS, "Thành công", stored=report.stored, duplicates=report.duplicates,
                         late=report.late, ignored=report.ignored, unknown=sorted(set(report.unknown)))


# --------------------------------------------------------------------------- payments


def _payment_destination(scheme: str, name: str | None) -> Destination | None:
    """The platform's callbacks go to platform destinations, IPNs to those with a ``vnpay_tmn_code``."""
    if scheme == "platform":
        return _destination("payment", name, lambda d: d.option("provider", "platform") == "platform")
    return _destination("payment", name, lambda d: bool(d.option("vnpay_tmn_code")))


@router.post("/payment/platform", summary="Payments reported by the national payment platform (checksum)")
async def platform_payment(request: Request) -> JSONResponse:
    return await _platform_payment(request, None)


@router.post("/payment/platform/{destination}", summary="Payments reported to one of several platform accounts")
async def platform_payment_named(destination: str, request: Request) -> JSONResponse:
    return await _platform_payment(request, destination)


async def _platform_payment(request: Request, name: str | None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    dest = _payment_destination("platform", name)
    if dest is None:
        return JSONResponse(pay.platform_reply(False, "no such payment destination"), status_code=404)
    body = await read_limited(request, settings.intake_max_body_bytes)
    if body is None:
        return JSONResponse(pay.platform_reply(False, "body too large"), status_code=413)
    try:
        callback = pay.PlatformCallback.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        fields = error_fields(exc) if isinstance(exc, ValidationError) else []
        return JSONResponse({**pay.platform_reply(False, "not a payment callback"), "fields": fields[:20]},
                            status_code=400)
    keys, _ = _secrets(dest, "callback_key", "MOTCUA_PAYMENT_CALLBACK_KEY")
    signed = any(pay.checksum_matches(callback.check_sum, pay.callback_checksum(key, callback)) for key in keys)
    if not signed or callback.client_id != dest.option("client_id"):
        log.info("callback.payment.bad_checksum", scheme="platform", configured=bool(keys))
        return JSONResponse(pay.platform_reply(False, "invalid check_sum"), status_code=401)
    paid_at = pay.parse_time(callback.payment_time)
    verdict = await run_in_threadpool(receive_callback, dest.name, "platform", callback.transaction_id,
                                      callback.gateway_trans_id, callback.trans_amount, callback.status == pay.PAID,
                                      paid_at)
    log.info("callback.payment.recorded", scheme="platform", bill_code=callback.transaction_id, verdict=verdict)
    return JSONResponse({**pay.platform_reply(True, "recorded"), "verdict": verdict})


VNPAY_CODES = {"paid": "00", "repeat": "02", "second_payment": "02", "not_paid": "00", "unknown_bill": "01",
               "amount_mismatch": "04"}


@router.get("/payment/vnpay", summary="VNPAY-style IPN (HMAC-SHA512 over the sorted vnp_* parameters)")
async def vnpay_ipn(request: Request) -> JSONResponse:
    return await _vnpay(request, None)


@router.post("/payment/vnpay", summary="VNPAY-style IPN posted as a form")
async def vnpay_ipn_post(request: Request) -> JSONResponse:
    return await _vnpay(request, None)


@router.get("/payment/vnpay/{destination}", summary="VNPAY-style IPN for one of several destinations")
async def vnpay_ipn_named(destination: str, request: Request) -> JSONResponse:
    return await _vnpay(request, destination)


@router.post("/payment/vnpay/{destination}", summary="VNPAY-style IPN posted as a form, for one of several")
async def vnpay_ipn_post_named(destination: str, request: Request) -> JSONResponse:
    return await _vnpay(request, destination)


async def _vnpay(request: Request, name: str | None) -> JSONResponse:
    dest = _payment_destination("vnpay", name)
    if dest is None:
        return JSONResponse(pay.vnpay_reply("99") | {"Message": "no such payment destination"}, status_code=404)
    params: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        settings: Settings = request.app.state.settings
        body = await read_limited(request, settings.intake_max_body_bytes)
        if body is None:
            return JSONResponse(pay.vnpay_reply("99"), status_code=413)
        params.update(parse_qsl(body.decode("utf-8", "replace")))
    secrets, _ = _secrets(dest, "vnpay_secret", "MOTCUA_PAYMENT_VNPAY_SECRET")
    if not any(pay.vnpay_verify(secret, params) for secret in secrets):
        log.info("callback.payment.bad_checksum", scheme="vnpay", configured=bool(secrets))
        return JSONResponse(pay.vnpay_reply("97"))
    try:
        ipn = pay.VnpayIpn.model_validate(params)
    except ValidationError as exc:
        return JSONResponse(pay.vnpay_reply("99") | {"fields": error_fields(exc)[:20]})
    if ipn.vnp_TmnCode != dest.option("vnpay_tmn_code"):
        log.warning("callback.payment.other_merchant", scheme="vnpay", tmn_code=ipn.vnp_TmnCode)
        return JSONResponse(pay.vnpay_reply("97"))
    paid_at = pay.parse_time(ipn.vnp_PayDate) if ipn.vnp_PayDate else None
    verdict = await run_in_threadpool(receive_callback, dest.name, "vnpay", ipn.vnp_TxnRef, ipn.vnp_TransactionNo,
                                      ipn.amount, ipn.paid and paid_at is not None, paid_at)
    log.info("callback.payment.recorded", scheme="vnpay", bill_code=ipn.vnp_TxnRef, verdict=verdict)
    return JSONResponse(pay.vnpay_reply(VNPAY_CODES[verdict]))
