"""The delivery engine alone: CPU per delivery of its drains, in one process, with nothing else running in it.

``bench/relay.py`` measures the relay end to end, where the worker shares two cores with the intake, the simulator
and Redis, and its CPU per delivery moves by a third from one run to the next. This one isolates what the engine
spends: it stores a day's events straight into a fresh ledger (``store.intake``, no API), then drains the bench
destination (``tasks.delivery.run_drain``, the code a worker's ``relay.drain`` task runs) from ``--drains`` threads
of this process until every delivery is final, against the sandbox one-stop simulator in its own process, and
reports this process's CPU seconds per delivery. The runtime is the worker's (``tasks.runtime.build_runtime`` from
the same environment ``bench/relay.py`` gives a worker), and its heap is settled as a ready worker's is
(``tasks.heap.settle``). Celery itself is not in it: a doorbell a full batch rings is sent to a Redis db nobody
consumes, as a worker would send it.

Each round is a new day of ``--events`` events. A reference loop (pure Python, a fixed count) is timed before each,
so that rounds and machines can be compared: on a shared machine its time moves as much as the engine's.

    .venv/bin/python -m bench.engine                      # SQLite, 3 rounds of 3,000
    .venv/bin/python -m bench.engine --database-url postgresql://postgres@127.0.0.1:5432/test --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.relay import DESTINATION, ROUTING_FILE, SANDBOX_CODE, workload
from bench.support import (
    DEFAULT_REDIS,
    Database,
    ManagedProcess,
    free_port,
    new_secret,
    redis_db_url,
    relay_env,
    wait_http,
)

REFERENCE_LOOP = 3_000_000  # additions of the reference loop


@dataclass(frozen=True)
class Round:
    deliveries: int
    cpu_ms_per_delivery: float
    server_cpu_ms_per_delivery: float | None  # the PostgreSQL server's, when it is on this machine
    wall_s: float
    per_s: float
    batches: int
    reference_ms: float


def reference_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop: the machine's speed at this moment."""
    started = time.process_time()
    total = 0
    for i in range(REFERENCE_LOOP):
        total += i
    return 1000 * (time.process_time() - started)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=3000, help="events of each round's day (one delivery each)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--drains", type=int, default=2, help="threads draining the destination at once")
    p.add_argument("--database-url", default=None, help="a PostgreSQL server (a database of its own is made)")
    p.add_argument("--redis", default=DEFAULT_REDIS)
    p.add_argument("--redis-db", type=int, default=9,
                   help="Redis db on --redis, flushed before and after (not 0; the tests use 10-15, the demo 3)")
    p.add_argument("--delivery-batch", type=int, default=None, help="MOTCUA_DELIVERY_BATCH (default: the relay's)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting of the runtime, as its variable (MOTCUA_DELIVERY_CHAIN=false); repeatable")
    p.add_argument("--profile", default=None, metavar="PATH",
                   help="py-spy record (GIL samples, collapsed stacks) of the rounds into PATH")
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)
    if args.redis_db == 0:
        p.error("refusing Redis db 0 (the relay's default): pick another --redis-db")
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    workdir = Path(tempfile.mkdtemp(prefix="motcua-engine-"))
    db = Database.create(args.database_url, workdir)
    port = free_port()
    subscriber = new_secret()
    redis_url = redis_db_url(args.redis, args.redis_db)
    env = relay_env(
        db.url, redis_url, new_secret(), {DESTINATION: subscriber}, ROUTING_FILE,
        MOTCUA_BENCH_WEBHOOK_URL=f"http://127.0.0.1:{port}/subscribers/{DESTINATION}/events",
        MOTCUA_REDIS_PREFIX=f"motcua-engine-{os.getpid()}", MOTCUA_LOG_LEVEL="warning",
        **({"MOTCUA_DELIVERY_BATCH": str(args.delivery_batch)} if args.delivery_batch else {}),
        BENCH_SANDBOX_SECRETS=json.dumps({DESTINATION: subscriber}), BENCH_SANDBOX_PORT=str(port),
        **dict(item.split("=", 1) for item in args.set),
    )
    import redis

    scratch = redis.Redis.from_url(redis_url)
    scratch.flushdb()  # the doorbells a full batch rings, never answered here: gone before and after
    sandbox = ManagedProcess("sandbox", [sys.executable, "-c", SANDBOX_CODE], env, workdir / "sandbox.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/_admin/stats", 30, sandbox)
        for name in [k for k in os.environ if k.startswith("MOTCUA_")]:
            del os.environ[name]
        os.environ.update({k: v for k, v in env.items() if k.startswith(("MOTCUA_", "BENCH_"))})
        rounds = _run(args, db, console, lambda: _start_profiler(args))
        table = Table(title=f"the engine alone ({db.label.split(' ')[0]} ledger, {args.drains} drains)")
        for column in ("round", "deliveries", "CPU ms/delivery", "server CPU ms/delivery", "wall s", "per s",
                       "batches", "reference loop ms"):
            table.add_column(column, justify="right")
        for n, r in enumerate(rounds, 1):
            server = "-" if r.server_cpu_ms_per_delivery is None else f"{r.server_cpu_ms_per_delivery:.3f}"
            table.add_row(str(n), str(r.deliveries), f"{r.cpu_ms_per_delivery:.3f}", server, f"{r.wall_s:.2f}",
                          f"{r.per_s:,.0f}", str(r.batches), f"{r.reference_ms:.0f}")
        console.print(table)
        best = min(r.cpu_ms_per_delivery for r in rounds)
        console.print(f"CPU per delivery: best {best:.3f} ms, median "
                      f"{sorted(r.cpu_ms_per_delivery for r in rounds)[len(rounds) // 2]:.3f} ms")
        if args.json_path:
            Path(args.json_path).write_text(json.dumps({
                "database": db.label.split(" ")[0], "drains": args.drains, "events": args.events,
                "rounds": [asdict(r) for r in rounds], "best_cpu_ms_per_delivery": best,
            }, indent=2) + "\n", encoding="utf-8")
        return 0
    finally:
        if _profiler is not None:
            _profiler.send_signal(signal.SIGINT)
            _profiler.wait(30)
        sandbox.stop()
        from store.db import dispose_engines

        dispose_engines()
        scratch.flushdb()
        db.drop()
        shutil.rmtree(workdir, ignore_errors=True)


_profiler: subprocess.Popen[bytes] | None = None


def _start_profiler(args: argparse.Namespace) -> None:
    global _profiler
    if args.profile is None:
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    _profiler = subprocess.Popen(
        [py_spy, "record", "--format", "raw", "--nonblocking", "--gil", "--rate", "250", "-o", args.profile,
         "--pid", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attached before the first round


def _run(args: argparse.Namespace, db: Database, console: Any, before_rounds: Any) -> list[Round]:
    from rich.progress import Progress
    from sqlalchemy import func, select

    from store import intake
    from store.db import upgrade
    from store.tables import attempts, deliveries, is_open
    from tasks.delivery import run_drain
    from tasks.heap import settle
    from tasks.runtime import build_runtime

    upgrade(db.sqlalchemy_url)
    rt = build_runtime()

    def ingest(total: int, day: date) -> None:
        events = workload(total, day, day.toordinal())
        for i in range(0, len(events), 100):
            intake.ingest_and_route(rt.engine, events[i:i + 100], datetime.now(UTC), rt.routing.destinations_for,
                                    rt.rules)

    def open_count() -> int:
        with rt.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(is_open(deliveries.c.status))).scalar_one())

    def drain_all(progress: Any, task: Any, total: int) -> None:
        def loop() -> None:
            while run_drain(DESTINATION, runtime=rt) or open_count():
                pass

        threads = [threading.Thread(target=loop, name=f"drain-{n}") for n in range(args.drains)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)  # the progress's query: a few hundred microseconds a second of this CPU
            progress.update(task, completed=total - open_count())
        for t in threads:
            t.join()

    try:
        with Progress(console=console, transient=True) as progress:
            warm = progress.add_task("warm-up", total=200)
            ingest(200, date(2024, 1, 8))
            drain_all(progress, warm, 200)
            settle()  # as a ready worker does
            before_rounds()
            rounds = []
            for n in range(args.rounds):
                ingest(args.events, date(2025, 1, 6) + timedelta(days=7 * n))
                task = progress.add_task(f"round {n + 1}", total=args.events)
                reference = reference_ms()
                since = datetime.now(UTC)
                server = db.server_cpu_s()
                cpu, wall = time.process_time(), time.monotonic()
                drain_all(progress, task, args.events)
                cpu, wall = time.process_time() - cpu, time.monotonic() - wall
                server_after = db.server_cpu_s()
                server_ms = (None if server is None or server_after is None
                             else round(1000 * (server_after - server) / args.events, 3))
                with rt.engine.connect() as conn:
                    batches = int(conn.execute(select(func.count(func.distinct(attempts.c.started_at)))
                                               .where(attempts.c.started_at >= since)).scalar_one())
                rounds.append(Round(args.events, round(1000 * cpu / args.events, 3), server_ms, round(wall, 2),
                                    round(args.events / wall, 1), batches, round(reference, 1)))
        return rounds
    finally:
        rt.close()


if __name__ == "__main__":
    sys.exit(main())
