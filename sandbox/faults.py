"""What every simulator shares: the fault settings they all have, a seeded random stream for them,
the ``/_admin/faults`` endpoints, the lenient JSON reading and error answer of their admin API, and
the work done after answering (pushes and webhooks to the relay) with its ``/_admin/push`` target."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class BaseFaults(BaseModel):
    """Faults every simulator can inject; each one's ``FaultConfig`` adds its own kinds."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(503, ge=400, le=599)
    latency_ms: float = Field(0.0, ge=0, le=600_000)
    latency_jitter_ms: float = Field(0.0, ge=0, le=600_000)
    seed: int | None = None


class LatencyFaults(Protocol):
    """What every simulator's fault configuration has (each adds its own kinds of failure)."""

    @property
    def seed(self) -> int | None: ...

    @property
    def latency_ms(self) -> float: ...

    @property
    def latency_jitter_ms(self) -> float: ...


ConfigT = TypeVar("ConfigT", bound=LatencyFaults)


class ActiveFaults(Generic[ConfigT]):
    """A fault configuration with its own random stream, so a seeded run is reproducible."""

    __slots__ = ("config", "rng")

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self.rng = random.Random(config.seed)

    def draw(self, rate: float) -> bool:
        """True with probability ``rate`` (always at 1, never at 0)."""
        return rate > 0 and (rate >= 1 or self.rng.random() < rate)

    def latency(self) -> float:
        """Seconds to delay this request."""
        c = self.config
        extra = self.rng.uniform(0, c.latency_jitter_ms) if c.latency_jitter_ms else 0.0
        return (c.latency_ms + extra) / 1000


async def latency_and_error(faults: ActiveFaults[Any] | None) -> int | None:
    """The faults every simulator injects first: the latency, then an HTTP error drawn at ``error_rate``.
    The status to answer with, or ``None`` to go on."""
    if faults is None:
        return None
    if faults.config.latency_ms or faults.config.latency_jitter_ms:
        await asyncio.sleep(faults.latency())
    return int(faults.config.error_status) if faults.draw(faults.config.error_rate) else None


class HoldsFaults(Protocol):
    faults: Any


class HoldsCounters(Protocol):
    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


def add_state_routes(app: FastAPI, state: HoldsCounters) -> None:
    """``GET /_admin/stats`` (``state.stats()``) and ``POST /_admin/reset`` (``state.reset()``)."""

    async def stats() -> dict[str, Any]:
        return state.stats()

    async def reset_all() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    app.get("/_admin/stats")(stats)
    app.post("/_admin/reset")(reset_all)


def add_fault_routes(app: FastAPI, state: HoldsFaults, config_type: type[BaseFaults]) -> None:
    """``GET|POST|DELETE /_admin/faults``: read, replace or clear ``state.faults``."""

    async def get_faults() -> dict[str, Any] | None:
        return state.faults.config.model_dump() if state.faults else None

    async def set_faults(config: BaseFaults) -> dict[str, Any]:
        state.faults = ActiveFaults(config)
        return config.model_dump()

    async def clear_faults() -> dict[str, str]:
        state.faults = None
        return {"status": "cleared"}

    # the body's model is the simulator's own FaultConfig (FastAPI reads it from the annotation)
    set_faults.__annotations__["config"] = config_type
    app.get("/_admin/faults")(get_faults)
    app.post("/_admin/faults")(set_faults)
    app.delete("/_admin/faults")(clear_faults)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status`` (messages never echo what was sent: it may be personal)."""
    return Response(json.dumps({"error": message}), status_code=status, media_type="application/json",
                    headers=headers)


async def json_body(request: Request) -> Any:
    """The request's JSON, or ``None`` when it is not JSON (each simulator answers that in its own words)."""
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def locations(exc: ValidationError) -> str:
    """Where a body is wrong (field paths and messages, never the values: they may be secrets)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_url=False, include_context=False, include_input=False)[:5]
    )


class PushConfig(BaseModel):
    """Where a simulator pushes (to the relay's callback), and the ``whsec_<base64>`` secret it signs with."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+")
    secret: str = Field(pattern=r"^whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")


class HoldsPush(Protocol):
    push: PushConfig | None


def add_push_routes(app: FastAPI, state: HoldsPush) -> None:
    """``POST|DELETE /_admin/push``: set or remove ``state.push``."""

    async def set_push(request: Request) -> Response:
        try:
            state.push = PushConfig.model_validate(await json_body(request))
        except ValidationError as exc:  # the default 422 would echo the secret
            return error_response(422, "invalid push configuration: " + locations(exc))
        return JSONResponse({"url": state.push.url})

    async def clear_push() -> dict[str, str]:
        state.push = None
        return {"status": "cleared"}

    app.post("/_admin/push")(set_push)
    app.delete("/_admin/push")(clear_push)


class Background:
    """Work a simulator does after answering: tracked tasks, and one client for what they post."""

    def __init__(self, timeout: httpx.Timeout) -> None:
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        """One try; whether it was answered 2xx."""
        return (await self._send(url, body, headers)) is not None

    async def post_status(self, url: str, body: bytes, headers: dict[str, str], within: float) -> int | None:
        """One try that must be answered within ``within`` seconds in all (as a service that gives a webhook so
        long counts it); the HTTP status, or ``None`` for no answer in time or no connection."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, trust_env=False)
        try:
            response = await asyncio.wait_for(self._client.post(url, content=body, headers=headers), within)
        except (TimeoutError, httpx.HTTPError):
            return None
        return response.status_code

    async def post_for_json(self, url: str, body: bytes, headers: dict[str, str]) -> Any:
        """One try; the JSON of a 2xx answer, else ``None``."""
        response = await self._send(url, body, headers)
        try:
            return response.json() if response is not None else None
        except ValueError:
            return None

    async def get_for_json(self, url: str, params: dict[str, str]) -> Any:
        """One ``GET`` with query parameters (a gateway's IPN); the JSON of a 2xx answer, else ``None``."""
        response = await self._send(url, b"", {}, params)
        try:
            return response.json() if response is not None else None
        except ValueError:
            return None

    async def _send(self, url: str, body: bytes, headers: dict[str, str],
                    params: dict[str, str] | None = None) -> httpx.Response | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, trust_env=False)
        try:
            if params is not None:
                response = await self._client.get(url, params=params)
            else:
                response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return None
        return response if response.is_success else None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
