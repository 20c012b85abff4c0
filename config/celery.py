"""Celery configuration: the settings that matter for at-least-once delivery (DESIGN.md)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from config.routing import RoutingConfig
from config.settings import Settings
from schemas.vietnam import VN_TZ

ROUTE_QUEUE = "relay.route"
CONTROL_QUEUE = "relay.control"


def celery_config(settings: Settings, routing: RoutingConfig) -> dict[str, Any]:
    longest_task = max(
        (d.timeouts.connect + d.timeouts.read) * 2 + 30 for d in routing.destinations.values()
    ) if routing.destinations else 120
    hour, minute = settings.reconcile_at.split(":")
    return {
        "broker_url": settings.broker_url,
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
            "relay.portal.pull": {"queue": CONTROL_QUEUE},
            "relay.postal.poll": {"queue": CONTROL_QUEUE},
            "relay.payment.unanswered": {"queue": CONTROL_QUEUE},
            "relay.transfer.poll": {"queue": CONTROL_QUEUE},
            "relay.payment.reconcile": {"queue": CONTROL_QUEUE},
        },
        "broker_transport_options": {
            "visibility_timeout": max(settings.visibility_timeout_seconds, longest_task * 2),
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
        "beat_schedule": {
            "sweep": _every("relay.sweep", settings.sweep_interval_seconds,
                            expires=settings.sweep_interval_seconds * 3),
            "portal-online-dossiers": _every("relay.portal.pull", settings.portal_pull_interval_seconds),
            "postal-tracking": _every("relay.postal.poll", settings.postal_poll_interval_seconds),
            "transfer-updates": _every("relay.transfer.poll", settings.transfer_poll_interval_seconds),
            "payment-unanswered-bills": _every("relay.payment.unanswered", settings.payment_query_interval_seconds),
            "payment-reconciliation": {
                "task": "relay.payment.reconcile",
                "schedule": crontab(hour=int(hour), minute=int(minute)),  # the app's timezone: Vietnam
                "options": {"expires": 6 * 3600},
            },
        },
    }


def _every(task: str, seconds: float, expires: float | None = None) -> dict[str, Any]:
    """A beat entry every ``seconds``; a run not started by the next one (``expires``, default the interval) is
    dropped, not piled up."""
    return {"task": task, "schedule": seconds, "options": {"expires": seconds if expires is None else expires}}


def worker_queues(routing: RoutingConfig) -> list[str]:
    return [ROUTE_QUEUE, CONTROL_QUEUE, *routing.queues]
