"""The ASGI application: intake, the services' callbacks, health, metrics, the console.

``uvicorn api.app:create_app --factory``.

Answers every route shares: 503 with ``Retry-After`` (:data:`RETRY_AFTER_SECONDS`) and ``{"error", "detail"}``
when the ledger or Redis does not answer (:data:`UNAVAILABLE`: the request changed nothing, the sender tries
again); 422 ``{"error", "detail"}`` for a request FastAPI itself refuses (a path or form parameter), listing
each field without the value sent, which FastAPI's own answer echoes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import REGISTRY as PROCESS_REGISTRY
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console.app import router as console_router
from api.headers import SecurityHeaders
from api.intake import router as intake_router
from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.units import load_directory
from schemas.events import event_schema
from store import queries
from store.db import ping
from tasks.audit import checkpoint_age
from tasks.metrics import RelayCollector
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)

UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,  # the database is down, restarting, locked, or the connection broke
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no connection free in the pool in time
    redis.ConnectionError,
    redis.TimeoutError,
)
"""What a request meets when the ledger or Redis does not answer: weather, answered 503, not a bug's 500."""
RETRY_AFTER_SECONDS = 5


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    if not settings.intake_secrets():
        log.warning("intake.no_secret", hint="set MOTCUA_INTAKE_SECRET: every intake request will be refused")
    # the unit directory the intake resolves closed codes with: a broken one stops the API now, not at an event
    load_directory(str(settings.units_file) if settings.units_file else None)
    app = FastAPI(
        title="motcua-relay",
        version="0.1.0",
        description="Reliable relay of one-stop-shop dossier events to the services they must reach.",
    )
    app.add_middleware(SecurityHeaders)
    runtime = get_runtime()
    app.state.settings = settings
    app.state.context = runtime  # what the services' callback routers work with (services.http.context)
    for problem in runtime.problems():
        log.error("config.destination_unusable", problem=problem)
    app.include_router(intake_router)
    for service in runtime.registry:
        if service.callbacks is not None:
            app.include_router(service.callbacks.load())
    app.include_router(console_router)

    registry = CollectorRegistry()
    registry.register(
        RelayCollector(runtime.metrics, lambda: queries.open_backlog(runtime.engine, datetime.now(UTC)),
                       dead=lambda: queries.dead_counts(runtime.engine),
                       breakers=lambda: {name: bool(runtime.protection.state(name)["open"])
                                         for name in runtime.routing.destinations},
                       paused=lambda: runtime.pauses.counts(runtime.routing.destinations),
                       checkpoint_age=lambda: checkpoint_age(runtime, datetime.now(UTC)))
    )

    app.add_exception_handler(RequestValidationError, _refused)  # type: ignore[arg-type]
    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, _unavailable)

    app.add_middleware(RequestId)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        payload = await run_in_threadpool(lambda: generate_latest(registry) + generate_latest(PROCESS_REGISTRY))
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the ledger and Redis answer")
    async def readyz() -> JSONResponse:
        checks: dict[str, Any] = {}

        def probe() -> None:
            try:
                ping(runtime.engine)
                checks["database"] = "ok"
            except Exception as exc:
                checks["database"] = f"error: {type(exc).__name__}"
            if runtime.redis is not None:
                try:
                    runtime.redis.ping()
                    checks["redis"] = "ok"
                except Exception as exc:
                    checks["redis"] = f"error: {type(exc).__name__}"

        await run_in_threadpool(probe)
        ok = all(v == "ok" for v in checks.values())
        checks["workers"] = await run_in_threadpool(_workers)
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/readyz/workers", summary="Whether Celery workers answer a ping (503 when none does)")
    async def workers_ready() -> JSONResponse:
        found = await run_in_threadpool(_workers)
        return JSONResponse(found, status_code=200 if found.get("answering") else 503)

    _add_event_schema(app, settings)
    return app


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 for a ledger or Redis that does not answer, logged by the error's class and the driver's reason (never
    the statement, whose parameters hold what the request sent)."""
    what = "Redis" if isinstance(exc, redis.RedisError) else "the ledger"
    cause = getattr(exc, "orig", None) or exc
    log.warning("api.unavailable", path=request.url.path, unavailable=what, error=type(cause).__name__,
                reason=str(cause).strip().split("\n", 1)[0][:200], retry_after=RETRY_AFTER_SECONDS)
    return JSONResponse({"error": "service unavailable",
                         "detail": f"{what} does not answer; nothing was stored: try again in {RETRY_AFTER_SECONDS} s"},
                        status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _refused(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without the ``input`` (and ``ctx``) it echoes by default: each field and what is wrong."""
    fields = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
              for err in exc.errors()]
    return JSONResponse({"error": "validation failed", "detail": fields}, status_code=422)


class RequestId:
    """Binds each request's ``x-request-id`` (the caller's, or a new one) to the logs and answers it back: plain ASGI,
    not ``@app.middleware``, whose task and streams per request cost more than most answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex[:16]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")


def _workers() -> dict[str, Any]:
    """Which Celery workers answer a ping within a second (the API takes events without them: the ledger
    keeps what they have not delivered, so this is reported, not a reason to stop taking events)."""
    from tasks.app import app as celery_app

    try:
        replies = celery_app.control.ping(timeout=1.0)
    except Exception as exc:  # the broker does not answer: the redis check says so too
        return {"answering": 0, "error": type(exc).__name__}
    names = sorted(name for reply in replies for name in reply)
    return {"answering": len(names), "names": names}


def _add_event_schema(app: FastAPI, settings: Settings) -> None:
    """Publish the canonical event union under ``components.schemas.Event`` in /openapi.json, with the code
    patterns this process checks (the settings')."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        event = event_schema(settings.code_patterns, ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event.pop("$defs", {}))
        components["Event"] = event
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
