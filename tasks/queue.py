"""Queueing work for the workers: routing of stored events, and doorbells for destinations that have work.

Tasks take ids, never payloads. Deliveries are not queued one message each: the broker carries a doorbell,
"destination X has work" (``relay.drain``), and the worker that answers claims the destination's due deliveries
from the ledger in batches. A doorbell already rung and not yet answered is not rung again (a flag in Redis,
with a short expiry), so a burst of intake costs one message per destination, not one per event.

A broker failure is logged, not raised: the work is safe in the ledger, and the sweeper rings again for what
is due and not claimed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

import redis
import structlog

from config.celery import ROUTE_QUEUE
from config.routing import RoutingConfig
from store.streams import ToEnqueue
from tasks.app import app

log = structlog.get_logger(__name__)
ROUTE_TASK = "relay.route"
DRAIN_TASK = "relay.drain"
DELIVER_TASK = "relay.deliver"  # one delivery by id: what an older relay queued, still answered
# a doorbell whose drain never started (its message lost with a broker) may be rung again after this long
DOORBELL_SECONDS = 15


def enqueue_routes(event_pks: Iterable[int]) -> None:
    """Queue routing for stored events."""
    for pk in event_pks:
        try:
            app.send_task(ROUTE_TASK, (pk,), queue=ROUTE_QUEUE)
        except Exception as exc:  # the broker is down: the event is safe in the ledger
            log.warning("enqueue.route_failed", event_pk=pk, error=str(exc))
            return


class Doorbells:
    """Ring a destination's doorbell (a ``relay.drain`` task on its queue) once until a worker answers it.

    The flag is cleared by the drain *before* it claims, so work committed before a ring is always seen by
    a claim that starts after it: by the drain already queued, or by the one this ring sends.
    """

    def __init__(self, client: redis.Redis | None, prefix: str, routing: RoutingConfig) -> None:
        self._redis = client
        self._prefix = prefix
        self._routing = routing
        self._memory: dict[str, float] = {}
        self._lock = threading.Lock()

    def _key(self, destination: str) -> str:
        return f"{self._prefix}:doorbell:{destination}"

    def enqueue(self, items: Sequence[ToEnqueue]) -> None:
        """What the engine and the services call with deliveries that may go now: their destinations rung."""
        self.ring(sorted({item.destination for item in items}))

    def ring(self, destinations: Iterable[str], *, countdown: float | None = None) -> None:
        """Send a drain for each destination whose doorbell is not already ringing (``countdown``: in that many
        seconds, a rate limit's wait; the doorbell rings that much longer)."""
        for destination in destinations:
            if not self._first_ring(destination, DOORBELL_SECONDS + (countdown or 0.0)):
                continue
            try:
                app.send_task(DRAIN_TASK, (destination,), queue=self._routing.destinations[destination].queue,
                              countdown=countdown)
            except Exception as exc:  # the broker is down: the sweeper rings again
                log.warning("enqueue.drain_failed", destination=destination, error=str(exc))
                self.answer(destination)
                return

    def _first_ring(self, destination: str, seconds: float) -> bool:
        if self._redis is None:
            with self._lock:
                now = time.monotonic()
                if self._memory.get(destination, 0.0) > now:
                    return False
                self._memory[destination] = now + seconds
                return True
        try:
            return bool(self._redis.set(self._key(destination), "1", nx=True, px=int(seconds * 1000)))
        except redis.RedisError as exc:  # ring anyway: a drain too many finds nothing, one too few loses time
            log.warning("doorbell.redis_unavailable", error=str(exc))
            return True

    def answer(self, destination: str) -> None:
        """A drain starts: the next ring sends another."""
        if self._redis is None:
            with self._lock:
                self._memory.pop(destination, None)
            return
        try:
            self._redis.delete(self._key(destination))
        except redis.RedisError as exc:  # the flag expires by itself
            log.warning("doorbell.redis_unavailable", error=str(exc))
