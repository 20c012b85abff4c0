"""Engines and migrations.

SQLite (the default, ``./var/relay.db``) runs in WAL mode with a busy timeout, and write
transactions start with ``BEGIN IMMEDIATE`` so that several threads and processes
serialise cleanly instead of failing on lock upgrades; the processes take turns
(:class:`WriterTurn`). PostgreSQL uses psycopg 3.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, pool_size: int = 20) -> Engine:
    """A new engine for ``url`` (SQLite file directories are created)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        writer = writer_turn(parsed.database)

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            writer.acquire()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                writer.release()
                raise

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _end(conn: Any) -> None:
            writer.release()  # a rollback after a failed BEGIN holds nothing: a no-op

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class WriterTurn:
    """Whose turn it is to write one SQLite file: one transaction at a time, taken in turns by threads and processes.

    SQLite has one writer at a time, and its busy handler makes a waiting connection sleep up to 100 ms between
    tries. A process whose threads write back to back (the intake taking a burst) hands the lock from one of its
    transactions to the next within microseconds, so another process's transaction (a drain's claim) sleeps through
    every hand-over (``tests/test_sqlite_turns.py``: 16 transactions of 509 in 3 s). So the threads of a process
    queue on a lock, handed over at once, and the processes take turns on a file beside the database:

    - ``<file>-writer.lock``: whose turn it is (an exclusive ``flock``, tried every 0.2–2 ms);
    - ``<file>-writer.wait``: who waits for one (a shared ``flock`` while it tries). A process ending its turn while
      another waits lets ``COURTESY_SECONDS`` pass before it tries again, so the waiter's next try finds the turn free.

    The same test then gives the other process 239 of 485. The files only decide turns; SQLite's own lock stays the
    truth, so a process that does not take part (an old one, ``sqlite3`` by hand) is still serialised, only not in
    turns. The kernel releases a dead process's locks; a turn not had within ``TURN_WAIT_SECONDS`` (a process stopped
    inside one) is not waited for longer.
    """

    def __init__(self, database: str | None) -> None:
        self._base = f"{database}-writer" if database and database != ":memory:" else None
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._threads = threading.RLock()
        self._local = threading.local()
        self._files: tuple[IO[bytes], IO[bytes]] | None = None
        self._courtesy_until = 0.0

    def acquire(self) -> None:
        if self._pid != os.getpid():  # a forked child: its own turn, not the parent's
            self._reset()
        self._threads.acquire()
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0 and self._base is not None:
            self._take_turn()

    def release(self) -> None:
        """The end of a transaction (a no-op for a thread that holds no turn: a rollback after a failed BEGIN)."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            return
        self._local.depth = depth - 1
        if depth == 1 and self._files is not None:
            turn, waiting = self._files
            fcntl.flock(turn, fcntl.LOCK_UN)
            if not _try(waiting, fcntl.LOCK_EX):  # another process waits: its turn comes before our next
                self._courtesy_until = time.monotonic() + COURTESY_SECONDS
            else:
                fcntl.flock(waiting, fcntl.LOCK_UN)
        self._threads.release()

    def _take_turn(self) -> None:
        if self._files is None:
            try:  # open for the process's life: their locks are the turns
                self._files = (open(f"{self._base}.lock", "ab"), open(f"{self._base}.wait", "ab"))  # noqa: SIM115
            except OSError:  # a directory this process may not write: SQLite's busy timeout alone, as before
                self._base = None
                return
        turn, waiting = self._files
        pause = self._courtesy_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        deadline = time.monotonic() + TURN_WAIT_SECONDS
        pause, registered = 0.0002, False
        try:
            while not _try(turn, fcntl.LOCK_EX):
                if time.monotonic() > deadline:  # a stopped process holds it: SQLite's busy timeout decides
                    return
                registered = registered or _try(waiting, fcntl.LOCK_SH)
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
        finally:
            if registered:
                fcntl.flock(waiting, fcntl.LOCK_UN)


# How long a transaction waits for the other processes' turn before it asks SQLite anyway (whose busy timeout then
# applies): the busy timeout's own length. A process ending its turn while another waits pauses longer than that
# one's longest pause between tries.
TURN_WAIT_SECONDS = 60.0
COURTESY_SECONDS = 0.003


def _try(file: IO[bytes], how: int) -> bool:
    try:
        fcntl.flock(file, how | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


_turns: dict[str, WriterTurn] = {}
_turns_lock = threading.Lock()  # not the engines' lock: an engine is made (and its turn found) under that one


def writer_turn(database: str | None) -> WriterTurn:
    """The turn of one SQLite file, shared by every engine of this process on it (so that a thread writing through
    one engine within a transaction of another does not wait for itself); an in-memory database's is its own."""
    if not database or database == ":memory:":
        return WriterTurn(None)
    with _turns_lock:
        key = str(Path(database).resolve())
        if key not in _turns:
            _turns[key] = WriterTurn(database)
        return _turns[key]


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``."""
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query (the readiness probe's check)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the ledger's schema at ``url`` to the newest migration (serialised across processes)."""
    from alembic import command

    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(7301001)"))
            try:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7301001)"))
                conn.commit()
    else:
        with engine.connect() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
