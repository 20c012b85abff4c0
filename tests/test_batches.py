"""The batched engine: claims of many deliveries at once, their ends recorded together, doorbells, and the
breaker and rate limit counted per batch — on both ledgers, with real Redis, against the real sandbox."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import redis
from fastapi import FastAPI, Request
from sqlalchemy import Engine, func, select, text
from sqlalchemy import event as sa_event

from config.routing import BreakerPolicy, RateLimit, load_routing
from connectors.base import AttemptEnded, ConnectorResult, DeliveryError
from sandbox.workload import generate_day
from schemas.events import Event, parse_event
from services.base import Deliverer
from store import deliveries as claims
from store import intake
from store.deliveries import Claimed, Outcome
from store.sweep import sweep
from store.tables import Status, attempts, audit_entries, deliveries, events
from tasks.delivery import run_batch, run_drain, run_sweep
from tasks.leases import LeaseKeeper
from tasks.protection import Protection
from tasks.queue import DRAIN_TASK, Doorbells
from tasks.runtime import get_runtime, reset_runtime
from tests.conftest import RelayConfig, Sandbox, configure_relay
from tests.harness import new_secret, wait_for
from tests.servers import run_asgi
from tests.test_ledger import GAP, LEASE, RULES, T0, WAREHOUSE, at, make_event, to

DOSSIERS = [f"000.21.00.H49-240315-{n:04d}" for n in range(1, 13)]


def stream_of_each(engine: Engine, length: int) -> dict[str, list[int]]:
    """``length`` sequences for each of the dossiers, routed to the warehouse: their delivery ids in order."""
    ids: dict[str, list[int]] = {}
    for sequence in range(1, length + 1):
        payloads = [make_event(sequence, dossier=d) for d in DOSSIERS]
        intake.ingest_and_route(engine, payloads, T0, to("warehouse"), RULES)
    with engine.connect() as conn:
        for did, dossier in conn.execute(select(deliveries.c.id, deliveries.c.dossier_code)
                                         .order_by(deliveries.c.sequence)):
            ids.setdefault(dossier, []).append(did)
    return ids


def delivered(c: Claimed) -> tuple[Claimed, Outcome]:
    return c, Outcome(status=Status.DELIVERED, attempt_outcome="delivered", duration_ms=3.0, status_code=200,
                      external_ref=f"r-{c.delivery_id}")


def test_a_drain_claims_only_the_heads_of_ordered_streams_up_to_its_limit(engine: Engine) -> None:
    streams = stream_of_each(engine, 3)
    # when a drain claims at most 5, then everything that is left
    first = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=5)
    rest = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=100)
    # then each claim holds sequence 1 of distinct dossiers, nothing behind an open predecessor
    heads = {ids[0] for ids in streams.values()}
    assert len(first.claimed) == 5
    assert {c.delivery_id for c in first.claimed + rest.claimed} == heads
    assert not first.refused and not rest.refused
    # and once the heads are delivered together, the next claim takes every sequence 2
    claims.finish_many(engine, [delivered(c) for c in first.claimed + rest.claimed], WAREHOUSE, at(2))
    second = claims.claim_many(engine, "warehouse", WAREHOUSE, at(2), LEASE, GAP, limit=100)
    assert {c.delivery_id for c in second.claimed} == {ids[1] for ids in streams.values()}


def test_finish_many_records_every_attempt_and_leaves_a_lost_lease_alone(engine: Engine) -> None:
    stream_of_each(engine, 1)
    batch = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=100)
    lost, *kept = batch.claimed
    # the first one's lease expires and another attempt takes it meanwhile
    again = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1 + LEASE + 1), LEASE, GAP, ids=[lost.delivery_id])
    assert [c.attempt_number for c in again.claimed] == [2]
    claims.finish_many(engine, [delivered(c) for c in batch.claimed], WAREHOUSE, at(3))
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(deliveries))}
        outcomes = Counter(conn.execute(select(attempts.c.outcome)).scalars())
    assert all(rows[c.delivery_id].status == Status.DELIVERED for c in kept)
    assert all(rows[c.delivery_id].external_ref == f"r-{c.delivery_id}" for c in kept)
    assert rows[lost.delivery_id].status == Status.IN_FLIGHT  # the second attempt's, not overwritten
    # each attempt row says what happened to it: the late one's answer came, the second is still open
    assert outcomes == {"delivered": len(batch.claimed), None: 1}


def test_concurrent_drains_never_claim_one_delivery_twice(engine: Engine) -> None:
    streams = stream_of_each(engine, 4)
    taken: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def drain_until_empty() -> None:
        try:
            for _ in range(200):
                batch = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=3)
                if not batch.claimed:
                    if not any(ids for ids in streams.values() if _open(engine, ids)):
                        return
                    continue
                with lock:
                    taken.extend(c.delivery_id for c in batch.claimed)
                claims.finish_many(engine, [delivered(c) for c in batch.claimed], WAREHOUSE, at(2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain_until_empty) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(taken) == sorted(i for ids in streams.values() for i in ids)  # each once
    with engine.connect() as conn:
        order = conn.execute(select(deliveries.c.dossier_code, deliveries.c.sequence, deliveries.c.delivered_at)
                             .order_by(deliveries.c.delivered_at, deliveries.c.id)).all()
    for dossier in DOSSIERS:  # and each dossier's sequences were delivered in order
        sequences = [r.sequence for r in order if r.dossier_code == dossier]
        assert sequences == sorted(sequences)


def _open(engine: Engine, ids: list[int]) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(deliveries.c.id).where(deliveries.c.id.in_(ids),
                                                               deliveries.c.status != Status.DELIVERED)).first())


def _heads_in_batches(engine: Engine, *sizes: int) -> list[list[Claimed]]:
    """Sequence 1 of each dossier (2 in each stream), claimed in batches of ``sizes``."""
    stream_of_each(engine, 2)
    return [claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=n).claimed for n in sizes]


CHAIN = claims.Chain(LEASE, GAP)


def test_one_transaction_records_several_batches_waves_and_claims_each_its_own_successors(engine: Engine) -> None:
    batches = _heads_in_batches(engine, 4, 4, 4)
    # when three batches' waves are recorded in one transaction, the first two chaining, the last not
    waves = [claims.Wave([delivered(c) for c in batch], chain) for batch, chain in zip(batches, [CHAIN, CHAIN, None],
                                                                                        strict=True)]
    out = claims.finish_waves(engine, waves, WAREHOUSE, at(2))
    # then every end is recorded, each with its audit entry
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(deliveries))}
        entries = conn.execute(select(func.count()).select_from(audit_entries)).scalar_one()
    assert all(rows[c.delivery_id].status == Status.DELIVERED for batch in batches for c in batch)
    assert entries == 12
    # and each chaining wave got sequence 2 of its own dossiers, the other none (the next claim finds them)
    for batch, got in zip(batches, out, strict=True):
        assert sorted(c.sequence for c in got.claimed) == ([2] * len(batch) if got is not out[2] else [])
        assert {c.dossier_code for c in got.claimed} <= {c.dossier_code for c in batch}
    assert not any(got.refused for got in out)
    left = claims.claim_many(engine, "warehouse", WAREHOUSE, at(3), LEASE, GAP, limit=100).claimed
    assert {c.dossier_code for c in left} == {c.dossier_code for c in batches[2]}


def test_a_chained_wave_claims_the_next_due_delivery_of_each_stream_it_ended_and_only_that(engine: Engine) -> None:
    streams = stream_of_each(engine, 3)
    heads = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=100).claimed
    later, failed = DOSSIERS[0], DOSSIERS[1]
    with engine.begin() as conn:  # the first dossier's sequence 2 is to be retried later than now
        conn.execute(deliveries.update().where(deliveries.c.id == streams[later][1])
                     .values(status=Status.RETRYING, next_attempt_at=at(60)))
    # when the heads' ends are recorded chaining, the second dossier's head having failed
    ends = [(c, Outcome(status=Status.RETRYING, attempt_outcome="failed", duration_ms=3.0, status_code=503,
                        next_attempt_at=at(30))) if c.dossier_code == failed else delivered(c) for c in heads]
    [got] = claims.finish_waves(engine, [claims.Wave(ends, CHAIN)], WAREHOUSE, at(2))
    # then it claims sequence 2 of every dossier whose head was delivered and whose next one is due, nothing else:
    # not one behind a delivery still open (the failed head's), nor one not due yet, nor any sequence 3
    assert {c.delivery_id for c in got.claimed} == {
        ids[1] for dossier, ids in streams.items() if dossier not in (later, failed)}
    assert all(c.attempt_number == 1 and c.started_at == at(2) for c in got.claimed)
    with engine.connect() as conn:
        status = dict(conn.execute(select(deliveries.c.id, deliveries.c.status)).all())
    assert status[streams[later][1]] == Status.RETRYING and status[streams[failed][1]] == Status.PENDING
    assert {status[ids[2]] for ids in streams.values()} == {Status.PENDING}


def test_the_recorder_records_the_waves_waiting_for_its_turn_in_one_transaction_each_getting_its_own(
    engine: Engine,
) -> None:
    from tasks.recorder import WaveRecorder

    batches = _heads_in_batches(engine, 2, 2, 2, 2)
    recorder = WaveRecorder(engine)
    # given a first wave whose transaction is held open until three more batches' waves wait for the turn
    entered, go = threading.Event(), threading.Event()

    def hold_the_first(conn: Any) -> None:
        if not entered.is_set():
            entered.set()
            assert go.wait(10)

    sa_event.listen(engine, "begin", hold_the_first)
    got: dict[int, claims.Batch] = {}

    def record(n: int) -> None:
        got[n] = recorder.record(claims.Wave([delivered(c) for c in batches[n]], CHAIN), WAREHOUSE, at(2 + n))

    try:
        first = threading.Thread(target=record, args=(0,))
        first.start()
        assert entered.wait(10)
        rest = [threading.Thread(target=record, args=(n,)) for n in (1, 2, 3)]
        for t in rest:
            t.start()
        wait_for(lambda: len(recorder._waiting) == 3, timeout=10)
        go.set()
        for t in [first, *rest]:
            t.join(10)
    finally:
        go.set()
        sa_event.remove(engine, "begin", hold_the_first)
    # then the three were recorded together in the next transaction: two in all, not four
    assert recorder.transactions == 2
    # and each batch got its own streams' next deliveries
    for n, batch in enumerate(batches):
        assert sorted(c.dossier_code for c in got[n].claimed) == sorted(c.dossier_code for c in batch)
        assert all(c.sequence == 2 for c in got[n].claimed)


def test_a_wave_that_fails_a_shared_transaction_fails_alone(engine: Engine) -> None:
    from tasks.recorder import WaveRecorder, _Waiting

    good, bad = _heads_in_batches(engine, 6, 6)
    unwritable = [(c, Outcome(status=Status.DELIVERED, attempt_outcome="delivered", duration_ms=float("nan"),
                              status_code=200)) for c in bad]  # its audit entry cannot be written (no NaN in JSON)
    recorder = WaveRecorder(engine)
    # when the two waves come to one transaction (as two batches' waiting together do)
    waiting = [_Waiting(claims.Wave([delivered(c) for c in good], CHAIN), WAREHOUSE, at(2)),
               _Waiting(claims.Wave(unwritable, CHAIN), WAREHOUSE, at(2))]
    recorder._record(waiting)
    # then the good one is recorded, and claimed its successors, and only the bad one has an error
    assert waiting[0].error is None and waiting[0].batch is not None and len(waiting[0].batch.claimed) == 6
    assert isinstance(waiting[1].error, ValueError) and waiting[1].batch is None
    with engine.connect() as conn:
        status = dict(conn.execute(select(deliveries.c.id, deliveries.c.status)).all())
    assert {status[c.delivery_id] for c in good} == {Status.DELIVERED}
    assert {status[c.delivery_id] for c in bad} == {Status.IN_FLIGHT}  # left to its lease, as any failed record


# --------------------------------------------------------------------------- protection and doorbells


@pytest.fixture
def state(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"tb{uuid.uuid4().hex[:6]}"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_a_batch_takes_the_permits_there_are_and_gives_back_what_it_did_not_use(
    state: tuple[redis.Redis, str],
) -> None:
    protection = Protection(state[0], state[1])
    limit = RateLimit(per_second=1, burst=10)
    policy = BreakerPolicy()
    assert protection.before_batch("zalo", limit, 4)[1:] == (4, 0.0)
    _, taken, _ = protection.before_batch("zalo", limit, 100)
    assert taken == 6  # what was left of the burst
    _, none, wait = protection.before_batch("zalo", limit, 100)
    assert none == 0 and 0 < wait <= 1.0
    protection.after_batch("zalo", 1, 0, policy, limit=limit, unused_permits=5)
    assert protection.before_batch("zalo", limit, 100)[1] == 5


def test_the_breaker_counts_a_batch_of_failures_and_any_success_resets_it(state: tuple[redis.Redis, str]) -> None:
    protection = Protection(state[0], state[1])
    policy = BreakerPolicy(failure_threshold=5, open_for=30)
    assert protection.after_batch("portal", 0, 3, policy) is False
    assert protection.after_batch("portal", 1, 40, policy) is False  # the service answers: not broken
    assert protection.state("portal")["consecutive_failures"] == 0
    assert protection.after_batch("portal", 0, 4, policy) is False
    assert protection.after_batch("portal", 0, 1, policy) is True
    assert protection.state("portal")["open"] is True


def test_a_doorbell_rings_once_until_a_drain_answers_it(relay_config: RelayConfig, redis_url: str) -> None:
    broker = redis.Redis.from_url(redis_url)
    routing = load_routing(relay_config.routing_file)
    bells = Doorbells(broker, f"tb{uuid.uuid4().hex[:6]}", routing)
    queue = routing.destinations["warehouse"].queue
    before = broker.llen(queue)
    bells.ring(["warehouse"])
    bells.ring(["warehouse"])
    assert broker.llen(queue) == before + 1
    bells.answer("warehouse")
    bells.ring(["warehouse"])
    assert broker.llen(queue) == before + 2
    assert all(DRAIN_TASK.encode() in m for m in broker.lrange(queue, 0, 1))
    broker.delete(queue)


def test_the_sweeper_rings_a_destination_with_due_work_once_a_lost_ring_lapses(relay_config: RelayConfig) -> None:
    # given due deliveries whose doorbell rang, its drain lost with a worker that died (the flag still set)
    rt = get_runtime()
    assert rt.redis is not None
    queue = rt.routing.destinations["warehouse"].queue
    intake.ingest_and_route(rt.engine, [make_event(1)], datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    rt.redis.delete(queue)
    rt.redis.set(f"{rt.settings.redis_prefix}:doorbell:warehouse", "1", px=300)
    # when the sweeper runs while the flag is set, and again once it lapsed
    run_sweep(rt)
    rang_while_set = rt.redis.llen(queue)
    time.sleep(0.4)
    summary = run_sweep(rt)
    # then the first sweep left the ring to the drain it stands for, and the second rang the warehouse
    assert rang_while_set == 0
    assert rt.redis.llen(queue) == 1 and DRAIN_TASK.encode() in rt.redis.lindex(queue, 0)
    assert summary["enqueued"] == 0  # not one message per delivery: the delivery itself was queued recently
    rt.redis.delete(queue)


# --------------------------------------------------------------------------- a drain end to end


def test_one_drain_delivers_a_day_in_order_once_each(relay_config: RelayConfig) -> None:
    # given a morning of the ward desk: 30 dossiers, several events each, routed to the warehouse
    rt = get_runtime()
    day = generate_day(30, day=date(2024, 3, 15), seed=33)
    now = datetime.now(UTC)
    for i in range(0, len(day), 50):
        intake.ingest_and_route(rt.engine, day[i:i + 50], now, rt.routing.destinations_for, rt.rules)
    # when one drain runs until nothing is due
    attempted = run_drain("warehouse", runtime=rt)
    # then every delivery went once, each dossier's in sequence order, in batches
    stats = httpx.get(f"{relay_config.sandbox.url}/_admin/stats", timeout=5).json()["warehouse"]
    with rt.engine.connect() as conn:
        statuses = Counter(conn.execute(select(deliveries.c.status).where(deliveries.c.destination == "warehouse"))
                           .scalars())
    warehouse = sum(1 for e in day if "warehouse" in rt.routing.destinations_for(e))
    assert statuses == {Status.DELIVERED: warehouse}
    assert attempted == warehouse
    assert stats["distinct"] == warehouse and stats["duplicates"] == 0
    effects = httpx.get(f"{relay_config.sandbox.url}/_admin/received", params={"subscriber": "warehouse"},
                        timeout=5).json()
    seen: dict[str, list[int]] = {}
    for effect in effects:
        seen.setdefault(effect["dossier_code"], []).append(effect["sequence"])
    assert all(s == sorted(s) for s in seen.values())
    assert max(len(s) for s in seen.values()) > 1


# --------------------------------------------------------------------------- leases


def test_a_held_lease_is_renewed_and_a_dropped_one_lapses_for_the_sweeper(engine: Engine) -> None:
    stream_of_each(engine, 1)
    lease = 1.5
    batch = claims.claim_many(engine, "warehouse", WAREHOUSE, datetime.now(UTC), lease, GAP, limit=3)
    kept, dropped, hung = batch.claimed
    worker = LeaseKeeper(engine, lease, give_up_after=60)
    stuck = LeaseKeeper(engine, lease, give_up_after=1.2)  # its attempt outlives its deadline and a lease
    clock = lambda: datetime.now(UTC)  # noqa: E731
    try:
        with worker.hold([kept], clock), stuck.hold([hung], clock):
            # when twice the lease passes while ``kept`` and ``hung`` run (``dropped``: its worker died at the claim)
            time.sleep(2 * lease)
            result = sweep(engine, clock(), 60, 100)
            with engine.connect() as conn:
                rows = conn.execute(select(deliveries.c.id, deliveries.c.status).where(
                    deliveries.c.id.in_([kept.delivery_id, dropped.delivery_id, hung.delivery_id])))
                states = {row.id: row.status for row in rows}
    finally:
        worker.close()
        stuck.close()
    # then only the dead worker's delivery and the one past its deadline were rescued
    assert result.leases_expired == 2
    assert states == {kept.delivery_id: Status.IN_FLIGHT, dropped.delivery_id: Status.RETRYING,
                      hung.delivery_id: Status.RETRYING}
    # and the renewed attempt still ends as its own
    claims.finish_many(engine, [delivered(kept)], WAREHOUSE, clock())
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.status).where(deliveries.c.id == kept.delivery_id)).scalar() \
            == Status.DELIVERED


def test_a_worker_stopping_gives_its_leases_back_and_the_next_sweep_rescues_them(relay_config: RelayConfig) -> None:
    from celery.signals import worker_shutdown

    # given a worker's runtime holding the leases of two attempts (15 s each) while their calls run
    rt = get_runtime()
    stream_of_each(rt.engine, 1)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    *running, late = claims.claim_many(rt.engine, "warehouse", WAREHOUSE, clock(), 15.0, GAP, limit=3).claimed
    with rt.leases.hold(running, clock) as also_hold:
        # when Celery stops the worker (its worker_shutdown signal) before they end
        worker_shutdown.send(sender=None)
        also_hold([late])  # (a batch's chain claiming one more as the worker stops)
        # then the sweeper's next run finds those two due at once, not 15 s later; the one claimed as the worker
        # stopped keeps the lease it was given; and nothing is renewed any more
        result = sweep(rt.engine, clock(), 60, 100)
        assert rt.leases.renew() == 0
    assert result.leases_expired == 2
    with rt.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.id, deliveries.c.status).where(
            deliveries.c.id.in_([c.delivery_id for c in (*running, late)]))).all())
    assert states == {running[0].delivery_id: Status.RETRYING, running[1].delivery_id: Status.RETRYING,
                      late.delivery_id: Status.IN_FLIGHT}
    # and a late end of one of them is not counted (the delivery is no longer that attempt's)
    claims.finish_many(rt.engine, [delivered(running[0])], WAREHOUSE, clock())
    with rt.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.status).where(
            deliveries.c.id == running[0].delivery_id)).scalar() == Status.RETRYING


# --------------------------------------------------------------------------- waves


class HeldReceiver:
    """A subscriber that answers at once (or after ``latency`` seconds), except for one dossier, whose requests it
    holds until released."""

    def __init__(self, held_dossier: str, latency: float = 0.0) -> None:
        self.held_dossier = held_dossier
        self.latency = latency
        self.release = threading.Event()
        self.received: list[tuple[str, int]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/subscribers/{name}/events")
        async def receive(name: str, request: Request) -> dict[str, str]:
            body = await request.json()
            if body["dossier_code"] == self.held_dossier:
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
            await asyncio.sleep(self.latency)
            self.received.append((body["dossier_code"], body["sequence"]))
            return {"receipt_id": f"{body['dossier_code']}/{body['sequence']}"}

        return app


def _routed(rt: Any, due: list[dict[str, Any]]) -> tuple[dict[tuple[str, int], int], Callable[[tuple[str, int]], str]]:
    """``due`` stored and routed: each delivery's id by (dossier, sequence), and a reader of one's status."""
    intake.ingest_and_route(rt.engine, due, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    with rt.engine.connect() as conn:
        ids = {(d.dossier_code, d.sequence): d.id for d in conn.execute(select(deliveries))}

    def status(key: tuple[str, int]) -> str:
        with rt.engine.connect() as conn:
            return str(conn.execute(select(deliveries.c.status).where(deliveries.c.id == ids[key])).scalar())

    return ids, status


def test_a_batch_records_its_ends_as_they_come_so_a_stream_goes_on_while_a_slow_call_runs(
    db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a subscriber that holds dossier B's answer, and dossier A's two events and B's first due for it
    fast, slow = DOSSIERS[0], DOSSIERS[1]
    receiver = HeldReceiver(slow)
    with run_asgi(receiver.app()) as url:
        configure_relay(db_url, redis_url, Sandbox(url, {"warehouse": new_secret()}), tmp_path, monkeypatch)
        rt = get_runtime()
        try:
            assert rt.redis is not None
            queue = rt.routing.destinations["warehouse"].queue
            due = [make_event(1, dossier=fast), make_event(1, dossier=slow), make_event(2, dossier=fast)]
            ids, status = _routed(rt, due)
            rt.redis.delete(queue)

            # when a batch takes both heads (A1 and B1) and B's call hangs
            first = threading.Thread(target=run_batch, args=("warehouse",), kwargs={"runtime": rt})
            first.start()
            try:
                # then A1 is recorded delivered while B1 is still in flight, and the doorbell rang for A2
                wait_for(lambda: status((fast, 1)) == Status.DELIVERED, 5.0, 0.01, "A1 recorded while B1 runs")
                assert status((slow, 1)) == Status.IN_FLIGHT
                # (rung just after the wave's commit: the status above may be read between the two)
                wait_for(lambda: rt.redis.llen(queue) == 1, 5.0, 0.01, "the doorbell rung for A2")
                assert DRAIN_TASK.encode() in rt.redis.lindex(queue, 0)
                # and the next batch delivers A2 before B1 has ended
                second = run_batch("warehouse", runtime=rt)
                assert second.states == {ids[(fast, 2)]: Status.DELIVERED}
                assert status((slow, 1)) == Status.IN_FLIGHT
            finally:
                receiver.release.set()
                first.join(timeout=10)
            # and B1 ends delivered too, each event received once
            assert status((slow, 1)) == Status.DELIVERED
            assert sorted(receiver.received) == sorted([(fast, 1), (fast, 2), (slow, 1)])
            with rt.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(attempts)).scalar() == 3
            rt.redis.delete(queue)
        finally:
            reset_runtime()


def test_a_batch_claims_a_streams_next_delivery_as_it_records_its_predecessor_and_sends_it_at_once(
    db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a subscriber that answers in 80 ms (a call slow enough for a batch to chain a stream's deliveries), but
    # holds dossier B's answer, and dossier A's three events and B's first due for it
    fast, slow = DOSSIERS[0], DOSSIERS[1]
    receiver = HeldReceiver(slow, latency=0.08)
    with run_asgi(receiver.app()) as url:
        configure_relay(db_url, redis_url, Sandbox(url, {"warehouse": new_secret()}), tmp_path, monkeypatch)
        rt = get_runtime()
        try:
            assert rt.redis is not None
            queue = rt.routing.destinations["warehouse"].queue
            due = [make_event(1, dossier=fast), make_event(1, dossier=slow), make_event(2, dossier=fast),
                   make_event(3, dossier=fast)]
            ids, status = _routed(rt, due)
            rt.redis.delete(queue)

            # when a batch takes both heads (A1 and B1) and B's call hangs
            reports: list[Any] = []
            first = threading.Thread(target=lambda: reports.append(run_batch("warehouse", runtime=rt)))
            first.start()
            try:
                # then A2 and A3 are delivered by that same batch, one after the other, while B1 is in flight,
                # without a doorbell: each claimed in the transaction that recorded its predecessor's end
                wait_for(lambda: status((fast, 3)) == Status.DELIVERED, 5.0, 0.01, "A3 delivered while B1 runs")
                assert status((slow, 1)) == Status.IN_FLIGHT
                assert rt.redis.llen(queue) == 0
            finally:
                receiver.release.set()
                first.join(timeout=10)
            # and the batch reports all four, B1 delivered too, each event received once, A's in order
            assert reports[0].states == dict.fromkeys(ids.values(), Status.DELIVERED)
            assert reports[0].attempted == 4
            assert [seq for dossier, seq in receiver.received if dossier == fast] == [1, 2, 3]
            assert sorted(receiver.received) == sorted(ids)
            with rt.engine.connect() as conn:
                rows = conn.execute(select(attempts.c.delivery_id, attempts.c.number, attempts.c.outcome)).all()
            assert sorted(rows) == sorted((i, 1, "delivered") for i in ids.values())
        finally:
            reset_runtime()


class _Gated(Deliverer[Any]):
    """Answers at once, except for the events of one dossier, which wait for ``open``."""

    def __init__(self, gated: str) -> None:
        self.gated = gated
        self.open = threading.Event()

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        if event.dossier_code == self.gated:
            self.open.wait(10)
        return ConnectorResult(status_code=200)


class _Runtime:
    """What a batch's attempts ask of the runtime: its settings and its attempt threads."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from config.settings import Settings

        self.settings = Settings()
        self.pool = ThreadPoolExecutor(8)

    def attempt_pool(self) -> Any:
        return self.pool


def _claims(dossier: str, n: int) -> list[Claimed]:
    return [Claimed(delivery_id=k, destination="warehouse", attempt_id=k, attempt_number=1, idempotency_key=str(k),
                    event_id=f"e{k}", event=parse_event(make_event(k, dossier=dossier)), received_at=T0,
                    deadline_at=T0, budget_used=1, started_at=T0, dossier_code=dossier)
            for k in range(1, n + 1)]


def test_a_wave_closes_once_what_was_started_with_its_attempts_has_ended_not_at_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks import delivery

    # given a wave window far longer than the calls, and a batch's attempts started in two sets: three of dossier A
    # that answer at once, then (as a chain's successors are) two of dossier B held until released
    monkeypatch.setattr(delivery, "WAVE_SECONDS", 5.0)
    rt, deliverer = _Runtime(), _Gated(DOSSIERS[1])
    attempts = delivery._Attempts(rt, deliverer, "warehouse")  # type: ignore[arg-type]
    try:
        attempts.start(_claims(DOSSIERS[0], 3))
        attempts.start(_claims(DOSSIERS[1], 2))
        waves = attempts.waves()
        # when the first wave is taken
        started = time.monotonic()
        first, more = next(waves)
        # then it holds A's three, closed as the last of them ended, not 5 s after the first, B's still running
        assert time.monotonic() - started < 2.0
        assert sorted(one.claimed.dossier_code for one in first) == [DOSSIERS[0]] * 3 and more
        # and B's two come in the next, once they end, and nothing is left after them
        deliverer.open.set()
        second, more = next(waves)
        assert [one.claimed.dossier_code for one in second] == [DOSSIERS[1]] * 2 and not more
        assert next(waves, None) is None
    finally:
        deliverer.open.set()
        rt.pool.shutdown()


class _EndsBeforeFailing(Deliverer[Any]):
    """A batch call that reports the first half of its attempts as they end, then fails (a bug in it)."""

    sent: ClassVar[list[str]] = []

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        self.sent.append(event.event_id)
        return ConnectorResult(status_code=200, external_ref="single")

    def deliver_batch(self, items: Sequence[tuple[Event, str]], deadline: float,
                      on_end: AttemptEnded | None = None) -> list[tuple[ConnectorResult | DeliveryError, float]]:
        assert on_end is not None
        for index, (event, _) in enumerate(items[: len(items) // 2]):
            self.sent.append(event.event_id)
            on_end(index, ConnectorResult(status_code=200, external_ref="batch"), 1.0)
        raise RuntimeError("the batch path broke half-way")


class _EndsOnlyInItsList(_EndsBeforeFailing):
    """A batch call written before the engine reported ends as they come: it never calls ``on_end``."""

    def deliver_batch(self, items: Sequence[tuple[Event, str]], deadline: float,
                      on_end: AttemptEnded | None = None) -> list[tuple[ConnectorResult | DeliveryError, float]]:
        self.sent.extend(event.event_id for event, _ in items)
        return [(ConnectorResult(status_code=200, external_ref="list"), 1.0) for _ in items]


@pytest.mark.parametrize("kind", [_EndsBeforeFailing, _EndsOnlyInItsList])
def test_each_attempt_of_a_batch_is_sent_and_recorded_once_however_its_batch_call_reports(
    kind: type[_EndsBeforeFailing], relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given ten dossiers' first events due, and a deliverer whose batch call fails half-way or reports only at the end
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, [make_event(1, dossier=d) for d in DOSSIERS[:10]], datetime.now(UTC),
                            rt.routing.destinations_for, rt.rules)
    kind.sent = []
    deliverer = kind(rt.routing.destinations["warehouse"], None, rt)
    monkeypatch.setattr(rt, "deliverer", lambda name: deliverer)
    # when one batch takes them
    report = run_batch("warehouse", runtime=rt)
    # then each was sent once (what the batch call reported is not sent again on its own) and recorded delivered
    assert report.attempted == 10 and set(report.states.values()) == {Status.DELIVERED}
    with rt.engine.connect() as conn:
        rows = conn.execute(select(events.c.event_id, deliveries.c.external_ref)
                            .join(events, events.c.id == deliveries.c.event_pk)
                            .where(deliveries.c.destination == "warehouse")).all()
    assert sorted(kind.sent) == sorted(r.event_id for r in rows)
    refs = Counter(r.external_ref for r in rows)
    assert refs == ({"batch": 5, "single": 5} if kind is _EndsBeforeFailing else {"list": 10})


class _NeverEnds(_EndsBeforeFailing):
    """A batch call that outlives its deadline and reports nothing (a deliverer that ignores the deadline)."""

    def deliver_batch(self, items: Sequence[tuple[Event, str]], deadline: float,
                      on_end: AttemptEnded | None = None) -> list[tuple[ConnectorResult | DeliveryError, float]]:
        time.sleep(deadline * 6)
        return [(ConnectorResult(status_code=200), 1.0) for _ in items]


def test_a_batch_whose_calls_outlive_their_deadline_records_them_retryable_and_goes_on(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, [make_event(1, dossier=d) for d in DOSSIERS[:3]], datetime.now(UTC),
                            rt.routing.destinations_for, rt.rules)
    monkeypatch.setattr(rt.settings, "attempt_deadline_seconds", 0.3)
    deliverer = _NeverEnds(rt.routing.destinations["warehouse"], None, rt)
    monkeypatch.setattr(rt, "deliverer", lambda name: deliverer)
    started = time.monotonic()
    report = run_batch("warehouse", runtime=rt)
    # then the batch gave up once the deadline and its grace had passed, and the attempts are due again
    assert time.monotonic() - started < 1.5
    assert report.attempted == 3 and set(report.states.values()) == {Status.RETRYING}
    with rt.engine.connect() as conn:
        errors = set(conn.execute(select(attempts.c.error)).scalars())
    assert len(errors) == 1 and "did not end by its deadline" in next(iter(errors))


# --------------------------------------------------------------------------- the claim's indexes


def test_a_claim_walks_the_open_deliveries_not_the_destinations_history(engine: Engine) -> None:
    # given a destination with delivered history and a stream head due
    stream_of_each(engine, 3)
    first = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=100)
    claims.finish_many(engine, [delivered(c) for c in first.claimed], WAREHOUSE, at(2))
    # when a drain claims, its statements captured
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM deliveries" in statement:
            seen.append((statement, parameters))

    sa_event.listen(engine, "before_cursor_execute", grab)
    try:
        again = claims.claim_many(engine, "warehouse", WAREHOUSE, at(3), LEASE, GAP, limit=100)
    finally:
        sa_event.remove(engine, "before_cursor_execute", grab)
    assert len(again.claimed) == len(DOSSIERS)
    statement, parameters = seen[0]  # the one that chooses (SQLite) or finds the candidates (PostgreSQL)
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        else:
            cursor.execute("SET enable_seqscan = off")  # a table this small is read whole whatever its indexes
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        conn.rollback()
    # then it walks the destination's open deliveries (SQLite, in id order) and each stream's open ones
    if engine.dialect.name == "sqlite":
        assert "USING INDEX ix_deliveries_open (destination=?)" in plan, plan
    assert "ix_deliveries_open_order" in plan, plan


# --------------------------------------------------------------------------- the planner's statistics


def test_the_sweep_analyzes_the_ledger_once_it_changed_past_autovacuums_threshold(engine: Engine) -> None:
    from store import statistics

    # given a ledger whose deliveries changed by more than 50 rows and a tenth since they were last analyzed
    stream_of_each(engine, 10)
    if engine.dialect.name != "postgresql":  # SQLite's claim queries name their index: nothing to gather
        assert statistics.stale_tables(engine) == [] and statistics.keep_fresh(engine, True) == []
        return
    engine.dispose()  # the connections' backends end, and report their changes
    wait_for(lambda: "deliveries" in statistics.stale_tables(engine), timeout=10)
    # when the sweep checks, with the upkeep off, then on
    statistics._checked = -float("inf")
    assert statistics.keep_fresh(engine, False) == []
    analyzed = statistics.keep_fresh(engine, True)
    # then the stale tables are analyzed, and the next check, within CHECK_SECONDS, asks nothing
    assert "deliveries" in analyzed and "events" in analyzed
    with engine.connect() as conn:
        last = conn.execute(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'deliveries'"
                                 " AND schemaname = current_schema()")).scalar_one()
    assert last is not None
    assert "deliveries" not in statistics.stale_tables(engine)
    assert statistics.keep_fresh(engine, True) == []
