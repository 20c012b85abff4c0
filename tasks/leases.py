"""The leases' heartbeat: a claimed delivery's lease renewed while its attempt runs.

A claim leases its deliveries for ``delivery_lease_seconds`` (15 s by default). While the attempts run, one
thread per process renews every held lease each third of that, in one statement, so a slow call keeps its
delivery however long it takes within the attempt's deadline (``attempt_deadline_seconds``), and a worker that
dies (SIGKILL, a lost machine) stops renewing: its deliveries are due again one lease later, when the sweeper
rescues them. An attempt that outlives its deadline by a lease (a call that ignores its timeouts) is no longer
renewed either, so the sweeper rescues that one too; its late end is then not counted (the ledger's finish only
counts an attempt while the delivery is still its own).

A worker that stops with attempts unfinished on a path that still runs its code (the stall watchdog's exit, Celery's
stop signal) gives their leases back as it goes (:meth:`LeaseKeeper.give_back`): they lapse at once, and the
sweeper's next run makes them due, not a lease later. A process that dies at once (SIGKILL) leaves them to lapse.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from store.deliveries import Claimed, renew_leases

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]


class LeaseKeeper:
    """Renews the leases of the attempts this process is running (:meth:`hold`), from one daemon thread."""

    def __init__(self, engine: Engine, lease_seconds: float, give_up_after: float) -> None:
        self._engine = engine
        self._lease = lease_seconds
        self._give_up_after = give_up_after  # seconds after the claim: the attempt's deadline and a lease
        self._held: dict[int, tuple[tuple[int, int], float, Clock]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._given_back = False  # the process is going away: nothing more is held, nor renewed

    @property
    def every(self) -> float:
        """Seconds between renewals: a third of a lease, so that two may fail before it lapses."""
        return self._lease / 3

    @contextlib.contextmanager
    def hold(self, claimed: Sequence[Claimed], clock: Clock) -> Iterator[Callable[[Sequence[Claimed]], None]]:
        """Keep the leases of ``claimed`` renewed (``clock``: the batch's, which set them) until the block ends; the
        block is given a function that adds more (a stream's next delivery, claimed while the batch runs), each
        renewed from when it is added until the block ends."""
        held: list[int] = []

        def add(more: Sequence[Claimed]) -> None:
            until = time.monotonic() + self._give_up_after
            with self._lock:
                if self._given_back:  # claimed as the process stops: its leases lapse as leases do
                    return
                for c in more:
                    self._held[c.attempt_id] = ((c.delivery_id, c.attempt_number), until, clock)
                    held.append(c.attempt_id)
                self._start()

        add(claimed)
        try:
            yield add
        finally:
            with self._lock:
                for attempt in held:
                    self._held.pop(attempt, None)

    def renew(self) -> int:
        """One renewal of every lease held (what the thread does every :attr:`every` seconds); the number renewed."""
        now = time.monotonic()
        with self._lock:
            expired = [attempt for attempt, (_, until, _) in self._held.items() if until <= now]
            for attempt in expired:
                held = self._held.pop(attempt)
                log.warning("lease.given_up", delivery_id=held[0][0], attempt=held[0][1],
                            reason="the attempt outlived its deadline: the sweeper rescues it")
            by_clock = self._by_clock()
        renewed = 0
        for clock, keys in by_clock.items():
            renewed += renew_leases(self._engine, keys, clock() + timedelta(seconds=self._lease))
        return renewed

    def give_back(self) -> int:
        """Lapse every lease held now, as of its batch's clock, and renew none from now on (the process is going
        away, its attempts unfinished): the sweeper's next run finds them due. A late end of one of those attempts
        is still recorded if it comes before that run (the delivery is still its own until then); after, it is not
        counted, as after any lost lease. The number of leases still theirs, lapsed."""
        with self._lock:
            self._given_back = True
            by_clock = self._by_clock()
            self._held.clear()
        self._stop.set()
        return sum(renew_leases(self._engine, keys, clock()) for clock, keys in by_clock.items())

    def _by_clock(self) -> dict[Clock, list[tuple[int, int]]]:
        """The leases held, ``(delivery_id, attempt_number)`` each, by the clock of the batch that set them (under
        the lock)."""
        by_clock: dict[Clock, list[tuple[int, int]]] = {}
        for key, _, clock in self._held.values():
            by_clock.setdefault(clock, []).append(key)
        return by_clock

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.renew()
            except SQLAlchemyError as exc:  # the ledger is away: the next beat tries again, the lease has slack
                log.warning("lease.renew_failed", error=str(exc).splitlines()[0])

    def close(self) -> None:
        self._stop.set()
