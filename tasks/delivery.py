"""The delivery engine's tasks: route, deliver, sweep.

Tasks take ids, never payloads: the ledger holds the truth. Every task may run twice
(Celery is at-least-once, acks late): the ledger's claim makes the second run a no-op.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded

from config.options import OptionsError
from connectors.base import (
    AuthExpired,
    ConnectorResult,
    DeliveryError,
    Paused,
    Permanent,
    Rerouted,
    Retryable,
    Stopwatch,
    attempt_deadline,
)
from schemas.events import Event
from schemas.privacy import mask_text, personal_values
from services.base import Deliverer
from store import deliveries, intake
from store.deliveries import Claimed, NotClaimed, Outcome
from store.streams import ToEnqueue
from store.sweep import sweep as sweep_ledger
from store.tables import Status
from tasks.app import app
from tasks.queue import enqueue_later, enqueue_routes
from tasks.retry import decide
from tasks.runtime import Runtime, get_runtime

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
_rng = random.Random()


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- route


@app.task(name="relay.route")
def route(event_pk: int) -> int:
    """Create the event's deliveries and queue the ones that may go now."""
    rt = get_runtime()
    chosen = intake.route_event(rt.engine, event_pk, rt.routing.destinations_for, rt.rules, utcnow())
    rt.enqueue(chosen)
    return len(chosen)


# --------------------------------------------------------------------------- deliver


# A task goes on with the next delivery of the same stream (same destination, so the same
# queue) instead of a broker round trip per delivery, for at most this long.
CHAIN_SECONDS = 10.0
# An attempt's calls must end well within its lease, or the sweeper starts a second attempt beside it.
LEASE_SHARE = 0.8


@app.task(name="relay.deliver")
def deliver(delivery_id: int, destination: str) -> str:
    """Deliver, then go on with the stream's next delivery while the chain budget lasts.

    The successor is marked queued in the ledger before the task goes on with it, so if
    this worker dies mid-chain the sweeper queues it again.
    """
    started = time.monotonic()
    rt = get_runtime()
    follow: list[ToEnqueue] = []
    state = run_delivery(delivery_id, destination, follow_up=follow)
    while follow:
        if time.monotonic() - started > CHAIN_SECONDS:
            rt.enqueue(follow)
            break
        item = follow.pop(0)
        rt.enqueue(follow)
        follow = []
        state = run_delivery(item.delivery_id, item.destination, follow_up=follow)
    return state


def run_delivery(
    delivery_id: int,
    destination: str,
    clock: Clock = utcnow,
    runtime: Runtime | None = None,
    follow_up: list[ToEnqueue] | None = None,
) -> str:
    """One attempt at one delivery; returns what happened (for logs and tests).

    Deliveries that may go next (the stream's successor) are queued, or appended to
    ``follow_up`` when the caller will run them itself.
    """
    rt = runtime or get_runtime()

    def hand_on(items: list[ToEnqueue]) -> None:
        if follow_up is not None:
            follow_up.extend(items)
        else:
            rt.enqueue(items)

    dest = rt.destination(destination)
    rules = rt.rules[destination]
    bound = log.bind(delivery_id=delivery_id, destination=destination)
    now = clock()

    try:
        deliverer: Deliverer[Any] | None = rt.deliverer(destination)
        held = deliverer.not_before(now) if deliverer is not None else None
    except OptionsError as exc:  # unusable options (an engine run in-process, without the start-up check)
        bound.error("delivery.destination_unusable", error=str(exc))
        deliverer, held = None, None
    except Exception:  # a configuration error: the attempt below records it in the ledger
        bound.exception("delivery.deliverer_unavailable")
        deliverer, held = None, None
    if held is not None:  # quiet hours, a spent daily quota: wait without spending an attempt
        until, why = held
        deliveries.defer(rt.engine, delivery_id, until, why, now)
        return "deferred"

    open_until, wait = rt.protection.before_attempt(destination, dest.rate_limit)
    if open_until is not None:
        spread = _rng.uniform(0, dest.breaker.open_for / 2)
        until = datetime.fromtimestamp(open_until, UTC) + timedelta(seconds=spread)
        deliveries.defer(rt.engine, delivery_id, until, f"circuit open for {destination}", now)
        return "deferred"
    if wait > 0:
        enqueue_later(rt.routing, ToEnqueue(delivery_id, destination), min(wait, 5.0))
        return "rate_limited"

    claimed = deliveries.claim(
        rt.engine, delivery_id, rules, now, rt.settings.delivery_lease_seconds, rt.settings.ordering_gap_wait_seconds
    )
    if isinstance(claimed, NotClaimed):
        if claimed.state in (Status.SUPERSEDED, Status.DEAD):
            bound.info("delivery.final_without_attempt", state=claimed.state, reason=claimed.reason)
            hand_on(deliveries.kick_successor(rt.engine, delivery_id, now))
        return claimed.state

    bound = bound.bind(event_id=claimed.event_id, attempt=claimed.attempt_number)
    watch = Stopwatch()
    error: DeliveryError | None = None
    result = None
    try:
        if claimed.event is None:  # no deliverer can send it: an operator looks, and replays once it parses
            raise Permanent(claimed.unreadable or "the stored event does not parse")
        with attempt_deadline(rt.settings.delivery_lease_seconds * LEASE_SHARE):
            result = attempt_with_auth_refresh(deliverer or rt.deliverer(destination), claimed.event,
                                               claimed.idempotency_key)
    except DeliveryError as exc:
        error = exc
    except SoftTimeLimitExceeded:
        error = Retryable("attempt exceeded the task time limit")
    except OptionsError as exc:  # the destination's configuration: an operator fixes it, then replays
        error = Permanent(str(exc))
    except Exception as exc:  # a bug in an adapter or connector: visible, replayable once fixed
        bound.exception("delivery.internal_error")
        error = Permanent(f"internal error: {type(exc).__name__}: {exc}")
    duration = watch.ms
    finished_at = clock()
    decision = decide(
        error, budget_used=claimed.budget_used, policy=dest.retry, now=finished_at,
        deadline_at=claimed.deadline_at, rng=_rng,
    )
    if isinstance(error, Rerouted):  # create the fallback delivery the decision names
        fallback_id, ready = deliveries.reroute(rt.engine, delivery_id, error.destination, rt.rules, finished_at)
        hand_on(ready)
        made = f" (delivery {fallback_id})" if fallback_id else " (delivery already made)"
        decision = replace(decision, reason=f"{decision.reason}{made}")
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
    if isinstance(error, Paused):  # the destination takes no message now: this attempt does not count
        deliveries.release(rt.engine, claimed, outcome, finished_at, record=error.sent)
        if error.sent:
            rt.metrics.record(destination, outcome.attempt_outcome, duration)
            bound.info("delivery.paused", condition=error.condition, reason=decision.reason,
                       next_attempt_at=str(decision.next_attempt_at))
        return "paused"
    successors = deliveries.finish(rt.engine, claimed, outcome, rules, finished_at)
    if isinstance(error, Permanent | Rerouted):  # the service answered: its health is not in question
        rt.metrics.record(destination, outcome.attempt_outcome, duration)
    else:
        rt.protection.after_attempt(
            destination, error is not None, dest.breaker,
            lambda pipe: rt.metrics.add_to(pipe, destination, outcome.attempt_outcome, duration),
        )
    if decision.status != Status.DELIVERED:
        bound.info("delivery.attempt_failed", status=decision.status,
                   reason=decision.reason, next_attempt_at=str(decision.next_attempt_at))
    hand_on(successors)
    return decision.status


def attempt_with_auth_refresh(deliverer: Deliverer[Any], event: Event, key: str) -> ConnectorResult:
    """One attempt; on :class:`AuthExpired`, refresh the credential once and try again.

    A second ``AuthExpired`` (or a deliverer without credentials to refresh) ends the
    attempt as retryable: the credential service may be down, not our configuration.
    """
    try:
        return deliverer.deliver(event, key)
    except AuthExpired as exc:
        if not deliverer.refresh_auth():
            raise
        log.info("delivery.auth_refresh", reason=exc.reason)
        return deliverer.deliver(event, key)


def _masked_excerpt(claimed: Claimed, text: str | None) -> str | None:
    if not text:
        return None
    # the event's own personal values first (a name has no pattern), then the patterns alone
    return mask_text(text, personal_values(claimed.event) if claimed.event is not None else ())


# --------------------------------------------------------------------------- sweep


@app.task(name="relay.sweep")
def sweep() -> dict[str, Any]:
    """Re-enqueue what is due and not queued; rescue deliveries whose worker died."""
    rt = get_runtime()
    # short: a worker killed mid-sweep must not stop the sweeping for long (two sweeps at once are harmless)
    with rt.exclusive("sweep", timeout=max(10.0, rt.settings.sweep_interval_seconds * 3)) as mine:
        return run_sweep(rt) if mine else {"skipped": True}


def run_sweep(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    result = sweep_ledger(
        rt.engine, now or utcnow(), rt.settings.requeue_after_seconds, rt.settings.sweep_batch
    )
    enqueue_routes(result.events_to_route)
    rt.enqueue(result.deliveries_to_enqueue)
    summary = {
        "routed": len(result.events_to_route),
        "enqueued": len(result.deliveries_to_enqueue),
        "leases_expired": result.leases_expired,
    }
    if any(summary.values()):
        log.info("sweep.requeued", **summary)
    return summary
