"""Throughput benchmark of the relay against a raw Celery baseline, in one run, on one Redis.

Five phases, every process real and separate (see ``bench/README.md``)::

  baseline  a no-op Celery task (one Redis INCR) on its own app configured with the relay's
            own ``config.celery.celery_config``; N tasks sent by this process, consumed by
            ``celery -A bench.relay:baseline_app worker -P threads -c C`` (the relay worker's flags)
  relay     ``motcua-relay api`` + ``motcua-relay worker -c C`` + the sandbox one-stop simulator
            (``create_app(secrets, validate=False)`` under uvicorn); workload-generator events
            posted signed in batches to the intake; deliveries/s from the first intake request to
            the last ``delivered_at`` in the ledger; p50/p99 intake→delivered; the worker's peak RSS
  slow      the same with 200 ms added to every simulator answer (``POST /_admin/faults``),
            with a larger worker concurrency
  paced     the relay again, events sent at a fixed rate (half the measured maximum) for 60 s:
            p50/p99 intake→delivered at a rate the relay sustains
  peer      the same kind of events through a plain Celery task per event that POSTs with httpx
            and retries with ``autoretry_for`` (no ledger): what the ledger's guarantees cost
  unaudited (b) with the audit chain off (``MOTCUA_AUDIT_CHAIN=false``), run before (b) on the same ledger
            (so (b) meets the larger one): what the chain costs

Run, from the repository root: ``.venv/bin/python -m bench.relay [--json bench/results/relay.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from bench.support import (
    DEFAULT_REDIS,
    Database,
    ManagedProcess,
    free_port,
    machine_cpu,
    new_secret,
    percentile,
    redis_db_url,
    relay_cmd,
    relay_env,
    routing_template,
    tree_cpu_s,
    tree_hwm_mb,
    tree_rss_mb,
    wait_http,
)
from config.celery import celery_config
from config.routing import load_routing
from config.settings import Settings

ROUTING_FILE = routing_template("relay")
DESTINATION = "bench"  # the one destination of bench/routing/relay.toml
BASELINE_QUEUE = "bench.baseline"
PG_DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

# --------------------------------------------------------------------------- (a) the raw Celery baseline

baseline_app = Celery("motcua_bench_baseline")
_counter_client: redis.Redis | None = None


def _like_the_relay(app: Celery, task: str, queue: str, settings: Settings | None) -> Celery:
    """Give a comparison app exactly the relay worker's Celery settings (from the environment by default), its
    one task routed to ``queue`` and no beat."""
    settings = settings or Settings()
    app.conf.update(celery_config(settings, load_routing(settings.routing_file)))
    app.conf.task_routes = {task: {"queue": queue}}
    app.conf.beat_schedule = {}
    return app


def configure_baseline(settings: Settings | None = None) -> Celery:
    return _like_the_relay(baseline_app, "bench.noop", BASELINE_QUEUE, settings)


def _counter() -> redis.Redis:
    global _counter_client
    if _counter_client is None:
        _counter_client = redis.Redis.from_url(baseline_app.conf.broker_url)
    return _counter_client


@baseline_app.task(name="bench.noop")
def noop(key: str, total: int) -> None:
    """Count one completion; the one that reaches ``total`` stamps the end time."""
    client = _counter()
    if client.incr(f"{key}:count") >= total:
        client.setnx(f"{key}:done_at", repr(time.time()))


configure_baseline()


# --------------------------------------------------------------------------- (d) the plain-Celery peer

peer_app = Celery("motcua_bench_peer")
PEER_QUEUE = "bench.peer"
_peer_state: dict[str, Any] = {}
_peer_lock = threading.Lock()


def configure_peer(settings: Settings | None = None) -> Celery:
    """The peer gets the relay worker's Celery settings too: only what the task does differs."""
    return _like_the_relay(peer_app, "bench.peer", PEER_QUEUE, settings)


def _peer() -> dict[str, Any]:
    with _peer_lock:
        if not _peer_state:
            _peer_state["http"] = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0),
                                               limits=httpx.Limits(max_connections=256))
            _peer_state["redis"] = redis.Redis.from_url(peer_app.conf.broker_url)
        return _peer_state


@peer_app.task(name="bench.peer", autoretry_for=(httpx.HTTPError,), retry_backoff=1, retry_backoff_max=60,
               retry_jitter=True, max_retries=8)
def peer_deliver(key: str, total: int, event: dict[str, Any]) -> None:
    """What most teams write: one task per event, POST it signed with httpx, let Celery retry; no ledger."""
    from schemas.events import canonical_json
    from schemas.webhook import sign

    state = _peer()
    body = canonical_json(event).encode("utf-8")
    message_id = f"{event['event_id']}:peer"
    headers = {**sign(os.environ["BENCH_PEER_SECRET"], message_id, body).as_headers(),
               "Content-Type": "application/json", "Idempotency-Key": message_id}
    state["http"].post(os.environ["BENCH_PEER_URL"], content=body, headers=headers).raise_for_status()
    if state["redis"].incr(f"{key}:count") >= total:
        state["redis"].setnx(f"{key}:done_at", repr(time.time()))


configure_peer()


# --------------------------------------------------------------------------- the one-stop simulator

SANDBOX_CODE = (
    "import json, os, uvicorn\n"
    "from sandbox.onestop import create_app\n"
    "app = create_app(json.loads(os.environ['BENCH_SANDBOX_SECRETS']), validate=False)\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(os.environ['BENCH_SANDBOX_PORT']),"
    " access_log=False, log_level='warning')\n"
)


# --------------------------------------------------------------------------- workload


def workload(total: int, first_day: date, seed: int, dossiers_per_day: int = 300) -> list[dict[str, Any]]:
    """``total`` events from consecutive generated working days (each day truncated in time, so every
    dossier keeps a gap-free prefix of its sequence), with unique event_ids and dossier codes."""
    from sandbox.workload import add_working_days, generate_day

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    day = first_day
    while len(out) < total:
        for event in generate_day(dossiers_per_day, day=day, seed=seed):
            if event["event_id"] not in seen:
                seen.add(event["event_id"])
                out.append(event)
        day = add_working_days(day, 1)
        seed += 1
    return out[:total]


def lanes(events: list[dict[str, Any]], count: int) -> list[list[dict[str, Any]]]:
    """Split events among ``count`` senders by dossier, each keeping its events' order.

    One dossier's events always go through the same lane, one request at a time, as the one-stop
    software would send them: a later sequence is never ingested before an earlier one.
    """
    out: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    owner: dict[str, int] = {}
    for event in events:
        lane = owner.setdefault(event["dossier_code"], len(owner) % count)
        out[lane].append(event)
    return [lane for lane in out if lane]


async def _post_lanes(
    url: str, secret: str, events: list[dict[str, Any]], batch: int, parallel: int, on_batch: Callable[[int], None]
) -> dict[str, Any]:
    from sandbox.workload import send_events

    totals: dict[str, Any] = {
        "accepted": 0,
        "duplicates": 0,
        "rejected": 0,
        "failed": 0,
        "retries": 0,
        "requests": 0,
        "errors": [],
    }
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:

        async def lane(items: list[dict[str, Any]]) -> None:
            for i in range(0, len(items), batch):
                chunk = items[i : i + batch]
                report = await send_events(url, secret, chunk, batch_size=batch, concurrency=1, client=client)
                for key in ("accepted", "duplicates", "rejected", "failed", "retries", "requests"):
                    totals[key] += getattr(report, key)
                totals["errors"] += report.errors
                on_batch(len(chunk))

        await asyncio.gather(*(lane(items) for items in lanes(events, parallel)))
    return totals


async def _post_paced(
    url: str, secret: str, events: list[dict[str, Any]], rate: float, on_batch: Callable[[int], None]
) -> dict[str, Any]:
    """Post ``events`` at ``rate`` a second: a request every 100 ms (one sender, so every dossier's events go in
    order), sent on time whatever the answers take, as the one-stop software's steady day does."""
    from sandbox.workload import send_events

    totals: dict[str, Any] = {k: 0 for k in ("accepted", "duplicates", "rejected", "failed", "retries", "requests")}
    totals["errors"] = []
    tick = 0.1
    size = max(1, round(rate * tick))
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        for n, chunk in enumerate(chunks):
            delay = start + n * tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            report = await send_events(url, secret, chunk, batch_size=size, concurrency=1, client=client)
            for key in ("accepted", "duplicates", "rejected", "failed", "retries", "requests"):
                totals[key] += getattr(report, key)
            totals["errors"] += report.errors
            on_batch(len(chunk))
    return totals


# --------------------------------------------------------------------------- results


@dataclass
class PhaseResult:
    name: str
    concurrency: int
    items: int
    completed: int = 0
    elapsed_s: float | None = None
    per_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, console: Any) -> None:
        self.args = args
        self.console = console
        self.processes: list[ManagedProcess] = []
        self.workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="motcua-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if args.redis_db == 0:
            raise SystemExit("refusing Redis db 0 (the relay's default): pick another --redis-db")
        self.redis_url = redis_db_url(args.redis, args.redis_db)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis_prefix = f"motcua-bench-{os.getpid()}"  # the relay processes' MOTCUA_REDIS_PREFIX
        self.db: Database | None = None
        self.results: dict[str, PhaseResult] = {}
        self.intake_secret = new_secret()
        self.subscriber_secret = new_secret()
        self.sandbox_port = free_port()
        self.api_port = free_port()
        self.worker: ManagedProcess | None = None
        self.sandbox: ManagedProcess | None = None
        self.api: ManagedProcess | None = None
        self.beat: ManagedProcess | None = None
        self.read_engine: Any = None
        from store.audit.checkpoints import Signer

        self.audit_key = Signer.generate().private_text()

    # ---- environment

    def env(self, concurrency: int) -> dict[str, str]:
        # the baseline runs before the ledger exists: its worker never opens this URL
        db_url = self.db.url if self.db is not None else f"sqlite:///{self.workdir / 'unused.db'}"
        return relay_env(
            db_url,
            self.redis_url,
            self.intake_secret,
            {DESTINATION: self.subscriber_secret},
            ROUTING_FILE,
            MOTCUA_BENCH_WEBHOOK_URL=f"http://127.0.0.1:{self.sandbox_port}/subscribers/{DESTINATION}/events",
            MOTCUA_WORKER_CONCURRENCY=str(concurrency),
            **({"MOTCUA_DELIVERY_BATCH": str(self.args.delivery_batch)} if self.args.delivery_batch else {}),
            **dict(item.split("=", 1) for item in self.args.set),
            MOTCUA_REDIS_PREFIX=self.redis_prefix,
            MOTCUA_LOG_LEVEL=self.args.log_level,
            MOTCUA_AUDIT_SIGNING_KEY=self.audit_key,  # the beat signs checkpoints as in production
            BENCH_SANDBOX_SECRETS=json.dumps({DESTINATION: self.subscriber_secret}),
            BENCH_SANDBOX_PORT=str(self.sandbox_port),
            BENCH_PEER_URL=f"http://127.0.0.1:{self.sandbox_port}/subscribers/{DESTINATION}/events",
            BENCH_PEER_SECRET=self.subscriber_secret,
        )

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, cmd, env, self.workdir / f"{name}.log").start()
        self.processes.append(process)
        return process

    def stop(self, process: ManagedProcess | None) -> None:
        if process is not None:
            process.stop()
            if process in self.processes:
                self.processes.remove(process)

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()
        if self.read_engine is not None:
            self.read_engine.dispose()
        with contextlib.suppress(Exception):
            from store.db import dispose_engines

            dispose_engines()
        if self.db is not None:
            try:
                self.db.drop()
            except Exception as exc:
                self.console.print(f"[red]could not drop the bench database: {exc}[/]")
        with contextlib.suppress(redis.RedisError):
            self.redis.flushdb()
        if not self.args.workdir and not self.args.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- progress

    @contextlib.contextmanager
    def progress(self) -> Iterator[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            yield progress

    # ---- (a) baseline

    def run_baseline(self) -> PhaseResult:
        n, c = self.args.baseline_tasks, self.args.concurrency
        env = self.env(c)
        configure_baseline(
            Settings(
                broker_url=self.redis_url, redis_url=self.redis_url, routing_file=ROUTING_FILE, worker_concurrency=c
            )
        )
        one = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.relay:baseline_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(c),
            "-Q",
            BASELINE_QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-O",
            "fair",
            "-l",
            "WARNING",
            "-n",
            f"bench-baseline-{os.getpid()}@%h",
        ]
        processes = self.args.worker_processes
        copies = [[*one[:-1], f"{one[-1]}-{i}"] for i in range(processes)]
        cmd = one if processes == 1 else ["sh", "-c", " & ".join(shlex.join(c) for c in copies) + " & wait"]
        worker = self.spawn(
            "baseline-worker",
            cmd,
            env,
        )
        result = PhaseResult("baseline", c, n)
        try:
            warm = f"bench:warm:{uuid.uuid4().hex[:6]}"
            for _ in range(20):
                noop.apply_async((warm, 20))
            self._wait(lambda: int(self.redis.get(f"{warm}:count") or 0) >= 20, 90, "the baseline worker", worker)
            key = f"bench:run:{uuid.uuid4().hex[:6]}"
            cpu0, busy0 = tree_cpu_s(worker.pid), machine_cpu()
            with self.progress() as progress:
                sent_task = progress.add_task("(a) baseline: sending tasks", total=n, note="")
                done_task = progress.add_task(f"(a) baseline: completed (c={c})", total=n, note="")
                started = time.time()
                for i in range(n):
                    noop.apply_async((key, n))
                    if i % 200 == 199:
                        progress.update(sent_task, completed=i + 1)
                        progress.update(done_task, completed=int(self.redis.get(f"{key}:count") or 0))
                progress.update(sent_task, completed=n)
                sent_s = time.time() - started
                self._count_to(key, result, worker, started, lambda count: progress.update(
                    done_task, completed=count, note=f"{count / (time.time() - started):.0f}/s"))
            busy1 = machine_cpu()
            result.extra = {
                "send_s": round(sent_s, 3),
                "worker_cpu_s": round(tree_cpu_s(worker.pid) - cpu0, 2),
                "machine_cpu_busy_pct": _busy_pct(busy0, busy1),
                "worker_rss_mb": round(tree_hwm_mb(worker.pid), 1),
            }
        finally:
            self.stop(worker)
        return result

    # ---- (b) and (c): the relay end to end

    def start_relay(self) -> None:
        from sqlalchemy import create_engine

        from store.db import upgrade

        self.db = Database.create(self.args.database_url, self.workdir)
        upgrade(self.db.sqlalchemy_url)  # once, before the processes (they also upgrade at start: a no-op then)
        # reads only: a plain engine, without the relay's BEGIN IMMEDIATE, so polling takes no write lock
        self.read_engine = create_engine(self.db.sqlalchemy_url, pool_size=2)
        env = self.env(self.args.concurrency)
        self.sandbox = self.spawn("sandbox", [sys.executable, "-c", SANDBOX_CODE], env)
        wait_http(f"http://127.0.0.1:{self.sandbox_port}/_admin/stats", 30, self.sandbox)
        self.api = self.spawn("api", relay_cmd("api", "--port", str(self.api_port)), env)
        wait_http(f"http://127.0.0.1:{self.api_port}/healthz", 60, self.api)
        if not self.args.no_beat:
            # the sweeper is part of the relay (one beat per deployment); ``motcua-relay beat`` keeps its
            # schedule in ./var, shared with whoever else runs one here, so run the same beat with its own file
            self.beat = self.spawn(
                "beat",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks.app",
                    "beat",
                    "-s",
                    str(self.workdir / "beat-schedule"),
                    "-l",
                    "WARNING",
                ],
                env,
            )

    def start_worker(self, concurrency: int, extra_env: dict[str, str] | None = None) -> ManagedProcess:
        self.stop(self.worker)
        self.worker = self.spawn(
            f"worker-c{concurrency}",
            relay_cmd("worker", "--concurrency", str(concurrency), "--processes", str(self.args.worker_processes)),
            {**self.env(concurrency), **(extra_env or {})},
        )
        return self.worker

    def set_latency(self, latency_ms: float) -> None:
        base = f"http://127.0.0.1:{self.sandbox_port}/_admin/faults"
        if latency_ms:
            httpx.post(base, json={"latency_ms": latency_ms}, timeout=10).raise_for_status()
        else:
            httpx.delete(base, timeout=10).raise_for_status()

    def server_cpu_s(self) -> dict[str, float | None]:
        """CPU seconds so far of the PostgreSQL server (none for SQLite) and of the Redis server, when on this
        machine: the whole servers', so other clients' work counts too (on a quiet machine, there is none)."""
        out: dict[str, float | None] = {"postgres": self.db.server_cpu_s() if self.db is not None else None}
        try:
            pid = int(self.redis.info("server")["process_id"])
        except (redis.RedisError, KeyError, TypeError, ValueError):
            out["redis"] = None
        else:
            out["redis"] = tree_cpu_s(pid) if os.path.exists(f"/proc/{pid}") else None
        return out

    def batches(self) -> tuple[float, float]:
        """The bench destination's batches so far and their attempts (the workers' ``motcua_delivery_batch_size``)."""
        stored: dict[bytes, bytes] = self.redis.hgetall(f"{self.redis_prefix}:metrics:batches")  # type: ignore[assignment]
        found = {k.decode(): float(v) for k, v in stored.items() if k.startswith(f"{DESTINATION}|".encode())}
        attempts = found.pop(f"{DESTINATION}|sum", 0.0)
        return sum(found.values()), attempts

    def final_count(self, since: datetime | None) -> tuple[int, dict[str, int]]:
        from store import queries
        from store.tables import FINAL_STATUSES

        counts = queries.status_counts(self.read_engine, since).get(DESTINATION, {})
        return sum(counts.get(s, 0) for s in FINAL_STATUSES), counts

    def post(
        self, events: list[dict[str, Any]], on_batch: Callable[[int], None], pace: float | None = None
    ) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.api_port}/v1/events"
        if pace:
            return asyncio.run(_post_paced(url, self.intake_secret, events, pace, on_batch))
        return asyncio.run(
            _post_lanes(
                f"http://127.0.0.1:{self.api_port}/v1/events",
                self.intake_secret,
                events,
                self.args.batch,
                self.args.senders,
                on_batch,
            )
        )

    def run_relay(
        self,
        name: str,
        label: str,
        events: list[dict[str, Any]],
        warm: list[dict[str, Any]],
        concurrency: int,
        latency_ms: float,
        pace: float | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> PhaseResult:
        from sqlalchemy import select

        from store import queries
        from store.tables import Status, deliveries

        assert self.sandbox is not None and self.api is not None
        worker = self.start_worker(concurrency, extra_env)
        self.set_latency(latency_ms)
        result = PhaseResult(name, concurrency, len(events))
        # warm-up: the worker is up and consuming, connection pools are filled
        before, _ = self.final_count(None)
        warm_report = self.post(warm, lambda _: None)
        if warm_report["failed"] or warm_report["rejected"]:
            raise RuntimeError(f"intake refused the warm-up: {warm_report['errors'][:3]}")
        self._wait(lambda: self.final_count(None)[0] >= before + len(warm), 120, "the warm-up deliveries", worker)

        since = datetime.now(UTC)
        time.sleep(0.01)
        profiler = self._py_spy_record(worker, name) if self.args.profile else None
        cpu_pids = {"worker": worker, "api": self.api, "sandbox": self.sandbox}
        cpu0 = {k: tree_cpu_s(s.pid) for k, s in cpu_pids.items()}
        servers0 = self.server_cpu_s()
        bench_cpu0 = time.process_time()
        busy0 = machine_cpu()
        batches0 = self.batches()
        peak_rss = tree_rss_mb(worker.pid)
        posted = {"n": 0}
        report: dict[str, Any] = {}
        errors: list[BaseException] = []

        def send() -> None:
            try:
                report.update(self.post(events, lambda k: posted.__setitem__("n", posted["n"] + k), pace))
                report["intake_s"] = time.time() - started
            except BaseException as exc:
                errors.append(exc)

        with self.progress() as progress:
            intake_task = progress.add_task(f"({label}) intake: events posted", total=len(events), note="")
            done_task = progress.add_task(f"({label}) deliveries final (c={concurrency})", total=len(events), note="")
            started = time.time()
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            deadline = time.monotonic() + self.args.timeout
            final = 0
            counts: dict[str, int] = {}
            while time.monotonic() < deadline:
                for process in (worker, self.api, self.sandbox):
                    process.check()
                if errors:
                    raise errors[0]
                final, counts = self.final_count(since)
                peak_rss = max(peak_rss, tree_rss_mb(worker.pid))
                rate = counts.get(Status.DELIVERED, 0) / max(time.time() - started, 1e-6)
                progress.update(intake_task, completed=posted["n"])
                progress.update(done_task, completed=final, note=f"{rate:.0f}/s, rss {peak_rss:.0f} MB")
                if final >= len(events) and not sender.is_alive():
                    break
                time.sleep(self.args.poll)
            sender.join(timeout=60)
            progress.update(intake_task, completed=posted["n"])
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
        if errors:
            raise errors[0]
        busy1 = machine_cpu()
        cpu = {k: round(tree_cpu_s(s.pid) - cpu0[k], 2) for k, s in cpu_pids.items()}
        cpu["bench"] = round(time.process_time() - bench_cpu0, 2)
        for k, v in self.server_cpu_s().items():  # the whole server's: other clients' work counts too
            if (was := servers0.get(k)) is not None and v is not None:
                cpu[k] = round(v - was, 2)
        batches = [end - start for end, start in zip(self.batches(), batches0, strict=True)]
        with self.read_engine.connect() as conn:
            stamps = sorted(
                conn.execute(
                    select(deliveries.c.delivered_at).where(
                        deliveries.c.status == Status.DELIVERED, deliveries.c.created_at >= since
                    )
                ).scalars()
            )
        last = stamps[-1] if stamps else None
        # steady-state rate: 99 % of the deliveries, so that a few stragglers (e.g. rescued by the
        # sweeper after requeue_after_seconds) do not hide the throughput; both are reported
        p99_index = max(0, int(len(stamps) * 0.99) - 1)
        per_s_99 = (p99_index + 1) / (stamps[p99_index].timestamp() - started) if stamps else None
        latencies = queries.latencies_ms(self.read_engine, since)
        delivered = counts.get(Status.DELIVERED, 0)
        result.completed = delivered
        if last is not None:
            result.elapsed_s = last.timestamp() - started
            result.per_s = delivered / result.elapsed_s
        attempts_total = _attempt_count(self.read_engine, since)
        floor = _ordering_floor_s(self.read_engine, since, started, latency_ms / 1000) if latency_ms else None
        result.extra = {
            "statuses": counts,
            "timed_out": final < len(events),
            "per_s_first_99pct": _round(per_s_99),
            "stragglers_over_30s": sum(1 for v in latencies if v > 30_000),
            "superseded": counts.get("superseded", 0),
            "dead": counts.get("dead", 0),
            "attempts": attempts_total,
            "batches": int(batches[0]),
            "mean_batch": round(batches[1] / batches[0], 1) if batches[0] else None,
            "intake_events_per_s": round(len(events) / report["intake_s"], 1) if report.get("intake_s") else None,
            "intake": {
                k: report.get(k) for k in ("accepted", "duplicates", "rejected", "failed", "retries", "requests")
            },
            "intake_errors": report.get("errors", [])[:3],
            "p50_ms": _round(percentile(latencies, 50)),
            "p99_ms": _round(percentile(latencies, 99)),
            "max_ms": _round(max(latencies) if latencies else None),
            "worker_rss_mb": round(max(peak_rss, tree_hwm_mb(worker.pid)), 1),
            "cpu_s": cpu,
            "machine_cpu_busy_pct": _busy_pct(busy0, busy1),
            "latency_ms_injected": latency_ms,
            "ordering_floor_s": _round(floor),
            "ordering_floor_per_s": _round(delivered / floor) if floor and delivered else None,
            **_hops(self.read_engine, since),
            "paced_rate_per_s": pace,
            "worker_cpu_ms_per_delivery": round(1000 * cpu["worker"] / delivered, 3) if delivered else None,
        }
        if self.args.py_spy:
            self._py_spy_dump(worker, name)
        return result

    def _count_to(
        self, key: str, result: PhaseResult, worker: ManagedProcess, started: float, show: Callable[[int], None]
    ) -> None:
        """Wait for the phase's tasks to count up to ``result.items`` in Redis (``key``), then fill in the rate."""
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            worker.check()
            count = int(self.redis.get(f"{key}:count") or 0)
            show(count)
            if count >= result.items:
                break
            time.sleep(0.05)
        result.completed = int(self.redis.get(f"{key}:count") or 0)
        done_at = self.redis.get(f"{key}:done_at")
        if done_at is not None:
            result.elapsed_s = float(done_at) - started
            result.per_s = result.items / result.elapsed_s

    # ---- (e) the plain-Celery peer

    def run_peer(self, events: list[dict[str, Any]]) -> PhaseResult:
        """The same kind of events, one Celery task each that POSTs to the same simulator (no ledger)."""
        assert self.sandbox is not None
        n, c = len(events), self.args.concurrency
        self.set_latency(0)
        configure_peer(Settings(broker_url=self.redis_url, redis_url=self.redis_url, routing_file=ROUTING_FILE,
                                worker_concurrency=c))
        cmd = [sys.executable, "-m", "celery", "-A", "bench.relay:peer_app", "worker", "-P", "threads", "-c", str(c),
               "-Q", PEER_QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair",
               "-l", "WARNING", "-n", f"bench-peer-{os.getpid()}@%h"]
        worker = self.spawn("peer-worker", cmd, self.env(c))
        result = PhaseResult("peer", c, n)
        try:
            warm_key = f"bench:peerwarm:{uuid.uuid4().hex[:6]}"
            for event in events[:20]:
                peer_deliver.apply_async((warm_key, 20, {**event, "event_id": f"{event['event_id']}-warm"}))
            self._wait(lambda: int(self.redis.get(f"{warm_key}:count") or 0) >= 20, 90, "the peer worker", worker)
            key = f"bench:peer:{uuid.uuid4().hex[:6]}"
            cpu0, busy0 = tree_cpu_s(worker.pid), machine_cpu()
            with self.progress() as progress:
                done_task = progress.add_task(f"(e) plain Celery peer (c={c})", total=n, note="")
                started = time.time()
                for i, event in enumerate(events):
                    peer_deliver.apply_async((key, n, event))
                    if i % 200 == 199:
                        progress.update(done_task, completed=int(self.redis.get(f"{key}:count") or 0))
                self._count_to(key, result, worker, started, lambda count: progress.update(
                    done_task, completed=count, note=f"{count / (time.time() - started):.0f}/s"))
            worker_cpu = tree_cpu_s(worker.pid) - cpu0
            result.extra = {
                "worker_cpu_s": round(worker_cpu, 2),
                "worker_cpu_ms_per_delivery": round(1000 * worker_cpu / result.completed, 3)
                if result.completed else None,
                "machine_cpu_busy_pct": _busy_pct(busy0, machine_cpu()),
                "worker_rss_mb": round(tree_hwm_mb(worker.pid), 1),
            }
        finally:
            self.stop(worker)
        return result

    def _py_spy_record(self, worker: ManagedProcess, name: str) -> subprocess.Popen[bytes]:
        """py-spy record of the worker for the phase: collapsed stacks (one line per stack) in the work dir."""
        path = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.workdir / f"profile-{name}.txt"
        extra = ["--gil"] if self.args.profile == "gil" else []
        return subprocess.Popen(
            [
                path,
                "record",
                "--format",
                "raw",
                "--nonblocking",
                "--rate",
                "200",
                *extra,
                "-o",
                str(out),
                "--pid",
                str(worker.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _py_spy_dump(self, worker: ManagedProcess, name: str) -> None:
        path = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = subprocess.run([path, "dump", "--pid", str(worker.pid)], capture_output=True, text=True, timeout=60)
        (self.workdir / f"py-spy-{name}.txt").write_text(out.stdout + out.stderr)

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str, process: ManagedProcess) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.check()
            if predicate():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what} (logs in {self.workdir})")


def _attempt_count(engine: Any, since: datetime) -> int:
    from sqlalchemy import func, select

    from store.tables import attempts, deliveries

    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
                .where(deliveries.c.created_at >= since)
            ).scalar()
            or 0
        )


def _ordering_floor_s(engine: Any, since: datetime, started: float, hop_s: float) -> float | None:
    """The least time the phase could have taken with each call lasting ``hop_s`` and nothing else costing any:
    each stream's deliveries one after the other (the routing orders them by sequence), none before its event was
    received. Seconds from ``started``; a phase shorter than that would have broken the order."""
    from sqlalchemy import select

    from store.tables import deliveries, events

    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.dossier_code, deliveries.c.stream, deliveries.c.sequence, events.c.received_at)
            .join(events, events.c.id == deliveries.c.event_pk)
            .where(deliveries.c.created_at >= since)
            .order_by(deliveries.c.dossier_code, deliveries.c.stream, deliveries.c.sequence)
        ).all()
    if not rows:
        return None
    ends: dict[tuple[str, str], float] = {}
    for code, stream, _, received_at in rows:
        ends[(code, stream)] = max(ends.get((code, stream), 0.0), received_at.timestamp() - started) + hop_s
    return max(ends.values())


def _hops(engine: Any, since: datetime) -> dict[str, float | None]:
    """Where the time between two deliveries of one stream went besides the call, in ms (p50 and p99 of each):
    ``claim`` from a delivery being due (its predecessor recorded, its event received) to the claim that took it
    (the attempt's ``started_at``, the claim's own time); ``record`` from that claim to the attempt's end being
    recorded (``delivered_at``), less the call's own duration: the claim's transaction, the wait for the calls to
    start, and for the end to be recorded."""
    from sqlalchemy import select

    from store.tables import Status, attempts, deliveries, events

    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.dossier_code, deliveries.c.stream, attempts.c.started_at, attempts.c.duration_ms,
                   deliveries.c.delivered_at, events.c.received_at)
            .join(attempts, attempts.c.delivery_id == deliveries.c.id)
            .join(events, events.c.id == deliveries.c.event_pk)
            .where(deliveries.c.created_at >= since, deliveries.c.status == Status.DELIVERED,
                   attempts.c.outcome == "delivered")
            .order_by(deliveries.c.dossier_code, deliveries.c.stream, deliveries.c.sequence)
        ).all()
    record: list[float] = []
    claim: list[float] = []
    recorded: dict[tuple[str, str], float] = {}
    for code, stream, started_at, duration_ms, delivered_at, received_at in rows:
        start, done = started_at.timestamp(), delivered_at.timestamp()
        record.append(1000 * (done - start) - (duration_ms or 0.0))
        due = max(recorded.get((code, stream), 0.0), received_at.timestamp())
        claim.append(max(0.0, 1000 * (start - due)))
        recorded[(code, stream)] = done
    return {
        "hop_record_p50_ms": _round(percentile(record, 50)), "hop_record_p99_ms": _round(percentile(record, 99)),
        "hop_claim_p50_ms": _round(percentile(claim, 50)), "hop_claim_p99_ms": _round(percentile(claim, 99)),
    }


def _busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else 0.0


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


# --------------------------------------------------------------------------- report


def summarise(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    r = bench.results
    base, fast, slow = r.get("baseline"), r.get("relay"), r.get("slow")
    paced, peer, unaudited = r.get("paced"), r.get("peer"), r.get("unaudited")
    out: dict[str, Any] = {
        "baseline_tasks_per_s": _round(base.per_s) if base else None,
        "relay_deliveries_per_s": _round(fast.per_s) if fast else None,
        "relay_slow_deliveries_per_s": _round(slow.per_s) if slow else None,
        "p50_ms": fast.extra.get("p50_ms") if fast else None,
        "p99_ms": fast.extra.get("p99_ms") if fast else None,
        "worker_rss_mb": max((p.extra.get("worker_rss_mb", 0) for p in (fast, slow, paced) if p), default=None),
        "slow_p50_ms": slow.extra.get("p50_ms") if slow else None,
        "slow_p99_ms": slow.extra.get("p99_ms") if slow else None,
        "ratio_relay_to_baseline": round(fast.per_s / base.per_s, 3)
        if base and fast and base.per_s and fast.per_s
        else None,
        "peer_deliveries_per_s": _round(peer.per_s) if peer else None,
        "paced_rate_per_s": paced.extra.get("paced_rate_per_s") if paced else None,
        "paced_p50_ms": paced.extra.get("p50_ms") if paced else None,
        "paced_p99_ms": paced.extra.get("p99_ms") if paced else None,
        "worker_cpu_ms_per_delivery": fast.extra.get("worker_cpu_ms_per_delivery") if fast else None,
        "unaudited_deliveries_per_s": _round(unaudited.per_s) if unaudited else None,
        "ratio_audited_to_unaudited": round(fast.per_s / unaudited.per_s, 3)
        if fast and unaudited and fast.per_s and unaudited.per_s else None,
        "ratio_relay_to_peer": round(fast.per_s / peer.per_s, 3) if fast and peer and fast.per_s and peer.per_s
        else None,
        "ratio_slow_to_fast": round(slow.per_s / fast.per_s, 3) if fast and slow and fast.per_s and slow.per_s
        else None,
        # the best (c) could do with its calls' latency and nothing else: each stream's deliveries in order
        "ratio_ordering_floor_to_fast": round(slow.extra["ordering_floor_per_s"] / fast.per_s, 3)
        if fast and slow and fast.per_s and slow.extra.get("ordering_floor_per_s") else None,
        "concurrency": args.concurrency,
        "slow_concurrency": args.slow_concurrency,
        "slow_latency_ms": args.latency_ms,
        "database": bench.db.label.split(" ")[0] if bench.db else None,
        "sizes": {
            "baseline_tasks": args.baseline_tasks,
            "relay_events": args.events,
            "slow_events": args.slow_events,
            "paced_seconds": args.paced_seconds,
            "delivery_batch": args.delivery_batch,
            "batch": args.batch,
            "senders": args.senders,
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "phases": {
            name: {
                "concurrency": p.concurrency,
                "items": p.items,
                "completed": p.completed,
                "elapsed_s": _round(p.elapsed_s),
                "per_s": _round(p.per_s),
                **p.extra,
            }
            for name, p in r.items()
        },
        "targets": {},
    }
    ratio = out["ratio_relay_to_baseline"]
    t = out["targets"]
    t["relay_vs_baseline_ge_0.5"] = None if ratio is None else ratio >= 0.5
    t["relay_vs_baseline_ge_1"] = None if ratio is None else ratio >= 1.0
    t["relay_vs_peer_ge_1"] = None if out["ratio_relay_to_peer"] is None else out["ratio_relay_to_peer"] >= 1.0
    t["slow_ge_90pct_of_fast"] = None if out["ratio_slow_to_fast"] is None else out["ratio_slow_to_fast"] >= 0.9
    slow_rate = out["relay_slow_deliveries_per_s"]
    t["slow_ge_300_per_s"] = None if slow_rate is None else slow_rate >= 300
    t["paced_p99_le_1s"] = None if out["paced_p99_ms"] is None else out["paced_p99_ms"] <= 1000
    cpu = out["worker_cpu_ms_per_delivery"]
    t["worker_cpu_le_1ms"] = None if cpu is None else cpu <= 1.0
    t["worker_rss_le_300_mb"] = None if out["worker_rss_mb"] is None else out["worker_rss_mb"] <= 300
    audited = out["ratio_audited_to_unaudited"]
    t["audit_chain_costs_le_10pct"] = None if audited is None else audited >= 0.9
    fast_rate = out["relay_deliveries_per_s"]
    t["relay_ge_1000_per_s"] = None if fast_rate is None else fast_rate >= 1000
    return out


def print_tables(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    def fmt(v: Any, unit: str = "") -> str:
        return "—" if v is None else f"{v:,.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else "[green]met[/]" if ok else "[red]missed[/]"

    phases = summary["phases"]
    table = Table(
        title=f"motcua-relay throughput ({summary['database']} ledger, {summary['machine']['cpus']} CPUs, one Redis db)"
    )
    for col in (
        "phase",
        "concurrency",
        "items",
        "done",
        "elapsed s",
        "per s",
        "per s (99 %)",
        "p50 ms",
        "p99 ms",
        "worker RSS MB",
        "machine CPU %",
    ):
        table.add_column(col, justify="right" if col != "phase" else "left")
    names = {
        "baseline": "(a) raw Celery no-op",
        "relay": "(b) relay end to end",
        "slow": f"(c) relay, +{summary['slow_latency_ms']:.0f} ms per call",
        "paced": f"(d) relay paced at {fmt(summary['paced_rate_per_s'], '/s')}",
        "peer": "(e) plain Celery task per event",
        "unaudited": "(b′) relay, audit chain off",
    }
    for key, label in names.items():
        p = phases.get(key)
        if p is None:
            continue
        table.add_row(
            label,
            str(p["concurrency"]),
            str(p["items"]),
            str(p["completed"]),
            fmt(p["elapsed_s"]),
            fmt(p["per_s"]),
            fmt(p.get("per_s_first_99pct")),
            fmt(p.get("p50_ms")),
            fmt(p.get("p99_ms")),
            fmt(p.get("worker_rss_mb")),
            fmt(p.get("machine_cpu_busy_pct")),
        )
    console.print(table)

    detail = Table(title="Where the CPU went (seconds during the phase) and what the ledger says")
    for col in ("phase", "worker", "worker ms/delivery", "api", "sandbox", "bench", "postgres", "redis",
                "intake ev/s", "attempts", "mean batch", "superseded", "dead"):
        detail.add_column(col, justify="right" if col != "phase" else "left")
    for key in ("unaudited", "relay", "slow", "paced"):
        p = phases.get(key)
        if p is None:
            continue
        cpu = p["cpu_s"]
        detail.add_row(
            names[key],
            fmt(cpu["worker"]),
            fmt(p.get("worker_cpu_ms_per_delivery")),
            fmt(cpu["api"]),
            fmt(cpu["sandbox"]),
            fmt(cpu["bench"]),
            fmt(cpu.get("postgres")),
            fmt(cpu.get("redis")),
            fmt(p["intake_events_per_s"]),
            str(p["attempts"]),
            fmt(p.get("mean_batch")),
            str(p["superseded"]),
            str(p["dead"]),
        )
    if "baseline" in phases:
        b = phases["baseline"]
        per = 1000 * b["worker_cpu_s"] / b["completed"] if b.get("completed") else None
        detail.add_row(names["baseline"], fmt(b["worker_cpu_s"]), fmt(per), *["—"] * 10)
    if "peer" in phases:
        q = phases["peer"]
        detail.add_row(names["peer"], fmt(q["worker_cpu_s"]), fmt(q.get("worker_cpu_ms_per_delivery")), *["—"] * 10)
    console.print(detail)

    hops = Table(title="One hop of a stream besides its call (ms): from being due to its claim, and from the claim "
                       "to its end recorded, less the call")
    for col in ("phase", "due → claimed p50", "p99", "claimed → recorded p50", "p99 "):
        hops.add_column(col, justify="right" if col != "phase" else "left")
    for key in ("unaudited", "relay", "slow", "paced"):
        if (p := phases.get(key)) is not None:
            hops.add_row(names[key], *(fmt(p.get(f"hop_{k}_ms")) for k in
                                       ("claim_p50", "claim_p99", "record_p50", "record_p99")))
    console.print(hops)

    targets = Table(title="Targets")
    for col in ("target", "measured", "verdict"):
        targets.add_column(col)
    t = summary["targets"]

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.1f} %"

    rows = [
        ("relay ≥ 100 % of the raw Celery no-op", pct(summary["ratio_relay_to_baseline"]), "relay_vs_baseline_ge_1"),
        ("relay ≥ 100 % of the plain-Celery peer", pct(summary["ratio_relay_to_peer"]), "relay_vs_peer_ge_1"),
        (f"+{summary['slow_latency_ms']:.0f} ms per call ≥ 90 % of the fast path (in-order streams at "
         f"{summary['slow_latency_ms']:.0f} ms a call allow {pct(summary['ratio_ordering_floor_to_fast'])})",
         pct(summary["ratio_slow_to_fast"]), "slow_ge_90pct_of_fast"),
        (f"p99 intake→delivered ≤ 1 s at {fmt(summary['paced_rate_per_s'], '/s')}", fmt(summary["paced_p99_ms"], " ms"),
         "paced_p99_le_1s"),
        ("worker CPU ≤ 1 ms per delivery", fmt(summary["worker_cpu_ms_per_delivery"], " ms"), "worker_cpu_le_1ms"),
        ("worker RSS ≤ 300 MB", fmt(summary["worker_rss_mb"], " MB"), "worker_rss_le_300_mb"),
        ("≥ 1,000 deliveries/s end to end", fmt(summary["relay_deliveries_per_s"], "/s"), "relay_ge_1000_per_s"),
        ("the audit chain costs ≤ 10 % (relay with it, against without)", pct(summary["ratio_audited_to_unaudited"]),
         "audit_chain_costs_le_10pct"),
    ]
    for label, measured, key in rows:
        targets.add_row(label, measured, verdict(t.get(key)))
    console.print(targets)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description="Relay throughput vs a raw Celery baseline, on the same Redis and worker settings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--baseline-tasks", type=int, default=3000, help="no-op tasks in phase (a)")
    p.add_argument("--events", type=int, default=3000, help="events through the relay in phase (b)")
    p.add_argument("--slow-events", type=int, default=3000, help="events in phase (c)")
    p.add_argument("--warmup-events", type=int, default=60, help="events delivered before each relay phase")
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="worker threads for (a) and (b) (the relay's default MOTCUA_WORKER_CONCURRENCY)",
    )
    p.add_argument(
        "--worker-processes", type=int, default=1, help="worker processes for every phase (baseline and relay alike)"
    )
    p.add_argument("--slow-concurrency", type=int, default=128, help="worker threads for (c)")
    p.add_argument("--latency-ms", type=float, default=200.0, help="latency injected per sandbox call in (c)")
    p.add_argument("--batch", type=int, default=100, help="events per intake request")
    p.add_argument("--senders", type=int, default=4, help="intake requests in flight (dossiers split among them)")
    p.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server URL (e.g. postgresql://postgres@127.0.0.1:5432/test): a database of "
        "the bench's own is created there and dropped; default a fresh SQLite file",
    )
    p.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server (no db number)")
    p.add_argument("--redis-db", type=int, default=13, help="Redis db for the run, flushed before and after")
    p.add_argument("--phases", default="baseline,unaudited,relay,slow,paced,peer",
                   help="comma-separated subset of baseline,unaudited,relay,slow,paced,peer")
    p.add_argument("--paced-seconds", type=float, default=60.0, help="how long phase (d) sends at a fixed rate")
    p.add_argument("--paced-rate", type=float, default=None,
                   help="events/s in phase (d) (default: half of phase (b)'s measured rate, else 300)")
    p.add_argument("--peer-events", type=int, default=3000, help="events through the plain-Celery peer in (e)")
    p.add_argument("--delivery-batch", type=int, default=None,
                   help="MOTCUA_DELIVERY_BATCH of the relay worker (default: the relay's own)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting of every relay process, as its variable (MOTCUA_DELIVERY_CHAIN=false); repeatable")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for a phase to finish")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between ledger polls")
    p.add_argument("--seed", type=int, default=7, help="workload seed")
    p.add_argument("--log-level", default="WARNING", help="MOTCUA_LOG_LEVEL of the relay processes")
    p.add_argument("--workdir", default=None, help="keep logs and the SQLite ledger here (default: a temp dir)")
    p.add_argument("--keep-logs", action="store_true", help="do not delete the temp dir (its path is printed)")
    p.add_argument(
        "--no-beat",
        action="store_true",
        help="do not run the beat (sweeper): deliveries whose wake-up is lost then never finish",
    )
    p.add_argument("--py-spy", action="store_true", help="py-spy dump of the worker's threads at each phase end")
    p.add_argument(
        "--profile",
        choices=["all", "gil"],
        default=None,
        help="py-spy record the worker during each relay phase (collapsed stacks in the work dir; "
        "'gil': only samples holding the GIL)",
    )
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.phase_set = {x.strip() for x in args.phases.split(",") if x.strip()}
    if unknown := args.phase_set - {"baseline", "unaudited", "relay", "slow", "paced", "peer"}:
        p.error(f"unknown phases: {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    bench = Bench(args, console)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    bench.redis.flushdb()
    console.print(f"[bold]motcua-relay bench[/]: Redis {bench.redis_url} (flushed), logs in {bench.workdir}")
    try:
        if "baseline" in args.phase_set:
            bench.results["baseline"] = bench.run_baseline()
        if args.phase_set & {"unaudited", "relay", "slow", "paced", "peer"}:
            bench.start_relay()
            assert bench.db is not None
            console.print(f"ledger: {bench.db.label}")
            first = date(2025, 3, 3)
            fast = workload(args.events, first, args.seed)
            slow = workload(args.slow_events, date(2025, 6, 2), args.seed + 1000)
            warm1 = workload(args.warmup_events, date(2025, 9, 1), args.seed + 2000)
            warm2 = workload(args.warmup_events, date(2025, 11, 3), args.seed + 3000)
            if "unaudited" in args.phase_set:
                plain = workload(args.events, date(2024, 3, 4), args.seed + 7000)
                warm0 = workload(args.warmup_events, date(2024, 9, 2), args.seed + 8000)
                bench.results["unaudited"] = bench.run_relay("unaudited", "b′", plain, warm0, args.concurrency, 0,
                                                             extra_env={"MOTCUA_AUDIT_CHAIN": "false"})
            if "relay" in args.phase_set:
                bench.results["relay"] = bench.run_relay("relay", "b", fast, warm1, args.concurrency, 0)
            if "slow" in args.phase_set:
                bench.results["slow"] = bench.run_relay(
                    "slow", "c", slow, warm2, args.slow_concurrency, args.latency_ms
                )
            if "paced" in args.phase_set:
                measured = bench.results["relay"].per_s if "relay" in bench.results else None
                rate = args.paced_rate or (measured / 2 if measured else 300.0)
                paced = workload(int(rate * args.paced_seconds), date(2026, 2, 2), args.seed + 4000)
                warm3 = workload(args.warmup_events, date(2026, 9, 7), args.seed + 5000)
                bench.results["paced"] = bench.run_relay(
                    "paced", "d", paced, warm3, args.concurrency, 0, pace=round(rate, 1)
                )
            if "peer" in args.phase_set:
                bench.results["peer"] = bench.run_peer(workload(args.peer_events, date(2026, 5, 4), args.seed + 6000))
        summary = summarise(args, bench)
        print_tables(console, summary)
        if args.json_path:
            path = Path(args.json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
            console.print(f"JSON written to {path}")
        return 0
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every process[/]")
        return 130
    finally:
        bench.close()
        if args.keep_logs or args.workdir:
            console.print(f"logs kept in {bench.workdir}")


if __name__ == "__main__":
    sys.exit(main())
