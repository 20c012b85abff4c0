"""A destination's pauses, shared by every worker in real Redis (and this process's in memory mode)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.pauses import WHOLE, Pause, PauseStore


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[PauseStore]:
    client = redis.Redis.from_url(redis_url) if request.param == "redis" else None
    yield PauseStore(client, f"p{uuid.uuid4().hex[:8]}")


def balance(since: float | None = None, until: float | None = None, scope: str = WHOLE) -> Pause:
    return Pause("balance", "Zalo ZNS error -115 — Out of quota", time.time() if since is None else since, until,
                 scope)


def test_a_pause_is_kept_once_with_its_first_since_and_lifted_once(store: PauseStore) -> None:
    # given two workers meeting the same condition a second apart
    first, new = store.pause("zalo", balance(since=1000.0))
    again, new_again = store.pause("zalo", balance(since=1001.0))
    # then the destination is paused once, since the first
    assert (new, new_again) == (True, False) and again == first
    assert store.get("zalo") == {WHOLE: first}
    assert store.counts(["zalo", "sms"]) == {("zalo", "balance"): 1}
    # when two workers lift it, only one of them ended it (the one that releases the held deliveries)
    assert store.lift("zalo") == [first]
    assert store.lift("zalo") == []
    assert store.get("zalo") == {} and store.counts(["zalo"]) == {}


def test_of_workers_meeting_a_condition_at_once_one_records_it(store: PauseStore) -> None:
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: store.pause("zalo", balance(since=1000.0 + n)), range(32)))
    assert [new for _, new in results].count(True) == 1
    assert len({pause for pause, _ in results}) == 1  # every one of them was told the same pause


def test_template_pauses_are_counted_per_condition_and_lifted_by_scope(store: PauseStore) -> None:
    for template in ("300001", "300003"):
        store.pause("zalo", Pause("template_disabled", "-146", time.time(), scope=template))
    store.pause("zalo", balance())

    assert store.counts(["zalo"]) == {("zalo", "template_disabled"): 2, ("zalo", "balance"): 1}
    assert [p.scope for p in store.lift("zalo", ["300003"])] == ["300003"]
    assert set(store.get("zalo")) == {WHOLE, "300001"}


def test_a_pause_with_an_end_ends_by_itself_and_a_later_end_extends_it(store: PauseStore) -> None:
    now = time.time()
    store.pause("zalo", Pause("oa_daily_quota", "-144", now, until=now + 0.3))
    store.pause("zalo", Pause("oa_daily_quota", "-144", now + 0.1, until=now + 0.5))
    assert store.get("zalo")[WHOLE].until == now + 0.5 and store.get("zalo")[WHOLE].since == now
    assert store.get("zalo", now=now + 0.6) == {}
    time.sleep(0.6)
    assert store.get("zalo") == {} and store.counts(["zalo"]) == {}


def test_one_probe_per_interval_across_threads(store: PauseStore) -> None:
    # (an interval far longer than the 64 probes take on a loaded machine: a second grant is then a race lost)
    with ThreadPoolExecutor(16) as pool:
        granted = list(pool.map(lambda _: store.probe("zalo", WHOLE, 30), range(64)))
    assert granted.count(True) == 1
    assert not store.probe("zalo", WHOLE, 30)
    assert store.probe("zalo", "300003", 30)  # another scope has its own slot
    # and a slot is free again once its interval is over
    assert store.probe("zalo", "300004", 1) and not store.probe("zalo", "300004", 1)
    time.sleep(1.1)
    assert store.probe("zalo", "300004", 1)


def test_a_turn_given_back_is_free_at_once_but_never_one_that_another_caller_took_since(store: PauseStore) -> None:
    token = store.take_turn("zalo", WHOLE, 30)
    assert token is not None and store.take_turn("zalo", WHOLE, 30) is None
    store.give_back("zalo", WHOLE, token)
    again = store.take_turn("zalo", WHOLE, 30)
    assert again is not None
    # a caller giving back a turn that ended (and was taken by another) leaves the other's alone
    store.give_back("zalo", WHOLE, token)
    assert store.take_turn("zalo", WHOLE, 30) is None
    store.give_back("zalo", WHOLE, again)
    assert store.probe("zalo", WHOLE, 30)


def test_a_redis_that_does_not_answer_leaves_this_process_its_own_pauses() -> None:
    down = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.2, socket_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    store = PauseStore(down, f"p{uuid.uuid4().hex[:8]}")
    pause, new = store.pause("zalo", balance())
    assert new and store.get("zalo") == {WHOLE: pause}
    assert store.probe("zalo", WHOLE, 10) and not store.probe("zalo", WHOLE, 10)
    assert store.lift("zalo") == []  # nothing ended in Redis; this process forgets its copy
    assert store.get("zalo") == {}
