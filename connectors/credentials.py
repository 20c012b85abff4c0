"""Credentials shared by every worker: session tokens cached until they expire, rotating token pairs, and
the one way a call whose credential is refused renews it once and repeats (:func:`call_renewing`).

Several worker processes on several machines talk to the same service; logging in once per
call would be slow and some services limit logins. The token lives under
``{prefix}:cred:{name}`` with the service's lifetime as its TTL; a process keeps a copy in
memory until that lifetime ends. Renewal happens under a Redis lock and only when the
token that failed is still the cached one, so a burst of workers that all see the token
expire renew it once. Without Redis (``memory://``) the cache and lock are this process's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import redis
import structlog
from pydantic import SecretStr

log = structlog.get_logger(__name__)

# Renew a little before the service's own expiry, so a call never starts with a dying token.
EARLY_RENEWAL = 0.9

Credential = TypeVar("Credential")
Answer = TypeVar("Answer")


def call_renewing(call: Callable[[Credential], Answer], current: Credential, /, *,
                  renew: Callable[[Credential], Credential], refused: Callable[[Answer], bool],
                  log_event: str, **context: Any) -> Answer:
    """``call(current)``; when ``refused`` says its answer refused the credential, ``renew(current)`` once and
    call again with the renewed one.

    The second answer is returned whatever it says: a credential refused right after its renewal is the
    caller's to classify (``AuthExpired``, retried later), never a loop. ``renew`` is handed the refused
    credential, so a renewal that another worker already made is reused rather than repeated.
    ``log_event`` and ``context`` are logged when the credential is refused.
    """
    answer = call(current)
    if not refused(answer):
        return answer
    log.info(log_event, **context)
    return call(renew(current))


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


@dataclass(frozen=True)
class TokenPair:
    """An access token with the refresh token that renews it, and when the access token expires."""

    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> TokenPair:
        return cls(**json.loads(text))

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        return self.expires_at - (time.time() if now is None else now) <= seconds


class NoTokenPair(RuntimeError):
    """Nothing to refresh: the operator has not set the first pair (``motcua-relay zalo set-token``)."""


class TokenPairStore:
    """An access/refresh pair per name where the refresh token is single-use (Zalo's OAuth v4).

    The pair is one value (``{prefix}:pair:{name}``), so it is always read and written whole.
    :meth:`rotate` spends the refresh token under a lock that every worker on every machine
    takes, and only if the stored pair is still the one the caller saw: two workers that see
    the access token expire at once rotate it once, and the second gets the first one's pair.
    Without Redis (``memory://``) the pair and the lock are this process's, shared by every
    store in it (the operator's ``set-token`` and the workers' deliverers are different objects).
    """

    LOCK_SECONDS = 60.0  # longer than a refresh call's timeouts: a held lock is never taken over mid-call
    _process_pairs: dict[str, TokenPair] = {}
    _process_lock = threading.Lock()

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._lock = TokenPairStore._process_lock

    def _key(self, name: str) -> str:
        return f"{self._prefix}:pair:{name}"

    def get(self, name: str) -> TokenPair | None:
        if self._redis is None:
            return self._process_pairs.get(self._key(name))
        value = self._redis.get(self._key(name))
        return TokenPair.from_json(value) if value is not None else None

    def put(self, name: str, pair: TokenPair) -> None:
        """Store a pair whole (the operator's first pair, or a rotated one)."""
        if self._redis is None:
            self._process_pairs[self._key(name)] = pair
        else:
            self._redis.set(self._key(name), pair.to_json())

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        with self._lock:
            if self._redis is None:
                yield
                return
            lock = self._redis.lock(f"{self._key(name)}:rotate", timeout=self.LOCK_SECONDS,
                                    blocking_timeout=self.LOCK_SECONDS)
            if not lock.acquire():
                raise TimeoutError(f"could not take the token lock of {name} within {self.LOCK_SECONDS:g} s")
            try:
                yield
            finally:
                with contextlib.suppress(redis.RedisError):
                    lock.release()

    def rotate(self, name: str, seen: TokenPair | None, refresh: Callable[[str], TokenPair],
               *, ahead: float = 0.0) -> TokenPair:
        """Spend the refresh token once for a new pair, unless another worker already did.

        ``seen`` is the pair the caller found wanting (``None``: whatever is stored); with
        ``ahead`` > 0 the stored pair is kept when it has more than that many seconds left.
        """
        with self._exclusive(name):
            current = self.get(name)
            if current is None:
                raise NoTokenPair(name)
            if seen is not None and current.refresh_token != seen.refresh_token:
                return current
            if ahead > 0 and not current.expires_within(ahead):
                return current
            pair = refresh(current.refresh_token)
            self.put(name, pair)
            log.info("credentials.pair_rotated", name=name)
            return pair


def basic(user: str, secret: SecretStr) -> str:
    """An HTTP Basic ``Authorization`` value (an OAuth2 client's, an integration account's)."""
    return "Basic " + base64.b64encode(f"{user}:{secret.get_secret_value()}".encode()).decode("ascii")
