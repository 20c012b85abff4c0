"""Simulator of the one-stop software ("phần mềm một cửa điện tử") as a webhook subscriber of the relay.

The relay posts each canonical event (one JSON object, :func:`schemas.events.event_json`)
to ``POST /subscribers/{name}/events``, signed the Standard Webhooks way with that
subscriber's ``whsec_…`` secret. The simulator verifies the signature, validates the
event, applies it once per idempotency key (``Idempotency-Key``, else ``webhook-id``)
and answers::

    200 {"status": "accepted", "receipt_id": "...", "event_id": "..."}   first time
    200 (same body) + "Idempotent-Replayed: true"                       same key again
    401 {"error": ...}   bad, stale or missing signature
    404 {"error": ...}   unknown subscriber
    422 {"error": ...}   body is not a valid event

Faults are injected per subscriber or for all (``POST /_admin/faults``), drawn from a
seeded :class:`random.Random`:

- ``error_rate``: answer ``error_status`` (default 503, optional ``Retry-After``) before storing anything;
- ``timeout_rate``: store the effect, then hang ``hang_seconds`` before answering, the ambiguous case
  where the work is done but the client has given up;
- ``reset_rate``: drop the connection in the middle of the response body (clients see a transport
  error such as ``httpx.RemoteProtocolError``); nothing is stored unless ``reset_after_store``;
- ``latency_ms`` (+ up to ``latency_jitter_ms``): added to every subscriber request.

Inspection: ``GET /_admin/stats``, ``GET /_admin/received``, ``GET|DELETE /_admin/faults``,
``POST /_admin/reset``. State lives in memory on the app's single event loop. Nothing is
logged per request, so no personal data can reach a log. A reset closes the connection
without a complete response, which uvicorn reports with one error line (no request data).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, ValidationError
from starlette.types import Receive, Scope, Send

from sandbox.faults import ActiveFaults, BaseFaults, add_state_routes, error_response
from schemas.events import parse_event
from schemas.webhook import SignatureError, secret_key, verify

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
_JSON = "application/json"


class FaultConfig(BaseFaults):
    """Faults injected into one subscriber's endpoint (or every subscriber's when ``subscriber`` is null)."""

    subscriber: str | None = None
    retry_after: int | None = Field(None, ge=0)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(30.0, ge=0, le=3600)
    reset_rate: float = Field(0.0, ge=0, le=1)
    reset_after_store: bool = False


_ActiveFaults = ActiveFaults[FaultConfig]


class SubscriberState:
    """Counters, idempotency answers and applied effects of one subscriber."""

    __slots__ = (
        "answers",
        "distinct",
        "duplicates",
        "effects",
        "fault_error",
        "fault_reset",
        "fault_timeout",
        "invalid",
        "receipts",
        "rejected_signature",
    )

    def __init__(self) -> None:
        self.receipts = 0
        self.distinct = 0
        self.duplicates = 0
        self.rejected_signature = 0
        self.invalid = 0
        self.fault_error = 0
        self.fault_timeout = 0
        self.fault_reset = 0
        self.answers: dict[str, bytes] = {}
        self.effects: list[dict[str, Any]] = []

    def stats(self) -> dict[str, Any]:
        """The counters as JSON."""
        return {
            "receipts": self.receipts,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "rejected_signature": self.rejected_signature,
            "invalid": self.invalid,
            "faults": {"error": self.fault_error, "timeout": self.fault_timeout, "reset": self.fault_reset},
        }


class SandboxState:
    """Everything the simulator remembers: subscribers' secrets and state, and the injected faults."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        for name, secret in secrets.items():
            try:
                secret_key(secret)
            except ValueError as exc:
                raise ValueError(f"secret of subscriber {name!r} is not a whsec_<base64> secret") from exc
        self.secrets: dict[str, list[str]] = {name: [secret] for name, secret in secrets.items()}
        self.subscribers: dict[str, SubscriberState] = {name: SubscriberState() for name in secrets}
        self.faults: dict[str | None, _ActiveFaults] = {}
        self._receipt_ids = itertools.count(1)

    def next_receipt_id(self) -> str:
        """A receipt id never handed out before by this simulator (not even before a reset)."""
        return f"rcpt-{next(self._receipt_ids):08d}"

    def faults_for(self, name: str) -> _ActiveFaults | None:
        """The subscriber's own faults, else the global ones."""
        return self.faults.get(name) or self.faults.get(None)

    def set_faults(self, config: FaultConfig) -> None:
        """Replace the faults of ``config.subscriber`` (or the global ones)."""
        self.faults[config.subscriber] = _ActiveFaults(config)

    def clear_faults(self, subscriber: str | None = None) -> None:
        """Clear one subscriber's faults, or all of them when ``subscriber`` is None."""
        if subscriber is None:
            self.faults.clear()
        else:
            self.faults.pop(subscriber, None)

    def reset(self) -> None:
        """Forget every receipt, counter and fault."""
        self.subscribers = {name: SubscriberState() for name in self.secrets}
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Counters of every subscriber."""
        return {name: sub.stats() for name, sub in self.subscribers.items()}

    def received(self, subscriber: str, dossier_code: str | None = None, full: bool = False) -> list[dict[str, Any]]:
        """The distinct effects applied for a subscriber, in arrival order."""
        out = []
        for effect in self.subscribers[subscriber].effects:
            if dossier_code is not None and effect["dossier_code"] != dossier_code:
                continue
            row = {k: v for k, v in effect.items() if k != "event"}
            row["received_at"] = datetime.fromtimestamp(effect["received_at"], UTC).isoformat()
            if full:
                row["event"] = effect["event"]
            out.append(row)
        return out


class _ConnectionReset(Response):
    """Promise a body, send part of it, and stop: the server then closes the connection mid-response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", _JSON.encode()), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"status":"acc', "more_body": True})


def _invalid_message(exc: ValidationError) -> str:
    # Only locations and messages: pydantic's default text echoes the input, which holds personal data.
    parts = [
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_url=False, include_context=False, include_input=False)[:5]
    ]
    return "invalid event: " + "; ".join(parts)


def create_app(secrets: Mapping[str, str], *, validate: bool = True) -> FastAPI:
    """Build the one-stop simulator for the given subscribers (name → ``whsec_…`` secret).

    With ``validate=False`` the body is only parsed as JSON and checked to be an object
    with an ``event_id``, for benchmarks where full validation would dominate the cost.
    """
    state = SandboxState(secrets)
    app = FastAPI(title="motcua-relay sandbox: one-stop software", docs_url=None, redoc_url=None)
    app.state.sandbox = state

    @app.post("/subscribers/{name}/events")
    async def receive_event(name: str, request: Request) -> Response:
        sub = state.subscribers.get(name)
        if sub is None:
            return error_response(404, f"unknown subscriber {name!r}")
        faults = state.faults_for(name)
        reset = False
        if faults is not None:
            config = faults.config
            if config.latency_ms or config.latency_jitter_ms:
                await asyncio.sleep(faults.latency())
            if faults.draw(config.error_rate):
                sub.fault_error += 1
                headers = {"Retry-After": str(config.retry_after)} if config.retry_after is not None else None
                return error_response(config.error_status, "injected fault", headers)
            if faults.draw(config.reset_rate):
                sub.fault_reset += 1
                if not config.reset_after_store:
                    return _ConnectionReset()
                reset = True

        body = await request.body()
        try:
            msg_id = verify(state.secrets[name], request.headers, body)
        except SignatureError as exc:
            sub.rejected_signature += 1
            return error_response(401, str(exc))

        try:
            event = json.loads(body)
            if validate:
                parse_event(event)
            elif not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
                raise ValueError("body is not an event object")
        except ValidationError as exc:
            sub.invalid += 1
            return error_response(422, _invalid_message(exc))
        except ValueError:
            sub.invalid += 1
            return error_response(422, "body is not a JSON event object")

        key = request.headers.get(IDEMPOTENCY_HEADER) or msg_id
        sub.receipts += 1
        answer = sub.answers.get(key)
        if answer is not None:
            sub.duplicates += 1
            replay_headers = {REPLAYED_HEADER: "true"}
        else:
            sub.distinct += 1
            receipt_id = state.next_receipt_id()
            first = {"status": "accepted", "receipt_id": receipt_id, "event_id": event["event_id"]}
            answer = json.dumps(first).encode()
            sub.answers[key] = answer
            sub.effects.append(
                {
                    "receipt_id": receipt_id,
                    "idempotency_key": key,
                    "event_id": event["event_id"],
                    "type": event.get("type"),
                    "dossier_code": event.get("dossier_code"),
                    "sequence": event.get("sequence"),
                    "received_at": time.time(),
                    "event": event,
                }
            )
            replay_headers = None

        if reset:
            return _ConnectionReset()
        if faults is not None and faults.draw(faults.config.timeout_rate):
            sub.fault_timeout += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return Response(answer, status_code=200, media_type=_JSON, headers=replay_headers)

    @app.get("/_admin/faults")
    async def get_faults() -> dict[str, Any]:
        global_faults = state.faults.get(None)
        return {
            "global": global_faults.config.model_dump() if global_faults else None,
            "subscribers": {k: v.config.model_dump() for k, v in state.faults.items() if k is not None},
        }

    @app.post("/_admin/faults")
    async def set_faults(config: FaultConfig) -> Response:
        if config.subscriber is not None and config.subscriber not in state.subscribers:
            return error_response(404, f"unknown subscriber {config.subscriber!r}")
        state.set_faults(config)
        return JSONResponse(config.model_dump())

    @app.delete("/_admin/faults")
    async def clear_faults(subscriber: str | None = None) -> dict[str, str]:
        state.clear_faults(subscriber)
        return {"status": "cleared"}

    @app.get("/_admin/received")
    async def received(
        subscriber: str, dossier_code: str | None = None, full: bool = Query(False)
    ) -> Response:
        if subscriber not in state.subscribers:
            return error_response(404, f"unknown subscriber {subscriber!r}")
        return JSONResponse(state.received(subscriber, dossier_code, full))

    add_state_routes(app, state)
    return app
