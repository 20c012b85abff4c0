"""One lock order in the ledger (``store/streams.py``), on PostgreSQL with the ledger's own functions, nothing mocked.

Case by case: each transaction that decides on an ordered stream, run while another holds the stream's lock, waits
for it holding no row; each that decides nothing goes on without it. All at once: the intake, routes, claims (by id
and drains), finishes (one and many), releases, deferrals, replays, reroutes, wake-ups, lease renewals and sweeps of
the same few streams from 8 threads for a few seconds, and no deadlock: none raised, and
``pg_stat_database.deadlocks`` of the test database unchanged; leases so short that claims and sweeps take over
deliveries whose finishes are still coming.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from schemas.events import event_json, parse_event
from store import deliveries as ledger
from store import intake
from store.db import make_engine
from store.deadletters import DeadLetterFilter, replay
from store.deliveries import Claimed, Outcome
from store.streams import DestinationRules, stream_key
from store.sweep import sweep
from store.tables import FINAL_STATUSES, OPEN_STATUSES, Status, deliveries, events

pytestmark = pytest.mark.postgres

PORTAL = DestinationRules("portal", ordered=True, deadline_seconds=3600, max_attempts=1_000_000)
SMS = DestinationRules("sms", ordered=True, deadline_seconds=3600, max_attempts=1_000_000)
ONESTOP = DestinationRules("onestop", ordered=False, deadline_seconds=3600, max_attempts=1_000_000)
RULES = {rule.name: rule for rule in (PORTAL, SMS, ONESTOP)}
DOSSIERS = [f"000.21.00.H49-240315-{n:04d}" for n in range(1, 4)]  # three dossiers: a few streams, much contention
THREADS = 8
SECONDS = 4.0
MIN_OPERATIONS = 300
LEASE = 0.2  # leases expire while their finishes are on the way: claims and sweeps take the rows over
GAP = 0.3
PAUSED = "paused: balance spent"


def choose(payload: dict[str, Any]) -> list[str]:
    return ["portal", "onestop"]


class Workload:
    """The shared state of the threads: each dossier's next sequence (one in seven skipped for a while: gaps that
    wait, then woken by the intake), and the deliveries and events seen so far."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.sequences = {dossier: itertools.count(1) for dossier in DOSSIERS}
        self.skipped: list[tuple[str, int]] = []
        self.delivery_ids: list[int] = []
        self.event_pks: list[int] = []
        self.running: list[tuple[float, Claimed]] = []  # claimed, and when its "call" ends
        self.deadlocks: list[str] = []
        self.errors: list[str] = []
        self.done: dict[str, int] = {}

    def payload(self, rng: random.Random) -> dict[str, Any]:
        with self.lock:
            if self.skipped and rng.random() < 0.5:
                dossier, sequence = self.skipped.pop(0)
            else:
                dossier = rng.choice(DOSSIERS)
                sequence = next(self.sequences[dossier])
                if rng.random() < 1 / 7:
                    self.skipped.append((dossier, sequence))
                    sequence = next(self.sequences[dossier])
        return event_json(parse_event({
            "event_id": f"ev-{uuid.uuid4()}", "type": "dossier.processing", "unit_code": "000.21.00.H49",
            "dossier_code": dossier, "procedure_code": "1.001234.000.00.00.H49", "sequence": sequence,
            "occurred_at": "2024-03-15T08:00:00+07:00", "applicant": {"name": "Nguyễn Văn An"},
            "data": {"step": {"department": "Phòng Tư pháp"}},
        }))

    def refresh(self) -> None:
        """The portal's open deliveries (where the contention is) and the events, as they stand now."""
        with self.engine.connect() as conn:
            ids = list(conn.execute(select(deliveries.c.id).where(deliveries.c.destination == "portal",
                                                                  deliveries.c.status.in_(OPEN_STATUSES))).scalars())
            pks = list(conn.execute(select(events.c.id)).scalars())
        with self.lock:
            self.delivery_ids, self.event_pks = ids, pks

    def total(self) -> int:
        with self.lock:
            return sum(self.done.values())

    def some_ids(self, rng: random.Random, most: int = 4) -> list[int]:
        """A few open deliveries; half the time among those whose calls are running (a doorbell rung twice, the
        sweeper's requeue: a claim meets the attempt's finish)."""
        with self.lock:
            running = [c.delivery_id for _, c in self.running]
            pool = running if running and rng.random() < 0.5 else self.delivery_ids
            return rng.sample(pool, min(len(pool), rng.randint(1, most)))


def outcome_for(rng: random.Random, now: datetime) -> Outcome:
    status = rng.choice([Status.DELIVERED, Status.DELIVERED, Status.RETRYING, Status.RETRYING, Status.DEAD])
    return Outcome(status=status, attempt_outcome="delivered" if status == Status.DELIVERED else "retryable",
                   duration_ms=1.0, status_code=200 if status == Status.DELIVERED else 503,
                   error=None if status == Status.DELIVERED else "HTTP 503",
                   next_attempt_at=now if status == Status.RETRYING else None)


def calls(w: Workload, rng: random.Random, claimed: list[Claimed]) -> None:
    """The attempts' calls: each ends within 1.5 leases (often after its lease, which another claim or the sweep
    takes over meanwhile); one in ten never ends (its worker died)."""
    ends = time.monotonic() + rng.uniform(0, 1.5 * LEASE)
    with w.lock:
        w.running.extend((ends, c) for c in claimed if rng.random() > 0.1)


def finish(w: Workload, rng: random.Random) -> None:
    """Finish the calls that ended, one by one or as a batch, or release them (paused)."""
    with w.lock:
        ended = [c for ends, c in w.running if ends <= time.monotonic()]
        w.running = [(ends, c) for ends, c in w.running if ends > time.monotonic()]
    now = datetime.now(UTC)
    if rng.random() < 0.5:
        ledger.finish_many(w.engine, [(c, outcome_for(rng, now)) for c in ended], PORTAL, now)
        return
    for c in ended:
        if rng.random() < 0.15:
            paused = Outcome(status=Status.RETRYING, attempt_outcome="paused", duration_ms=1.0, error=PAUSED,
                             next_attempt_at=now + timedelta(seconds=0.1))
            ledger.release(w.engine, c, paused, now, record=rng.random() < 0.5)
        else:
            ledger.finish(w.engine, c, outcome_for(rng, now), PORTAL, now)


def claim_by_id(w: Workload, rng: random.Random) -> None:
    now = datetime.now(UTC)
    batch = ledger.claim_many(w.engine, "portal", PORTAL, now, LEASE, GAP, ids=w.some_ids(rng, 6))
    calls(w, rng, batch.claimed)


def drain(w: Workload, rng: random.Random) -> None:
    batch = ledger.claim_many(w.engine, "portal", PORTAL, datetime.now(UTC), LEASE, GAP, limit=8)
    calls(w, rng, batch.claimed)


def ingest(w: Workload, rng: random.Random) -> None:
    intake.ingest_and_route(w.engine, [w.payload(rng) for _ in range(rng.randint(1, 3))], datetime.now(UTC),
                            choose, RULES)


def ingest_then_route(w: Workload, rng: random.Random) -> None:
    [stored] = intake.ingest(w.engine, [w.payload(rng)], datetime.now(UTC))
    intake.route_event(w.engine, stored.pk, choose, RULES, datetime.now(UTC))


def route_again(w: Workload, rng: random.Random) -> None:
    with w.lock:
        pks = rng.sample(w.event_pks, min(len(w.event_pks), 1))
    for pk in pks:
        intake.route_event(w.engine, pk, choose, RULES, datetime.now(UTC))


def numbered(w: Workload, rng: random.Random) -> None:
    payload = w.payload(rng) | {"origin": "portal"}
    intake.ingest_numbered(w.engine, [payload], datetime.now(UTC), choose, RULES)


def defer(w: Workload, rng: random.Random) -> None:
    now = datetime.now(UTC)
    ids = w.some_ids(rng, 6) if rng.random() < 0.7 else None
    ledger.defer_many(w.engine, "portal", ids, lambda: now + timedelta(seconds=0.05), "circuit open for portal", now)


def replay_dead(w: Workload, rng: random.Random) -> None:
    replay(w.engine, DeadLetterFilter(destination="portal", dossier_code=rng.choice(DOSSIERS)), {"portal": 3600},
           datetime.now(UTC))


def reroute(w: Workload, rng: random.Random) -> None:
    for delivery_id in w.some_ids(rng, 2):
        ledger.reroute(w.engine, delivery_id, "sms", RULES, datetime.now(UTC))


def wake(w: Workload, rng: random.Random) -> None:
    ledger.wake(w.engine, "portal", "paused%", datetime.now(UTC))


def renew(w: Workload, rng: random.Random) -> None:
    """The lease heartbeat of attempts still running (some of them taken over meanwhile)."""
    with w.engine.connect() as conn:
        running = conn.execute(select(deliveries.c.id, deliveries.c.attempts)
                               .where(deliveries.c.status == Status.IN_FLIGHT)).all()
    held = [(r.id, r.attempts) for r in rng.sample(running, min(len(running), rng.randint(1, 6)))]
    ledger.renew_leases(w.engine, held, datetime.now(UTC) + timedelta(seconds=LEASE))


def sweep_ledger(w: Workload, rng: random.Random) -> None:
    sweep(w.engine, datetime.now(UTC), requeue_after=0.0, batch=20, destinations=["portal", "sms", "onestop"])


OPERATIONS: list[tuple[Callable[[Workload, random.Random], None], int]] = [
    (claim_by_id, 10), (drain, 4), (finish, 8), (ingest, 3), (ingest_then_route, 1), (route_again, 1), (numbered, 1),
    (defer, 2), (replay_dead, 2), (reroute, 1), (wake, 1), (renew, 1), (sweep_ledger, 2),
]


def is_deadlock(exc: BaseException) -> bool:
    return "deadlock detected" in str(exc) or type(getattr(exc, "orig", None)).__name__ == "DeadlockDetected"


def work(w: Workload, seed: int, until: float) -> None:
    """Every operation once, then at random by weight: for ``SECONDS`` and at least ``MIN_OPERATIONS`` in all
    (a loaded machine runs longer), never past ``until``."""
    rng = random.Random(seed)
    operations, weights = zip(*OPERATIONS, strict=True)
    first = rng.sample(operations, len(operations))
    enough = time.monotonic() + SECONDS
    while time.monotonic() < until and (first or time.monotonic() < enough or w.total() < MIN_OPERATIONS):
        operation = first.pop() if first else rng.choices(operations, weights)[0]
        try:
            operation(w, rng)
        except Exception as exc:  # every failure is the test's finding: a deadlock, or a bug it shook out
            (w.deadlocks if is_deadlock(exc) else w.errors).append(f"{operation.__name__}: {exc}"[:600])
        with w.lock:
            w.done[operation.__name__] = w.done.get(operation.__name__, 0) + 1
        if rng.random() < 0.1:
            w.refresh()


@pytest.fixture()
def pg_engine(db_url: str) -> Iterator[Engine]:
    """The fresh ledger on an engine of its own, whose sessions look for deadlocks after 50 ms of waiting
    (PostgreSQL's 1 s would leave few chances to meet one in a few seconds)."""
    engine = make_engine(db_url, pool_size=THREADS)

    @event.listens_for(engine, "connect")
    def _quick_deadlock_check(dbapi_conn: Any, _: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET deadlock_timeout = '50ms'")

    yield engine
    engine.dispose()


def deadlocks_counted(url: str) -> int:
    """What PostgreSQL counted for the database (a new session: the statistics as flushed so far)."""
    reader = make_engine(url, pool_size=1)
    try:
        with reader.connect() as conn:
            return int(conn.execute(text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
                       .scalar_one())
    finally:
        reader.dispose()


@pytest.mark.slow  # some 5 s of load; the rule itself is checked case by case below, in a few hundred ms each
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_no_deadlock_among_every_transaction_on_the_same_streams(db_url: str, pg_engine: Engine) -> None:
    # given: a few streams with some deliveries in them
    engine = pg_engine
    w = Workload(engine)
    seed_rng = random.Random(19)
    for _ in range(6):
        ingest(w, seed_rng)
    w.refresh()
    before = deadlocks_counted(db_url)

    # when: every kind of transaction on them from 8 threads at once
    until = time.monotonic() + 2 * SECONDS
    threads = [threading.Thread(target=work, args=(w, seed, until), name=f"ledger-{seed}") for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * SECONDS + 30)
    engine.dispose()  # the sessions end: their statistics are flushed
    time.sleep(0.5)

    # then: no deadlock, raised or counted, and nothing else went wrong
    assert not any(thread.is_alive() for thread in threads)
    assert w.deadlocks == [], f"{len(w.deadlocks)} deadlocks, first: {w.deadlocks[0]}"
    assert w.errors == [], w.errors[:3]
    assert deadlocks_counted(db_url) == before
    # and the run did what it says: every operation by every thread, and the streams moved
    assert all(w.done.get(op.__name__, 0) >= THREADS for op, _ in OPERATIONS), w.done
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.id).where(deliveries.c.status.in_(FINAL_STATUSES))).first()


# ---------------------------------------------------------------------------------------------- the rule, one by one

Probe = Callable[[Engine, str], tuple[str, Callable[[], object]]]
"""Sets up a case on a dossier of its own: the stream key to hold, and the operation to run meanwhile."""


def _event(dossier: str, sequence: int) -> dict[str, Any]:
    return event_json(parse_event({
        "event_id": f"ev-{uuid.uuid4()}", "type": "dossier.processing", "unit_code": "000.21.00.H49",
        "dossier_code": dossier, "procedure_code": "1.001234.000.00.00.H49", "sequence": sequence,
        "occurred_at": "2024-03-15T08:00:00+07:00", "applicant": {"name": "Nguyễn Văn An"},
        "data": {"step": {"department": "Phòng Tư pháp"}},
    }))


def _routed(engine: Engine, dossier: str, sequence: int) -> int:
    [stored], _ = intake.ingest_and_route(engine, [_event(dossier, sequence)], datetime.now(UTC), choose, RULES)
    with engine.connect() as conn:
        return int(conn.execute(select(deliveries.c.id).where(deliveries.c.event_pk == stored.pk,
                                                              deliveries.c.destination == "portal")).scalar_one())


def _claimed(engine: Engine, delivery_id: int) -> Claimed:
    [claimed] = ledger.claim_many(engine, "portal", PORTAL, datetime.now(UTC), 60, 60, ids=[delivery_id]).claimed
    return claimed


def _ended(status: Status) -> Outcome:
    return Outcome(status=status, attempt_outcome="delivered" if status == Status.DELIVERED else "permanent",
                   duration_ms=1.0, next_attempt_at=datetime.now(UTC) if status == Status.RETRYING else None)


def _portal(dossier: str) -> str:
    return stream_key(dossier, "portal", "onestop")


def claim_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    delivery_id = _routed(engine, dossier, 1)
    return _portal(dossier), lambda: ledger.claim_many(engine, "portal", PORTAL, datetime.now(UTC), 60, 60,
                                                       ids=[delivery_id])


def finish_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    claimed = _claimed(engine, _routed(engine, dossier, 1))
    return _portal(dossier), lambda: ledger.finish(engine, claimed, _ended(Status.DELIVERED), PORTAL, datetime.now(UTC))


def finish_many_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    claimed = _claimed(engine, _routed(engine, dossier, 1))
    return _portal(dossier), lambda: ledger.finish_many(engine, [(claimed, _ended(Status.DEAD))], PORTAL,
                                                        datetime.now(UTC))


def intake_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    """The sequence a delivery waits for arrives: the intake wakes the waiter (a row of the stream it locks)."""
    first = _claimed(engine, _routed(engine, dossier, 1))
    ledger.finish(engine, first, _ended(Status.DELIVERED), PORTAL, datetime.now(UTC))
    waiting = ledger.claim(engine, _routed(engine, dossier, 3), PORTAL, datetime.now(UTC), 60, 60)
    assert getattr(waiting, "until", None), waiting  # waits for sequence 2
    return _portal(dossier), lambda: intake.ingest_and_route(engine, [_event(dossier, 2)], datetime.now(UTC), choose,
                                                             RULES)


def route_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    _routed(engine, dossier, 1)
    [stored] = intake.ingest(engine, [_event(dossier, 2)], datetime.now(UTC))
    return _portal(dossier), lambda: intake.route_event(engine, stored.pk, choose, RULES, datetime.now(UTC))


def numbered_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    _routed(engine, dossier, 1)
    return _portal(dossier), lambda: intake.ingest_numbered(engine, [_event(dossier, 1)], datetime.now(UTC), choose,
                                                            RULES)


def reroute_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    delivery_id = _routed(engine, dossier, 1)
    return (stream_key(dossier, "sms", "onestop"),
            lambda: ledger.reroute(engine, delivery_id, "sms", RULES, datetime.now(UTC)))


def defer_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    delivery_id = _routed(engine, dossier, 1)
    return _portal(dossier), lambda: ledger.defer_many(engine, "portal", [delivery_id], lambda: datetime.now(UTC),
                                                       "circuit open for portal", datetime.now(UTC))


def release_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    claimed = _claimed(engine, _routed(engine, dossier, 1))
    return _portal(dossier), lambda: ledger.release(engine, claimed, _ended(Status.RETRYING), datetime.now(UTC),
                                                    record=True)


def retry_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    claimed = _claimed(engine, _routed(engine, dossier, 1))
    return _portal(dossier), lambda: ledger.finish(engine, claimed, _ended(Status.RETRYING), PORTAL, datetime.now(UTC))


def replay_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    claimed = _claimed(engine, _routed(engine, dossier, 1))
    ledger.finish(engine, claimed, _ended(Status.DEAD), PORTAL, datetime.now(UTC))
    return _portal(dossier), lambda: replay(engine, DeadLetterFilter(dossier_code=dossier), {}, datetime.now(UTC))


def wake_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    delivery_id = _routed(engine, dossier, 1)
    ledger.defer_many(engine, "portal", [delivery_id], lambda: datetime.now(UTC) + timedelta(hours=1), PAUSED,
                      datetime.now(UTC))
    return _portal(dossier), lambda: ledger.wake(engine, "portal", "paused%", datetime.now(UTC))


def renew_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    claimed = _claimed(engine, _routed(engine, dossier, 1))
    return _portal(dossier), lambda: ledger.renew_leases(engine, [(claimed.delivery_id, claimed.attempt_number)],
                                                         datetime.now(UTC) + timedelta(minutes=1))


def drain_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    _routed(engine, dossier, 1)
    return _portal(dossier), lambda: ledger.claim_many(engine, "portal", PORTAL, datetime.now(UTC), 60, 60)


def sweep_probe(engine: Engine, dossier: str) -> tuple[str, Callable[[], object]]:
    _claimed(engine, _routed(engine, dossier, 1))
    return _portal(dossier), lambda: sweep(engine, datetime.now(UTC) + timedelta(minutes=2), 0.0, 100, ["portal"])


# the stream's lock decides who goes next: these wait for it, before any row
WAITING: list[Probe] = [claim_probe, finish_probe, finish_many_probe, intake_probe, route_probe, numbered_probe,
                        reroute_probe]
# these decide nothing of the kind: they take no stream lock, and go on while another transaction holds it
FREE: list[Probe] = [defer_probe, release_probe, retry_probe, replay_probe, wake_probe, renew_probe, drain_probe,
                     sweep_probe]

_WAITING_FOR_ADVISORY = text(
    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
    " WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted")


def _rows_held(engine: Engine) -> dict[str, int]:
    """Rows of each table that another transaction has locked for update (inserted rows are nobody else's)."""
    held = {}
    with engine.connect() as conn:
        for table in ("deliveries", "events", "attempts"):
            held[table] = conn.execute(text(
                f"SELECT (SELECT count(*) FROM {table})"  # noqa: S608 (table names from the list above)
                f" - (SELECT count(*) FROM (SELECT 1 FROM {table} FOR NO KEY UPDATE SKIP LOCKED) AS free)",
            )).scalar_one()
    return {table: n for table, n in held.items() if n}


def _probe(engine: Engine, probe: Probe, dossier: str, *, waits: bool) -> str | None:
    """Run the case's operation while another transaction holds the stream's lock; what went against the rule."""
    key, operation = probe(engine, dossier)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            operation()
        except BaseException as exc:  # reported below
            failure.append(exc)

    with engine.connect() as holder:
        holder.begin()
        ledger.lock_streams(holder, engine, [key])
        thread = threading.Thread(target=run, name=probe.__name__)
        thread.start()
        deadline = time.monotonic() + 5
        with engine.connect() as watcher:
            while thread.is_alive() and not watcher.execute(_WAITING_FOR_ADVISORY).scalar_one():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        blocked, held = thread.is_alive(), _rows_held(engine) if thread.is_alive() else {}
        holder.rollback()
    thread.join(timeout=10)
    name = probe.__name__.removesuffix("_probe")
    if failure:
        return f"{name}: {failure[0]!r}"[:400]
    if waits and not blocked:
        return f"{name}: did not wait for the stream's lock"
    if not waits and blocked:
        return f"{name}: waited while another transaction held the stream's lock"
    if held:
        return f"{name}: held rows {held} while it waited for the stream's lock"
    return None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_transaction_waiting_for_a_stream_holds_no_row(pg_engine: Engine) -> None:
    # given: each case on a dossier of its own; when: its operation runs while another transaction holds its stream
    found = [_probe(pg_engine, probe, f"000.21.00.H49-240316-{n:04d}", waits=probe in WAITING)
             for n, probe in enumerate(WAITING + FREE, start=1)]

    # then: those that decide on the stream waited for it holding nothing; the others did not wait
    assert [f for f in found if f] == []
