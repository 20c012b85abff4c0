"""What the services' callback routers share: the body limit, finding the destination, signed pushes.

A service's router (``services/<kind>/callbacks.py``) is mounted by the API under ``/v1/callbacks``; it reaches the
process's :class:`~services.base.Context` through :func:`context`, finds the destination a callback is for by kind
(and by name when the path gives one), verifies the service's own scheme and answers in the service's language.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr, ValidationError

from config.options import OptionsError, ServiceOptions
from schemas.privacy import error_fields
from schemas.webhook import SignatureError, verify
from schemas.wire import unstorable
from services.base import Context

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)


def context(request: Request) -> Context:
    """The process's context, which the API keeps on its state."""
    found: Context = request.app.state.context
    return found


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is over ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def read_json(body: bytes) -> Any:
    """The JSON a body holds; ``ValueError`` when it holds none (not UTF-8, not JSON, or nested deeper than the
    parser goes)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def validated(model: type[M], data: Any, root: str = "body") -> M | list[str]:
    """``data`` as ``model``, or the dotted paths of what refuses it (``root`` for the whole of it): text the ledger
    cannot store (:func:`schemas.wire.unstorable`: a callback carrying one is refused, never stored in part), else
    the model's field errors — never the values, which may be personal."""
    fields = [".".join(str(part) for part in path) or root for path in unstorable(data)]
    if fields:
        return fields
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return error_fields(exc, root)


Handler = Callable[[Request, str | None], Awaitable[JSONResponse]]


def callback(router: APIRouter, path: str, summary: str,
             methods: Sequence[str] = ("POST",)) -> Callable[[Handler], Handler]:
    """Mount ``handler(request, name)`` at ``path``, for the only destination of its kind that takes it (``name``
    is ``None``), and at ``path/{destination}``, for one of several, by name."""

    def mount(handler: Handler) -> Handler:
        async def only(request: Request) -> JSONResponse:
            return await handler(request, None)

        async def named(destination: str, request: Request) -> JSONResponse:
            return await handler(request, destination)

        for method in methods:  # one operation each: OpenAPI names operations by route and method
            suffix = f"_{method.lower()}" if len(methods) > 1 else ""
            router.add_api_route(path, only, methods=[method], summary=summary, name=f"{handler.__name__}{suffix}")
            router.add_api_route(f"{path}/{{destination}}", named, methods=[method],
                                 name=f"{handler.__name__}_named{suffix}",
                                 summary=f"{summary}, for one of several destinations (by name)")
        return handler

    return mount


def find(ctx: Context, kind: str, name: str | None,
         takes: Callable[[ServiceOptions], bool] = lambda _: True) -> str | None:
    """The destination of ``kind`` (that ``takes`` the callback, judged by its options) named ``name``, or the
    only one; ``None`` when there is none, or several and no name. A destination whose options cannot be read
    takes no callback."""
    found = []
    for candidate in ctx.names(kind):
        try:
            if takes(ctx.options(candidate)):
                found.append(candidate)
        except OptionsError as exc:
            log.warning("callback.destination_unusable", destination=candidate, error=str(exc))
    if name is not None:
        return name if name in found else None
    return found[0] if len(found) == 1 else None


def keys(value: SecretStr | None) -> list[str]:
    """The key(s) a secret option holds: several, comma or space separated, while one rotates."""
    return value.get_secret_value().replace(",", " ").split() if value is not None else []


@dataclass(frozen=True)
class Pushes:
    """How one service's Standard-Webhooks-signed pushes are received: its destination kind, the option holding
    its secret(s), and the answer codes it understands (in its own envelope key)."""

    kind: str
    secret: str
    code_key: str
    no_destination: str | int
    invalid: str | int
    unsigned: str | int
    what: str
    message_key: str = "message"

    def answer(self, status: int, code: str | int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({self.code_key: code, self.message_key: message, **extra}, status_code=status)


async def receive_signed(request: Request, name: str | None, pushes: Pushes,
                         model: type[M]) -> tuple[str, M] | JSONResponse:
    """The destination and the verified push, or the answer refusing it (no destination, too large, a missing
    or bad signature, no secret configured, not the service's shape)."""
    ctx = context(request)
    dest = find(ctx, pushes.kind, name)
    if dest is None:
        return pushes.answer(404, pushes.no_destination,
                             f"no such {pushes.kind} destination (name it in the path when there are several)")
    limit = ctx.settings.intake_max_body_bytes
    body = await read_limited(request, limit)
    if body is None:
        return pushes.answer(413, pushes.invalid, f"body over {limit} bytes")
    secrets = keys(getattr(ctx.options(dest), pushes.secret))
    try:
        if not secrets:
            raise SignatureError(f"no callback secret configured ({pushes.secret} of destination {dest})")
        verify(secrets, request.headers, body)
    except SignatureError as exc:
        log.info(f"callback.{pushes.kind}.bad_signature", reason=str(exc))
        return pushes.answer(401, pushes.unsigned, f"invalid signature: {exc}")
    try:
        pushed = validated(model, read_json(body))
    except ValueError:
        pushed = []
    if isinstance(pushed, list):
        return pushes.answer(400, pushes.invalid, f"not {pushes.what}", fields=pushed[:20])
    return dest, pushed
