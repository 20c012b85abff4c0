"""What the console must remember between requests, shared by every API process: failed log-ins and open sessions.

In the runtime's Redis under its key prefix (``MOTCUA_REDIS_PREFIX``), every key with an expiry:

- ``{prefix}:console:fails:account:{name}`` and ``{prefix}:console:fails:address:{address}`` count failed log-ins
  (of an account, or of a name that is none: both are counted alike, so a lock-out does not tell them apart). A
  failure renews the count's life to the window, so failures less than a window apart add up; at the limit, log-ins
  of that account, or from that address, are refused without checking the password until the window has passed
  since the last one. An attempt is counted before its password is checked (many at once cannot slip past the
  limit) and a success gives it back: it clears the account's count and takes one off the address's.
- ``{prefix}:console:session:{id}`` → the operator, for a session's lifetime: a cookie whose session is not open
  here (logged out, or Redis lost its keys) is refused.

In memory mode (``memory://``) the same state lives in this process. When Redis does not answer, the console
cannot tell who is locked out or logged in: :class:`StateUnavailable`, and the console refuses rather than
guessing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from api.console.auth import Session

# KEYS: the account's count, the address's; ARGV: their limits, the window (ms).
# {0, ms to wait} when either is at its limit, else both counted: {1, the account's count, the address's}.
_ADMIT_LUA = """
local account = tonumber(redis.call('GET', KEYS[1]) or '0')
local address = tonumber(redis.call('GET', KEYS[2]) or '0')
if account >= tonumber(ARGV[1]) then return {0, redis.call('PTTL', KEYS[1])} end
if address >= tonumber(ARGV[2]) then return {0, redis.call('PTTL', KEYS[2])} end
account = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
address = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, account, address}
"""

# A log-in that went through: the account's count cleared, the address's attempt given back.
_SUCCEEDED_LUA = """
redis.call('DEL', KEYS[1])
local address = tonumber(redis.call('GET', KEYS[2]) or '0')
if address > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""

# memory mode: key → (value, expires at, monotonic seconds)
_local: dict[str, tuple[str, float]] = {}
_guard = threading.Lock()


class StateUnavailable(Exception):
    """Redis does not answer: the console cannot tell who is locked out or logged in."""


@dataclass(frozen=True)
class LockOut:
    account: int  # failed log-ins of one account (or name) that lock it out
    address: int  # failed log-ins from one client address that lock it out
    window: float  # seconds: failures closer than this add up; a lock-out lasts this long after the last


@dataclass(frozen=True)
class Admission:
    """Whether a log-in attempt may have its password checked: ``wait`` seconds when it may not (a lock-out),
    else 0 and the counts with this attempt in them."""

    wait: float
    account_count: int = 0
    address_count: int = 0


class ConsoleState:
    """Failed log-ins and open sessions, in Redis (or this process's memory)."""

    def __init__(self, client: redis.Redis | None, prefix: str, lockout: LockOut) -> None:
        self._redis = client
        self._prefix = prefix
        self.lockout = lockout

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, "console", *parts))

    def _counts(self, account: str, address: str) -> list[str]:
        return [self._key("fails", "account", account), self._key("fails", "address", address)]

    def admit(self, account: str, address: str) -> Admission:
        """Count a log-in attempt of ``account`` from ``address``, unless either is locked out."""
        keys = self._counts(account, address)
        limits = (self.lockout.account, self.lockout.address)
        if self._redis is None:
            with _guard:
                now = time.monotonic()
                held = [_alive(key, now) for key in keys]
                for (value, until), limit in zip(held, limits, strict=True):
                    if int(value or 0) >= limit:
                        return Admission(until - now)
                counts = [int(value or 0) + 1 for value, _ in held]
                for key, count in zip(keys, counts, strict=True):
                    _local[key] = (str(count), now + self.lockout.window)
                _forget_expired(now)
                return Admission(0.0, *counts)
        answer = self._call(lambda r: r.eval(_ADMIT_LUA, 2, *keys, *limits, math.ceil(self.lockout.window * 1000)))
        if int(answer[0]) == 0:
            return Admission(max(1, int(answer[1])) / 1000)
        return Admission(0.0, int(answer[1]), int(answer[2]))

    def succeeded(self, account: str, address: str) -> None:
        """A log-in that went through: the account's failures are forgotten, the address's attempt given back."""
        keys = self._counts(account, address)
        if self._redis is None:
            with _guard:
                _local.pop(keys[0], None)
                value, until = _alive(keys[1], time.monotonic())
                if int(value or 0) > 0:
                    _local[keys[1]] = (str(int(value or 0) - 1), until)
            return
        self._call(lambda r: r.eval(_SUCCEEDED_LUA, 2, *keys))

    def open_session(self, session: Session) -> None:
        key, ttl = self._key("session", session.sid), session.remaining()
        if self._redis is None:
            with _guard:
                _local[key] = (session.operator, time.monotonic() + ttl)
                _forget_expired(time.monotonic())
            return
        self._call(lambda r: r.set(key, session.operator, ex=ttl))

    def is_open(self, session: Session) -> bool:
        """Whether the session was opened here and has not been closed (nor lost)."""
        key = self._key("session", session.sid)
        if self._redis is None:
            with _guard:
                value, _ = _alive(key, time.monotonic())
        else:
            raw = self._call(lambda r: r.get(key))
            value = raw.decode() if isinstance(raw, bytes) else raw
        return value == session.operator

    def close_session(self, session: Session) -> None:
        key = self._key("session", session.sid)
        if self._redis is None:
            with _guard:
                _local.pop(key, None)
            return
        self._call(lambda r: r.delete(key))

    def _call(self, command: Callable[[redis.Redis], Any]) -> Any:
        assert self._redis is not None
        try:
            return command(self._redis)
        except redis.RedisError as exc:
            raise StateUnavailable(str(exc)) from exc


def _alive(key: str, now: float) -> tuple[str | None, float]:
    value, until = _local.get(key, (None, now))
    return (value, until) if value is not None and until > now else (None, now)


def _forget_expired(now: float) -> None:
    """Memory mode keeps no key past its expiry once there are many (names tried by someone guessing)."""
    if len(_local) > 4096:
        for key in [k for k, (_, until) in _local.items() if until <= now]:
            del _local[key]
