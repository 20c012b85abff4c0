"""``POST /v1/callbacks/payment/dptracuuthanhtoanhs[/{destination}]``: the national portal asks whether a dossier
has a fee to pay (OpenCPS's ``dptracuuthanhtoanhs``, by ``MaHoSo``), and the relay answers from its bills, so the
portal sees a fee paid online without asking the one-stop software.

As OpenCPS serves it (PayGateIntegrationApplication ``/kpdvcqg/dptracuuthanhtoanhs``, behind Liferay's
``BasicAuthHeaderAuthVerifier``; PayGateIntegrationActionImpl and KeypayDVCQGUtils build the answer): a ``POST``
whose body is the JSON ``{"MaHoSo": "..."}`` (other fields ignored), with HTTP Basic credentials, answered HTTP 200
with ``{"error_code", "message"}`` (:class:`schemas.payment.LookupAnswer`):

- ``-1``, ``message`` ``[]``: no ``MaHoSo``, a body that is not JSON (or holds a NUL or a lone surrogate, which
  no dossier code has), or a dossier the relay never heard of;
- ``0``, ``[]``: nothing to pay online — every bill of the dossier paid, or held for an operator because a
  payment of another amount came (OpenCPS answers 0 for a payment file confirmed or finished), or a dossier the
  ledger knows that has no bill;
- ``1``, the bill to pay (:class:`schemas.payment.LookupBill`): its ``bill_info`` as the platform was sent it,
  ``transaction_id``, ``client_id`` and ``MaTraCuuTT``. OpenCPS holds one payment file per dossier; a dossier
  with several bills open is answered its oldest, and the next once that one is paid.

The destination is the only platform destination, or the one the path names. The credentials are the
destination's ``lookup_username`` and ``lookup_password`` (``MOTCUA_PAYMENT_LOOKUP_PASSWORD``; several,
comma-separated, while one rotates), compared in constant time; without them, with others, or while no password
is set, the answer is HTTP 401 with ``WWW-Authenticate: Basic`` and error_code -1.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from adapters.payment import lookup_bill
from schemas import payment as pay
from schemas.events import FeeAssessed, parse_stored
from services.base import Context
from services.http import context, find, keys, read_json, read_limited, validated
from services.payment.deliver import PaymentOptions, procedure_name
from store import payments, queries
from store.tables import BillState

log = structlog.get_logger(__name__)
PATH = "/payment/dptracuuthanhtoanhs"  # under /v1/callbacks, mounted by services.payment.callbacks
SUMMARY = "The portal's look-up of a dossier's fee payment (MaHoSo; HTTP Basic)"
UNKNOWN = pay.LookupAnswer(error_code=pay.LOOKUP_UNKNOWN)
NOTHING_DUE = pay.LookupAnswer(error_code=pay.LOOKUP_NOTHING_DUE)


def _takes(options: object) -> bool:
    return isinstance(options, PaymentOptions) and options.provider == "platform"


def _reply(answer: pay.LookupAnswer, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


def authorised(header: str | None, options: PaymentOptions) -> bool:
    """Whether an ``Authorization`` header carries the destination's Basic credentials (constant time)."""
    passwords = keys(options.lookup_password)
    if not header or not passwords or header[:6].lower() != "basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), options.lookup_username.encode())
    password_ok = any(hmac.compare_digest(password.encode(), p.encode()) for p in passwords)
    return user_ok and password_ok


def lookup(ctx: Context, destination: str, dossier_code: str, now: datetime) -> pay.LookupAnswer:
    """The answer for a dossier from the destination's bills (see the module)."""
    engine = ctx.engine
    rows = payments.bills_of_dossier(engine, destination, dossier_code)
    if not rows:
        return NOTHING_DUE if payments.dossier_known(engine, dossier_code) else UNKNOWN
    due = [row for row in rows if row.state == BillState.ISSUED]
    if not due:
        return NOTHING_DUE
    options = ctx.options_of(PaymentOptions, destination)
    assert options.client_id is not None  # a platform destination has one
    assessed = parse_stored(queries.event_payload(engine, due[0].assessed_event_id), kind=FeeAssessed)
    bill = lookup_bill(assessed, options.mapping(), options.client_id, now, procedure_name(ctx, dossier_code))
    return pay.LookupAnswer(error_code=pay.LOOKUP_DUE, message=bill)


async def payment_lookup(request: Request, name: str | None) -> JSONResponse:
    """The portal's question (see the module), for the only platform destination or the one named."""
    ctx = context(request)
    dest = find(ctx, "payment", name, _takes)
    if dest is None:
        return _reply(UNKNOWN, 404)
    options = ctx.options_of(PaymentOptions, dest)
    if not authorised(request.headers.get("authorization"), options):
        log.info("lookup.payment.refused", destination=dest, configured=options.lookup_password is not None)
        return _reply(UNKNOWN, 401, {"WWW-Authenticate": 'Basic realm="dptracuuthanhtoanhs"'})
    body = await read_limited(request, ctx.settings.intake_max_body_bytes)
    try:
        asked = validated(pay.LookupRequest, read_json(body or b""))
    except ValueError:
        return _reply(UNKNOWN)
    if isinstance(asked, list) or not asked.MaHoSo:
        return _reply(UNKNOWN)
    answer = await run_in_threadpool(lookup, ctx, dest, asked.MaHoSo, datetime.now(UTC))
    log.info("lookup.payment.answered", destination=dest, error_code=answer.error_code)
    return _reply(answer)
