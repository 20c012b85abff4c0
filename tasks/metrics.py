"""Delivery metrics shared by every worker, kept in Redis and exposed by the API's ``/metrics``.

Workers may run on several machines, so per-process prometheus counters would show only
one worker's share. Each attempt adds to Redis hashes (one pipeline, a few microseconds);
the API's collector turns them, plus the ledger's backlog, the breakers and the destinations'
pauses (``connectors.pauses``), into Prometheus families.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import redis
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
# Attempts per batch (its chained ones included): how much of a claim's and a record's cost each delivery shares.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class DeliveryMetrics:
    """Writes attempt outcomes and durations to Redis; reads them back for the collector."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._outcomes = f"{prefix}:metrics:outcomes"
        self._durations = f"{prefix}:metrics:durations"
        self._batches = f"{prefix}:metrics:batches"

    def record(self, destination: str, outcome: str, duration_ms: float | None) -> None:
        if self._redis is None:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            self.add_to(pipe, destination, outcome, duration_ms)
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("metrics.redis_unavailable", error=str(exc))

    def add_to(self, pipe: Any, destination: str, outcome: str, duration_ms: float | None) -> None:
        """Queue the commands of one attempt on a pipeline (sent with the breaker's)."""
        pipe.hincrby(self._outcomes, f"{destination}|{outcome}", 1)
        if duration_ms is not None:
            pipe.hincrby(self._durations, f"{destination}|{_bucket(duration_ms, DURATION_BUCKETS_MS)}", 1)
            pipe.hincrbyfloat(self._durations, f"{destination}|sum", duration_ms / 1000.0)

    def add_many(self, pipe: Any, destination: str, attempts: list[tuple[str, float | None]]) -> None:
        """Queue a batch's attempts (outcome, duration in ms), summed first: one command per counter touched; and
        the batch's size, when it attempted any."""
        counts: dict[str, int] = {}
        buckets: dict[str, int] = {}
        seconds = 0.0
        for outcome, duration_ms in attempts:
            counts[outcome] = counts.get(outcome, 0) + 1
            if duration_ms is not None:
                bucket = _bucket(duration_ms, DURATION_BUCKETS_MS)
                buckets[bucket] = buckets.get(bucket, 0) + 1
                seconds += duration_ms / 1000.0
        for outcome, n in counts.items():
            pipe.hincrby(self._outcomes, f"{destination}|{outcome}", n)
        for bucket, n in buckets.items():
            pipe.hincrby(self._durations, f"{destination}|{bucket}", n)
        if buckets:
            pipe.hincrbyfloat(self._durations, f"{destination}|sum", seconds)
        if attempts:
            size = len(attempts)
            pipe.hincrby(self._batches, f"{destination}|{_bucket(size, BATCH_BUCKETS)}", 1)
            pipe.hincrby(self._batches, f"{destination}|sum", size)

    def read(self) -> tuple[dict[tuple[str, str], int], dict[str, dict[str, float]]]:
        if self._redis is None:
            return {}, {}
        outcomes: dict[tuple[str, str], int] = {}
        for k, v in self._redis.hgetall(self._outcomes).items():
            destination, outcome = _text(k).split("|", 1)
            outcomes[(destination, outcome)] = int(v)
        return outcomes, self._histograms(self._durations)

    def read_batches(self) -> dict[str, dict[str, float]]:
        """Per destination, the batches by size bucket (``"1"`` … ``"inf"``) and ``"sum"``, their attempts."""
        return {} if self._redis is None else self._histograms(self._batches)

    def _histograms(self, key: str) -> dict[str, dict[str, float]]:
        """A hash of ``destination|bucket`` counts, per destination."""
        assert self._redis is not None
        found: dict[str, dict[str, float]] = {}
        for k, v in self._redis.hgetall(key).items():
            destination, bucket = _text(k).rsplit("|", 1)
            found.setdefault(destination, {})[bucket] = float(v)
        return found


def _bucket(value: float, bounds: tuple[int, ...]) -> str:
    """The histogram bucket ``value`` falls in: its least bound at or above it, or ``inf``."""
    return str(next((b for b in bounds if value <= b), "inf"))


def _histogram(family: HistogramMetricFamily, destination: str, buckets: dict[str, float],
               bounds: tuple[int, ...], unit: float) -> None:
    """One destination's series of cumulative buckets from its count per bucket (each bound divided by ``unit``:
    1000 for ms as seconds)."""
    cumulative = 0.0
    series: list[tuple[str, float]] = []
    for bound in bounds:
        cumulative += buckets.get(str(bound), 0.0)
        series.append((str(bound / unit), cumulative))
    cumulative += buckets.get("inf", 0.0)
    series.append(("+Inf", cumulative))
    family.add_metric([destination], series, buckets.get("sum", 0.0))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RelayCollector(Collector):
    """Prometheus families from Redis (attempts) and the ledger (backlog)."""

    def __init__(self, metrics: DeliveryMetrics, backlog: Callable[[], dict[str, tuple[int, float]]],
                 dead: Callable[[], dict[str, int]] | None = None,
                 breakers: Callable[[], dict[str, bool]] | None = None,
                 paused: Callable[[], dict[tuple[str, str], int]] | None = None,
                 checkpoint_age: Callable[[], float | None] | None = None) -> None:
        self._metrics = metrics
        self._checkpoint_age = checkpoint_age or (lambda: None)
        self._backlog = backlog
        self._dead = dead or dict
        self._breakers = breakers or dict
        self._paused = paused or dict

    def collect(self) -> Iterator[Any]:
        outcomes_family = CounterMetricFamily(
            "motcua_delivery_attempts", "Delivery attempts by destination and outcome",
            labels=["destination", "outcome"],
        )
        duration_family = HistogramMetricFamily(
            "motcua_attempt_duration_seconds", "Duration of delivery attempts", labels=["destination"]
        )
        batch_family = HistogramMetricFamily(
            "motcua_delivery_batch_size", "Attempts per batch of a destination (a claim's, and the stream successors "
            "it chained)", labels=["destination"]
        )
        try:
            outcomes, durations = self._metrics.read()
            batches = self._metrics.read_batches()
        except redis.RedisError:
            outcomes, durations, batches = {}, {}, {}
        for (destination, outcome), count in sorted(outcomes.items()):
            outcomes_family.add_metric([destination, outcome], count)
        for destination, buckets in sorted(durations.items()):
            _histogram(duration_family, destination, buckets, DURATION_BUCKETS_MS, 1000.0)
        for destination, buckets in sorted(batches.items()):
            _histogram(batch_family, destination, buckets, BATCH_BUCKETS, 1.0)
        yield outcomes_family
        yield duration_family
        yield batch_family
        pending = GaugeMetricFamily("motcua_deliveries_open", "Open deliveries (pending, in flight, retrying)",
                                    labels=["destination"])
        oldest = GaugeMetricFamily("motcua_oldest_open_delivery_age_seconds",
                                   "Age of the oldest open delivery", labels=["destination"])
        for destination, (count, age) in sorted(self._backlog().items()):
            pending.add_metric([destination], count)
            oldest.add_metric([destination], age)
        yield pending
        yield oldest
        dead = GaugeMetricFamily("motcua_dead_letters", "Dead deliveries waiting for an operator (replay moves them "
                                 "out)", labels=["destination"])
        for destination, count in sorted(self._dead().items()):
            dead.add_metric([destination], count)
        yield dead
        breaker = GaugeMetricFamily("motcua_breaker_open", "1 while the destination's circuit breaker is open",
                                    labels=["destination"])
        for destination, is_open in sorted(self._breakers().items()):
            breaker.add_metric([destination], 1.0 if is_open else 0.0)
        yield breaker
        paused = GaugeMetricFamily(
            "motcua_destination_paused", "1 while the destination is paused by an account-level condition (a "
            "balance spent, a template disabled: deliveries wait, no attempt spent); for a template's condition, "
            "the number of templates paused; absent when not paused", labels=["destination", "condition"])
        try:
            pauses = self._paused()
        except redis.RedisError:
            pauses = {}
        for (destination, condition), count in sorted(pauses.items()):
            paused.add_metric([destination, condition], float(count))
        yield paused
        checkpoint_age = self._checkpoint_age()
        if checkpoint_age is not None:
            yield GaugeMetricFamily(
                "motcua_audit_checkpoint_age_seconds", "Seconds since the audit chain's newest signed checkpoint "
                "(time-stamped, when an authority is set); +Inf when none was ever made", value=checkpoint_age)
