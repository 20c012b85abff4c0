"""The delivery engine's tasks: route, deliver, sweep; and the enqueue helpers.

Tasks take ids, never payloads: the ledger holds the truth. Every task may run twice
(Celery is at-least-once, acks late): the ledger's claim makes the second run a no-op.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded

from config.celery import ROUTE_QUEUE
from connectors.base import DeliveryError, Permanent, Retryable, Stopwatch
from schemas.privacy import mask_text
from store import ledger
from store.ledger import Claimed, NotClaimed, Outcome, ToEnqueue
from store.tables import DEAD, DELIVERED, SUPERSEDED
from tasks.app import app
from tasks.retry import decide
from tasks.runtime import Runtime, get_runtime

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
_rng = random.Random()


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- enqueue


def enqueue_routes(event_pks: Iterable[int]) -> None:
    """Queue routing for stored events. A broker failure is logged: the sweeper retries."""
    for pk in event_pks:
        try:
            route.apply_async((pk,), queue=ROUTE_QUEUE)
        except Exception as exc:  # the broker is down: the event is safe in the ledger
            log.warning("enqueue.route_failed", event_pk=pk, error=str(exc))
            return


def enqueue_deliveries(items: Iterable[ToEnqueue], runtime: Runtime | None = None) -> None:
    rt = runtime or get_runtime()
    for item in items:
        try:
            deliver.apply_async((item.delivery_id, item.destination), queue=rt.destination(item.destination).queue)
        except Exception as exc:
            log.warning("enqueue.deliver_failed", delivery_id=item.delivery_id, error=str(exc))
            return


# --------------------------------------------------------------------------- route


@app.task(name="relay.route")
def route(event_pk: int) -> int:
    """Create the event's deliveries and queue the ones that may go now."""
    rt = get_runtime()
    chosen = ledger.route_event(rt.engine, event_pk, rt.routing.destinations_for, rt.rules, utcnow())
    enqueue_deliveries(chosen, rt)
    return len(chosen)


# --------------------------------------------------------------------------- deliver


@app.task(name="relay.deliver")
def deliver(delivery_id: int, destination: str) -> str:
    return run_delivery(delivery_id, destination)


def run_delivery(delivery_id: int, destination: str, clock: Clock = utcnow, runtime: Runtime | None = None) -> str:
    """One attempt at one delivery; returns what happened (for logs and tests)."""
    rt = runtime or get_runtime()
    dest = rt.destination(destination)
    rules = rt.rules[destination]
    bound = log.bind(delivery_id=delivery_id, destination=destination)
    now = clock()

    open_until, wait = rt.protection.before_attempt(destination, dest.rate_limit)
    if open_until is not None:
        spread = _rng.uniform(0, dest.breaker.open_for / 2)
        until = datetime.fromtimestamp(open_until, UTC) + timedelta(seconds=spread)
        ledger.defer(rt.engine, delivery_id, until, f"circuit open for {destination}", now)
        return "deferred"
    if wait > 0:
        try:
            deliver.apply_async((delivery_id, destination), queue=dest.queue, countdown=min(wait, 5.0))
        except Exception as exc:  # the broker is down: the sweeper queues it again
            bound.warning("enqueue.deliver_failed", error=str(exc))
        return "rate_limited"

    claimed = ledger.claim(
        rt.engine, delivery_id, rules, now, rt.settings.delivery_lease_seconds, rt.settings.ordering_gap_wait_seconds
    )
    if isinstance(claimed, NotClaimed):
        if claimed.state in (SUPERSEDED, DEAD):
            bound.info("delivery.final_without_attempt", state=claimed.state, reason=claimed.reason)
            enqueue_deliveries(ledger.kick_successor(rt.engine, delivery_id, now), rt)
        return claimed.state

    bound = bound.bind(event_id=claimed.payload.get("event_id"), attempt=claimed.attempt_number)
    watch = Stopwatch()
    error: DeliveryError | None = None
    result = None
    try:
        result = rt.deliverer(destination).deliver(claimed.payload, claimed.idempotency_key)
    except DeliveryError as exc:
        error = exc
    except SoftTimeLimitExceeded:
        error = Retryable("attempt exceeded the task time limit")
    except Exception as exc:  # a bug in an adapter or connector: visible, replayable once fixed
        bound.exception("delivery.internal_error")
        error = Permanent(f"internal error: {type(exc).__name__}: {exc}")
    duration = watch.ms
    finished_at = clock()
    decision = decide(
        error, budget_used=claimed.budget_used, policy=dest.retry, now=finished_at,
        deadline_at=claimed.deadline_at, rng=_rng,
    )
    outcome = Outcome(
        status=decision.status,
        attempt_outcome="delivered" if error is None else error.outcome,
        duration_ms=round(duration, 3),
        status_code=result.status_code if result else (error.status_code if error else None),
        error=decision.reason,
        excerpt=_masked_excerpt(claimed, result.excerpt if result else (error.excerpt if error else None)),
        external_ref=result.external_ref if result else None,
        next_attempt_at=decision.next_attempt_at,
    )
    successors = ledger.finish(rt.engine, claimed, outcome, rules, finished_at)
    if isinstance(error, Permanent):  # the service answered: its health is not in question
        rt.metrics.record(destination, outcome.attempt_outcome, duration)
    else:
        rt.protection.after_attempt(
            destination, error is not None, dest.breaker,
            lambda pipe: rt.metrics.add_to(pipe, destination, outcome.attempt_outcome, duration),
        )
    if decision.status != DELIVERED:
        bound.info("delivery.attempt_failed", status=decision.status,
                   reason=decision.reason, next_attempt_at=str(decision.next_attempt_at))
    enqueue_deliveries(successors, rt)
    return decision.status


def _masked_excerpt(claimed: Claimed, text: str | None) -> str | None:
    if not text:
        return None
    return mask_text(text, personal_values_of(claimed.payload))


def personal_values_of(payload: dict[str, Any]) -> list[str]:
    """The personal values of a stored canonical event, without re-validating it."""
    applicant = payload.get("applicant") or {}
    known = [applicant.get(k) for k in ("name", "id_number", "phone", "email")]
    known.append((applicant.get("address") or {}).get("street"))
    step = (payload.get("data") or {}).get("step") or {}
    known.append(step.get("handler"))
    return [str(v) for v in known if v]


# --------------------------------------------------------------------------- sweep


@app.task(name="relay.sweep")
def sweep() -> dict[str, Any]:
    """Re-enqueue what is due and not queued; rescue deliveries whose worker died."""
    rt = get_runtime()
    lock = rt.redis.lock(f"{rt.settings.redis_prefix}:sweep", timeout=60, blocking=False) if rt.redis else None
    try:
        if lock is not None and not lock.acquire(blocking=False):
            return {"skipped": True}
    except Exception as exc:  # Redis down: sweeping twice is harmless, not sweeping is not
        log.warning("sweep.lock_unavailable", error=str(exc))
        lock = None
    try:
        return run_sweep(rt)
    finally:
        if lock is not None:
            with contextlib.suppress(Exception):  # the lock expires by itself
                lock.release()


def run_sweep(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    result = ledger.sweep(
        rt.engine, now or utcnow(), rt.settings.requeue_after_seconds, rt.settings.sweep_batch
    )
    enqueue_routes(result.events_to_route)
    enqueue_deliveries(result.deliveries_to_enqueue, rt)
    summary = {
        "routed": len(result.events_to_route),
        "enqueued": len(result.deliveries_to_enqueue),
        "leases_expired": result.leases_expired,
    }
    if any(summary.values()):
        log.info("sweep.requeued", **summary)
    return summary
