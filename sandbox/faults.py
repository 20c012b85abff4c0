"""Injected faults shared by the simulators: a fault configuration with its own seeded random stream."""

from __future__ import annotations

import random
from typing import Generic, Protocol, TypeVar


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
