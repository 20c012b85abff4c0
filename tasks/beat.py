"""Any number of beats, one sending: the scheduler's leader lease in Redis.

Every ``motcua-relay beat`` runs :class:`LeaderScheduler` (``beat_scheduler`` in ``config/celery.py``); only the
holder of the lease ``<prefix>:beat:leader`` sends the scheduled tasks. The lease is a redis-py lock: a key with
a TTL of ``MOTCUA_BEAT_LEASE_SECONDS`` that holds its leader's token (``host:pid:random``), renewed by that leader
every third of the TTL and taken by a standby once it lapses. Only the token's holder can renew or release it (a
script on the server compares the token), so a beat that paused past its lease never extends its successor's.

The leader records when it sent each entry in ``<prefix>:beat:runs``; a standby copies those times into its own
schedule at each check. Taking over, it sends what fell due while the lease lapsed, once, and nothing whose
period has not come: a standby keeping its own times would fire every job at once, one advancing them alone
would skip the periods the lease took to lapse.

When Redis does not answer, a beat keeps its role, and one that never heard from it leads, as the beat jobs'
locks let a job run then (``Runtime.exclusive``): the jobs are harmless twice, not running them is not. With
``memory://`` the only beat leads.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from celery.beat import PersistentScheduler, ScheduleEntry
from celery.utils.time import maybe_make_aware
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from config.settings import get_settings
from tasks.metrics import _text
from tasks.runtime import redis_client

log = structlog.get_logger(__name__)


class LeaderLease:
    """Whether this beat leads: the lease taken, renewed and released with this beat's own token."""

    def __init__(self, client: redis.Redis | None, key: str, ttl: float) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = client.lock(key, timeout=ttl, thread_local=False) if client is not None else None
        self._leading: bool | None = None  # None: Redis has not answered yet
        self._held = False
        self._next_check = -math.inf

    @property
    def check_every(self) -> float:
        """How often the leader renews the lease and a standby tries to take it."""
        return self.ttl / 3

    def leading(self) -> bool:
        """Whether this beat may send now: the lease is renewed, or tried for, once every :attr:`check_every`."""
        if self._lock is None:
            return True
        now = time.monotonic()
        if self._leading is not None and now < self._next_check:
            return self._leading
        self._next_check = now + self.check_every
        try:
            leading = self._renew_or_take(self._lock)
        except redis.RedisError as exc:
            leading = self._leading is not False
            log.warning("beat.lease_unavailable", error=str(exc), leading=leading,
                        hint="Redis does not answer: this beat keeps its role until it does")
        self._become(leading)
        return leading

    def _renew_or_take(self, lock: Lock) -> bool:
        if self._held:
            try:
                return bool(lock.reacquire())
            except LockNotOwnedError:  # lapsed (a pause, Redis restarted empty) or taken: try to take it again
                self._held = False
        self._held = bool(lock.acquire(blocking=False, token=self.token))
        return self._held

    def _become(self, leading: bool) -> None:
        if leading == self._leading:
            return
        if leading:
            log.info("beat.leading", beat=self.token, lease_seconds=self.ttl)
        elif self._leading:
            log.warning("beat.leadership_lost", beat=self.token, leader=self.leader())
        else:
            log.info("beat.standing_by", beat=self.token, leader=self.leader())
        self._leading = leading

    def leader(self) -> str | None:
        """The token of the beat holding the lease, when Redis says."""
        if self.client is None:
            return self.token
        with contextlib.suppress(redis.RedisError):
            value = self.client.get(self.key)
            return _text(value) if value is not None else None
        return None

    def release(self) -> None:
        """Give the lease up (a stopping beat), so that a standby takes it at its next check."""
        if self._lock is None or not self._held:
            return
        self._held = False
        with contextlib.suppress(LockError, redis.RedisError):  # someone else's by now, or it lapses by itself
            self._lock.release()
            log.info("beat.lease_released", beat=self.token)


class LastRuns:
    """When the leader last sent each schedule entry (epoch seconds in one Redis hash)."""

    def __init__(self, client: redis.Redis | None, key: str) -> None:
        self.client = client
        self.key = key

    def record(self, name: str, at: datetime) -> None:
        if self.client is None:
            return
        with contextlib.suppress(redis.RedisError):  # a standby taking over then sends it once more: harmless
            self.client.hset(self.key, name, str(maybe_make_aware(at).timestamp()))

    def read(self) -> dict[str, float]:
        if self.client is None:
            return {}
        try:
            raw = self.client.hgetall(self.key)
        except redis.RedisError:
            return {}
        return {_text(name): float(at) for name, at in raw.items()}


class LeaderScheduler(PersistentScheduler):
    """Celery's persistent scheduler that sends only while its beat holds the lease; a standby follows the
    leader's runs, so that its schedule is the leader's when it takes over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        client = redis_client(settings.redis_url)
        self.lease = LeaderLease(client, f"{settings.redis_prefix}:beat:leader", settings.beat_lease_seconds)
        self.runs = LastRuns(client, f"{settings.redis_prefix}:beat:runs")
        self._led = False
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lease.leading():
            self._led = False
            self.follow()
            return self.lease.check_every
        if not self._led:  # just took over: the last runs the leader recorded before it went
            self._led = True
            self.follow()
        return min(float(super().tick(*args, **kwargs)), self.lease.check_every)

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        super().apply_entry(entry, producer=producer)
        self.runs.record(entry.name, self.schedule[entry.name].last_run_at)

    def follow(self) -> None:
        """Take the leader's later runs into this schedule; the heap of due times is rebuilt when one moved."""
        moved = False
        for name, at in self.runs.read().items():
            entry = self.schedule.get(name)
            if entry is not None and at > maybe_make_aware(entry.last_run_at).timestamp():
                entry.last_run_at = datetime.fromtimestamp(at, UTC)
                moved = True
        if moved:
            self._heap = None

    def close(self) -> None:
        self.lease.release()
        super().close()

    @property
    def info(self) -> str:
        return f"{super().info}\n    . leader lease -> {self.lease.key} ({self.lease.ttl:g} s)"
