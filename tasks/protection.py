"""Per-destination circuit breaker and rate limit, with their state in Redis.

Shared by every worker on every machine. If Redis cannot be reached, protection fails
open (deliveries go on, the ledger still guarantees nothing is lost) and says so in the log.

Breaker: ``failure_threshold`` consecutive retryable failures open it for ``open_for``
seconds; after that, traffic flows again and the first success closes it while one more
failure reopens it at once (half-open). Rate limit: a token bucket per destination.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from config.routing import BreakerPolicy, RateLimit

log = structlog.get_logger(__name__)

_RATE_BUCKET_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', key, math.ceil(burst / rate) + 10)
return tostring(wait)
"""


def _bucket_args(limit: RateLimit) -> tuple[float, float]:
    rate = float(limit.per_second or 0)
    return rate, float(limit.burst or max(1, int(rate)))


def _still_open(value: Any) -> float | None:
    if value is None:
        return None
    until = float(value)
    return until if until > time.time() else None


class Protection:
    """Breaker and rate-limit state for all destinations, in one Redis (or in memory).

    Each side of an attempt is one Redis round trip: :meth:`before_attempt` reads the
    breaker and takes a permit, :meth:`after_attempt` counts the outcome (and carries the
    caller's metrics commands). Without Redis (the demo's in-process mode) the same state
    lives in this process.
    """

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._bucket = client.register_script(_RATE_BUCKET_LUA) if client is not None else None
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def before_attempt(self, destination: str, limit: RateLimit) -> tuple[float | None, float]:
        """``(open_until or None, seconds to wait for a send permit)``."""
        open_key = self._key("breaker", destination, "open_until")
        rate_key = self._key("rate", destination)
        if self._redis is None:
            with self._lock:
                return _still_open(self._memory.get(open_key)), self._memory_permit(rate_key, limit)
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(open_key)
            if limit.per_second:
                assert self._bucket is not None
                self._bucket(keys=[rate_key], args=[*_bucket_args(limit), time.time()], client=pipe)
            results = pipe.execute()
        except redis.RedisError as exc:
            log.warning("protection.redis_unavailable", error=str(exc))
            return None, 0.0
        return _still_open(results[0]), float(results[1]) if len(results) > 1 else 0.0

    def _memory_permit(self, key: str, limit: RateLimit) -> float:
        if not limit.per_second:
            return 0.0
        rate, burst = _bucket_args(limit)
        now = time.monotonic()
        tokens, ts = self._memory.get(key, (burst, now))
        tokens = min(burst, tokens + (now - ts) * rate)
        if tokens >= 1:
            self._memory[key] = (tokens - 1, now)
            return 0.0
        self._memory[key] = (tokens, now)
        return (1 - tokens) / rate

    def after_attempt(
        self, destination: str, failed: bool, policy: BreakerPolicy, extra: Callable[[Any], None] | None = None
    ) -> bool:
        """Count a success or a retryable failure (plus ``extra`` commands); True when the breaker opened."""
        fails = self._key("breaker", destination, "fails")
        if self._redis is None:
            with self._lock:
                count = self._memory.get(fails, 0) + 1 if failed else 0
                self._memory[fails] = count
        else:
            try:
                pipe = self._redis.pipeline(transaction=False)
                if failed:
                    pipe.incr(fails)
                    pipe.expire(fails, int(max(60, policy.open_for * 10)))
                else:
                    pipe.delete(fails)
                if extra is not None:
                    extra(pipe)
                results = pipe.execute()
            except redis.RedisError as exc:
                log.warning("protection.redis_unavailable", error=str(exc))
                return False
            count = int(results[0]) if failed else 0
        if count < policy.failure_threshold or not failed:
            return False
        self._open(destination, policy, count)
        return True

    def _open(self, destination: str, policy: BreakerPolicy, count: int) -> None:
        open_key = self._key("breaker", destination, "open_until")
        until = time.time() + policy.open_for
        self._call(
            lambda r: r.set(open_key, str(until), ex=int(policy.open_for) + 1),
            lambda: self._memory.__setitem__(open_key, str(until)),
        )
        if count == policy.failure_threshold:
            log.warning("breaker.opened", destination=destination, failures=count, open_for=policy.open_for)

    def state(self, destination: str) -> dict[str, Any]:
        """For operators: consecutive failures and whether the breaker is open."""
        fails = self._key("breaker", destination, "fails")
        open_key = self._key("breaker", destination, "open_until")
        count = self._call(lambda r: r.get(fails), lambda: self._memory.get(fails))
        until = _still_open(self._call(lambda r: r.get(open_key), lambda: self._memory.get(open_key)))
        return {"consecutive_failures": int(count or 0), "open": until is not None, "open_until": until}

    def _call(self, in_redis: Any, in_memory: Any) -> Any:
        if self._redis is None:
            with self._lock:
                return in_memory()
        try:
            return in_redis(self._redis)
        except redis.RedisError as exc:
            log.warning("protection.redis_unavailable", error=str(exc))
            return None
