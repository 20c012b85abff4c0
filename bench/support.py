"""What every benchmark (and the tests that play a benchmark's story) needs around the relay.

- processes: :class:`ManagedProcess` (a subprocess in its own session, stopped with its group),
  :func:`relay_cmd` (``motcua-relay <args>``), :func:`relay_env` (the environment of a relay process),
  :func:`wait_http`, :func:`free_port`, :func:`new_secret`, :func:`redis_db_url`;
- the ledger of a run: :class:`Database` (a fresh SQLite file, or a PostgreSQL database of its own);
- measures: :func:`tree_rss_mb`, :func:`tree_hwm_mb`, :func:`tree_cpu_s` of a process tree (from ``/proc``),
  :func:`machine_cpu`, :func:`percentile`;
- routing: :func:`routing_template` (``bench/routing/<name>.toml``) and :func:`routing_file` (a copy of one with
  some destinations' settings changed).

The benchmarks run as ``python -m bench.<name>`` from the repository root; nothing here imports ``tests``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ROUTING_DIR = Path(__file__).resolve().parent / "routing"
DEFAULT_REDIS = "redis://127.0.0.1:6379"

# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """A subprocess in its own session, stopped (TERM, then KILL) with its whole group."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.cmd, self.env, self.log_path = name, cmd, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start it from the repository root, its output appended to ``log_path``."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        """Raise, with its log's tail, when it has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it when it has not ended 15 s later."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def relay_cmd(*args: str) -> list[str]:
    """``motcua-relay <args>`` with this interpreter."""
    return [sys.executable, "-m", "cli.main", *args]


def relay_env(
    database_url: str, redis_url: str, intake_secret: str, subscriber_secrets: dict[str, str],
    routing_file: Path, **extra: str,
) -> dict[str, str]:
    """The environment of a relay process: this one's, less every ``MOTCUA_`` variable (a developer's own
    settings must not leak into a run), with the ledger, the broker and Redis, the intake secret, the routing
    file, one ``MOTCUA_<NAME>_WEBHOOK_SECRET`` per subscriber, JSON logs, and ``extra`` last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}
    env.update({
        "MOTCUA_DATABASE_URL": database_url,
        "MOTCUA_BROKER_URL": redis_url,
        "MOTCUA_REDIS_URL": redis_url,
        "MOTCUA_INTAKE_SECRET": intake_secret,
        "MOTCUA_ROUTING_FILE": str(routing_file),
        "MOTCUA_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    })
    for name, secret in subscriber_secrets.items():
        env[f"MOTCUA_{name.upper()}_WEBHOOK_SECRET"] = secret
    env.update(extra)
    return env


def redis_db_url(base: str, db: int) -> str:
    """``base`` (a Redis server's URL, without a db number) with the db ``db``."""
    return f"{base.rstrip('/')}/{db}"


def wait_http(url: str, timeout: float, process: ManagedProcess | None = None) -> None:
    """Until ``url`` answers below 500; raise when ``process`` (the one serving it) exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            process.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def free_port() -> int:
    """A loopback TCP port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form (``whsec_`` and base64)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


# --------------------------------------------------------------------------- measures of a process tree


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _status_kb(pid: int, field_name: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def tree_rss_mb(pid: int) -> float:
    """The resident memory (VmRSS) of ``pid``'s process tree now, in MB."""
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) / 1024


def tree_hwm_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of ``pid``'s process tree, in MB."""
    return sum(_status_kb(p, "VmHWM") for p in process_tree(pid)) / 1024


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user and system) spent so far by ``pid``'s process tree; with ``reaped``, also by the children
    that ``pid`` has waited for (a server's connections that have closed)."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{p}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            if reaped and p == pid:
                total += (int(fields[13]) + int(fields[14])) / _TICK
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) of ``values``, linearly interpolated; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------- the ledger of a run


@dataclass
class Database:
    """A fresh ledger for the run: a SQLite file in the work dir, or a PostgreSQL database of our own."""

    url: str  # as the relay's settings take it
    label: str
    drop: Callable[[], None] = lambda: None

    @classmethod
    def create(cls, requested: str | None, workdir: Path) -> Database:
        """A SQLite file in ``workdir`` (``requested`` empty or ``"sqlite"``), or a new database on the PostgreSQL
        server of ``requested``, dropped by :attr:`drop`."""
        if not requested or requested.startswith("sqlite"):
            if requested and requested != "sqlite":
                raise SystemExit("for SQLite the bench always makes a fresh file: pass no --database-url")
            path = workdir / "ledger.db"
            return cls(f"sqlite:///{path}", "sqlite")
        if not requested.startswith(("postgresql", "postgres://")):
            raise SystemExit(f"unsupported --database-url {requested!r} (sqlite or postgresql://…)")
        import psycopg

        admin = "postgresql://" + requested.split("://", 1)[1]
        name = f"motcua_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = admin.rsplit("/", 1)[0]

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return cls(f"{base}/{name}", f"postgresql ({name}, dropped after)", drop)

    @property
    def sqlalchemy_url(self) -> str:
        return Settings(database_url=self.url).database_url

    def server_cpu_s(self) -> float | None:
        """CPU seconds spent so far by the PostgreSQL server (every process of it, the closed connections' too),
        when it runs on this machine and this process may read its ``/proc``; else None (SQLite has no server:
        its work is in the processes that use it). The whole server's, so other databases' work counts too."""
        if not self.url.startswith(("postgresql", "postgres://")):
            return None
        import psycopg

        with psycopg.connect("postgresql://" + self.url.split("://", 1)[1]) as conn:
            row = conn.execute("SELECT pg_backend_pid(), inet_server_addr()::text").fetchone()
        backend, address = row if row else (None, None)
        if backend is None or (address is not None and not address.startswith(("127.", "::1"))):
            return None
        try:
            with open(f"/proc/{backend}/stat") as fh:
                postmaster = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return tree_cpu_s(postmaster, reaped=True)


# --------------------------------------------------------------------------- routing


def routing_template(name: str) -> Path:
    """``bench/routing/<name>.toml``: the routing a benchmark runs with, its simulators' URLs read from the
    variables its ``url_env`` keys name."""
    path = ROUTING_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ROUTING_DIR.glob("*.toml")))
        raise FileNotFoundError(f"no routing template {name!r} in {ROUTING_DIR} (there are: {known})")
    return path


def routing_file(name: str, path: Path, changes: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """The template ``name`` written to ``path`` with ``changes``: destination → the settings it takes instead
    of the template's, merged into nested tables (``{"postal": {"timeouts": {"read": 1.0}}}`` keeps the connect
    timeout). For what ``config/routing.py`` cannot read from the environment: retries, timeouts, options
    without a ``*_env``."""
    data = tomllib.loads(routing_template(name).read_text(encoding="utf-8"))
    destinations = data.setdefault("destinations", {})
    for destination, settings in (changes or {}).items():
        if destination not in destinations:
            raise KeyError(f"routing template {name!r} has no destination {destination!r}")
        destinations[destination] = _merged(destinations[destination], settings)
    path.write_text(_routing_toml(data), encoding="utf-8")
    return path


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merged(out[key], value) if nested else value
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str | bool | int | float):
        return json.dumps(value, ensure_ascii=False)  # JSON's strings, numbers and booleans are TOML's too
    raise TypeError(f"no TOML for {value!r}")


def _routing_toml(data: Mapping[str, Any]) -> str:
    """A routing file's two tables (``destinations``, ``routes``) as TOML (tomllib only reads it)."""
    if unknown := set(data) - {"destinations", "routes"}:
        raise ValueError(f"a routing file has destinations and routes, not {sorted(unknown)}")
    lines: list[str] = []
    for name, table in data.get("destinations", {}).items():
        lines += [f"[destinations.{_toml_key(name)}]", *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in
                                                         table.items()), ""]
    for route in data.get("routes", []):
        lines += ["[[routes]]", *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in route.items()), ""]
    return "\n".join(lines)
