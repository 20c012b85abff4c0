"""One transaction at a time records a destination's waves in this process, each taking every wave then waiting.

The batches of one destination that run at once in a worker end their waves about together, and each wave's
transaction appends to the destination's audit chain, whose head row it holds from the append to its commit: on
PostgreSQL they took turns there (the wave's transaction waited 25 ms p50 for the head in the +200 ms bench, three
at once), and each paid its own statements, commit and flush. Here a wave waits for the transaction in progress,
if any; the next one records every wave waiting by then (flat combining: whichever of their threads gets the turn
does it for the others), so that under load a transaction carries several batches' waves, and alone a wave goes
at once. Each batch gets back what its own wave claimed.

A transaction that fails for several waves is tried again for each alone, so that one wave's failure is its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from store.deliveries import Batch, Wave, finish_waves
from store.streams import DestinationRules


@dataclass(eq=False, slots=True)
class _Waiting:
    wave: Wave
    rules: DestinationRules
    now: datetime
    batch: Batch | None = None
    error: BaseException | None = None


class WaveRecorder:
    """Records the waves of one destination's batches in this process (:meth:`record`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._turn = threading.Lock()  # held through a transaction
        self._mutex = threading.Lock()  # guards the waiting list
        self._waiting: list[_Waiting] = []
        self.transactions = 0  # recorded so far (for the tests)

    def record(self, wave: Wave, rules: DestinationRules, now: datetime) -> Batch:
        """Record ``wave`` (clocked at ``now``; ``rules``: the destination's), with the other waves waiting then:
        what it claimed."""
        if not wave.done:
            return Batch([], {})
        mine = _Waiting(wave, rules, now)
        with self._mutex:
            self._waiting.append(mine)
        with self._turn:
            if mine.batch is None and mine.error is None:  # no other turn took it: this one takes every wave waiting
                with self._mutex:
                    taken, self._waiting = self._waiting, []
                try:
                    self._record(taken)
                except BaseException as exc:  # this thread interrupted: the others' waves are not recorded either
                    for one in taken:
                        if one.batch is None and one.error is None:
                            one.error = exc
                    raise
        if mine.error is not None:
            raise mine.error
        assert mine.batch is not None
        return mine.batch

    def _record(self, taken: Sequence[_Waiting]) -> None:
        now = max(w.now for w in taken)  # the latest clock: no end is recorded before it was clocked
        try:
            batches = finish_waves(self._engine, [w.wave for w in taken], taken[-1].rules, now)
        except Exception as exc:
            if len(taken) == 1:
                taken[0].error = exc
                return
            for one in taken:  # whose failure it is: each alone
                self._record([one])
            return
        self.transactions += 1
        for one, batch in zip(taken, batches, strict=True):
            one.batch = batch

