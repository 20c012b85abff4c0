"""Pauses: the account-level conditions during which a destination can take no message, shared by every worker.

A service that answers "your account's balance is spent" or "this template is disabled" is not refusing the
message: every message would get the same answer until someone pays or re-enables. The deliverer records a
:class:`Pause` here, holds the destination's deliveries while it lasts (no attempt spent), lets one probe through
now and then (:meth:`PauseStore.probe`), and lifts it when a send goes through or an operator says so.

One Redis hash per destination, ``{prefix}:pause:{destination}``: the scope (:data:`WHOLE` for the whole
destination, else what the condition concerns, such as a template id) → the pause as JSON. A pause with an
``until`` (a daily quota: the next midnight) ends by itself then; one without lasts until it is lifted. Nothing
personal is kept: the condition, the service's code and words, the times. Without Redis (``memory://``), or
while it does not answer, the pauses are this process's.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import redis
import structlog

log = structlog.get_logger(__name__)

WHOLE = "*"  # the scope of a pause of the whole destination

# memory mode (and Redis out of reach): this process's pauses and probe slots, per hash key
_local: dict[str, dict[str, Pause]] = {}
_local_probes: dict[str, tuple[float, str]] = {}  # slot → (ends, token)
_guard = threading.Lock()

_GIVE_BACK_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Pause:
    """Why a destination (or one ``scope`` of it) takes no message, since when and, when known, until when."""

    condition: str  # "balance", "template_disabled", … (the metric's label)
    reason: str  # the service's answer, for the operator
    since: float  # epoch seconds
    until: float | None = None  # ends by itself then; None: until a probe succeeds or an operator resumes
    scope: str = WHOLE

    def active(self, now: float | None = None) -> bool:
        return self.until is None or self.until > (time.time() if now is None else now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Pause:
        return cls(**json.loads(text))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PauseStore:
    """The pauses of every destination, in Redis (or this process's memory)."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def _key(self, destination: str) -> str:
        return f"{self._prefix}:pause:{destination}"

    def get(self, destination: str, now: float | None = None) -> dict[str, Pause]:
        """The destination's active pauses by scope (an ended one is not returned)."""
        key = self._key(destination)
        raw: Mapping[str, Pause]
        if self._redis is None:
            raw = self._mirror(key)
        else:
            try:
                raw = {_text(k): Pause.from_json(v) for k, v in self._redis.hgetall(key).items()}
            except redis.RedisError as exc:
                log.warning("pauses.redis_unavailable", destination=destination, error=str(exc))
                raw = self._mirror(key)
            except (ValueError, TypeError):  # a field written by another version: not a pause we can read
                raw = {}
        return {scope: pause for scope, pause in raw.items() if pause.active(now)}

    def pause(self, destination: str, pause: Pause) -> tuple[Pause, bool]:
        """Record ``pause`` unless its scope is already paused; the pause in force and whether it is new."""
        current = self.get(destination).get(pause.scope)
        if current is not None:
            if pause.until is not None and current.until is not None and pause.until > current.until:
                current = replace(current, until=pause.until)  # a daily limit met again after midnight
                self._write(destination, current)
            return current, False
        if not self._claim(destination, pause):  # another worker recorded it first: its pause is the one
            current = self.get(destination).get(pause.scope)
            if current is not None:
                return current, False
        self._write(destination, pause)
        return pause, True

    def _claim(self, destination: str, pause: Pause) -> bool:
        """Whether ``pause`` is the first of its scope in Redis (several workers meeting a condition at once: one
        records it, logs it and takes the first probe turn); without Redis, the first in this process."""
        if self._redis is None:
            with _guard:
                mirror = _local.setdefault(self._key(destination), {})
                if (held := mirror.get(pause.scope)) is not None and held.active():
                    return False
                mirror[pause.scope] = pause
                return True
        try:
            return bool(self._redis.hsetnx(self._key(destination), pause.scope, pause.to_json()))
        except redis.RedisError:
            return True  # _write says so, and keeps this process's copy

    def _write(self, destination: str, pause: Pause) -> None:
        key = self._key(destination)
        with _guard:
            _local.setdefault(key, {})[pause.scope] = pause
        if self._redis is not None:
            try:
                self._redis.hset(key, pause.scope, pause.to_json())
            except redis.RedisError as exc:  # this process holds it; the others learn it from the service
                log.warning("pauses.redis_unavailable", destination=destination, error=str(exc))

    def lift(self, destination: str, scopes: Iterable[str] | None = None) -> list[Pause]:
        """End the pauses of ``scopes`` (all of them when ``None``); the active ones this call ended, so that only
        one of several workers lifting at once goes on to release the held deliveries."""
        key = self._key(destination)
        wanted = None if scopes is None else set(scopes)
        current = self.get(destination)
        chosen = [scope for scope in current if wanted is None or scope in wanted]
        with _guard:
            mirror = _local.get(key, {})
            for scope in chosen:
                mirror.pop(scope, None)
        if self._redis is None or not chosen:
            return [current[scope] for scope in chosen]
        try:
            pipe = self._redis.pipeline(transaction=False)
            for scope in chosen:
                pipe.hdel(key, scope)
            removed = pipe.execute()
        except redis.RedisError as exc:
            log.warning("pauses.redis_unavailable", destination=destination, error=str(exc))
            return []
        return [current[scope] for scope, gone in zip(chosen, removed, strict=True) if gone]

    def probe(self, destination: str, scope: str, every: float) -> bool:
        """Whether the caller may send one probe for a paused ``scope`` now: True for one caller per ``every``
        seconds across every worker."""
        return self.take_turn(destination, scope, every) is not None

    def take_turn(self, destination: str, scope: str, every: float) -> str | None:
        """:meth:`probe`, with the turn's token when it is granted: :meth:`give_back` returns the turn to the
        other callers (when the caller found nothing to probe with)."""
        slot = f"{self._key(destination)}:probe:{scope}"
        token = uuid.uuid4().hex
        if self._redis is not None:
            try:
                return token if self._redis.set(slot, token, nx=True, px=max(1, int(every * 1000))) else None
            except redis.RedisError as exc:
                log.warning("pauses.redis_unavailable", destination=destination, error=str(exc))
        now = time.monotonic()
        with _guard:
            if _local_probes.get(slot, (0.0, ""))[0] > now:
                return None
            _local_probes[slot] = (now + every, token)
            return token

    def give_back(self, destination: str, scope: str, token: str) -> None:
        """End the turn ``token`` before its time, unless it has ended and another caller's has begun."""
        slot = f"{self._key(destination)}:probe:{scope}"
        with _guard:
            if _local_probes.get(slot, (0.0, ""))[1] == token:
                del _local_probes[slot]
        if self._redis is not None:
            try:
                self._redis.eval(_GIVE_BACK_LUA, 1, slot, token)
            except redis.RedisError as exc:  # the turn ends by itself
                log.warning("pauses.redis_unavailable", destination=destination, error=str(exc))

    def counts(self, destinations: Iterable[str]) -> dict[tuple[str, str], int]:
        """How many scopes are paused, per (destination, condition): what the metric shows."""
        found: dict[tuple[str, str], int] = {}
        for destination in destinations:
            for pause in self.get(destination).values():
                found[(destination, pause.condition)] = found.get((destination, pause.condition), 0) + 1
        return found

    def _mirror(self, key: str) -> dict[str, Pause]:
        with _guard:
            return dict(_local.get(key, {}))
