"""The services' beat jobs as Celery tasks, made from the registry: one thin task per declared job.

Each task runs its job for every destination of the service's kind that the job applies to, through
:meth:`tasks.runtime.Runtime.each_destination` (one process at a time, one destination's failure logged without
stopping the others). ``destinations`` narrows a run to some destinations; other keyword arguments reach the
job's function (the reconciliation's ``day``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from config.options import OptionsError
from services.base import BeatJob, Service
from services.registry import get_registry
from tasks.app import app
from tasks.runtime import Runtime, get_runtime


def run_job(service: Service, job: BeatJob[Any], rt: Runtime, destinations: list[str] | None = None,
            **params: Any) -> dict[str, Any]:
    """One run of ``job`` over the destinations of ``service`` it applies to (or those named)."""

    def applies(name: str) -> bool:
        try:
            return bool(job.applies(rt.options(name)))
        except OptionsError:
            return True  # the step fails and says why

    names = destinations or [name for name in rt.names(service.kind) if applies(name)]
    hint = job.failure_hint
    return rt.each_destination(
        job.task, job.lock_seconds, names, lambda name: job.run(rt.deliverer(name), **params), done=job.done,
        failed=job.failed, noteworthy=job.noteworthy,
        failure_hint=(lambda name: hint(name, params)) if hint is not None else None)


def _task(service: Service, job: BeatJob[Any]) -> Callable[..., dict[str, Any]]:
    def run(destinations: list[str] | None = None, **params: Any) -> dict[str, Any]:
        return run_job(service, job, get_runtime(), destinations, **params)

    run.__name__ = run.__qualname__ = job.task.replace(".", "_")
    run.__doc__ = f"{service.title}: the beat job {job.entry}."
    return run


TASKS: dict[str, Task] = {
    job.task: app.task(name=job.task)(_task(service, job)) for service, job in get_registry().jobs()
}
