"""One phase's processes for the service benchmarks (post, payments, transfers): a fresh ledger and Redis db, the
simulators, ``motcua-relay api``, ``worker`` and ``beat``, each a process of its own, stopped and cleaned up after.

A benchmark names its simulators and gives the code that serves them (``python -c``, told which one by
``BENCH_WHICH`` and where by ``BENCH_PORT``, each answering ``GET /_admin/stats`` once up), its routing template
(``bench/routing/<name>.toml``) with the changes the run makes to it, and the variables that point the template's
destinations at the simulators' URLs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.support import (
    DEFAULT_REDIS,
    Database,
    ManagedProcess,
    free_port,
    new_secret,
    redis_db_url,
    relay_cmd,
    relay_env,
    routing_file,
    wait_http,
)
from store.db import get_engine, upgrade


@dataclass
class Stack:
    env: dict[str, str]
    urls: dict[str, str]
    processes: dict[str, ManagedProcess]
    intake_secret: str
    engine: Any

    def check(self) -> None:
        """Raise, with its log's tail, when a process has exited."""
        for process in self.processes.values():
            process.check()


@contextlib.contextmanager
def relay_stack(name: str, workdir: Path, *, database_url: str | None, redis_url: str, redis_db: int,
                simulators: Sequence[str], code: str, routing: str,
                routing_changes: Mapping[str, Mapping[str, Any]] | None = None,
                addresses: Callable[[dict[str, str]], dict[str, str]], **env_extra: str) -> Iterator[Stack]:
    """The phase ``name``'s stack, up and answering; ``urls`` has each simulator's and the API's (``"api"``).

    ``routing`` names the template (with ``routing_changes`` made to it, see :func:`bench.support.routing_file`);
    ``addresses`` gives, from ``urls``, the variables its ``url_env`` keys name."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = Database.create(database_url, workdir)
    broker = redis_db_url(redis_url, redis_db)
    redis.Redis.from_url(broker).flushdb()
    ports = {which: free_port() for which in (*simulators, "api")}
    urls = {which: f"http://127.0.0.1:{port}" for which, port in ports.items()}
    routing_path = routing_file(routing, workdir / "routing.toml", routing_changes)
    intake_secret = new_secret()
    env = relay_env(database.url, broker, intake_secret, {"onestop": new_secret()}, routing_path,
                    **{"MOTCUA_LOG_LEVEL": "WARNING", "MOTCUA_SWEEP_INTERVAL_SECONDS": "1",
                       "MOTCUA_PORTAL_PULL_INTERVAL_SECONDS": "3600",
                       "MOTCUA_BEAT_SCHEDULE_FILE": str(workdir / "beat-schedule"),
                       "MOTCUA_REDIS_PREFIX": f"bench-{name}", **addresses(urls), **env_extra})
    upgrade(database.sqlalchemy_url)
    processes = {which: ManagedProcess(which, [sys.executable, "-c", code],
                                       {**env, "BENCH_WHICH": which, "BENCH_PORT": str(ports[which])},
                                       workdir / f"{which}.log")
                 for which in simulators}
    processes |= {"api": ManagedProcess("api", relay_cmd("api", "--port", str(ports["api"])), env, workdir / "api.log"),
                  "worker": ManagedProcess("worker", relay_cmd("worker"), env, workdir / "worker.log"),
                  "beat": ManagedProcess("beat", relay_cmd("beat"), env, workdir / "beat.log")}
    try:
        for process in processes.values():
            process.start()
        for which in simulators:
            wait_http(f"{urls[which]}/_admin/stats", 60, processes[which])
        wait_http(f"{urls['api']}/healthz", 60, processes["api"])
        yield Stack(env, urls, processes, intake_secret, get_engine(database.sqlalchemy_url))
    finally:
        for process in reversed(list(processes.values())):
            process.stop()
        redis.Redis.from_url(broker).flushdb()
        with contextlib.suppress(Exception):
            get_engine(database.sqlalchemy_url).dispose()
        database.drop()


def phase_arguments(parser: argparse.ArgumentParser, *, redis_db: int, phases: str, timeout: float = 900) -> None:
    """The options every service benchmark has: the ledger, Redis and its db, the phases, the time limit, the JSON."""
    parser.add_argument("--database-url", help="postgresql://… (a database of its own is created); default SQLite")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server (no db number)")
    parser.add_argument("--redis-db", type=int, default=redis_db, help="Redis db on --redis, flushed (not 0)")
    parser.add_argument("--phases", default=phases, help=f"comma-separated: {phases.replace(',', ', ')}")
    parser.add_argument("--timeout", type=float, default=timeout, help="give up a phase after this many seconds")
    parser.add_argument("--json", type=Path, help="write the figures here")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 is refused: the bench flushes it")
    return args


def run_phases(args: argparse.Namespace, bench: str,
               run: Callable[[str, Path], dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of ``--phases`` in a working folder of its own (removed after); their figures, written as JSON to
    ``--json`` when given."""
    results = []
    with tempfile.TemporaryDirectory(prefix=f"motcua-bench-{bench}-") as tmp:
        for phase in args.phases.split(","):
            results.append(run(phase, Path(tmp) / phase))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2), encoding="utf-8")
    return results
