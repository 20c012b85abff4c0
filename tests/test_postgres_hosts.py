"""A ledger on several PostgreSQL hosts: the URL spellings, and the relay through a primary switch.

Real servers: a private primary and its streaming standby (``initdb`` and ``pg_basebackup -R`` into /tmp, as the
``postgres`` user when the tests run as root), on ``MOTCUA_TEST_PG_PAIR_PORT`` (default 5441) and the port after,
started once for the module. The standby is synchronous, so what the primary committed is on the standby too: the
promise "an event answered 2xx is kept" holds across the switch only with synchronous replication (README).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, text

from config.settings import Settings
from store.db import get_engine, make_engine, ping, upgrade
from store.queries import status_counts
from store.tables import events
from tests.failover import SteadySender, assert_each_effect_once, relay_stack, switch_and_time, workload
from tests.harness import RedisServer, free_port, wait_for

BASE_PORT = int(os.environ.get("MOTCUA_TEST_PG_PAIR_PORT", "5441"))
DATABASE = "motcua"


@pytest.mark.parametrize(("url", "expected"), [
    # libpq's spelling, which SQLAlchemy cannot read: one host parameter each
    ("postgresql://relay:p%40ss@db1:5432,db2:5433/motcua?target_session_attrs=read-write",
     "postgresql+psycopg://relay:p%40ss@/motcua?host=db1:5432&host=db2:5433&target_session_attrs=read-write"),
    # a comma list with ports in one host parameter: psycopg would look for a host named "db2:5432"
    ("postgresql+psycopg://relay@/motcua?host=db1:5432,db2:5432&target_session_attrs=read-write",
     "postgresql+psycopg://relay@/motcua?host=db1:5432&host=db2:5432&target_session_attrs=read-write"),
    ("postgres://relay@db1,db2/motcua", "postgresql+psycopg://relay@/motcua?host=db1&host=db2"),
    # what SQLAlchemy already hands over whole stays as it is
    ("postgresql+psycopg://relay@/motcua?host=db1:5432&host=db2:5432",
     "postgresql+psycopg://relay@/motcua?host=db1:5432&host=db2:5432"),
    ("postgresql+psycopg://relay@/motcua?host=db1,db2&port=5432,5433",
     "postgresql+psycopg://relay@/motcua?host=db1,db2&port=5432,5433"),
    ("postgresql://relay@db1:5432/motcua", "postgresql+psycopg://relay@db1:5432/motcua"),
    ("sqlite:///./var/relay.db", "sqlite:///./var/relay.db"),
])
def test_several_hosts_are_named_the_way_sqlalchemy_passes_them_to_psycopg(url: str, expected: str) -> None:
    assert Settings(database_url=url).database_url == expected


def test_a_multi_host_url_is_printed_without_its_password() -> None:
    url = Settings(database_url="postgresql://relay:s3cret@db1:5432,db2:5432/motcua").database_url
    shown = make_engine(url).url.render_as_string(hide_password=True)
    assert "s3cret" not in shown and "db1" in shown and "db2" in shown


# --------------------------------------------------------------------------- a real primary and standby


def _bindir() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresPair:
    """A primary on ``port`` and its synchronous standby on ``port + 1``, their files in a /tmp directory."""

    def __init__(self, port: int) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.ports = (port, port + 1)
        # initdb refuses to run as root: the servers are the postgres user's, in a directory it owns
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.workdir = Path(tempfile.mkdtemp(prefix="motcua-pg-pair-"))
        if self.as_user:
            shutil.chown(self.workdir, "postgres", "postgres")
        self.primary, self.standby = self.workdir / "primary", self.workdir / "standby"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, str(self.bindir / tool), *args], capture_output=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stderr.decode(errors='replace')[-600:]}")

    def _pg_ctl(self, datadir: Path, port: int, *extra: str) -> None:
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.workdir} "
                   f"-c fsync=off {' '.join(extra)}")
        self._run("pg_ctl", "-D", str(datadir), "-l", f"{datadir}.log", "-w", "-o", options, "start")

    def start(self) -> PostgresPair:
        try:
            self._run("initdb", "-D", str(self.primary), "-U", "postgres", "--auth=trust", "--no-sync",
                      "-E", "UTF8", "--locale=C.UTF-8")
        except (RuntimeError, OSError) as exc:
            pytest.skip(f"cannot make a private PostgreSQL cluster here: {exc}")
        # synchronous_standby_names on the command line, not in the files pg_basebackup copies: once promoted,
        # the standby must not wait for a standby of its own
        self._pg_ctl(self.primary, self.ports[0], "-c synchronous_standby_names=*")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports[0]), "-U", "postgres",
                  "-D", str(self.standby), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        self._pg_ctl(self.standby, self.ports[1])
        wait_for(lambda: self._query(self.ports[0], "SELECT sync_state FROM pg_stat_replication") == "sync", 20,
                 0.1, "the standby to stream synchronously")
        with psycopg.connect(self.dsn(self.ports[0], "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return self

    def dsn(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _query(self, port: int, sql: str) -> object:
        try:
            with psycopg.connect(self.dsn(port, "postgres"), connect_timeout=3) as conn:
                row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
                return row[0] if row else None
        except psycopg.Error:
            return None

    def url(self, *ports: int) -> str:
        """The relay's ledger URL on ``ports`` in that order, in libpq's spelling, for the primary only."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write&connect_timeout=3"

    def switch(self) -> None:
        """The primary dies (``pg_ctl stop -m immediate``) and the standby is promoted."""
        self._run("pg_ctl", "-D", str(self.primary), "-m", "immediate", "stop")
        self._run("pg_ctl", "-D", str(self.standby), "-w", "promote")

    def stop(self) -> None:
        for datadir in (self.primary, self.standby):
            if (datadir / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "-D", str(datadir), "-m", "immediate", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def pair() -> Iterator[PostgresPair]:
    servers = PostgresPair(BASE_PORT)
    try:
        yield servers.start()
    finally:
        servers.stop()


def test_the_ledger_is_reached_on_the_primary_whichever_host_is_named_first(pair: PostgresPair) -> None:
    # given a URL naming a host that is down, then the standby, then the primary
    nobody = free_port()
    url = Settings(database_url=pair.url(nobody, pair.ports[1], pair.ports[0])).database_url
    # when the relay's engine connects (and migrates the ledger)
    upgrade(url)
    engine = get_engine(url)
    ping(engine)
    # then it is on the primary: the one that takes writes
    with engine.connect() as conn:
        port, standby = conn.execute(text("SELECT inet_server_port(), pg_is_in_recovery()")).one()
    assert (port, standby) == (pair.ports[0], False)


@pytest.mark.slow
def test_a_primary_switch_under_load_loses_nothing_and_delivers_nothing_twice(
    pair: PostgresPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = pair.url(*pair.ports)
    url = Settings(database_url=database_url).database_url
    upgrade(url)
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    events_ = workload(600)
    try:
        with relay_stack("pgswitch", tmp_path, monkeypatch, database_url=database_url,
                         redis_url=redis_server.url) as stack:
            # given the relay's ledger on both hosts, events arriving steadily (retried until answered 2xx)
            sender = SteadySender(stack, events_).start()
            wait_for(lambda: sender.accepted >= 150 and stack.delivered() >= 100, 60, 0.1, "the first deliveries")
            # when the primary dies and the standby is promoted
            resumed = switch_and_time(stack, sender, pair.switch, "the primary switch")
            sender.join(120)
            # then every event accepted is in the new primary's ledger, delivered, and applied once
            stats = assert_each_effect_once(stack, events_)
            assert {k: v for k, v in stack.readiness().items() if k != "workers"} == {
                "status": 200, "database": "ok", "redis": "ok"}
            engine = get_engine(url)
            wait_for(lambda: status_counts(engine) == {"warehouse": {"delivered": len(events_)}}, 30, 0.5,
                     "the ledger to record every delivery")
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(events)).scalar() == len(events_)
                assert conn.execute(text("SELECT inet_server_port()")).scalar() == pair.ports[1]
    finally:
        redis_server.stop()
    print(f"primary switch: resumed {resumed} s after the primary died; {stats['distinct']} effects, "
          f"{stats['duplicates']} redeliveries recognised; worker restarts {stack.worker.restarts}")
