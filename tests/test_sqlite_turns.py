"""SQLite's writers take turns across processes: a process writing back to back does not starve another one."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from store import db
from store.db import make_engine

# A process that writes through the relay's engine for ``seconds``: ``threads`` threads, each transaction holding
# the database for ``hold`` seconds of CPU (the intake's insert of a batch), ``rest`` seconds between two of a
# thread's transactions; the number of its transactions on stdout.
WRITER = textwrap.dedent("""
    import sys, threading, time
    from sqlalchemy import text
    from store.db import make_engine
    url, threads, hold, rest, seconds = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
    engine = make_engine(url, pool_size=threads)
    print("ready", flush=True)
    sys.stdin.readline()  # both start together
    counts = [0] * threads
    def write(n):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t (who) VALUES (:n)"), {"n": n})
                started = time.perf_counter()
                while time.perf_counter() - started < hold:
                    pass
            counts[n] += 1
            time.sleep(rest)
    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in workers: w.start()
    for w in workers: w.join()
    print(sum(counts), flush=True)
""")


def _writer(url: str, threads: int, hold: float, rest: float, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url, str(threads), str(hold), str(rest), str(seconds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_process_writing_back_to_back_leaves_another_its_turns(tmp_path: Path) -> None:
    # given a ledger file, a process whose 8 threads write back to back (5 ms of work each, like an intake burst)
    # and another whose one thread writes every millisecond (a drain's claims and finishes, 5 ms each)
    url = f"sqlite:///{tmp_path}/ledger.db"
    with make_engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who INTEGER)"))
    busy = _writer(url, 8, 0.005, 0.0, 3.0)
    other = _writer(url, 1, 0.005, 0.001, 3.0)
    # when both run for 3 s
    for proc in (busy, other):
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    busy_out, _ = busy.communicate(timeout=60)
    other_out, _ = other.communicate(timeout=60)
    # then the other process had a fair part of the turns (without turns: 16 of 509; in turns: 239 of 485)
    mine, theirs = int(other_out), int(busy_out)
    assert mine >= 0.15 * (mine + theirs), (mine, theirs)
    assert theirs >= 0.15 * (mine + theirs), (mine, theirs)


def test_a_turn_held_too_long_by_another_process_is_not_waited_for_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a ledger whose turn file another holder keeps locked (a process stopped inside its turn) ...
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    monkeypatch.setattr(db, "TURN_WAIT_SECONDS", 0.3)
    with open(f"{tmp_path}/ledger.db-writer.lock", "ab") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        # when a transaction begins
        started = time.monotonic()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t DEFAULT VALUES"))
        waited = time.monotonic() - started
    # then it waited for the turn no longer than TURN_WAIT_SECONDS, then wrote (SQLite's own lock was free)
    assert 0.3 <= waited < 2.0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_threads_of_one_process_wait_for_each_other_and_a_failed_begin_leaves_no_turn_held(tmp_path: Path) -> None:
    # given two engines of one process on one file (the runtime's and a command's)
    url = f"sqlite:///{tmp_path}/ledger.db"
    first, second = make_engine(url), make_engine(url)
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, at REAL)"))
    order: list[str] = []
    inside = threading.Event()

    def other_thread() -> None:
        inside.wait(5)
        with second.begin() as conn:  # waits for the first engine's transaction: one turn per file
            order.append("second")
            conn.execute(text("INSERT INTO t (at) VALUES (2)"))

    thread = threading.Thread(target=other_thread)
    thread.start()
    # when one thread holds a transaction of the first engine while another begins on the second
    with first.begin() as conn:
        inside.set()
        time.sleep(0.3)
        order.append("first")
        conn.execute(text("INSERT INTO t (at) VALUES (1)"))
    thread.join(10)
    # then the second waited for the first, in this process's queue
    assert order == ["first", "second"]
    # and a transaction whose BEGIN fails (a database that cannot be opened) holds no turn afterwards
    broken = make_engine(f"sqlite:///{tmp_path}/not-a-db.db")
    Path(f"{tmp_path}/not-a-db.db").write_bytes(b"this is not a database file" * 100)
    with pytest.raises(DatabaseError), broken.begin() as conn:
        conn.execute(text("SELECT 1"))
    with first.begin() as conn:  # this thread begins again at once
        conn.execute(text("INSERT INTO t (at) VALUES (3)"))
