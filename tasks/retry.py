"""The retry decision: one pure function, table-tested without a broker.

Backoff is exponential by the destination's schedule (each entry caps the wait after
that attempt), with full jitter, never below :data:`MIN_DELAY`; a ``Retry-After`` from
the service is a floor. A delivery gives up when its attempt budget or deadline is spent.
A paused destination (:class:`~connectors.base.Paused`) is neither: the delivery waits as
long as the deliverer says, the attempt is not ``spent`` and no budget or deadline ends it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.routing import RetryPolicy
from connectors.base import DeliveryError, Paused, Permanent, Rerouted
from store.tables import Status

MIN_DELAY = 1.0
PAUSED_WAIT = 60.0  # a Paused without retry_after (deliverers give one)


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    next_attempt_at: datetime | None = None
    reason: str | None = None
    spent: bool = True  # False: the attempt does not count (a paused destination)


def backoff_cap(attempt: int, policy: RetryPolicy) -> float:
    """The longest wait after ``attempt`` (1-based) failed attempts."""
    if attempt <= len(policy.schedule):
        return policy.schedule[attempt - 1]
    return policy.repeat_every


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    cap = backoff_cap(attempt, policy)
    return max(min(MIN_DELAY, cap), rng.uniform(0, cap))


def decide(
    error: DeliveryError | None,
    *,
    budget_used: int,
    policy: RetryPolicy,
    now: datetime,
    deadline_at: datetime,
    rng: random.Random | None = None,
) -> Decision:
    """What a delivery becomes after an attempt that ended with ``error`` (``None``: success)."""
    if error is None:
        return Decision(Status.DELIVERED)
    if isinstance(error, Rerouted):  # a delivery to the fallback destination replaces this one
        return Decision(Status.SUPERSEDED, reason=f"{error.reason}; sent by {error.destination} instead")
    if isinstance(error, Permanent):
        return Decision(Status.DEAD, reason=f"rejected: {error.reason}")
    if isinstance(error, Paused):  # not this message's fault: a day's notifications never die of it
        wait = max(MIN_DELAY, PAUSED_WAIT if error.retry_after is None else error.retry_after)
        return Decision(Status.RETRYING, next_attempt_at=now + timedelta(seconds=wait),
                        reason=f"paused: {error.reason}", spent=False)
    if budget_used >= policy.max_attempts:
        return Decision(Status.DEAD, reason=f"gave up after {budget_used} attempts: {error.reason}")
    delay = backoff_delay(budget_used, policy, rng or random.Random())
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    next_at = now + timedelta(seconds=delay)
    if next_at > deadline_at:
        return Decision(Status.DEAD, reason=f"deadline passed after {budget_used} attempts: {error.reason}")
    return Decision(Status.RETRYING, next_attempt_at=next_at, reason=error.reason)
