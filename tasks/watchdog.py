"""A worker that stopped consuming exits, so that its supervisor starts a fresh one.

Celery's Redis consumer can die on a broker connection reset without the process exiting
(celery#8030, celery#10205). The ledger loses nothing, but the worker would sit idle
forever. This thread watches for work waiting in the worker's queues while no task has
started or finished for ``MOTCUA_WORKER_STALL_SECONDS``, and then exits the process with
status 75 (EX_TEMPFAIL): run workers under a supervisor that restarts them (systemd
``Restart=always``, Kubernetes, supervisord).

When the consumer's error reaches Celery instead (a Redis restarted empty under load:
kombu's ``restore_unacked`` raises ``'NoneType' object has no attribute 'hostname'`` in
``on_connection_error_after_connected``, and Celery logs "Unrecoverable error"), Celery
stops the worker with its ``EX_FAILURE``; :func:`exit_status` makes that 75 too, so that a
supervisor restarting only on failure restarts it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis
import structlog
from celery.platforms import EX_FAILURE
from celery.signals import task_postrun, task_prerun, worker_ready

log = structlog.get_logger(__name__)
EXIT_STALLED = 75
_last_activity = time.monotonic()


@task_prerun.connect
@task_postrun.connect
def _activity(**_: Any) -> None:
    global _last_activity
    _last_activity = time.monotonic()


def exit_status(celery_status: int | None) -> int:
    """The process's exit status for the status a Celery command ended with (``None`` or 0: asked to stop)."""
    if celery_status == EX_FAILURE:
        return EXIT_STALLED  # stopped on an error, or a cold shutdown: a fresh process is what it needs
    return celery_status or 0


def stalled(queued: int, idle_seconds: float, stall_seconds: float) -> bool:
    """Work is waiting, yet nothing has started or finished for too long."""
    return queued > 0 and idle_seconds > stall_seconds


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    from config.redis_url import connect, is_redis
    from config.settings import get_settings

    settings = get_settings()
    if settings.worker_stall_seconds <= 0 or not is_redis(settings.broker_url):
        return
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender is not None else []
    client = connect(settings.broker_url, socket_timeout=5, socket_connect_timeout=3)
    thread = threading.Thread(
        target=_watch, args=(client, queues, settings.worker_stall_seconds), name="stall-watchdog", daemon=True
    )
    thread.start()


def _watch(client: redis.Redis, queues: list[str], stall_seconds: float) -> None:
    global _last_activity
    _last_activity = time.monotonic()
    while True:
        time.sleep(min(5.0, stall_seconds / 3))
        try:
            queued = sum(int(client.llen(q)) for q in queues)
        except redis.RedisError:
            continue  # the broker itself is away: not this worker's fault
        idle = time.monotonic() - _last_activity
        if stalled(queued, idle, stall_seconds):
            log.error("worker.stalled", queued=queued, idle_seconds=round(idle), action="exit for a restart")
            from tasks.runtime import give_back_leases

            give_back_leases("the worker stalled")
            os._exit(EXIT_STALLED)
