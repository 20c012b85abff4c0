"""Shared fixtures: real PostgreSQL, real Redis, real sandbox servers, real workers.

Isolation per run: Redis database ``MOTCUA_TEST_REDIS_DB`` (default 11, and 14 and 15 for the second and third
pytest-xdist processes) on the machine's Redis, flushed before and after; a PostgreSQL database of its
own per process, created and dropped. The tests that start their own workers use a database each
(their ``MOTCUA_TEST_*_REDIS_DB``), and pytest-xdist keeps a file's tests on one process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import Engine, text

from sandbox.onestop import create_app as onestop_app
from store.db import get_engine, upgrade
from tests.harness import become_relay, new_secret, relay_env, write_routing
from tests.servers import run_asgi

PG_ADMIN = os.environ.get("MOTCUA_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("MOTCUA_TEST_REDIS", "redis://127.0.0.1:6379")
# pytest-xdist runs the files on three processes (scripts/test.sh): each has a database of its own
_XDIST_DB = {"gw0": "11", "gw1": "14", "gw2": "15"}
REDIS_DB = int(os.environ.get("MOTCUA_TEST_REDIS_DB") or _XDIST_DB.get(os.environ.get("PYTEST_XDIST_WORKER", ""), "11"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"motcua_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    yield url
    from store.db import dispose_engines

    dispose_engines()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_pg(url: str) -> str:
    """The session's PostgreSQL ledger emptied: every table, cursors and receipts included (a cursor
    left by an earlier test would make a later one skip what it should read)."""
    from store.tables import metadata

    upgrade(url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty ledger on each engine in turn."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/relay.db"
        upgrade(url)
        return url
    return _fresh_pg(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@dataclass
class Sandbox:
    url: str
    secrets: dict[str, str]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The one-stop simulator on a free loopback port, with a fresh secret per subscriber."""
    secrets = {"onestop": new_secret(), "warehouse": new_secret()}
    with run_asgi(onestop_app(secrets)) as url:
        yield Sandbox(url, secrets)


@dataclass
class RelayConfig:
    env: dict[str, str]
    intake_secret: str
    routing_file: Path
    sandbox: Sandbox


def configure_relay(
    db_url: str, redis_url: str, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RelayConfig:
    """This process configured as a relay (API side) whose webhook destinations, one per secret of ``sandbox``,
    post to ``sandbox.url``; Redis flushed. The caller resets the runtime afterwards."""
    redis.Redis.from_url(redis_url).flushdb()
    intake_secret = new_secret()
    routing = write_routing(tmp_path / "routing.toml", sandbox.url, names=tuple(sandbox.secrets))
    env = relay_env(db_url, redis_url, intake_secret, sandbox.secrets, routing,
                    MOTCUA_REDIS_PREFIX=f"t{uuid.uuid4().hex[:6]}")
    become_relay(monkeypatch, env)
    return RelayConfig(env, intake_secret, routing, sandbox)


@pytest.fixture
def relay_config(
    db_url: str, redis_url: str, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RelayConfig]:
    """This process configured as a relay (API side) against the sandbox, on each engine."""
    from tasks.runtime import reset_runtime

    yield configure_relay(db_url, redis_url, sandbox, tmp_path, monkeypatch)
    reset_runtime()


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    """A client of the simulator the test module serves (its ``base_url`` fixture), reset before each test."""
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


# ------------------------------------------------------------------------ the order the files are handed out in
# pytest-xdist hands each process one file at a time (--dist loadfile), by default those with the most tests first.
# That left the long files of few tests (the crash tests: 160 s in three) to the end, where one process ran them
# while the others had nothing left (CI: 600 s of pytest). These go first instead, one that computes beside one
# that mostly waits, so that the processes end together on the many short files; the rest keep xdist's order.
FIRST = [
    "tests/test_crash.py", "tests/test_beat.py", "tests/test_console_fuzz.py", "tests/test_worker_restart.py",
    "tests/test_demo.py", "tests/test_packaging.py", "tests/test_openapi.py", "tests/test_transfer_flow.py",
    "tests/test_service_package.py", "tests/test_console_browser.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the order is the files'
    tests_in: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        tests_in[path] = tests_in.get(path, 0) + 1
    rank = {path: i for i, path in enumerate(FIRST)}

    def order(item: pytest.Item) -> tuple[int, int, str]:
        path = item.nodeid.split("::", 1)[0]
        return (rank.get(path, len(FIRST)), -tests_in[path], path)

    items.sort(key=order)  # stable: a file's tests keep their order
