"""``POST /v1/callbacks/portal[/{destination}]``: online dossiers the national portal pushes, signed.

The body is ``schemas.portal.OnlineCallback`` (one unit's dossiers), signed the Standard Webhooks way with the
destination's ``callback_secret`` (``MOTCUA_PORTAL_CALLBACK_SECRET`` unless ``callback_secret_env`` names
another variable). The answer speaks the portal's language — ``error_code`` "0" once the dossiers are in the
ledger — and a pushed dossier that the pull already brought (or a replayed push) is a harmless duplicate:

=====  ===================================================================================
code   when
=====  ===================================================================================
200    ``{"error_code": "0", "accepted": n, "duplicates": n, "rejected": n}``: stored
400    the body is not JSON or not the callback's shape (``error_code`` "03"), nothing stored
401    missing, bad or stale signature, or no secret configured (``error_code`` "01")
404    no such portal destination
413    the body is over the intake's size limit
503    the ledger does not answer (``Retry-After``; nothing stored): :mod:`api.app`
=====  ===================================================================================

A refusal names the fields (``fields``), never their values; text the ledger cannot store (a NUL, a lone
surrogate) refuses the whole push.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from schemas.portal import INVALID_DATA, SESSION_INVALID, OnlineCallback
from services.http import Pushes, callback, context, receive_signed
from services.portal.deliver import PortalOptions
from services.portal.inbound import ingest_online

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
PORTAL = Pushes("portal", "callback_secret", "error_code", "09", INVALID_DATA, SESSION_INVALID,
                "an online-dossier callback")


@callback(router, "/portal", "Online dossiers pushed by the national portal (signed)")
async def portal_callback(request: Request, name: str | None) -> JSONResponse:
    received = await receive_signed(request, name, PORTAL, OnlineCallback)
    if isinstance(received, JSONResponse):
        return received
    dest, pushed = received
    ctx = context(request)
    rows = [d.model_dump(mode="json", exclude_none=True) for d in pushed.data]
    report = await run_in_threadpool(ingest_online, ctx, rows, ctx.options_of(PortalOptions, dest).mapping())
    log.info("callback.portal.stored", unit_code=pushed.madonvi, stored=report.stored,
             duplicates=report.duplicates, rejected=report.rejected)
    return PORTAL.answer(200, "0", "Thành công", accepted=report.stored, duplicates=report.duplicates,
                         rejected=report.rejected, changed=report.changed)
