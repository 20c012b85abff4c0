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

# Up to ARGV[4] permits at once: the number taken, or 0 and the seconds until one is there.
_RATE_TAKE_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local taken = math.min(want, math.floor(tokens))
local wait = 0
if taken < 1 then
  taken = 0
  wait = (1 - tokens) / rate
end
tokens = tokens - taken
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', key, math.ceil(burst / rate) + 10)
return {taken, tostring(wait)}
"""

# Permits taken but not used (the batch found fewer due deliveries) go back, never above the burst.
_RATE_REFUND_LUA = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then
  redis.call('HSET', KEYS[1], 'tokens', math.min(tonumber(ARGV[2]), tokens + tonumber(ARGV[1])))
end
return 0
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

    Each side of a batch of attempts is one Redis round trip: :meth:`before_batch` reads the
    breaker and takes permits, :meth:`after_batch` counts the outcomes (and carries the
    caller's metrics commands). Without Redis (the demo's in-process mode) the same state
    lives in this process.
    """

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._take = client.register_script(_RATE_TAKE_LUA) if client is not None else None
        self._refund = client.register_script(_RATE_REFUND_LUA) if client is not None else None
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def before_attempt(self, destination: str, limit: RateLimit) -> tuple[float | None, float]:
        """``(open_until or None, seconds to wait for a send permit)``: :meth:`before_batch` for one."""
        open_until, _, wait = self.before_batch(destination, limit, 1)
        return open_until, wait

    def before_batch(self, destination: str, limit: RateLimit, want: int) -> tuple[float | None, int, float]:
        """``(open_until or None, permits taken (at most want), seconds until a permit when none was)``: one
        Redis round trip for a whole batch (every permit is there without a rate limit)."""
        open_key = self._key("breaker", destination, "open_until")
        rate_key = self._key("rate", destination)
        if self._redis is None:
            with self._lock:
                taken, wait = self._memory_take(rate_key, limit, want) if limit.per_second else (want, 0.0)
                return _still_open(self._memory.get(open_key)), taken, wait
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(open_key)
            if limit.per_second:
                assert self._take is not None
                self._take(keys=[rate_key], args=[*_bucket_args(limit), time.time(), want], client=pipe)
            results = pipe.execute()
        except redis.RedisError as exc:
            log.warning("protection.redis_unavailable", error=str(exc))
            return None, want, 0.0
        if len(results) == 1:
            return _still_open(results[0]), want, 0.0
        taken, wait = results[1]
        return _still_open(results[0]), int(taken), float(wait)

    def _memory_take(self, key: str, limit: RateLimit, want: int) -> tuple[int, float]:
        rate, burst = _bucket_args(limit)
        now = time.monotonic()
        tokens, ts = self._memory.get(key, (burst, now))
        tokens = min(burst, tokens + (now - ts) * rate)
        taken = min(want, int(tokens))
        self._memory[key] = (tokens - taken, now)
        return (taken, 0.0) if taken else (0, (1 - tokens) / rate)

    def after_attempt(
        self, destination: str, failed: bool, policy: BreakerPolicy, extra: Callable[[Any], None] | None = None
    ) -> bool:
        """Count one success or retryable failure (plus ``extra`` commands); True when the breaker opened."""
        return self.after_batch(destination, 0 if failed else 1, 1 if failed else 0, policy, extra=extra)

    def after_batch(
        self, destination: str, succeeded: int, failed: int, policy: BreakerPolicy, *, limit: RateLimit | None = None,
        unused_permits: int = 0, extra: Callable[[Any], None] | None = None,
    ) -> bool:
        """A batch's outcomes in one round trip: any success closes the breaker's count (the service answers),
        a batch of only retryable failures adds them; unused permits go back to the bucket; ``extra`` carries the
        caller's metrics. True when the breaker opened."""
        fails = self._key("breaker", destination, "fails")
        count = 0
        if self._redis is None:
            with self._lock:
                if succeeded:
                    self._memory[fails] = 0
                elif failed:
                    count = self._memory.get(fails, 0) + failed
                    self._memory[fails] = count
                if unused_permits and limit is not None and limit.per_second:
                    key = self._key("rate", destination)
                    tokens, ts = self._memory.get(key, (0.0, time.monotonic()))
                    self._memory[key] = (min(_bucket_args(limit)[1], tokens + unused_permits), ts)
        else:
            try:
                pipe = self._redis.pipeline(transaction=False)
                if succeeded:
                    pipe.delete(fails)
                elif failed:
                    pipe.incrby(fails, failed)
                    pipe.expire(fails, int(max(60, policy.open_for * 10)))
                if unused_permits and limit is not None and limit.per_second and self._refund is not None:
                    self._refund(keys=[self._key("rate", destination)],
                                 args=[unused_permits, _bucket_args(limit)[1]], client=pipe)
                if extra is not None:
                    extra(pipe)
                results = pipe.execute()
            except redis.RedisError as exc:
                log.warning("protection.redis_unavailable", error=str(exc))
                return False
            count = int(results[0]) if failed and not succeeded else 0
        if not count or count < policy.failure_threshold:
            return False
        self._open(destination, policy, count, newly=count - failed < policy.failure_threshold)
        return True

    def _open(self, destination: str, policy: BreakerPolicy, count: int, newly: bool | None = None) -> None:
        open_key = self._key("breaker", destination, "open_until")
        until = time.time() + policy.open_for
        self._call(
            lambda r: r.set(open_key, str(until), ex=int(policy.open_for) + 1),
            lambda: self._memory.__setitem__(open_key, str(until)),
        )
        if newly or (newly is None and count == policy.failure_threshold):
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
