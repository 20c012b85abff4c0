"""``POST /v1/callbacks/postal[/{destination}]``: order statuses the post pushes, signed.

The SDK has no push, so its shape is ours to state (``schemas.postal.TrackingPush``: the customer code and the
tracking list's own records), signed the Standard Webhooks way with the destination's ``callback_secret``
(``MOTCUA_POSTAL_CALLBACK_SECRET`` unless ``callback_secret_env`` names another variable). Each status of one of
our orders becomes the ``postal.status`` event the tracking poller would make of it, so a status pushed and
polled, or pushed twice, is stored once. The answer is the gateway's MResult (``Status`` 200 once stored), with
``stored``, ``duplicates``, ``late`` (older than what the order's stream holds: kept, not sent), ``ignored``
(statuses not forwarded, like "waiting for the postman") and ``unknown`` (order numbers that are not ours);
400 for a body that is not a push (``fields`` names what is wrong: an ``EventTime`` past the year 2999, a
``StatusCode`` over an Integer, text with a NUL); 401 for a missing, bad or stale signature; 403 for another
customer code; 404 for no such destination; 413 for a body over the size limit (each also as ``Status``); 503
when the ledger does not answer (:mod:`api.app`).
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from schemas import postal
from services.http import Pushes, callback, context, receive_signed
from services.postal.deliver import PostalOptions
from services.postal.inbound import ingest_statuses

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
POSTAL = Pushes("postal", "callback_secret", "Status", 404, 400, 401, "a tracking push", message_key="Message")


@callback(router, "/postal", "Order statuses pushed by the postal service (signed)")
async def postal_callback(request: Request, name: str | None) -> JSONResponse:
    received = await receive_signed(request, name, POSTAL, postal.TrackingPush)
    if isinstance(received, JSONResponse):
        return received
    dest, pushed = received
    ctx = context(request)
    mapping = ctx.options_of(PostalOptions, dest).mapping()
    if pushed.CustomerCode != mapping.customer_code:
        log.warning("callback.postal.other_customer", customer_code=pushed.CustomerCode)
        return POSTAL.answer(403, 403, "statuses of another customer code")
    report = await run_in_threadpool(ingest_statuses, ctx, dest, mapping, pushed.data)
    log.info("callback.postal.stored", stored=report.stored, duplicates=report.duplicates, late=report.late,
             unknown=len(report.unknown))
    return POSTAL.answer(200, postal.DONE, "Thành công", stored=report.stored, duplicates=report.duplicates,
                         late=report.late, ignored=report.ignored, unknown=sorted(set(report.unknown)))
