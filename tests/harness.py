"""Real processes for tests: a private Redis server, Celery workers and beat as subprocesses.

Nothing here is faked: the worker is ``motcua-relay worker`` in its own process, killed
with SIGKILL when a test says so; Redis is a real ``redis-server`` on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

# the processes' environment, ports and secrets are the benchmarks' too: bench/ holds them, tests/ re-exports them
from bench.support import free_port as free_port
from bench.support import new_secret as new_secret
from bench.support import relay_env as relay_env
from config.routing import Destination, RoutingConfig
from config.settings import Settings
from services.base import Context

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class RedisServer:
    """A private ``redis-server`` (no persistence, like the machine's) that a test may restart."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (the README's test command installs it)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 10, 0.05, "redis-server to start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RelayProcess:
    """``motcua-relay <command>`` as a subprocess with the test's environment."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, *, supervise: bool = False,
                 on_failure_only: bool = False) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.exit_codes: list[int] = []  # of the exits it made on its own (not the test's kills)
        self._supervising = supervise
        self._on_failure_only = on_failure_only
        self._lock = threading.Lock()
        if supervise:
            threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        """Restart the process when it exits on its own, as systemd's Restart=always would (``on_failure_only``:
        as Restart=on-failure would, leaving a process that exited 0 stopped)."""
        while self._supervising:
            time.sleep(0.5)
            with self._lock:
                if self.proc is not None and self.proc.poll() is not None:
                    self.exit_codes.append(self.proc.returncode)
                    if self.proc.returncode == 0 and self._on_failure_only:
                        self.proc = None
                        continue
                    self.restarts += 1
                    self.start()

    def close(self) -> None:
        self._supervising = False
        self.kill()

    def start(self) -> RelayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *self.args], cwd=ROOT, env=self.env, stdout=log, stderr=log,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, no acks, nothing cleaned up."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def worker_and_beat(env: dict[str, str], name: str, workdir: Path) -> tuple[RelayProcess, RelayProcess]:
    """A supervised ``motcua-relay worker`` and a ``beat`` on ``env``, logging to ``<name>-worker.log`` and
    ``<name>-beat.log`` under ``$MOTCUA_TEST_ARTIFACTS`` (else ``workdir``)."""
    logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", workdir))
    logs.mkdir(parents=True, exist_ok=True)
    worker = RelayProcess(["worker"], env, logs / f"{name}-worker.log", supervise=True).start()
    beat = RelayProcess(["beat"], {**env, "MOTCUA_BEAT_SCHEDULE_FILE": str(workdir / f"{name}-beat")},
                        logs / f"{name}-beat.log").start()
    return worker, beat


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The log events emitted inside, as ``structlog.testing.capture_logs`` gives them, also from loggers that
    cached their processors on first use (config/logging.py asks for that, and keeps one list of processors): the
    configured list is swapped in place, not replaced."""
    import structlog
    from structlog.testing import LogCapture

    capture = LogCapture()
    processors = structlog.get_config()["processors"]
    kept = list(processors)
    processors[:] = [capture]
    try:
        yield capture.entries
    finally:
        processors[:] = kept


def bare_context(*destinations: Destination, settings: Settings | None = None) -> Context:
    """A context for deliverers built outside a runtime (a connector's narrow tests): an in-memory ledger, no
    Redis, nothing queued."""
    from sqlalchemy import create_engine

    from services.registry import get_registry
    from tasks.runtime import rules_for

    routing = RoutingConfig(destinations={d.name: d for d in destinations}, routes=[])
    return Context(settings=settings or Settings(), routing=routing, engine=create_engine("sqlite://"), redis=None,
                   rules=rules_for(routing), registry=get_registry(), enqueue=lambda _: None)


def become_relay(monkeypatch: Any, env: dict[str, str]) -> None:
    """Configure this process (API side, in-process deliveries) with the relay environment ``env``."""
    from tasks.app import configure_app
    from tasks.runtime import reset_runtime

    for key, value in env.items():
        if key.startswith("MOTCUA_"):
            monkeypatch.setenv(key, value)
    reset_runtime()
    configure_app()


def write_routing(path: Path, base_url: str, *, names: tuple[str, ...] = ("onestop", "warehouse"),
                  retry: str = "", breaker: str = "", rate: str = "", read_timeout: float = 5.0,
                  ordering: str = "sequence") -> Path:
    """A routing file with webhook destinations pointing at a sandbox one-stop on ``base_url``."""
    lines: list[str] = []
    for name in names:
        lines += [
            f"[destinations.{name}]",
            'kind = "webhook"',
            f'url = "{base_url}/subscribers/{name}/events"',
            f'secret_env = "MOTCUA_{name.upper()}_WEBHOOK_SECRET"',
            f'ordering = "{ordering}"',
            f"timeouts = {{ connect = 2, read = {read_timeout} }}",
        ]
        if retry:
            lines.append(f"retry = {retry}")
        if breaker:
            lines.append(f"breaker = {breaker}")
        if rate:
            lines.append(f"rate_limit = {rate}")
        lines.append("")
    if "onestop" in names:
        lines += ["[[routes]]", 'events = ["*"]', 'exclude_origins = ["onestop"]', 'destination = "onestop"', ""]
    if "warehouse" in names:
        lines += ["[[routes]]", 'events = ["*"]', 'destination = "warehouse"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def drain(clock: Callable[[], datetime] | None = None, rounds: int = 50) -> None:
    """Run every open delivery in-process, in sequence order, until none is left; ``clock`` is the
    engine's (a later one gets past the retries' waits)."""
    from sqlalchemy import select

    from store.tables import FINAL_STATUSES, deliveries
    from tasks.delivery import run_delivery
    from tasks.runtime import get_runtime

    now = clock or (lambda: datetime.now(UTC))
    rt = get_runtime()
    for _ in range(rounds):
        with rt.engine.connect() as conn:
            open_ = conn.execute(select(deliveries.c.id, deliveries.c.destination)
                                 .where(deliveries.c.status.notin_(FINAL_STATUSES))
                                 .order_by(deliveries.c.sequence)).all()
        if not open_:
            return
        for delivery_id, destination in open_:
            run_delivery(delivery_id, destination, clock=now)
    raise AssertionError("deliveries still open after draining")
