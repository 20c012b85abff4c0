"""The beat schedule and the control-queue routes of the services' jobs, made from the registry.

A job is scheduled only where its service has a destination in the routing file: a kind nobody configured polls
nothing. An interval job runs every ``every`` seconds (a field of the service's settings); a run not started by
the next one is dropped, not piled up. A daily job runs at ``daily_at`` (HH:MM, the app's timezone: Vietnam) and
may start up to six hours late (a beat down at dawn).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from config.celery import CONTROL_QUEUE, every
from config.routing import RoutingConfig
from services.base import Registry

DAILY_EXPIRES = 6 * 3600


def service_schedule(registry: Registry, routing: RoutingConfig) -> dict[str, dict[str, Any]]:
    """Beat entries of the jobs of the services the routing uses."""
    kinds = {d.kind for d in routing.destinations.values()}
    entries: dict[str, dict[str, Any]] = {}
    for service, job in registry.jobs():
        if service.kind not in kinds:
            continue
        settings = service.read_settings()
        if job.every is not None:
            entries[job.entry] = every(job.task, float(getattr(settings, job.every)))
        else:
            hour, minute = str(getattr(settings, str(job.daily_at))).split(":")
            entries[job.entry] = {"task": job.task, "schedule": crontab(hour=int(hour), minute=int(minute)),
                                  "options": {"expires": DAILY_EXPIRES}}
    return entries


def service_routes(registry: Registry) -> dict[str, dict[str, str]]:
    """Every service job runs on the control queue, beside the sweeper."""
    return {job.task: {"queue": CONTROL_QUEUE} for _, job in registry.jobs()}
