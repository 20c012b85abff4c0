"""Per-process resources, built once from configuration and handed to the engine and the services.

A :class:`Runtime` is the services' :class:`~services.base.Context` (the ledger engine, Redis, the routing, the
registry of services and their deliverers, the way to queue deliveries) plus what only the delivery engine uses:
the circuit breakers and rate limits, the metrics, the destinations' pauses (read for the metrics; the deliverers
keep them) and the locks of the beat jobs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from celery.signals import worker_shutdown

from config.redis_url import connect
from config.routing import RoutingConfig, get_routing
from config.settings import get_settings
from connectors.pauses import PauseStore
from services.base import Context
from services.registry import get_registry
from store.db import get_engine
from store.streams import DestinationRules, ToEnqueue
from tasks.leases import LeaseKeeper
from tasks.metrics import DeliveryMetrics
from tasks.protection import Protection
from tasks.queue import Doorbells
from tasks.recorder import WaveRecorder

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Runtime(Context):
    protection: Protection
    metrics: DeliveryMetrics
    pauses: PauseStore
    doorbells: Doorbells
    leases: LeaseKeeper
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _recorders: dict[str, WaveRecorder] = field(default_factory=dict, init=False, repr=False)

    def recorder(self, destination: str) -> WaveRecorder:
        """What records the waves of ``destination``'s batches in this process (:mod:`tasks.recorder`), made as
        first asked for."""
        with self._lock:
            found = self._recorders.get(destination)
            if found is None:
                found = self._recorders[destination] = WaveRecorder(self.engine)
            return found

    def attempt_pool(self) -> ThreadPoolExecutor:
        """Threads for the attempts of a batch whose deliverer sends one call at a time (SOAP, several calls)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(2, self.settings.worker_concurrency),
                                                thread_name_prefix="attempt")
            return self._pool

    def close(self) -> None:
        super().close()
        self.leases.close()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def each_destination(
        self, job: str, timeout: float, names: Iterable[str], step: Callable[[str], dict[str, Any]], *,
        done: str, failed: str, noteworthy: Callable[[dict[str, Any]], bool] = bool,
        failure_hint: Callable[[str], str] | None = None,
    ) -> dict[str, Any]:
        """A beat job over destinations: held by one process at a time (:meth:`exclusive`), ``step`` run for
        each name, its summary logged as ``done`` when ``noteworthy``. One destination failing is logged as
        ``failed`` (an error, with the operator's command, when ``failure_hint`` gives one) and does not stop
        the others; the next run tries it again. ``{"skipped": True}`` when another process holds the job."""
        summary: dict[str, Any] = {}
        with self.exclusive(job, timeout) as mine:
            if not mine:
                return {"skipped": True}
            for name in names:
                try:
                    summary[name] = step(name)
                except Exception as exc:  # a service down must not stop the others
                    summary[name] = {"error": str(exc)}
                    if failure_hint is None:
                        log.warning(failed, destination=name, error=str(exc))
                    else:
                        log.error(failed, destination=name, error=str(exc), hint=failure_hint(name))
                    continue
                if noteworthy(summary[name]):
                    log.info(done, destination=name, **summary[name])
        return summary

    @contextlib.contextmanager
    def exclusive(self, name: str, timeout: float) -> Iterator[bool]:
        """Yield whether this process may run job ``name`` now: False while another holds its Redis lock.

        For jobs that are harmless twice but wasteful (the sweep, the portal pull): when Redis
        does not answer, or in memory mode, it yields True, since not running is not harmless.
        """
        lock = self.redis.lock(f"{self.settings.redis_prefix}:{name}", timeout=timeout) if self.redis else None
        acquired = True
        if lock is not None:
            try:
                acquired = bool(lock.acquire(blocking=False))
            except redis.RedisError as exc:
                log.warning("lock.unavailable", job=name, error=str(exc))
                lock = None
        try:
            yield acquired
        finally:
            if lock is not None and acquired:
                with contextlib.suppress(redis.RedisError):  # the lock expires by itself
                    lock.release()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def redis_client(url: str) -> redis.Redis | None:
    """A Redis client (of a server, or of the master a ``sentinel://`` URL's sentinels name), or ``None`` for the
    in-memory mode (``memory://``)."""
    if url.startswith("memory://"):
        return None
    return connect(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)


def rules_for(routing: RoutingConfig) -> dict[str, DestinationRules]:
    return {
        name: DestinationRules(
            name=name,
            ordered=d.ordering == "sequence",
            deadline_seconds=d.retry.deadline,
            max_attempts=d.retry.max_attempts,
        )
        for name, d in routing.destinations.items()
    }


def build_runtime(enqueue: Callable[[Sequence[ToEnqueue]], None] | None = None) -> Runtime:
    """A runtime from the environment's settings (``enqueue``: how deliveries reach the workers, Celery's by
    default)."""
    settings = get_settings()
    routing = get_routing(str(settings.routing_file))
    client = redis_client(settings.redis_url)
    doorbells = Doorbells(client, settings.redis_prefix, routing)
    engine = get_engine(settings.database_url)
    return Runtime(
        settings=settings, routing=routing, engine=engine, redis=client,
        rules=rules_for(routing), registry=get_registry(), enqueue=enqueue or doorbells.enqueue,
        protection=Protection(client, settings.redis_prefix), metrics=DeliveryMetrics(client, settings.redis_prefix),
        pauses=PauseStore(client, settings.redis_prefix), doorbells=doorbells,
        leases=LeaseKeeper(engine, settings.delivery_lease_seconds,
                           settings.attempt_deadline_seconds + settings.delivery_lease_seconds),
    )


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = build_runtime()
        return _runtime


def give_back_leases(why: str) -> None:
    """This process is going away with attempts unfinished: their leases lapse now (:meth:`LeaseKeeper.give_back`),
    so the sweeper's next run makes them due; a no-op in a process that never built its runtime, or holds none."""
    rt = _runtime
    if rt is None:
        return
    try:
        lapsed = rt.leases.give_back()
    except Exception as exc:  # the ledger is away too: they lapse a lease from their last renewal, as after a kill
        log.warning("worker.leases_not_given_back", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
        return
    if lapsed:
        log.warning("worker.leases_given_back", deliveries=lapsed, why=why,
                    action="due again at the sweeper's next run")


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    # sent as Celery stops the worker, after a warm stop's tasks have ended (then nothing is held)
    give_back_leases("the worker stops")


def reset_runtime() -> None:
    """Forget the cached settings and resources (tests that change the environment)."""
    global _runtime
    from store.db import dispose_engines

    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
    get_settings.cache_clear()
    get_routing.cache_clear()
    dispose_engines()
