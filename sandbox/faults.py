"""What every simulator shares: the fault settings they all have, a seeded random stream for them,
the ``/_admin/faults`` endpoints, and the lenient JSON reading and error answer of their admin API."""

from __future__ import annotations

import json
import random
from typing import Any, Generic, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field


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


class HoldsFaults(Protocol):
    faults: Any


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
