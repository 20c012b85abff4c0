"""Whether the workers are up, for the console's overview: who answers Celery's ping, and the ledger's last attempt.

The ping is a broadcast on the broker answered by every worker (``motcua-relay worker`` keeps Celery's remote
control on): the names that answer within :data:`PING_SECONDS` are the workers up. A ping always takes that long,
and when the broker does not answer kombu goes on trying to connect for seconds: the page does not wait for either.
The ping runs in a thread of its own, one at a time per process and broker, a new one when the last answer is older
than :data:`FRESH_SECONDS`; meanwhile a page shows the last answer, with the time it was asked, if it is not older
than :data:`STALE_SECONDS`. Only a page with no such answer waits for the ping, at most :data:`WAIT_SECONDS`, and
then shows the workers as unknown.

The ledger says when the last attempt started and the last delivery landed, each read by an index (the attempts'
primary key, ``ix_deliveries_delivered``): workers that answer but attempt nothing while work is open are stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Engine, select

from store.tables import attempts, deliveries

PING_SECONDS = 0.5  # how long the workers have to answer
WAIT_SECONDS = 1.5  # how long a page with no answer to show waits for the ping, whatever the broker does
FRESH_SECONDS = 5.0  # an answer this recent is not asked again
STALE_SECONDS = 30.0  # an answer this old is shown while the next ping is under way


@dataclass(frozen=True)
class WorkerHealth:
    answering: tuple[str, ...] | None  # the workers' names; None: the broker did not answer in time
    asked_at: datetime | None  # when the ping shown was sent
    last_attempt_at: datetime | None
    last_delivered_at: datetime | None
    error: str | None = None

    @property
    def state(self) -> Literal["up", "down", "unknown"]:
        if self.answering is None:
            return "unknown"
        return "up" if self.answering else "down"


def celery_ping(timeout: float) -> tuple[str, ...]:
    """The names of the Celery workers that answer a ping within ``timeout``."""
    from tasks.app import app as celery_app

    replies = celery_app.control.ping(timeout=timeout) or []
    return tuple(sorted(name for reply in replies for name in reply))


@dataclass(frozen=True)
class Ping:
    at: datetime
    clock: float  # time.monotonic() when sent
    future: Future[tuple[str, ...]]

    def answer(self, wait: float) -> tuple[tuple[str, ...] | None, str | None]:
        """The workers that answered, or ``None`` and why not (the broker's error, or no answer in ``wait``)."""
        try:
            return self.future.result(timeout=wait), None
        except FutureTimeout:
            return None, "timeout"
        except Exception as exc:  # kombu's OperationalError and the like: the broker does not answer
            return None, type(exc).__name__


@dataclass(frozen=True)
class Asked:
    """What a page shows: the latest ping, and the last one answered before it (shown while the latest is under
    way)."""

    latest: Ping
    answered: Ping | None

    def shown(self) -> tuple[tuple[str, ...] | None, str | None, datetime]:
        if self.latest.future.done() or self.answered is None:
            return (*self.latest.answer(WAIT_SECONDS), self.latest.at)
        return (*self.answered.answer(0), self.answered.at)


class Pinger:
    """One ping at a time per broker (a test changes the broker), asked again when its answer is no longer fresh."""

    def __init__(self, ping: Callable[[float], tuple[str, ...]] = celery_ping, fresh: float = FRESH_SECONDS,
                 stale: float = STALE_SECONDS) -> None:
        self._ping, self._fresh, self._stale = ping, fresh, stale
        self._lock = threading.Lock()
        self._pings: dict[str, tuple[Ping, Ping | None]] = {}

    def _send(self) -> Future[tuple[str, ...]]:
        """The ping in a daemon thread (one stuck on a broker that does not answer keeps no process from ending)."""
        future: Future[tuple[str, ...]] = Future()

        def run() -> None:
            try:
                future.set_result(self._ping(PING_SECONDS))
            except Exception as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="console-ping", daemon=True).start()
        return future

    def start(self, broker: str) -> Asked:
        """The ping of ``broker`` under way or freshly answered (a new one if neither), and the last answered."""
        with self._lock:
            now = time.monotonic()
            latest, answered = self._pings.get(broker, (None, None))
            if latest is None or (latest.future.done() and now - latest.clock > self._fresh):
                answered = latest if latest is not None else answered
                latest = Ping(datetime.now(UTC), now, self._send())
                self._pings[broker] = (latest, answered)
            recent = answered if answered is not None and now - answered.clock <= self._stale else None
            return Asked(latest, recent)


PINGER = Pinger()


def last_activity(engine: Engine) -> tuple[datetime | None, datetime | None]:
    """When the last attempt started and the last delivery landed (``None``: never)."""
    with engine.connect() as conn:
        attempt = conn.execute(select(attempts.c.started_at).order_by(attempts.c.id.desc()).limit(1)).scalar()
        delivered = conn.execute(select(deliveries.c.delivered_at).where(deliveries.c.delivered_at.is_not(None))
                                 .order_by(deliveries.c.delivered_at.desc()).limit(1)).scalar()
    return attempt, delivered


def worker_health(engine: Engine, asked: Asked) -> WorkerHealth:
    """The workers that answered (the ping started before the ledger is read, so that both wait together) and the
    ledger's last activity."""
    attempt, delivered = last_activity(engine)
    answering, error, at = asked.shown()
    return WorkerHealth(answering, at, attempt, delivered, error)
