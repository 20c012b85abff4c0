"""A spent Zalo balance stays probed when a hold races the probe turn and the first delivery it finds due is one no
claim can take (behind an open earlier sequence of its stream).

The worker-day test (``tests/test_zalo_flow.py``) met this under load: the probe's own retry was deferred to the
recheck by a hold that a drain holding the turn raced, and the one delivery the hold brought back for the next turn
was a later sequence of a dossier whose earlier one was held: every turn after it claimed nothing, and the pause went
unprobed until the recheck. Here the two drains are interleaved by hand, on a controlled clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.pauses import WHOLE
from store import deliveries as deliveries_store
from tasks.delivery import run_batch
from tasks.runtime import get_runtime
from tests.test_zalo_flow import ZaloStack, consenting, ingest, zalo_deliveries, zalo_stack

__all__ = ["zalo_stack"]  # the fixture, shared with the Zalo flow tests


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_a_hold_racing_the_probe_turn_brings_back_a_delivery_that_a_probe_can_take(
    zalo_stack: ZaloStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the ZNS balance spent, and a dossier whose second notification was routed before its first (a lower id)
    httpx.post(f"{zalo_stack.zalo}/_admin/balance", json={"messages": 0}, timeout=5).raise_for_status()
    first = consenting("dossier.received", seed=11)
    second = {**first, "event_id": f"{first['event_id']}-2", "sequence": 2}
    start = datetime.now(UTC)
    ingest([second], start)
    ingest([first], start)
    behind, head = (d.id for d in zalo_deliveries())  # behind: sequence 2, waiting for the head, sequence 1
    # and the head sent, answered -115: the destination pauses, the head's retry is due a second later
    assert run_batch("zalo", clock=at(start)).states == {head: "paused"}
    rt = get_runtime()
    assert rt.redis is not None
    rt.redis.delete(f"{rt.settings.redis_prefix}:pause:zalo:probe:{WHOLE}")  # the first turn over (a second passed)

    # when, the head's retry due, a drain takes the probe turn, and another drain that began 0.2 s after it (the
    # turn taken: a hold) defers what is due before the first one's claim
    later = start + timedelta(seconds=1.5)
    held: list[Any] = []
    claim_many = deliveries_store.claim_many

    def hold_first(*args: Any, **kwargs: Any) -> Any:
        if not held:
            held.append(run_batch("zalo", clock=at(later + timedelta(seconds=0.2))))
        return claim_many(*args, **kwargs)

    monkeypatch.setattr(deliveries_store, "claim_many", hold_first)
    assert run_batch("zalo", clock=at(later)).states == {}  # nothing left to send: the turn given back
    monkeypatch.setattr(deliveries_store, "claim_many", claim_many)
    assert held[0].held and set(held[0].states) == {behind, head}

    # then the hold brought back for the next turn the delivery a probe can take, and the next turn probes with it
    due_at = {d.id: d.next_attempt_at for d in zalo_deliveries()}
    assert due_at[head] <= later + timedelta(seconds=1.2) < due_at[behind], due_at
    assert run_batch("zalo", clock=at(later + timedelta(seconds=1.5))).states == {head: "paused"}
    assert zalo_stack.stats()["answers"]["-115"] == 2
