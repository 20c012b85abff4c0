"""The ledger on both engines, on a controlled clock: intake, routing, claims, ordering, sweep, dead letters."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from schemas.events import event_json, parse_event
from store import deliveries as claims
from store import intake
from store.deadletters import DeadLetterFilter, dead_letters, replay
from store.deliveries import Claimed, NotClaimed, Outcome
from store.intake import IngestConflict
from store.streams import DestinationRules, ToEnqueue
from store.sweep import sweep
from store.tables import attempts, deliveries, events

T0 = datetime(2024, 3, 15, 1, 0, tzinfo=UTC)
LEASE = 120.0
GAP = 60.0
DOSSIER = "000.21.00.H49-240315-0001"
WAREHOUSE = DestinationRules("warehouse", ordered=True, deadline_seconds=3600, max_attempts=5)
ONESTOP = DestinationRules("onestop", ordered=False, deadline_seconds=7200, max_attempts=5)
RULES = {"warehouse": WAREHOUSE, "onestop": ONESTOP}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_event(sequence: int = 1, *, dossier: str = DOSSIER, event_id: str | None = None,
               reason: str = "applicant asked") -> dict[str, Any]:
    return event_json(parse_event({
        "event_id": event_id or f"ev-{uuid.uuid4().hex}",
        "type": "dossier.suspended",
        "unit_code": "000.21.00.H49",
        "dossier_code": dossier,
        "procedure_code": "1.001234.000.00.00.H49",
        "sequence": sequence,
        "occurred_at": "2024-03-15T08:00:00+07:00",
        "applicant": {"name": "Nguyễn Văn An", "phone": "0912345678"},
        "data": {"reason": reason},
    }))


def to(*names: str) -> Any:
    return lambda payload: list(names)


def stored(engine: Engine, payload: dict[str, Any], now: datetime = T0) -> int:
    [row] = intake.ingest(engine, [payload], now)
    return row.pk


def routed(engine: Engine, sequence: int, now: datetime = T0, *, dossier: str = DOSSIER,
           destination: str = "warehouse") -> int:
    """Ingest and route one event to one destination; the delivery's id."""
    pk = stored(engine, make_event(sequence, dossier=dossier), now)
    intake.route_event(engine, pk, to(destination), RULES, now)
    return delivery_of(engine, pk, destination)["id"]


def delivery_of(engine: Engine, event_pk: int, destination: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(
            select(deliveries).where(deliveries.c.event_pk == event_pk, deliveries.c.destination == destination)
        ).one()._mapping)


def delivery(engine: Engine, delivery_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()._mapping)


def attempt_rows(engine: Engine, delivery_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.number)
        )]


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def claim(engine: Engine, delivery_id: int, now: datetime, rules: DestinationRules = WAREHOUSE) -> Claimed | NotClaimed:
    return claims.claim(engine, delivery_id, rules, now, LEASE, GAP)


def claimed(engine: Engine, delivery_id: int, now: datetime, rules: DestinationRules = WAREHOUSE) -> Claimed:
    result = claim(engine, delivery_id, now, rules)
    assert isinstance(result, Claimed), result
    return result


def finish(engine: Engine, c: Claimed, status: str, now: datetime, rules: DestinationRules = WAREHOUSE,
           **kw: Any) -> list[ToEnqueue]:
    outcome = Outcome(status=status, attempt_outcome="delivered" if status == "delivered" else "retryable",
                      duration_ms=12.5, **kw)
    return claims.finish(engine, c, outcome, rules, now)


def deliver(engine: Engine, delivery_id: int, now: datetime) -> list[ToEnqueue]:
    return finish(engine, claimed(engine, delivery_id, now), "delivered", now, status_code=200)


# --------------------------------------------------------------------------- intake


def test_ingest_stores_new_events_and_recognises_duplicates(engine: Engine) -> None:
    # given
    event = make_event()
    [first] = intake.ingest(engine, [event], T0)
    # when
    [again] = intake.ingest(engine, [event], at(5))
    # then
    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.pk == again.pk
    with engine.connect() as conn:
        row = conn.execute(select(events).where(events.c.event_id == event["event_id"])).one()
    assert json.loads(row.payload) == event
    assert row.received_at == T0
    assert row.routed_at is None
    assert count(engine, events) == 1


def test_ingest_refuses_a_reused_event_id_and_stores_nothing_of_the_batch(engine: Engine) -> None:
    # given
    event = make_event(event_id="ev-reused")
    intake.ingest(engine, [event], T0)
    newcomer = make_event(2)
    changed = make_event(event_id="ev-reused", reason="something else")
    # when
    with pytest.raises(IngestConflict) as raised:
        intake.ingest(engine, [newcomer, changed], at(1))
    # then
    assert raised.value.event_ids == ["ev-reused"]
    assert count(engine, events) == 1


def test_ingest_refuses_a_batch_with_the_same_id_twice_in_different_content(engine: Engine) -> None:
    with pytest.raises(IngestConflict):
        intake.ingest(engine, [make_event(event_id="ev-x"), make_event(event_id="ev-x", reason="other")], T0)
    assert count(engine, events) == 0


def test_ingest_keeps_one_row_for_the_same_event_twice_in_a_batch(engine: Engine) -> None:
    event = make_event()

    rows = intake.ingest(engine, [event, event, make_event(2)], T0)

    assert len(rows) == 2
    assert count(engine, events) == 2


# --------------------------------------------------------------------------- routing


def test_route_creates_one_delivery_per_destination_once(engine: Engine) -> None:
    # given
    event = make_event()
    pk = stored(engine, event)
    # when
    chosen = intake.route_event(engine, pk, to("warehouse", "onestop"), RULES, T0)
    again = intake.route_event(engine, pk, to("warehouse", "onestop", "ghost"), RULES, at(1))
    # then
    assert sorted(c.destination for c in chosen) == ["onestop", "warehouse"]
    assert sorted(c.destination for c in again) == ["onestop", "warehouse"]
    assert count(engine, deliveries) == 2
    for name, rules in RULES.items():
        d = delivery_of(engine, pk, name)
        assert d["idempotency_key"] == f"{event['event_id']}:{name}"
        assert d["status"] == "pending"
        assert (d["attempts"], d["budget_used"], d["replays"]) == (0, 0, 0)
        assert d["deadline_at"] == T0 + timedelta(seconds=rules.deadline_seconds)
        assert (d["dossier_code"], d["sequence"], d["stream"]) == (DOSSIER, 1, "onestop")
    with engine.connect() as conn:
        assert conn.execute(select(events.c.routed_at).where(events.c.id == pk)).scalar_one() == T0


def test_route_of_an_event_for_no_destination_marks_it_routed(engine: Engine) -> None:
    pk = stored(engine, make_event())

    assert intake.route_event(engine, pk, to(), RULES, T0) == []

    assert count(engine, deliveries) == 0
    assert sweep(engine, at(3600), 60, 100).events_to_route == []


def test_route_holds_back_an_ordered_delivery_behind_an_open_predecessor(engine: Engine) -> None:
    first = routed(engine, 1)
    pk = stored(engine, make_event(2))

    chosen = intake.route_event(engine, pk, to("warehouse", "onestop"), RULES, at(1))

    assert [c.destination for c in chosen] == ["onestop"]
    assert first != delivery_of(engine, pk, "warehouse")["id"]


# --------------------------------------------------------------------------- claim / finish


@pytest.mark.parametrize(("stored", "reason"), [
    ("{not json", "the stored event is not JSON"),
    (json.dumps({**make_event(), "sequence": 0}), "the stored event no longer parses as dossier.suspended: sequence"),
    (json.dumps({**make_event(), "type": "dossier.vanished"}), "the stored event no longer parses as "
                                                               "dossier.vanished: type"),
])
def test_a_claim_of_an_event_that_no_longer_parses_says_why_and_hands_on_no_event(
    engine: Engine, stored: str, reason: str,
) -> None:
    # given a stored text the schema no longer reads
    did = routed(engine, 1)
    with engine.begin() as conn:
        event_id = conn.execute(select(events.c.event_id)).scalar_one()
        conn.execute(events.update().values(payload=stored))
    # when
    c = claimed(engine, did, at(1))
    # then the attempt is started (the engine ends it as permanent) with the reason instead of the model
    assert (c.event, c.unreadable, c.event_id) == (None, reason, event_id)
    assert delivery(engine, did)["status"] == "in_flight"


def test_claim_then_delivered(engine: Engine) -> None:
    # given
    did = routed(engine, 1)
    # when
    c = claimed(engine, did, at(1))
    # then
    d = delivery(engine, did)
    assert d["status"] == "in_flight"
    assert (d["attempts"], d["budget_used"]) == (1, 1)
    assert d["lease_until"] == at(1 + LEASE)
    assert (c.attempt_number, c.budget_used, c.destination) == (1, 1, "warehouse")
    assert c.event is not None and c.event.dossier_code == DOSSIER
    # when
    successors = finish(engine, c, "delivered", at(2), status_code=200, external_ref="rcpt-1", excerpt="ok")
    # then
    assert successors == []
    d = delivery(engine, did)
    assert (d["status"], d["delivered_at"], d["external_ref"], d["lease_until"]) == ("delivered", at(2), "rcpt-1", None)
    [attempt] = attempt_rows(engine, did)
    assert (attempt["number"], attempt["started_at"], attempt["outcome"]) == (1, at(1), "delivered")
    assert (attempt["status_code"], attempt["external_ref"], attempt["duration_ms"]) == (200, "rcpt-1", 12.5)
    assert isinstance(claim(engine, did, at(3)), NotClaimed)


def test_retrying_waits_for_next_attempt_at_then_claims_again(engine: Engine) -> None:
    # given
    did = routed(engine, 1)
    finish(engine, claimed(engine, did, at(1)), "retrying", at(2), status_code=503, error="HTTP 503",
           next_attempt_at=at(32))
    d = delivery(engine, did)
    assert (d["status"], d["next_attempt_at"], d["last_error"], d["last_status_code"]) == (
        "retrying", at(32), "HTTP 503", 503)
    # when
    early = claim(engine, did, at(20))
    later = claim(engine, did, at(32))
    # then
    assert isinstance(early, NotClaimed)
    assert (early.state, early.until) == ("skip", at(32))
    assert isinstance(later, Claimed)
    assert (later.attempt_number, later.budget_used) == (2, 2)


def test_dead_is_final(engine: Engine) -> None:
    did = routed(engine, 1)

    finish(engine, claimed(engine, did, at(1)), "dead", at(2), status_code=422, error="rejected: HTTP 422")

    d = delivery(engine, did)
    assert (d["status"], d["last_error"]) == ("dead", "rejected: HTTP 422")
    result = claim(engine, did, at(1000))
    assert isinstance(result, NotClaimed)
    assert result.state == "skip"


def test_a_second_claim_of_an_in_flight_delivery_is_skipped(engine: Engine) -> None:
    did = routed(engine, 1)
    claimed(engine, did, at(1))

    second = claim(engine, did, at(2))

    assert isinstance(second, NotClaimed)
    assert second.state == "skip"
    assert delivery(engine, did)["attempts"] == 1


def test_claim_after_the_lease_expired_marks_the_attempt_lost(engine: Engine) -> None:
    # given: a worker claimed the delivery, then died
    did = routed(engine, 1)
    stale = claimed(engine, did, at(1))
    # when
    fresh_claim = claimed(engine, did, at(1 + LEASE))
    # then
    assert fresh_claim.attempt_number == 2
    first, second = attempt_rows(engine, did)
    assert first["outcome"] == "lost"
    assert second["outcome"] is None
    # and the dead worker's late answer changes nothing
    assert finish(engine, stale, "delivered", at(1 + LEASE + 1)) == []
    assert delivery(engine, did)["status"] == "in_flight"
    assert attempt_rows(engine, did)[1]["outcome"] is None


def test_poison_guard_gives_up_after_max_attempts_lost(engine: Engine) -> None:
    # given: a delivery whose worker dies on every attempt
    rules = DestinationRules("warehouse", ordered=True, deadline_seconds=3600, max_attempts=2)
    did = routed(engine, 1)
    claimed(engine, did, at(0), rules)
    claimed(engine, did, at(LEASE), rules)
    # when
    verdict = claim(engine, did, at(2 * LEASE), rules)
    # then
    assert isinstance(verdict, NotClaimed)
    assert verdict.state == "dead"
    d = delivery(engine, did)
    assert d["status"] == "dead"
    assert "gave up" in d["last_error"]
    assert [a["outcome"] for a in attempt_rows(engine, did)] == ["lost", "lost"]


# --------------------------------------------------------------------------- ordering


def test_sequence_two_waits_for_sequence_one_then_is_the_successor(engine: Engine) -> None:
    # given
    one = routed(engine, 1)
    two = routed(engine, 2, at(1))
    # when
    waiting = claim(engine, two, at(2))
    # then
    assert isinstance(waiting, NotClaimed)
    assert waiting.state == "waiting"
    assert delivery(engine, two)["status"] == "pending"
    # when
    successors = deliver(engine, one, at(3))
    # then
    assert successors == [ToEnqueue(two, "warehouse")]
    assert claimed(engine, two, at(4)).attempt_number == 1


def test_a_dead_predecessor_releases_its_successor(engine: Engine) -> None:
    one = routed(engine, 1)
    two = routed(engine, 2)

    successors = finish(engine, claimed(engine, one, at(1)), "dead", at(2), error="rejected")

    assert successors == [ToEnqueue(two, "warehouse")]


def test_retrying_predecessor_still_holds_its_successor(engine: Engine) -> None:
    one = routed(engine, 1)
    two = routed(engine, 2)

    successors = finish(engine, claimed(engine, one, at(1)), "retrying", at(2), next_attempt_at=at(30))

    assert successors == []
    verdict = claim(engine, two, at(3))
    assert isinstance(verdict, NotClaimed)
    assert verdict.state == "waiting"


def test_unordered_destination_does_not_wait(engine: Engine) -> None:
    routed(engine, 1, destination="onestop")
    two = routed(engine, 2, destination="onestop")

    assert isinstance(claim(engine, two, at(1), ONESTOP), Claimed)


def test_late_sequence_after_a_newer_one_was_delivered_is_superseded(engine: Engine) -> None:
    # given: 1 and 3 delivered (3 after the gap wait), then 2 arrives late
    deliver(engine, routed(engine, 1), at(1))
    three = routed(engine, 3, at(2))
    deliver(engine, three, at(2 + GAP))
    late = routed(engine, 2, at(100))
    # when
    verdict = claim(engine, late, at(101))
    # then
    assert isinstance(verdict, NotClaimed)
    assert verdict.state == "superseded"
    d = delivery(engine, late)
    assert d["status"] == "superseded"
    assert "sequence 3" in d["last_error"]
    assert d["attempts"] == 0
    assert attempt_rows(engine, late) == []


def test_a_gap_waits_until_received_at_plus_gap_wait_then_goes(engine: Engine) -> None:
    # given: 1 delivered, 3 arrives, 2 never does
    deliver(engine, routed(engine, 1), at(1))
    three = routed(engine, 3, at(10))
    # when
    waiting = claim(engine, three, at(11))
    # then
    assert isinstance(waiting, NotClaimed)
    assert (waiting.state, waiting.until) == ("waiting", at(10 + GAP))
    assert delivery(engine, three)["next_attempt_at"] == at(10 + GAP)
    assert isinstance(claim(engine, three, at(10 + GAP - 5)), NotClaimed)
    assert claimed(engine, three, at(10 + GAP)).attempt_number == 1


def test_the_missing_sequence_arriving_wakes_the_waiter_even_when_routed_elsewhere(engine: Engine) -> None:
    # given: 1 delivered to the warehouse, 3 waiting for 2, which the warehouse does not take
    deliver(engine, routed(engine, 1), at(1))
    three = routed(engine, 3, at(10))
    assert isinstance(claim(engine, three, at(11)), NotClaimed)
    assert sweep(engine, at(20), 60, 100).deliveries_to_enqueue == []
    # when 2 arrives, routed only to the one-stop software
    two = stored(engine, make_event(2), at(30))
    intake.route_event(engine, two, to("onestop"), RULES, at(30))
    # then the next sweep queues 3 again, and it goes without waiting out the gap
    assert ToEnqueue(three, "warehouse") in sweep(engine, at(31), 60, 100).deliveries_to_enqueue
    assert claimed(engine, three, at(31)).attempt_number == 1


def test_other_dossiers_and_destinations_are_independent_streams(engine: Engine) -> None:
    routed(engine, 1)
    other_dossier = routed(engine, 2, dossier="000.21.00.H49-240315-0002")
    routed(engine, 1, dossier="000.21.00.H49-240315-0003")
    deliver(engine, routed(engine, 1, dossier="000.21.00.H49-240315-0002"), at(1))

    assert isinstance(claim(engine, other_dossier, at(2)), Claimed)


# --------------------------------------------------------------------------- sweep


def test_sweep_finds_unrouted_events_once_per_requeue_period(engine: Engine) -> None:
    # given: an event the intake stored (and queued at T0) but nobody routed
    pk = stored(engine, make_event())
    # when / then
    assert sweep(engine, at(30), 60, 100).events_to_route == []
    assert sweep(engine, at(60), 60, 100).events_to_route == [pk]
    assert sweep(engine, at(61), 60, 100).events_to_route == []
    assert sweep(engine, at(120), 60, 100).events_to_route == [pk]
    intake.route_event(engine, pk, to("warehouse"), RULES, at(121))
    assert sweep(engine, at(500), 60, 100).events_to_route == []


def test_sweep_finds_deliveries_that_were_never_queued(engine: Engine) -> None:
    # given: routed at T0, but the broker never got the task
    did = routed(engine, 1)
    # when / then
    assert sweep(engine, at(10), 60, 100).deliveries_to_enqueue == []
    assert sweep(engine, at(60), 60, 100).deliveries_to_enqueue == [ToEnqueue(did, "warehouse")]
    assert sweep(engine, at(90), 60, 100).deliveries_to_enqueue == []


def test_sweep_finds_due_retries_only_when_due(engine: Engine) -> None:
    did = routed(engine, 1)
    finish(engine, claimed(engine, did, at(1)), "retrying", at(2), next_attempt_at=at(300))

    assert sweep(engine, at(299), 60, 100).deliveries_to_enqueue == []
    assert sweep(engine, at(300), 60, 100).deliveries_to_enqueue == [ToEnqueue(did, "warehouse")]
    assert sweep(engine, at(301), 60, 100).deliveries_to_enqueue == []


def test_several_deliveries_are_deferred_at_once(engine: Engine) -> None:
    # given: two due deliveries and one in flight
    first, second, busy = (routed(engine, 1, dossier=f"000.21.00.H49-240315-000{n}") for n in (1, 2, 3))
    claimed(engine, busy, at(1))
    # when: the breaker is open
    deferred = claims.defer_many(engine, "warehouse", None, lambda: at(60), "circuit open for warehouse", at(2))
    # then: the two wait, the one in flight is left alone
    assert sorted(deferred) == [first, second]
    assert [delivery(engine, i)["next_attempt_at"] for i in (first, second)] == [at(60), at(60)]
    assert claims.defer_many(engine, "warehouse", [first, second, busy], lambda: at(90), "quota", at(3)) == [
        first, second]
    assert delivery(engine, busy)["status"] == "in_flight"


def test_sweep_rescues_expired_leases(engine: Engine) -> None:
    # given: a worker took the delivery and died
    did = routed(engine, 1)
    claimed(engine, did, at(1))
    assert sweep(engine, at(LEASE), 60, 100).leases_expired == 0
    # when
    result = sweep(engine, at(1 + LEASE), 60, 100)
    # then
    assert result.leases_expired == 1
    assert result.deliveries_to_enqueue == [ToEnqueue(did, "warehouse")]
    d = delivery(engine, did)
    assert (d["status"], d["lease_until"]) == ("retrying", None)
    assert "lease expired" in d["last_error"]
    assert [a["outcome"] for a in attempt_rows(engine, did)] == ["lost"]
    assert claimed(engine, did, at(2 + LEASE)).attempt_number == 2


def test_sweep_respects_the_batch_size(engine: Engine) -> None:
    for _ in range(5):
        stored(engine, make_event(dossier=f"000.21.00.H49-240315-{uuid.uuid4().int % 10_000:04d}"))

    assert len(sweep(engine, at(60), 60, 3).events_to_route) == 3
    assert len(sweep(engine, at(61), 60, 3).events_to_route) == 2


# --------------------------------------------------------------------------- dead letters


def _dead(engine: Engine, *, dossier: str, destination: str, when: datetime, reason: str) -> int:
    did = routed(engine, 1, when, dossier=dossier, destination=destination)
    finish(engine, claimed(engine, did, when, RULES[destination]), "dead", when, RULES[destination],
           status_code=422, error=reason)
    return did


@pytest.fixture
def dead(engine: Engine) -> dict[str, int]:
    day1, day2 = T0, T0 + timedelta(days=1)
    return {
        "a": _dead(engine, dossier="000.21.00.H49-240315-0001", destination="warehouse", when=day1,
                   reason="rejected: HTTP 422 rejected"),
        "b": _dead(engine, dossier="000.21.00.H49-240315-0002", destination="onestop", when=day1,
                   reason="rejected: HTTP 401 rejected"),
        "c": _dead(engine, dossier="000.21.00.H49-240316-0003", destination="warehouse", when=day2,
                   reason="deadline passed after 9 attempts: HTTP 503"),
    }


@pytest.mark.parametrize(("flt", "expected"), [
    (DeadLetterFilter(), {"a", "b", "c"}),
    (DeadLetterFilter(destination="warehouse"), {"a", "c"}),
    (DeadLetterFilter(dossier_code="000.21.00.H49-240315-0002"), {"b"}),
    (DeadLetterFilter(since=T0 + timedelta(hours=12)), {"c"}),
    (DeadLetterFilter(until=T0 + timedelta(hours=12)), {"a", "b"}),
    (DeadLetterFilter(reason="HTTP 401"), {"b"}),
    (DeadLetterFilter(reason="100%_"), set()),
    (DeadLetterFilter(destination="warehouse", reason="deadline"), {"c"}),
])
def test_dead_letters_filter(engine: Engine, dead: dict[str, int], flt: DeadLetterFilter, expected: set[str]) -> None:
    rows = dead_letters(engine, flt)

    assert {r.id for r in rows} == {dead[k] for k in expected}


def test_dead_letters_lists_only_dead_deliveries(engine: Engine, dead: dict[str, int]) -> None:
    routed(engine, 1, dossier="000.21.00.H49-240315-0009")

    assert len(dead_letters(engine, DeadLetterFilter())) == 3


def test_replay_gives_a_fresh_budget_and_deadline_and_keeps_history(engine: Engine, dead: dict[str, int]) -> None:
    # given
    events_before, attempts_before = count(engine, events), count(engine, attempts)
    now = T0 + timedelta(days=3)
    # when
    replayed = replay(engine, DeadLetterFilter(destination="warehouse"), {"warehouse": 1800}, now)
    # then
    assert sorted(replayed, key=lambda r: r.delivery_id) == [
        ToEnqueue(dead["a"], "warehouse"), ToEnqueue(dead["c"], "warehouse")]
    d = delivery(engine, dead["a"])
    assert (d["status"], d["budget_used"], d["replays"], d["attempts"]) == ("pending", 0, 1, 1)
    assert d["deadline_at"] == now + timedelta(seconds=1800)
    assert delivery(engine, dead["b"])["status"] == "dead"
    assert (count(engine, events), count(engine, attempts)) == (events_before, attempts_before)
    assert {r.id for r in dead_letters(engine, DeadLetterFilter())} == {dead["b"]}
    again = claimed(engine, dead["a"], now)
    assert (again.attempt_number, again.budget_used) == (2, 1)
    assert [a["number"] for a in attempt_rows(engine, dead["a"])] == [1, 2]


# --------------------------------------------------------------------------- inbound statuses, numbered


def status(code: str, minute: int, *, dossier: str = DOSSIER) -> dict[str, Any]:
    """A postal status as a service reports it: no sequence of its own (the placeholder is 1)."""
    return event_json(parse_event({
        "event_id": f"postal:{dossier}-KQ:{code}:2024031509{minute:02d}00",
        "type": "postal.status",
        "origin": "postal",
        "unit_code": "000.21.00.H49",
        "dossier_code": dossier,
        "procedure_code": "1.001234.000.00.00.H49",
        "sequence": 1,
        "occurred_at": f"2024-03-15T09:{minute:02d}:00+07:00",
        "applicant": {"name": "Nguyễn Văn An", "phone": "0912345678"},
        "data": {"order_number": f"{dossier}-KQ", "status_code": code, "status": "in_transit"},
    }))


def stream(engine: Engine, dossier: str = DOSSIER) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(r.sequence, r.event_id.split(":")[2]) for r in conn.execute(
            select(events.c.sequence, events.c.event_id)
            .where(events.c.dossier_code == dossier, events.c.origin == "postal")
            .order_by(events.c.sequence, events.c.event_id))]


def test_inbound_statuses_are_numbered_gap_free_and_routed(engine: Engine) -> None:
    first = intake.ingest_numbered(engine, [status("200", 1), status("300", 2)], T0, to("onestop"), RULES)
    second = intake.ingest_numbered(engine, [status("400", 3)], at(60), to("onestop"), RULES)
    assert len(first.stored) == 2 and len(second.stored) == 1 and not first.late
    assert stream(engine) == [(1, "200"), (2, "300"), (3, "400")]
    assert len(first.ready) == 2 and len(second.ready) == 1  # onestop is unordered here: all may go


def test_a_status_reported_twice_is_one_event_whatever_its_sequence_placeholder(engine: Engine) -> None:
    intake.ingest_numbered(engine, [status("200", 1), status("300", 2)], T0, to("onestop"), RULES)
    again = intake.ingest_numbered(engine, [status("300", 2), status("300", 2), status("400", 3)], at(5),
                                   to("onestop"), RULES)
    assert again.duplicates == [status("300", 2)["event_id"]] and len(again.stored) == 1
    assert stream(engine) == [(1, "200"), (2, "300"), (3, "400")]


def test_a_status_older_than_the_stream_s_newest_is_kept_but_sent_nowhere(engine: Engine) -> None:
    intake.ingest_numbered(engine, [status("200", 1), status("500", 9)], T0, to("onestop", "warehouse"), RULES)
    late = intake.ingest_numbered(engine, [status("400", 5)], at(5), to("onestop", "warehouse"), RULES)
    assert late.late == [status("400", 5)["event_id"]] and late.ready == []
    assert stream(engine) == [(1, "200"), (2, "400"), (2, "500")]  # sorted: the late one shares the newest number
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).select_from(deliveries).join(events)
                            .where(events.c.event_id == late.late[0])).scalar()
    assert sent == 0


def test_numbering_follows_each_dossier_s_own_stream(engine: Engine) -> None:
    other = "000.21.00.H49-240315-0002"
    intake.ingest_numbered(engine, [status("200", 1), status("200", 1, dossier=other), status("300", 2)], T0,
                           to("onestop"), RULES)
    assert stream(engine) == [(1, "200"), (2, "300")] and stream(engine, other) == [(1, "200")]


def test_callback_and_poller_racing_over_the_same_statuses_store_each_once(engine: Engine) -> None:
    batches = [[status(code, minute) for code, minute in (("200", 1), ("300", 2), ("400", 3), ("500", 4))]
               for _ in range(6)]
    barrier = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def report(batch: list[dict[str, Any]]) -> None:
        barrier.wait()
        try:
            intake.ingest_numbered(engine, batch, T0, to("onestop"), RULES)
        except BaseException as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stream(engine) == [(1, "200"), (2, "300"), (3, "400"), (4, "500")]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 4
