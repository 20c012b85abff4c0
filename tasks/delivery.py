"""The delivery engine's tasks: route, deliver, sweep.

Tasks take ids, never payloads: the ledger holds the truth. Every task may run twice
(Celery is at-least-once, acks late): the ledger's claim makes the second run a no-op.
"""

from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
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
from services.base import Deliverer, Hold, Probe
from store import deliveries, intake, statistics
from store.deliveries import Batch, Chain, Claimed, Outcome, Wave
from store.streams import DestinationRules, ToEnqueue
from store.sweep import sweep as sweep_ledger
from store.tables import FINAL_STATUSES, Status
from tasks import audit
from tasks.app import app
from tasks.queue import enqueue_routes
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


# Rate limited: the drain rings again for when the next permit is there, at most this far ahead.
RATE_WAIT_MAX = 5.0


@app.task(name="relay.drain")
def drain(destination: str) -> int:
    """Answer a destination's doorbell: claim its due deliveries in batches, attempt, record; the number attempted."""
    rt = get_runtime()
    if destination not in rt.routing.destinations:  # renamed in the routing file since the doorbell rang
        log.warning("drain.unknown_destination", destination=destination)
        return 0
    rt.doorbells.answer(destination)  # before the first claim: what is committed after this rings again
    return run_drain(destination, runtime=rt)


def run_drain(destination: str, clock: Clock | None = None, runtime: Runtime | None = None) -> int:
    """Batches of ``destination`` until none is due, or for ``drain_seconds`` (then a new task goes on).

    A full claim rings the doorbell once more as soon as it is made (a no-op while a ring waits), so that another
    worker thread or process claims the next batch while this one's calls are in flight: a slow destination's
    work spreads over as many drains as it has batches due, and comes back to one drain when it has less.
    """
    rt = runtime or get_runtime()
    started = time.monotonic()
    waiting: set[int] = set()  # seen waiting (an earlier event not routed yet): not claimed again by this drain
    attempted = 0
    while True:
        report = run_batch(destination, clock=clock or utcnow, runtime=rt, exclude=waiting)
        attempted += report.attempted
        waiting.update(i for i, state in report.states.items() if state == "waiting")
        if report.retry_in is not None:  # no send permit now
            rt.doorbells.ring([destination], countdown=min(report.retry_in, RATE_WAIT_MAX))
            break
        if not report.states or (report.held and not report.full):  # nothing more is due, or may go yet
            break
        if time.monotonic() - started > rt.settings.drain_seconds:
            rt.doorbells.ring([destination])
            break
    return attempted


@app.task(name="relay.deliver")
def deliver(delivery_id: int, destination: str) -> str:
    """One delivery by id (what a relay before the batched engine queued): attempted, then the destination's
    doorbell rung for whatever else is due."""
    rt = get_runtime()
    if destination not in rt.routing.destinations:
        return "skip"
    state = run_delivery(delivery_id, destination, runtime=rt)
    rt.doorbells.ring([destination])
    return state


def run_delivery(
    delivery_id: int,
    destination: str,
    clock: Clock = utcnow,
    runtime: Runtime | None = None,
) -> str:
    """One attempt at one delivery, through the batch path; what happened (for logs and tests).

    When the delivery ends final, the destination's doorbell rings: its stream's successor may go.
    """
    rt = runtime or get_runtime()
    report = run_batch(destination, ids=[delivery_id], clock=clock, runtime=rt)
    state = report.states.get(delivery_id, "skip")
    if state in FINAL_STATUSES:
        rt.enqueue([ToEnqueue(delivery_id, destination)])
    return state


@dataclass(slots=True)
class BatchReport:
    """What one batch did: each delivery's state (``delivered``, ``retrying``, ``dead``, ``paused``,
    ``deferred``, ``rate_limited``, or why it was not claimed: ``skip``, ``waiting``, ``superseded``)."""

    states: dict[int, str] = field(default_factory=dict)
    attempted: int = 0
    full: bool = False  # as many candidates as the batch could take: more may be due
    held: bool = False  # the destination takes nothing now (quiet hours, a pause): its due deliveries deferred
    retry_in: float | None = None  # no send permit: seconds until the next


@dataclass(frozen=True, slots=True)
class _Attempted:
    claimed: Claimed
    result: ConnectorResult | None
    error: DeliveryError | None
    duration_ms: float


def run_batch(
    destination: str,
    *,
    ids: Sequence[int] | None = None,
    clock: Clock = utcnow,
    runtime: Runtime | None = None,
    exclude: Collection[int] = (),
) -> BatchReport:
    """One batch of ``destination``: ``ids``, or up to ``delivery_batch`` of its due deliveries.

    Held (quiet hours, a spent quota) or breaker open: the deliveries are deferred without spending an attempt;
    a hold that lets a probe through makes a batch of one.
    Otherwise one claim transaction, the attempts at once (the deliverer's own batch call, or threads), their ends
    recorded in waves as they come (a transaction each, :data:`WAVE_SECONDS` apart at most: a stream's successor
    waits for its predecessor, not for the batch's slowest call), and one Redis round trip for the breaker, the
    rate limit and the metrics. Of an ordered destination, the transaction that records a delivered end claims
    its stream's next delivery when it is due, and the batch attempts it at once (:func:`_chain`).
    """
    rt = runtime or get_runtime()
    dest = rt.destination(destination)
    rules = rt.rules[destination]
    bound = log.bind(destination=destination)
    now = clock()
    report = BatchReport()

    # fail-closed (nothing goes while the audit chain cannot be signed) before the deliverer is asked: its own hold
    # may take a probe turn
    closed = audit.gate.hold(rt, now)
    deliverer, held = (None, closed) if closed is not None else _deliverer_and_hold(rt, destination, now, bound)
    if isinstance(held, Hold):  # quiet hours, a spent daily quota, fail-closed: wait without spending an attempt
        # only what is due now: a probe's retry, due a second after its turn began, is the next turn's probe
        deferred = deliveries.defer_many(rt.engine, destination, ids, held.times(), held.why, now, ahead=0,
                                         ordered=rules.ordered)
        if deferred:  # which one the next probe turn finds due, and when (every hold's, at debug)
            bound.debug("delivery.held", deferred=len(deferred), probe=deferred[0] if held.probe_at else None,
                        probe_at=str(held.probe_at), until=str(held.until))
        report.states = dict.fromkeys(deferred, "deferred")
        report.held = True
        report.full = ids is None and len(report.states) >= deliveries.DEFER_LIMIT
        return report
    probe = held  # a hold lets one delivery through to find out whether it has ended: a batch of one
    if probe is not None and ids is not None:
        ids = ids[:1]

    want = 1 if probe is not None else len(ids) if ids is not None else rt.settings.delivery_batch
    open_until, permits, wait = rt.protection.before_batch(destination, dest.rate_limit, want)
    if probe is not None and (open_until is not None or permits == 0):
        probe.give_back()  # this batch sends nothing: the turn is the next one's
    if open_until is not None:
        reopen = datetime.fromtimestamp(open_until, UTC)
        spread = dest.breaker.open_for / 2
        deferred = deliveries.defer_many(
            rt.engine, destination, ids, lambda: reopen + timedelta(seconds=_rng.uniform(0, spread)),
            f"circuit open for {destination}", now,
        )
        report.states = dict.fromkeys(deferred, "deferred")
        return report
    if permits == 0:
        if ids is None:
            report.retry_in = wait
        else:
            rt.doorbells.ring([destination], countdown=min(wait, RATE_WAIT_MAX))
            report.states = dict.fromkeys(ids, "rate_limited")
        return report

    batch = deliveries.claim_many(
        rt.engine, destination, rules, now, rt.settings.delivery_lease_seconds,
        rt.settings.ordering_gap_wait_seconds, ids=ids, limit=permits, exclude=exclude,
    )
    report.full = ids is None and probe is None and len(batch.claimed) + len(batch.refused) >= permits
    if report.full:  # more may be due: another worker claims the next batch while this one's calls run
        rt.doorbells.ring([destination])
    _refused(batch, report, bound)
    unused = permits - len(batch.claimed) if dest.rate_limit.per_second else 0
    if not batch.claimed:
        if probe is not None:  # nothing to probe with: the next batch that has a delivery probes
            probe.give_back()
            if batch.refused:  # there were due ones, and none could go: why a hold goes on unprobed
                bound.info("delivery.probe_refused", refused=dict(list(
                    {str(i): f"{r.state}: {r.reason}" for i, r in batch.refused.items()}.items())[:5]))
        if unused:
            rt.protection.after_batch(destination, 0, 0, dest.breaker, limit=dest.rate_limit, unused_permits=unused)
        return report

    tally = _Tally()
    chain = _chain(rt, dest, rules, deliverer, ids, probe)
    attempts = _Attempts(rt, deliverer, destination)
    began = time.monotonic()
    # the leases renewed while the calls run: a dead worker's lapse in a lease
    with rt.leases.hold(batch.claimed, clock) as also_hold:
        attempts.start(batch.claimed, inline=len(batch.claimed) == 1 and chain is None)
        for wave, more in attempts.waves():
            now = clock()
            chaining = chain if chain is not None and _may_chain(rt, wave, began, now) else None
            unchained, successors = _record_wave(rt, destination, rules, wave, now, bound, report, tally, chaining)
            if successors.claimed:  # each stream's next delivery, claimed as its predecessor's end was recorded
                also_hold(successors.claimed)
                attempts.start(successors.claimed)
            _refused(successors, report, bound)
            if more and unchained and rules.ordered:  # their streams' successors are due: another drain claims them
                rt.doorbells.ring([destination])
    rt.protection.after_batch(
        destination, tally.succeeded, tally.failed, dest.breaker, limit=dest.rate_limit, unused_permits=unused,
        extra=lambda pipe: rt.metrics.add_many(pipe, destination, tally.counted),
    )
    return report


def _refused(batch: Batch, report: BatchReport, bound: Any) -> None:
    """Why a claim took what it did not: in the report, and logged when the delivery ended without an attempt."""
    for delivery_id, refused in batch.refused.items():
        report.states[delivery_id] = refused.state
        if refused.state in (Status.SUPERSEDED, Status.DEAD):
            bound.info("delivery.final_without_attempt", delivery_id=delivery_id, state=refused.state,
                       reason=refused.reason)


def _chain(rt: Runtime, dest: Any, rules: DestinationRules, deliverer: Deliverer[Any] | None,
           ids: Sequence[int] | None, probe: Probe | None) -> Chain | None:
    """Whether the batch claims each stream's next delivery as it records its predecessor's end (and attempts it at
    once): a drain's batch of an ordered destination that sends whenever it is asked. Not a batch of given ids or a
    probe (one delivery each), nor a destination with a rate limit (the batch's permits were counted at its start),
    nor one whose deliverer holds deliveries at times (quiet hours, a quota: asked once, at the batch's start)."""
    if not rt.settings.delivery_chain or not rules.ordered or ids is not None or probe is not None \
            or dest.rate_limit.per_second:
        return None
    if deliverer is None or type(deliverer).not_before is not Deliverer.not_before:
        return None
    return Chain(rt.settings.delivery_lease_seconds, rt.settings.ordering_gap_wait_seconds)


# A wave's delivered ends claim their streams' next deliveries when its calls took this long on average: there a
# claim's hop (tens of ms under load) is a large share of each step of a stream. Faster calls leave them to the next
# claim, which takes them together in one larger batch: chaining those cost the engine alone 10-20 % more CPU per
# delivery (bench/engine.py: a batch per wave's worth of successors, not per claim).
CHAIN_MIN_CALL_MS = 50.0


def _may_chain(rt: Runtime, wave: list[_Attempted], began: float, now: datetime) -> bool:
    """Whether this wave's delivered ends claim their successors: every attempt of the wave delivered (a failure
    leaves the destination's health to the next batch, its breaker counted), its calls slow enough to be worth it
    (:data:`CHAIN_MIN_CALL_MS`), the batch younger than a drain's time, and the audit gate open."""
    return (all(one.error is None for one in wave)
            and sum(one.duration_ms for one in wave) >= CHAIN_MIN_CALL_MS * len(wave)
            and time.monotonic() - began < rt.settings.drain_seconds and audit.gate.hold(rt, now) is None)


@dataclass(slots=True)
class _Tally:
    """A batch's outcomes over its waves, for the breaker and the metrics (counted once per batch)."""

    succeeded: int = 0
    failed: int = 0
    counted: list[tuple[str, float | None]] = field(default_factory=list)


def _record_wave(
    rt: Runtime, destination: str, rules: DestinationRules, wave: list[_Attempted], finished_at: datetime, bound: Any,
    report: BatchReport, tally: _Tally, chain: Chain | None,
) -> tuple[int, Batch]:
    """Record the ends of a wave of a batch's attempts (one transaction, and a release for each paused one): the
    number of deliveries it made final whose successors it did not claim, and (with ``chain``) what it claimed."""
    report.attempted += len(wave)
    to_finish: list[tuple[Claimed, Outcome]] = []
    finals = 0
    for one in wave:
        claimed, error = one.claimed, one.error
        at = bound.bind(delivery_id=claimed.delivery_id, event_id=claimed.event_id, attempt=claimed.attempt_number)
        outcome, decision_status = _outcome(rt, destination, one, finished_at)
        if isinstance(error, Paused):  # the destination takes no message now: this attempt does not count
            deliveries.release(rt.engine, claimed, outcome, finished_at, record=error.sent)
            if error.sent:
                tally.counted.append((outcome.attempt_outcome, one.duration_ms))
                at.info("delivery.paused", condition=error.condition, reason=outcome.error,
                        next_attempt_at=str(outcome.next_attempt_at))
            report.states[claimed.delivery_id] = "paused"
            continue
        to_finish.append((claimed, outcome))
        tally.counted.append((outcome.attempt_outcome, one.duration_ms))
        if error is None:
            tally.succeeded += 1
        elif not isinstance(error, Permanent | Rerouted):  # the service answered: its health is not in question
            tally.failed += 1
        if decision_status != Status.DELIVERED:
            at.info("delivery.attempt_failed", status=decision_status, reason=outcome.error,
                    next_attempt_at=str(outcome.next_attempt_at))
        finals += decision_status in FINAL_STATUSES and (chain is None or decision_status != Status.DELIVERED)
        report.states[claimed.delivery_id] = decision_status
    return finals, rt.recorder(destination).record(Wave(to_finish, chain), rules, finished_at)


def _deliverer_and_hold(
    rt: Runtime, destination: str, now: datetime, bound: Any
) -> tuple[Deliverer[Any] | None, Hold | Probe | None]:
    """The destination's deliverer (``None`` when it cannot be built: each attempt then records why) and
    whether it holds every delivery until a later time (:meth:`Deliverer.not_before`)."""
    try:
        deliverer: Deliverer[Any] | None = rt.deliverer(destination)
        return deliverer, deliverer.not_before(now) if deliverer is not None else None
    except OptionsError as exc:  # unusable options (an engine run in-process, without the start-up check)
        bound.error("delivery.destination_unusable", error=str(exc))
    except Exception:  # a configuration error: the attempt records it in the ledger
        bound.exception("delivery.deliverer_unavailable")
    return None, None


# A batch's ends are recorded in waves, as its calls return: a wave closes this long after its first end (or with
# the batch's last), so that a stream's next delivery is claimable then, not when the batch's slowest call ends.
# It closes sooner once every call started with those it holds has ended (see :meth:`_Attempts.waves`).
WAVE_SECONDS = 0.025
# An attempt not ended this long after its deadline (at most the deadline again: a deliverer that ignores it) is
# recorded as retryable, and the batch goes on.
_DEADLINE_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class _BatchCallEnded:
    """A batch call of the deliverer has returned its list of ends for the attempts ``of``, or ``None`` (it does
    not batch these, or failed)."""

    of: list[int]
    ends: list[tuple[ConnectorResult | DeliveryError, float]] | None


class _Attempts:
    """A batch's attempts: started at once (by the deliverer's own batch call when it has one, else on the runtime's
    attempt threads, each attempt with its own deadline), and more started while it runs (each stream's next
    delivery, claimed as its predecessor's end is recorded); their ends in waves, as they come."""

    def __init__(self, rt: Runtime, deliverer: Deliverer[Any] | None, destination: str) -> None:
        self._rt, self._deliverer, self._destination = rt, deliverer, destination
        self._deadline = rt.settings.attempt_deadline_seconds
        self._claimed: list[Claimed] = []
        self._give_up: list[float] = []  # each attempt's, by index: its deadline and grace from its start
        self._start_of: list[int] = []  # each attempt's start (the :meth:`start` call that started it), by index
        self._running: list[int] = []  # each start's attempts not ended yet
        self._done: dict[int, _Attempted] = {}
        self._low = 0  # the first attempt not ended: the earliest to give up on (they are started in time order)
        self._ends: queue.SimpleQueue[tuple[int, _Attempted] | _BatchCallEnded] = queue.SimpleQueue()

    def start(self, claimed: Sequence[Claimed], *, inline: bool = False) -> None:
        """Start attempts of ``claimed`` (``inline``: one by one, in this thread, before returning)."""
        first = len(self._claimed)
        self._claimed.extend(claimed)
        self._give_up.extend([time.monotonic() + self._deadline + min(_DEADLINE_GRACE, self._deadline)] * len(claimed))
        self._start_of.extend([len(self._running)] * len(claimed))
        self._running.append(len(claimed))
        started = range(first, len(self._claimed))
        if inline:
            for i in started:
                self._single(i)
            return
        readable = [i for i in started if self._claimed[i].event is not None]
        batching = self._deliverer if self._deliverer is not None and readable and _batches(self._deliverer) else None
        pool = self._rt.attempt_pool()
        if batching is not None:
            pool.submit(self._batch_call, batching, readable)
        for i in started:
            if batching is None or self._claimed[i].event is None:
                pool.submit(self._single, i)

    def _single(self, i: int) -> None:
        self._ends.put((i, _attempt_one(self._rt, self._deliverer, self._destination, self._claimed[i])))

    def _batch_call(self, deliverer: Deliverer[Any], of: list[int]) -> None:
        def ended(k: int, answer: ConnectorResult | DeliveryError, took: float) -> None:
            self._ends.put((of[k], _as_attempted(self._claimed[of[k]], answer, took)))

        answer = None  # these calls do not batch, or the batch path failed: each attempt not ended on its own
        try:
            items = [(c.event, c.idempotency_key) for c in (self._claimed[i] for i in of) if c.event is not None]
            answer = deliverer.deliver_batch(items, self._deadline, ended)
        except Exception:  # a bug in the batch path
            log.exception("delivery.batch_failed", destination=self._destination)
        self._ends.put(_BatchCallEnded(of, answer))

    def waves(self) -> Iterator[tuple[list[_Attempted], bool]]:
        """The ends in waves, each with whether attempts are still running, until every attempt started has ended
        (also those started while a wave is being recorded). A wave closes :data:`WAVE_SECONDS` after its first end,
        or as soon as every attempt started together with one it holds has ended: attempts started at once (a
        claim's, or the successors one wave claimed) end about together, and the others, started earlier or later,
        are not worth waiting for (a chained batch always has some running: its waves waited the whole window).
        An attempt not ended by its deadline and grace ends retryable (its key guards a second send)."""
        wave: list[_Attempted] = []
        wave_closes = float("inf")
        starts: set[int] = set()  # the starts of the wave's attempts

        def ended(i: int) -> None:
            self._running[self._start_of[i]] -= 1
            starts.add(self._start_of[i])

        while True:
            # what was started with them has ended (so too when every attempt has: more may be started while the
            # wave is recorded)
            if wave and all(self._running[k] == 0 for k in starts):
                yield wave, len(self._done) < len(self._claimed)
                wave, wave_closes = [], float("inf")
                starts.clear()
                continue
            if len(self._done) == len(self._claimed):  # and no wave left to yield (the branch above took it)
                return
            while self._low in self._done:
                self._low += 1
            try:
                item = self._ends.get(timeout=max(0.0, min(wave_closes, self._give_up[self._low]) - time.monotonic()))
            except queue.Empty:
                if wave:  # the wave's time is up: recorded while the rest run on
                    yield wave, True
                    wave, wave_closes = [], float("inf")
                    starts.clear()
                    continue
                now = time.monotonic()
                for i, c in enumerate(self._claimed):  # nothing ended in time: what is past its time is retried
                    if i not in self._done and self._give_up[i] <= now:
                        self._done[i] = _Attempted(c, None, Retryable("the attempt did not end by its deadline"),
                                                   1000.0 * self._deadline)
                        ended(i)
                        wave.append(self._done[i])
                continue
            if isinstance(item, _BatchCallEnded):
                if item.ends is None:
                    for i in item.of:
                        if i not in self._done:
                            self._rt.attempt_pool().submit(self._single, i)
                else:  # ends the deliverer did not report as they came
                    for k, (answer, took) in enumerate(item.ends):
                        if item.of[k] not in self._done:
                            self._ends.put((item.of[k], _as_attempted(self._claimed[item.of[k]], answer, took)))
                continue
            i, one = item
            if i in self._done:  # reported twice (as it ended, then in the list returned)
                continue
            self._done[i] = one
            ended(i)
            if not wave:
                wave_closes = time.monotonic() + WAVE_SECONDS
            wave.append(one)


def _batches(deliverer: Deliverer[Any]) -> bool:
    """Whether the deliverer has a batch call of its own (overrides :meth:`Deliverer.deliver_batch`)."""
    return type(deliverer).deliver_batch is not Deliverer.deliver_batch


def _as_attempted(claimed: Claimed, answer: ConnectorResult | DeliveryError, took: float) -> _Attempted:
    if isinstance(answer, DeliveryError):
        return _Attempted(claimed, None, answer, took)
    return _Attempted(claimed, answer, None, took)


def _attempt_one(rt: Runtime, deliverer: Deliverer[Any] | None, destination: str, claimed: Claimed) -> _Attempted:
    watch = Stopwatch()
    error: DeliveryError | None = None
    result = None
    try:
        if claimed.event is None:  # no deliverer can send it: an operator looks, and replays once it parses
            raise Permanent(claimed.unreadable or "the stored event does not parse")
        with attempt_deadline(rt.settings.attempt_deadline_seconds):
            result = attempt_with_auth_refresh(deliverer or rt.deliverer(destination), claimed.event,
                                               claimed.idempotency_key)
    except DeliveryError as exc:
        error = exc
    except SoftTimeLimitExceeded:
        error = Retryable("attempt exceeded the task time limit")
    except OptionsError as exc:  # the destination's configuration: an operator fixes it, then replays
        error = Permanent(str(exc))
    except Exception as exc:  # a bug in an adapter or connector: visible, replayable once fixed
        log.exception("delivery.internal_error", delivery_id=claimed.delivery_id, destination=destination)
        error = Permanent(f"internal error: {type(exc).__name__}: {exc}")
    return _Attempted(claimed, result, error, watch.ms)


def _outcome(rt: Runtime, destination: str, one: _Attempted, finished_at: datetime) -> tuple[Outcome, Status]:
    """What the attempt's end makes of the delivery (a fallback delivery created first when it was rerouted)."""
    claimed, error, result = one.claimed, one.error, one.result
    decision = decide(
        error, budget_used=claimed.budget_used, policy=rt.destination(destination).retry, now=finished_at,
        deadline_at=claimed.deadline_at, rng=_rng,
    )
    if isinstance(error, Rerouted):  # create the fallback delivery the decision names
        fallback_id, ready = deliveries.reroute(rt.engine, claimed.delivery_id, error.destination, rt.rules,
                                                finished_at)
        rt.enqueue(ready)
        made = f" (delivery {fallback_id})" if fallback_id else " (delivery already made)"
        decision = replace(decision, reason=f"{decision.reason}{made}")
    outcome = Outcome(
        status=decision.status,
        attempt_outcome="delivered" if error is None else error.outcome,
        duration_ms=round(one.duration_ms, 3),
        status_code=result.status_code if result else (error.status_code if error else None),
        error=decision.reason,
        excerpt=_masked_excerpt(claimed, result.excerpt if result else (error.excerpt if error else None)),
        external_ref=result.external_ref if result else None,
        next_attempt_at=decision.next_attempt_at,
    )
    return outcome, decision.status


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
        rt.engine, now or utcnow(), rt.settings.requeue_after_seconds, rt.settings.sweep_batch,
        list(rt.routing.destinations),
    )
    enqueue_routes(result.events_to_route)
    rt.enqueue(result.deliveries_to_enqueue)
    rt.doorbells.ring(result.destinations_due)  # a no-op where a drain is on its way
    summary: dict[str, Any] = {
        "routed": len(result.events_to_route),
        "enqueued": len(result.deliveries_to_enqueue),
        "leases_expired": result.leases_expired,
    }
    if any(summary.values()):
        log.info("sweep.requeued", **summary)
    if analyzed := statistics.keep_fresh(rt.engine, rt.settings.ledger_analyze):
        summary["analyzed"] = analyzed
    return summary
