"""``/v1/callbacks/payment/<scheme>[/{destination}]``: payments a provider reports, verified in constant time; and
the portal's look-up of a dossier's payment (:mod:`services.payment.lookup`, mounted here).

Each is judged against the bill (:func:`services.payment.inbound.receive_callback`): the bill's amount is
``fee.paid`` once, however often it is reported; another amount is quarantined and reported, never paid; a bill we
never issued is stored and reported. Every verified callback is kept with its verdict. The destination is the
only one that takes the scheme, or the one the path names.

- ``platform``: the national payment platform's JSON callback, ``schemas.payment.PlatformCallback`` (docs/contracts.md
  M12–M14). Its check_sum must be HMAC-SHA256 with the destination's ``callback_key`` (hash_key_2,
  ``MOTCUA_PAYMENT_CALLBACK_KEY``; comma-separated while a key rotates) over
  ``addition_fee|client_id|command|trans_amount|transaction_id|version`` as the callback carries them, and
  ``client_id``, ``command`` and ``version`` must be the destination's: for a payment of the bill, exactly what
  OpenCPS recomputes from the registered values; for a payment of another amount, signed, so it is held rather
  than refused. The callback has no payment time: the payment is dated when the relay receives it (the
  ``fee.paid``'s ``paid_at``, the bill's and the callback's row). The reply is always HTTP 200 with
  ``{"return_code", "return_msg"}``: 0 once recorded (any verdict, a repeat or a bill we never issued included:
  the platform must stop sending it), -1 for a bad checksum, another partner's callback, a body that is not a
  callback (``return_msg`` names its fields: an amount over a long, an id over the ledger's 60 characters, text
  with a NUL), or no such destination — and nothing changes.
- ``vnpay``: a VNPAY-style gateway's IPN, ``GET`` with ``vnp_*`` query parameters (``POST`` form fields are read
  too), HMAC-SHA512 over the sorted parameters with ``vnpay_secret`` (``MOTCUA_PAYMENT_VNPAY_SECRET``), encoded
  as VNPAY's published samples encode them (``schemas.payment.vnpay_hash_data``), ``vnp_TmnCode`` the
  destination's ``vnpay_tmn_code``. Paid only when both ``vnp_ResponseCode`` and ``vnp_TransactionStatus`` are
  ``00``. Always HTTP 200 with ``{"RspCode", "Message"}``: ``00`` recorded, ``02`` already confirmed (a repeat),
  ``01`` no such bill (stored), ``04`` the amount differs (quarantined), ``97`` bad signature, ``99`` not an IPN
  (``fields`` names what: a ``vnp_PayDate`` that is not ``yyyyMMddHHmmss`` in ASCII digits and in the years
  1900–2999, a ``vnp_TxnRef`` over 60 characters, text with a NUL).
  An IPN that does not say paid (either code other than ``00``, or missing) is recorded as not paid and
  answered ``00``, as VNPAY's sample IPN confirms a failed payment: it is a notification taken, not one to send
  again. No ``fee.paid`` comes of it and the bill stays issued, so the query of bills left unanswered and the
  reconciliation still find a payment that was made.

Either answers 503 instead when the ledger does not answer (:mod:`api.app`): nothing was recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from schemas import payment as pay
from services.http import callback, context, find, keys, read_json, read_limited, validated
from services.payment import lookup
from services.payment.deliver import Book, PaymentOptions
from services.payment.inbound import receive_callback

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


def _takes_platform(options: object) -> bool:
    return isinstance(options, PaymentOptions) and options.provider == "platform"


def _takes_vnpay(options: object) -> bool:
    return isinstance(options, PaymentOptions) and bool(options.vnpay_tmn_code)


def _refused(message: str) -> JSONResponse:
    """-1 with HTTP 200, as the platform expects every reply (M14)."""
    return JSONResponse(pay.platform_reply(False, message))


@callback(router, "/payment/platform", "Payments reported by the national payment platform (checksum)")
async def platform_payment(request: Request, name: str | None) -> JSONResponse:
    ctx = context(request)
    dest = find(ctx, "payment", name, _takes_platform)
    if dest is None:
        return _refused("no such payment destination")
    body = await read_limited(request, ctx.settings.intake_max_body_bytes)
    if body is None:
        return _refused("body too large")
    try:
        callback = validated(pay.PlatformCallback, read_json(body))
    except ValueError:
        callback = ["body"]
    if isinstance(callback, list):
        return _refused("not a payment callback: " + ", ".join(callback[:20]))
    options = ctx.options_of(PaymentOptions, dest)
    secrets = keys(options.callback_key)
    signed = any(pay.checksum_matches(callback.check_sum, pay.callback_checksum(key, callback)) for key in secrets)
    ours = (callback.client_id, callback.command, callback.version) == (options.client_id, options.command,
                                                                       options.version)
    if not signed or not ours:
        log.info("callback.payment.bad_checksum", scheme="platform", configured=bool(secrets), ours=ours)
        return _refused("invalid check_sum" if not signed else "not this partner's transaction")
    verdict = await run_in_threadpool(receive_callback, Book.of(ctx, dest), "platform", callback.transaction_id,
                                      callback.transaction_code, callback.trans_amount, callback.status == pay.PAID,
                                      datetime.now(UTC))
    log.info("callback.payment.recorded", scheme="platform", bill_code=callback.transaction_id, verdict=verdict)
    return JSONResponse(pay.platform_reply(True, "recorded"))


# the reply to each verdict; "not_paid" is taken (00), as VNPAY's sample IPN answers a failed payment
VNPAY_CODES = {"paid": "00", "repeat": "02", "second_payment": "02", "not_paid": "00", "unknown_bill": "01",
               "amount_mismatch": "04"}


@callback(router, "/payment/vnpay", "VNPAY-style IPN (HMAC-SHA512 over the sorted vnp_* parameters; GET, or a "
          "POSTed form)", methods=("GET", "POST"))
async def vnpay_ipn(request: Request, name: str | None) -> JSONResponse:
    ctx = context(request)
    dest = find(ctx, "payment", name, _takes_vnpay)
    if dest is None:
        return JSONResponse(pay.vnpay_reply("99") | {"Message": "no such payment destination"}, status_code=404)
    params: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        body = await read_limited(request, ctx.settings.intake_max_body_bytes)
        if body is None:
            return JSONResponse(pay.vnpay_reply("99"), status_code=413)
        params.update(parse_qsl(body.decode("utf-8", "replace")))
    options = ctx.options_of(PaymentOptions, dest)
    secrets = keys(options.vnpay_secret)
    if not any(pay.vnpay_verify(secret, params) for secret in secrets):
        log.info("callback.payment.bad_checksum", scheme="vnpay", configured=bool(secrets))
        return JSONResponse(pay.vnpay_reply("97"))
    ipn = validated(pay.VnpayIpn, params)
    if isinstance(ipn, list):
        return JSONResponse(pay.vnpay_reply("99") | {"fields": ipn[:20]})
    if ipn.vnp_TmnCode != options.vnpay_tmn_code:
        log.warning("callback.payment.other_merchant", scheme="vnpay", tmn_code=ipn.vnp_TmnCode)
        return JSONResponse(pay.vnpay_reply("97"))
    paid_at = pay.parse_time(ipn.vnp_PayDate) if ipn.vnp_PayDate else None  # a real time: the model checked it
    verdict = await run_in_threadpool(receive_callback, Book.of(ctx, dest), "vnpay", ipn.vnp_TxnRef,
                                      ipn.vnp_TransactionNo, ipn.amount, ipn.paid and paid_at is not None, paid_at)
    log.info("callback.payment.recorded", scheme="vnpay", bill_code=ipn.vnp_TxnRef, verdict=verdict)
    return JSONResponse(pay.vnpay_reply(VNPAY_CODES[verdict]))


# the portal's look-up of a dossier's payment, beside the callbacks
callback(router, lookup.PATH, lookup.SUMMARY)(lookup.payment_lookup)
