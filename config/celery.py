"""Celery configuration: the settings that matter for at-least-once delivery (docs/design.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.redis_url import celery_broker
from config.routing import RoutingConfig
from config.settings import Settings
from schemas.vietnam import VN_TZ

ROUTE_QUEUE = "relay.route"
CONTROL_QUEUE = "relay.control"


def celery_config(settings: Settings, routing: RoutingConfig, *, schedule: Mapping[str, dict[str, Any]] | None = None,
                  routes: Mapping[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The Celery app's settings; ``schedule`` and ``routes`` are the services' beat entries and task routes (the
    Celery layer makes them from the registry: ``tasks/schedule.py``)."""
    longest_task = max(
        (d.timeouts.connect + d.timeouts.read) * 2 + 30 for d in routing.destinations.values()
    ) if routing.destinations else 120
    broker_url, broker_options = celery_broker(settings.broker_url)
    return {
        "broker_url": broker_url,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_time_limit": longest_task,
        "task_soft_time_limit": longest_task - 10,
        "worker_prefetch_multiplier": 4,
        # task events for Flower (`celery -A tasks.app flower` beside the relay): received, started, succeeded…
        "worker_send_task_events": settings.celery_events,
        "task_send_sent_event": settings.celery_events,
        "task_default_queue": CONTROL_QUEUE,
        "task_routes": {
            "relay.route": {"queue": ROUTE_QUEUE},
            "relay.sweep": {"queue": CONTROL_QUEUE},
            "relay.audit_checkpoint": {"queue": CONTROL_QUEUE},
            **(routes or {}),
        },
        "broker_transport_options": {
            "visibility_timeout": max(settings.visibility_timeout_seconds, longest_task * 2),
            **broker_options,  # a sentinel broker's master_name, timeouts and the sentinels' password
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_pool_limit": max(10, settings.worker_concurrency),
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": VN_TZ.key,
        "enable_utc": True,
        # any number of beats: only the holder of a lease in Redis sends (tasks/beat.py)
        "beat_scheduler": "tasks.beat:LeaderScheduler",
        "beat_schedule": {
            "sweep": every("relay.sweep", settings.sweep_interval_seconds, expires=settings.sweep_interval_seconds * 3),
            "audit-checkpoint": every("relay.audit_checkpoint", settings.audit_checkpoint_seconds),
            **(schedule or {}),
        },
    }


def every(task: str, seconds: float, expires: float | None = None) -> dict[str, Any]:
    """A beat entry every ``seconds``; a run not started by the next one (``expires``, default the interval) is
    dropped, not piled up."""
    return {"task": task, "schedule": seconds, "options": {"expires": seconds if expires is None else expires}}


def worker_queues(routing: RoutingConfig) -> list[str]:
    return [ROUTE_QUEUE, CONTROL_QUEUE, *routing.queues]
