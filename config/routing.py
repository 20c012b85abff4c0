"""Destinations and routing rules, read from a TOML file (``config/relay.toml`` by default).

A destination names its kind (which adapter/connector pair delivers to it), its queue,
its retry schedule and deadline, circuit breaker, rate limit, timeouts and ordering, and
optionally the title people know it by (the console shows it).
A route says which event types (shell-style patterns such as ``dossier.*``) go to which
destination, optionally only when some fields are present (``require``), or only for some
origins and units. Adding a destination is a ``[destinations.NAME]`` table and a route; its
kind-specific options are read, typed, by its service (``config/options.py``).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | float | int) -> float:
    """``"5s"``, ``"2m"``, ``"1h"``, ``"72h"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 5s, 2m, 1h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Model):
    """Backoff caps per attempt; after the list, ``repeat_every`` until ``deadline``."""

    schedule: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0])
    repeat_every: float = 21600
    deadline: float = 72 * 3600
    max_attempts: int = 40

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: list[Any]) -> list[float]:
        return [parse_duration(v) for v in value]

    @field_validator("repeat_every", "deadline", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class BreakerPolicy(_Model):
    failure_threshold: int = 20
    open_for: float = 30.0

    @field_validator("open_for", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class RateLimit(_Model):
    per_second: float | None = None
    burst: int | None = None


class Timeouts(_Model):
    connect: float = 5.0
    read: float = 30.0


class Destination(_Model):
    name: str
    kind: str
    title: str | dict[str, str] | None = Field(None, description="what people call it (the console shows it): "
                                               'a name, or one per language: { vi = "...", en = "..." }')
    queue: str = ""
    ordering: Literal["sequence", "none"] = "sequence"
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    rate_limit: RateLimit = RateLimit()
    timeouts: Timeouts = Timeouts()
    options: dict[str, Any] = Field(default_factory=dict, description="kind-specific settings (url, secret_env …)")

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        names = [value] if isinstance(value, str) else list((value or {}).values())
        if any(not name.strip() or len(name) > 200 for name in names):
            raise ValueError("a title is a name of 1 to 200 characters")
        return value or None

    def title_in(self, lang: str) -> str | None:
        """The destination's title in ``lang``: its one title, or its title in that language, else its first;
        ``None`` when the routing file gives none (the console then names it by its kind)."""
        if self.title is None or isinstance(self.title, str):
            return self.title
        return self.title.get(lang) or next(iter(self.title.values()))

    @model_validator(mode="after")
    def _default_queue(self) -> Destination:
        if not self.queue:
            object.__setattr__(self, "queue", f"deliver.{self.name}")
        return self


class Route(_Model):
    events: list[str]
    destination: str
    require: list[str] = Field(default_factory=list, description="dotted paths that must be present and truthy")
    origins: list[str] | None = None
    exclude_origins: list[str] = Field(default_factory=list)
    units: list[str] | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        if not any(fnmatch.fnmatchcase(event["type"], pattern) for pattern in self.events):
            return False
        origin = event.get("origin", "onestop")
        if self.origins is not None and origin not in self.origins:
            return False
        if origin in self.exclude_origins:
            return False
        if self.units is not None and event.get("unit_code") not in self.units:
            return False
        return all(lookup_path(event, path) for path in self.require)


def lookup_path(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``applicant.phone``) of nested mappings, or ``None``."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class RoutingConfig(_Model):
    destinations: dict[str, Destination]
    routes: list[Route]

    @model_validator(mode="after")
    def _known_destinations(self) -> RoutingConfig:
        unknown = {r.destination for r in self.routes} - set(self.destinations)
        if unknown:
            raise ValueError(f"routes name unknown destinations: {sorted(unknown)}")
        return self

    def destinations_for(self, event: dict[str, Any]) -> list[str]:
        """The destinations an event goes to, each once, in config order."""
        found: list[str] = []
        for route in self.routes:
            if route.destination not in found and route.matches(event):
                found.append(route.destination)
        return found

    @property
    def queues(self) -> list[str]:
        return sorted({d.queue for d in self.destinations.values()})


def load_routing(path: Path | str) -> RoutingConfig:
    """Read a routing TOML file. Destination tables may carry ``events`` as route shorthand."""
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    destinations: dict[str, Destination] = {}
    routes: list[dict[str, Any]] = list(raw.get("routes", []))
    for name, table in raw.get("destinations", {}).items():
        table = dict(table)
        shorthand = table.pop("events", None)
        known = set(Destination.model_fields) - {"name"}
        options = {k: table.pop(k) for k in list(table) if k not in known}
        destinations[name] = Destination(name=name, options={**table.pop("options", {}), **options}, **table)
        if shorthand:
            routes.append({"events": shorthand, "destination": name})
    return RoutingConfig(destinations=destinations, routes=[Route(**r) for r in routes])


@lru_cache(maxsize=4)
def get_routing(path: str | None = None) -> RoutingConfig:
    from config.settings import get_settings

    return load_routing(path or get_settings().routing_file)
