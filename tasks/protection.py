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


class Protection:
    """Breaker and rate-limit state for all destinations, in one Redis (or in memory)."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._bucket = client.register_script(_RATE_BUCKET_LUA) if client is not None else None
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def breaker_open_until(self, destination: str) -> float | None:
        """Epoch seconds until which the breaker is open, or ``None`` when closed."""
        key = self._key("breaker", destination, "open_until")
        value = self._call(lambda r: r.get(key), lambda: self._memory.get(key))
        if value is None:
            return None
        until = float(value)
        return until if until > time.time() else None

    def record_success(self, destination: str) -> None:
        fails = self._key("breaker", destination, "fails")
        self._call(lambda r: r.delete(fails), lambda: self._memory.pop(fails, None))

    def record_failure(self, destination: str, policy: BreakerPolicy) -> bool:
        """Count a retryable failure; return True when this failure opened the breaker."""
        fails = self._key("breaker", destination, "fails")

        def in_redis(r: redis.Redis) -> int:
            pipe = r.pipeline()
            pipe.incr(fails)
            pipe.expire(fails, int(max(60, policy.open_for * 10)))
            return int(pipe.execute()[0])

        def in_memory() -> int:
            self._memory[fails] = self._memory.get(fails, 0) + 1
            return int(self._memory[fails])

        count = self._call(in_redis, in_memory) or 0
        if count < policy.failure_threshold:
            return False
        self._open(destination, policy, count)
        return True

    def before_attempt(self, destination: str, limit: RateLimit) -> tuple[float | None, float]:
        """Breaker state and a send permit in one round trip: ``(open_until or None, wait seconds)``."""
        if self._redis is None:
            return self.breaker_open_until(destination), self.acquire(destination, limit)
        open_key = self._key("breaker", destination, "open_until")
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(open_key)
            if limit.per_second:
                rate = float(limit.per_second)
                burst = float(limit.burst or max(1, int(rate)))
                assert self._bucket is not None
                self._bucket(keys=[self._key("rate", destination)], args=[rate, burst, time.time()], client=pipe)
            results = pipe.execute()
        except redis.RedisError as exc:
            log.warning("protection.redis_unavailable", error=str(exc))
            return None, 0.0
        until = float(results[0]) if results[0] is not None else None
        wait = float(results[1]) if len(results) > 1 else 0.0
        return (until if until is not None and until > time.time() else None), wait

    def after_attempt(
        self, destination: str, failed: bool, policy: BreakerPolicy, extra: Callable[[Any], None] | None = None
    ) -> None:
        """Record a success or a retryable failure, plus ``extra`` commands, in one round trip."""
        if self._redis is None:
            if failed:
                self.record_failure(destination, policy)
            else:
                self.record_success(destination)
            return
        fails = self._key("breaker", destination, "fails")
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
            return
        if failed and int(results[0]) >= policy.failure_threshold:
            self._open(destination, policy, int(results[0]))

    def _open(self, destination: str, policy: BreakerPolicy, count: int) -> None:
        open_key = self._key("breaker", destination, "open_until")
        until = time.time() + policy.open_for
        self._call(
            lambda r: r.set(open_key, str(until), ex=int(policy.open_for) + 1),
            lambda: self._memory.__setitem__(open_key, str(until)),
        )
        if count == policy.failure_threshold:
            log.warning("breaker.opened", destination=destination, failures=count, open_for=policy.open_for)

    def acquire(self, destination: str, limit: RateLimit) -> float:
        """Take one send permit; return 0, or the seconds to wait for the next one."""
        if not limit.per_second:
            return 0.0
        rate = float(limit.per_second)
        burst = float(limit.burst or max(1, int(rate)))
        key = self._key("rate", destination)

        def in_memory() -> float:
            now = time.monotonic()
            tokens, ts = self._memory.get(key, (burst, now))
            tokens = min(burst, tokens + (now - ts) * rate)
            if tokens >= 1:
                self._memory[key] = (tokens - 1, now)
                return 0.0
            self._memory[key] = (tokens, now)
            return (1 - tokens) / rate

        def in_redis(_: redis.Redis) -> float:
            assert self._bucket is not None
            return float(self._bucket(keys=[key], args=[rate, burst, time.time()]))

        return float(self._call(in_redis, in_memory) or 0.0)

    def state(self, destination: str) -> dict[str, Any]:
        """For operators: consecutive failures and whether the breaker is open."""
        fails = self._key("breaker", destination, "fails")
        count = self._call(lambda r: r.get(fails), lambda: self._memory.get(fails))
        until = self.breaker_open_until(destination)
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
