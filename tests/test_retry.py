"""The retry decision, table-tested without a broker."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from config.routing import RetryPolicy
from connectors.base import AuthExpired, DeliveryError, Paused, Permanent, Rerouted, Retryable
from store.tables import Status
from tasks.retry import MIN_DELAY, PAUSED_WAIT, Decision, backoff_cap, backoff_delay, decide

NOW = datetime(2024, 3, 15, 1, 0, tzinfo=UTC)
FAR = NOW + timedelta(days=30)
POLICY = RetryPolicy(schedule=[5, 30, 120, 600], repeat_every=3600, deadline=72 * 3600, max_attempts=10)


def run(error: DeliveryError | None, budget_used: int = 1, *, deadline_at: datetime = FAR, seed: int = 1,
        policy: RetryPolicy = POLICY) -> Decision:
    return decide(error, budget_used=budget_used, policy=policy, now=NOW, deadline_at=deadline_at,
                  rng=random.Random(seed))


def test_success_is_delivered() -> None:
    decision = run(None)

    assert (decision.status, decision.next_attempt_at, decision.reason) == ("delivered", None, None)


@pytest.mark.parametrize("budget_used", [1, 9, 10, 50])
def test_permanent_is_dead_at_once_with_the_reason(budget_used: int) -> None:
    decision = run(Permanent("HTTP 422 rejected", status_code=422), budget_used)

    assert decision.status == "dead"
    assert decision.next_attempt_at is None
    assert "HTTP 422 rejected" in decision.reason


@pytest.mark.parametrize(("budget_used", "cap"), [(1, 5), (2, 30), (3, 120), (4, 600), (5, 3600), (9, 3600)])
@pytest.mark.parametrize("seed", range(5))
def test_retryable_within_budget_waits_at_most_the_step_cap(budget_used: int, cap: float, seed: int) -> None:
    decision = run(Retryable("HTTP 503", status_code=503), budget_used, seed=seed)

    assert decision.status == "retrying"
    assert decision.reason == "HTTP 503"
    assert decision.next_attempt_at is not None
    assert NOW + timedelta(seconds=MIN_DELAY) <= decision.next_attempt_at <= NOW + timedelta(seconds=cap)


@pytest.mark.parametrize(("attempt", "cap"), [(1, 5), (2, 30), (3, 120), (4, 600), (5, 3600), (40, 3600)])
def test_backoff_cap_follows_the_schedule_then_repeat_every(attempt: int, cap: float) -> None:
    assert backoff_cap(attempt, POLICY) == cap


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(42)
    cap = POLICY.schedule[2]

    draws = [backoff_delay(3, POLICY, rng) for _ in range(5000)]

    assert min(draws) >= MIN_DELAY
    assert max(draws) <= cap
    deciles = {min(int(d / cap * 10), 9) for d in draws}
    assert deciles == set(range(10))
    assert min(draws) < cap * 0.05
    assert max(draws) > cap * 0.95


def test_jitter_depends_on_the_draw() -> None:
    delays = {run(Retryable("x"), 3, seed=seed).next_attempt_at for seed in range(20)}

    assert len(delays) > 15


def test_a_tiny_schedule_step_is_not_below_its_cap() -> None:
    policy = RetryPolicy(schedule=[0.2], repeat_every=0.2, deadline=60, max_attempts=5)

    delays = [backoff_delay(1, policy, random.Random(s)) for s in range(50)]

    assert all(0 <= d <= 0.2 for d in delays)


def test_budget_exhausted_is_dead() -> None:
    decision = run(Retryable("HTTP 503"), budget_used=POLICY.max_attempts)

    assert decision.status == "dead"
    assert "gave up after 10 attempts" in decision.reason
    assert "HTTP 503" in decision.reason


def test_last_attempt_within_budget_still_retries() -> None:
    assert run(Retryable("HTTP 503"), budget_used=POLICY.max_attempts - 1).status == "retrying"


def test_next_attempt_beyond_the_deadline_is_dead() -> None:
    decision = run(Retryable("timeout"), budget_used=1, deadline_at=NOW + timedelta(seconds=MIN_DELAY / 2))

    assert decision.status == "dead"
    assert "deadline" in decision.reason
    assert "timeout" in decision.reason


def test_next_attempt_exactly_at_the_cap_before_the_deadline_retries() -> None:
    decision = run(Retryable("timeout"), budget_used=1, deadline_at=NOW + timedelta(seconds=5))

    assert decision.status == "retrying"


def test_retry_after_is_a_floor() -> None:
    decision = run(Retryable("HTTP 429", status_code=429, retry_after=900), budget_used=1)

    assert decision.status == "retrying"
    assert decision.next_attempt_at == NOW + timedelta(seconds=900)


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    with_header = [run(Retryable("HTTP 503", retry_after=0), 4, seed=s).next_attempt_at for s in range(10)]
    without = [run(Retryable("HTTP 503"), 4, seed=s).next_attempt_at for s in range(10)]

    assert with_header == without


def test_retry_after_beyond_the_deadline_is_dead() -> None:
    decision = run(Retryable("HTTP 503", retry_after=7200), deadline_at=NOW + timedelta(hours=1))

    assert decision.status == "dead"


def test_auth_expired_is_retried() -> None:
    decision = run(AuthExpired("token expired", status_code=401), budget_used=1)

    assert decision.status == "retrying"
    assert NOW < decision.next_attempt_at <= NOW + timedelta(seconds=5)


def test_the_default_schedule_is_close_to_the_webhook_industry() -> None:
    policy = RetryPolicy()

    assert policy.schedule == [5, 30, 120, 600, 1800, 3600, 10800, 21600]
    assert (policy.repeat_every, policy.deadline) == (21600, 72 * 3600)


def test_rerouted_is_final_and_names_the_fallback() -> None:
    decision = decide(Rerouted("no Zalo account", destination="sms"), budget_used=1, policy=RetryPolicy(),
                      now=NOW, deadline_at=NOW + timedelta(hours=1))
    assert (decision.status, decision.next_attempt_at) == (Status.SUPERSEDED, None)
    assert decision.reason == "no Zalo account; sent by sms instead"


@pytest.mark.parametrize(("budget_used", "deadline_at"), [(1, FAR), (POLICY.max_attempts, FAR),
                                                          (50, NOW - timedelta(hours=1))])
def test_paused_waits_as_told_spends_nothing_and_never_dies(budget_used: int, deadline_at: datetime) -> None:
    # a pause outlives the budget and the deadline: a day's notifications never die of an unpaid invoice
    decision = run(Paused("ZNS balance spent", condition="balance", retry_after=30), budget_used,
                   deadline_at=deadline_at)

    assert (decision.status, decision.spent) == (Status.RETRYING, False)
    assert decision.next_attempt_at == NOW + timedelta(seconds=30)
    assert decision.reason == "paused: ZNS balance spent"


def test_paused_without_a_wait_comes_back_after_the_default() -> None:
    decision = run(Paused("template disabled", condition="template_disabled"))

    assert decision.next_attempt_at == NOW + timedelta(seconds=PAUSED_WAIT) and not decision.spent


def test_every_other_outcome_is_spent() -> None:
    assert all(run(error).spent for error in (None, Retryable("x"), Permanent("x"), AuthExpired("x")))
