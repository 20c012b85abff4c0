"""Credentials shared by every worker: a session or access token cached in Redis until it expires.

Several worker processes on several machines talk to the same service; logging in once per
call would be slow and some services limit logins. The token lives under
``{prefix}:cred:{name}`` with the service's lifetime as its TTL; a process keeps a copy in
memory until that lifetime ends. Renewal happens under a Redis lock and only when the
token that failed is still the cached one, so a burst of workers that all see the token
expire renew it once. Without Redis (``memory://``) the cache and lock are this process's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import redis
import structlog

log = structlog.get_logger(__name__)

# Renew a little before the service's own expiry, so a call never starts with a dying token.
EARLY_RENEWAL = 0.9


class TokenCache:
    """One cached token per credential name."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._local: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _key(self, name: str) -> str:
        return f"{self._prefix}:cred:{name}"

    def get(self, name: str) -> str | None:
        """The live token, from this process's copy or Redis; ``None`` when there is none."""
        held = self._local.get(name)
        if held is not None and held[1] > time.monotonic():
            return held[0]
        if self._redis is None:
            return None
        try:
            pipe = self._redis.pipeline()
            pipe.get(self._key(name))
            pipe.pttl(self._key(name))
            value, ttl_ms = pipe.execute()
        except redis.RedisError as exc:
            log.warning("credentials.redis_unavailable", name=name, error=str(exc))
            return None
        if value is None or ttl_ms is None or ttl_ms <= 0:
            return None
        token = value.decode() if isinstance(value, bytes) else str(value)
        self._local[name] = (token, time.monotonic() + ttl_ms / 1000)
        return token

    def put(self, name: str, token: str, ttl_seconds: float) -> None:
        ttl = max(1.0, ttl_seconds * EARLY_RENEWAL)
        self._local[name] = (token, time.monotonic() + ttl)
        if self._redis is None:
            return
        try:
            self._redis.set(self._key(name), token, px=int(ttl * 1000))
        except redis.RedisError as exc:
            log.warning("credentials.redis_unavailable", name=name, error=str(exc))

    def forget(self, name: str) -> None:
        self._local.pop(name, None)

    @contextlib.contextmanager
    def renewing(self, name: str, timeout: float = 30.0) -> Iterator[None]:
        """Hold the renewal lock of ``name`` (this process's, and Redis's across processes)."""
        with self._guard:
            local = self._locks.setdefault(name, threading.Lock())
        with local:
            lock = None
            if self._redis is not None:
                lock = self._redis.lock(f"{self._key(name)}:renew", timeout=timeout, blocking_timeout=timeout)
                try:
                    lock.acquire()
                except redis.RedisError as exc:  # renewing twice is better than not renewing
                    log.warning("credentials.lock_unavailable", name=name, error=str(exc))
                    lock = None
            try:
                yield
            finally:
                if lock is not None:
                    with contextlib.suppress(redis.RedisError):
                        lock.release()

    def renew(self, name: str, stale: str | None, obtain: Callable[[], tuple[str, float]]) -> str:
        """A fresh token: the one another worker already obtained, or ``obtain()``'s (token, ttl)."""
        with self.renewing(name):
            self.forget(name)
            current = self.get(name)
            if current is not None and current != stale:
                return current
            token, ttl = obtain()
            self.put(name, token, ttl)
            log.info("credentials.renewed", name=name)
            return token
