"""``POST /v1/events``: the signed intake of canonical events from the one-stop software.

The answer is given only after the ledger commit (ledger first). The event's deliveries
are created in the same transaction (routing is pure configuration), so an event never
exists without them; they are queued after the answer, and the sweeper queues them again
if this process dies in between.

=====  ==========================================================================
code   when
=====  ==========================================================================
202    stored; body lists the stored ids (and any duplicates in the batch)
200    every event was already stored with the same content (``"status": "duplicate"``)
400    the body is not JSON, or not an object or array
401    missing, bad or stale Standard Webhooks signature
409    an ``event_id`` already stored with different content (nothing of the batch is stored)
413    the body is over the size limit, or the batch has more than 500 events
422    validation failed; every field error of every event is listed (a unit code closed with no successor
       among them, named: ``closed_unit_code``; one with a successor is stored under it, the code sent kept
       in ``unit_code_sent``; text with a NUL or a lone surrogate, which no ledger stores: ``unstorable_text``)
503    the ledger does not answer (``Retry-After``; nothing of the batch is stored): :mod:`api.app`
=====  ==========================================================================

Field errors name the field and never echo what was sent (it may be a citizen's name or number).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from config.settings import Settings
from config.units import ClosedCode, Directory, load_directory
from schemas.events import (
    DEFAULT_CODE_PATTERNS,
    EVENT_TYPES,
    MAX_BATCH,
    CodePatterns,
    Event,
    TransferRequested,
    event_json,
    parse_event,
)
from schemas.webhook import SignatureError, verify
from schemas.wire import unstorable
from services.http import read_json, read_limited
from store.intake import IngestConflict, ingest_and_route
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)
router = APIRouter()

INTAKE_REQUESTS = Counter("motcua_intake_requests", "Intake requests by answer", ["status"])
INTAKE_EVENTS = Counter("motcua_intake_events", "Events stored by the intake", ["result"])


class StoredEvent(BaseModel):
    event_id: str
    id: int


class IntakeAccepted(BaseModel):
    status: str
    accepted: list[StoredEvent]
    duplicates: list[StoredEvent]


class FieldError(BaseModel):
    index: int
    loc: list[str | int]
    msg: str
    type: str


class IntakeError(BaseModel):
    error: str
    detail: str | None = None
    event_ids: list[str] | None = None
    errors: list[FieldError] | None = None


_REQUEST_SCHEMA = {
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "minItems": 1,
                     "maxItems": MAX_BATCH},
                ]
            }
        }
    },
    "required": True,
    "description": "One canonical event, or a batch of up to 500, signed the Standard Webhooks way.",
}


def _error(status: int, error: str, **extra: Any) -> JSONResponse:
    INTAKE_REQUESTS.labels(str(status)).inc()
    body = IntakeError(error=error, **extra).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status)


def validation_errors(
    raw_events: list[Any], patterns: CodePatterns = DEFAULT_CODE_PATTERNS, directory: Directory | None = None
) -> tuple[list[Event], list[FieldError]]:
    """Validate every event (its codes against ``patterns``, its units against ``directory``); collect every field
    error, never echoing inputs (a unit code is not personal data: a refusal names it)."""
    valid: list[Event] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(raw_events):
        tag = (raw["type"],) if isinstance(raw, dict) and raw.get("type") in EVENT_TYPES else ()  # as pydantic's
        unusable = {(*tag, *loc) for loc in unstorable(raw)}
        errors.extend(FieldError(index=index, loc=list(loc), msg="text with a NUL or a lone surrogate",
                                 type="unstorable_text") for loc in sorted(unusable, key=str))
        try:
            event = parse_event(raw, patterns)
        except ValidationError as exc:
            errors.extend(  # each field said once; a key that is no text is named by its object, above
                FieldError(index=index, loc=list(err["loc"]), msg=err["msg"], type=err["type"])
                for err in exc.errors(include_url=False, include_input=False)
                if err["loc"] not in unusable and not unstorable(list(err["loc"]))
            )
            continue
        if unusable:
            continue
        if directory is None:
            valid.append(event)
            continue
        try:
            valid.append(resolve_units(event, directory))
        except ClosedUnit as exc:
            errors.append(FieldError(index=index, loc=exc.loc, msg=str(exc), type="closed_unit_code"))
    return valid, errors


class ClosedUnit(ValueError):
    def __init__(self, loc: list[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def resolve_units(event: Event, directory: Directory) -> Event:
    """The event with its unit codes as the directory answers them today: a closed code becomes its successor
    (``unit_code_sent`` keeps what was sent), one closed with no successor is :class:`ClosedUnit`."""
    try:
        unit = directory.resolve(event.unit_code)
    except ClosedCode as exc:
        raise ClosedUnit(["unit_code"], str(exc)) from None
    update: dict[str, Any] = {}
    if unit.renamed:
        update = {"unit_code": unit.code, "unit_code_sent": event.unit_code}
        log.info("intake.closed_unit_code", sent=event.unit_code, successor=unit.code, event_id=event.event_id)
    if isinstance(event, TransferRequested):
        try:
            target = directory.resolve(event.data.target_unit)
        except ClosedCode as exc:
            raise ClosedUnit(["data", "target_unit"], str(exc)) from None
        if target.renamed:
            update["data"] = event.data.model_copy(update={"target_unit": target.code})
    return event.model_copy(update=update) if update else event


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IntakeAccepted,
    responses={
        200: {"model": IntakeAccepted, "description": "all duplicates"},
        400: {"model": IntakeError}, 401: {"model": IntakeError}, 409: {"model": IntakeError},
        413: {"model": IntakeError}, 422: {"model": IntakeError}, 503: {"model": IntakeError},
    },
    openapi_extra={"requestBody": _REQUEST_SCHEMA},
    summary="Submit dossier events (signed)",
)
async def intake(request: Request, background: BackgroundTasks) -> Any:
    settings: Settings = request.app.state.settings
    body = await read_limited(request, settings.intake_max_body_bytes)
    if body is None:
        return _error(413, "body too large", detail=f"limit is {settings.intake_max_body_bytes} bytes")
    try:
        verify(settings.intake_secrets(), request.headers, body)
    except SignatureError as exc:
        log.info("intake.bad_signature", reason=str(exc))
        return _error(401, "invalid signature", detail=str(exc))
    try:
        data = read_json(body)
    except ValueError as exc:
        return _error(400, "malformed JSON", detail=str(exc))
    if isinstance(data, dict):
        raw_events: list[Any] = [data]
    elif isinstance(data, list):
        raw_events = data
    else:
        return _error(400, "expected an event object or an array of events")
    if not raw_events:
        return _error(422, "empty batch", errors=[])
    if len(raw_events) > MAX_BATCH:
        return _error(413, "batch too large", detail=f"at most {MAX_BATCH} events per request")
    valid, errors = validation_errors(raw_events, settings.code_patterns, load_directory(
        str(settings.units_file) if settings.units_file else None))
    if errors:
        return _error(422, "validation failed", errors=errors)
    payloads = [event_json(e) for e in valid]
    runtime = get_runtime()
    try:
        stored, ready = await run_in_threadpool(
            ingest_and_route, runtime.engine, payloads, datetime.now(UTC),
            runtime.routing.destinations_for, runtime.rules,
        )
    except IngestConflict as exc:
        return _error(409, "event_id reused with different content", event_ids=exc.event_ids)
    accepted = [StoredEvent(event_id=s.event_id, id=s.pk) for s in stored if not s.duplicate]
    duplicates = [StoredEvent(event_id=s.event_id, id=s.pk) for s in stored if s.duplicate]
    INTAKE_EVENTS.labels("accepted").inc(len(accepted))
    INTAKE_EVENTS.labels("duplicate").inc(len(duplicates))
    if ready:
        background.add_task(run_in_threadpool, runtime.enqueue, ready)
    status = 202 if accepted else 200
    INTAKE_REQUESTS.labels(str(status)).inc()
    answer = IntakeAccepted(status="accepted" if accepted else "duplicate", accepted=accepted, duplicates=duplicates)
    return JSONResponse(answer.model_dump(), status_code=status, background=background)
