"""The batched engine: claims of many deliveries at once, their ends recorded together, doorbells, and the
breaker and rate limit counted per batch — on both ledgers, with real Redis, against the real sandbox."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from config.routing import BreakerPolicy, RateLimit, load_routing
from sandbox.workload import generate_day
from store import deliveries as claims
from store import intake
from store.deliveries import Claimed, Outcome
from store.sweep import sweep
from store.tables import Status, attempts, deliveries
from tasks.delivery import run_drain, run_sweep
from tasks.leases import LeaseKeeper
from tasks.protection import Protection
from tasks.queue import DRAIN_TASK, Doorbells
from tasks.runtime import get_runtime
from tests.conftest import RelayConfig
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
