"""``motcua-relay demo``: the whole relay on one machine, with no configuration at all.

It starts the simulators (faults injected), the intake API, a worker and the sweeper; plays the
working day of a ward's desk and of the provincial centre through the signed intake; follows every
delivery in the ledger until it is final; and ends with a summary and the simulators' own count of
effects. Each service of the routing file plays its own part (``services/<kind>/demo.py``: its
simulator and faults, what it sends back by itself, its figures and its verdict in the summary):
the post sends its statuses by callback and tracking list, citizens pay their bills at the payment
simulator, which calls back, sometimes not, sometimes twice, and the day's payments are reconciled
at the end.

Each default gives way to its ``MOTCUA_*`` variable: fresh ``whsec_`` secrets; a fresh SQLite
ledger ``./var/demo-<timestamp>.db``; Redis db 3 on 127.0.0.1:6379 when it answers (flushed: without asking
when it is empty or a demo used it last, else only when a person at the terminal says so or
``MOTCUA_DEMO_FLUSH=yes``), else Celery's in-process ``memory://`` broker and a worker thread; the embedded routing with
retries compressed to seconds. Logs go to ``./var/demo-logs/<timestamp>/``. Knobs for tests:
``MOTCUA_DEMO_REDIS_PROBE`` (host:port), ``MOTCUA_DEMO_REDIS_DB``, ``MOTCUA_DEMO_TIMEOUT`` (s),
``MOTCUA_DEMO_RATE`` (events sent per second: the day is played compressed, in time order),
``MOTCUA_DEMO_SEED`` (the same day, faults and payments on every run).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from config.options import ServiceOptions, option_variable, secret_variable
from config.redis_url import masked as masked_url
from config.routing import Destination

if TYPE_CHECKING:
    from services.base import BeatJob, Context, DemoPlay, Service
    from tasks.runtime import Runtime

VAR = Path("var")
JOBS_EVERY = 3.0  # the services' beat jobs run this often in the demo
DEMO_RETRY = 'retry = { schedule = ["1s", "2s", "4s", "8s"], repeat_every = "10s" }'
log = logging.getLogger("motcua.demo")


class DemoError(RuntimeError):
    """Something the demo started did not come up or stopped: said in one line, with the log to read."""


def run_demo(*, dossiers: int = 100, json_path: Path | None = None, fault_rate: float = 0.1, console: Console,
             timeout: float | None = None) -> None:
    """Run the demo; exit 0 when every delivery ended final, else 1 (raised as ``typer.Exit``)."""
    if not 0 <= fault_rate <= 1 or dossiers < 1:
        console.print("[red]--faults must be between 0 and 1, and --dossiers at least 1[/]")
        raise typer.Exit(2)
    timeout = timeout or float(os.environ.get("MOTCUA_DEMO_TIMEOUT", "300"))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)  # `kill` stops the children too, like Ctrl-C
    try:
        with contextlib.ExitStack() as stack:  # unwinds on Ctrl-C too: children, threads and servers stop
            demo = Demo(console, stack)
            demo.configure()
            demo.start()
            demo.play(dossiers, fault_rate)
            code = demo.report(demo.follow(timeout), json_path)
    except DemoError as exc:
        console.print(f"\n[red]{exc}[/]")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: everything the demo started is stopped[/]")
        raise typer.Exit(130) from None
    if code:
        raise typer.Exit(code)


class Demo:
    """One run: what it configured and started (stopped by the exit stack), what it sent. It is the services'
    :class:`~services.base.Stage`: each service with a destination in the routing plays its part
    (``services/<kind>/demo.py``), in the routing file's order."""

    def __init__(self, console: Console, stack: contextlib.ExitStack) -> None:
        seed = os.environ.get("MOTCUA_DEMO_SEED")
        self.console, self.stack, self.rng = console, stack, random.Random(int(seed) if seed else None)
        self.env: MutableMapping[str, str] = os.environ
        self.stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.logs = VAR / "demo-logs" / self.stamp
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log_file = stack.enter_context((self.logs / "demo.log").open("a", encoding="utf-8"))
        stack.callback(logging.getLogger().handlers.clear)  # runs last but one: after everything has stopped
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stop = threading.Event()  # the sweeper, the sender and the plays' threads
        stack.callback(self.stop.set)
        self.onestop = ""
        self.dossiers, self.fault_rate = 0, 0.0

    # ------------------------------------------------------------------ the stage the plays use

    def serve(self, app: Any, port: int) -> str:
        return _serve(app, port, self.stack)

    def secret(self) -> str:
        return _secret()

    def secrets(self, destination: Destination, model: type[ServiceOptions], values: Mapping[str, str]
                ) -> dict[str, str]:
        found = {}
        for key, value in values.items():
            variable = secret_variable(destination, model, key)
            if variable is None:
                raise DemoError(f"destination {destination.name}: name the variable of its {key} with {key}_env")
            found[key] = self.env.setdefault(variable, value)
        return found

    def point(self, destination: Destination, key: str, variable: str, value: str, *, keep: bool = False) -> None:
        name = option_variable(destination, key) or variable
        if keep:
            self.env.setdefault(name, value)
        else:
            self.env[name] = value

    # ------------------------------------------------------------------ the run

    def configure(self) -> None:
        """Secrets, ledger, routing and broker: the environment's, else the demo's; each service's simulator."""
        from config.routing import load_routing
        from services.registry import get_registry

        env = self.env
        env.setdefault("MOTCUA_LOG_FORMAT", "json")
        env.setdefault("MOTCUA_DATABASE_URL", f"sqlite:///{(VAR / f'demo-{self.stamp}.db').resolve()}")
        env.setdefault("MOTCUA_INTAKE_SECRET", _secret())
        if "MOTCUA_ROUTING_FILE" not in env:
            env["MOTCUA_ROUTING_FILE"] = _demo_routing(VAR / "demo-routing.toml")
            self.console.print("retries: compressed for the demo to 1, 2, 4, 8 s, then every 10 s "
                               "(config/relay.toml: 5 s, 30 s, 2 min …)")
        self.routing = load_routing(env["MOTCUA_ROUTING_FILE"])
        registry = get_registry()
        kinds = list(dict.fromkeys(d.kind for d in self.routing.destinations.values()))
        self.plays: list[DemoPlay] = []
        for kind in kinds:
            service = registry.kind(next(d for d in self.routing.destinations.values() if d.kind == kind))
            names = [n for n, d in self.routing.destinations.items() if d.kind == kind]
            play = service.demo.load()(self, names) if service.demo is not None else None
            if play is not None:
                self.plays.append(play)
        if not self.onestop:
            raise DemoError("the demo plays the one-stop software: the routing file needs a webhook destination")
        self._audit()
        self.mode = _choose_broker(self.console)

    def _audit(self) -> None:
        """The audit chain's checkpoints signed with a key of the demo's own and time-stamped by the time-stamping
        authority's simulator, unless the environment names a key or an authority."""
        from sandbox.tsa import create_app as tsa_app
        from store.audit.checkpoints import Signer

        self.env.setdefault("MOTCUA_AUDIT_SIGNING_KEY", Signer.generate().private_text())
        if "MOTCUA_AUDIT_TSA_URL" not in self.env:
            app = tsa_app()
            url = self.serve(app, 0)
            certificate = VAR / f"demo-tsa-{self.stamp}.pem"
            certificate.write_text(app.state.tsa.authority.certificate_pem)
            self.env["MOTCUA_AUDIT_TSA_URL"] = f"{url}/"
            self.env["MOTCUA_AUDIT_TSA_CERTIFICATE_FILE"] = str(certificate)
            self.console.print(f"audit chain: checkpoints signed with a key of the demo's own, time-stamped by the "
                               f"RFC 3161 authority's simulator at {url}")

    def start(self) -> None:
        """The ledger's schema, then the API and a worker (subprocesses with Redis, threads without), the sweeper."""
        from config.celery import worker_queues
        from config.logging import configure_logging
        from config.settings import get_settings
        from store.db import upgrade
        from tasks.app import configure_app
        from tasks.runtime import get_runtime, reset_runtime

        reset_runtime()
        celery_app = configure_app()
        configure_logging("json", os.environ.get("MOTCUA_LOG_LEVEL", "INFO"))
        _log_to(self.log_file)
        upgrade(get_settings().database_url)
        self.rt = get_runtime()
        self.context: Context = self.rt
        self.database = self.rt.engine.url.render_as_string(hide_password=True)
        self.console.print(f"ledger: [bold]{self.database}[/]\n"
                           + "; ".join(text for play in self.plays if (text := play.describe()))
                           + ", threads of this process")
        if self.mode == "memory":
            from celery.contrib.testing.worker import start_worker

            from api.app import create_app

            options = celery_app.conf.broker_transport_options
            celery_app.conf.broker_transport_options = {**options, "polling_interval": 0.05}
            self.api = _serve(create_app(), 0, self.stack)
            self.stack.enter_context(start_worker(celery_app, pool="threads", concurrency=32, loglevel="WARNING",
                                                  perform_ping_check=False, queues=worker_queues(self.rt.routing)))
            self.console.print(f"API {self.api} and a worker (32 threads): threads of this process")
        else:
            with _bind(0) as probe:
                port = probe.getsockname()[1]
            self.api = f"http://127.0.0.1:{port}"
            self.procs = [("api", self._spawn("api", "--port", str(port))), ("worker", self._spawn("worker"))]
            _wait(lambda: self._alive() and _answers(f"{self.api}/healthz"), 60, "the API")
            _wait(lambda: self._alive() and _pong(celery_app), 60, "the worker")
            self.console.print(f"API {self.api} and a worker: `motcua-relay api` and `motcua-relay worker` processes")
        _log_to(self.log_file)  # the API's set-up pointed the logs back at the terminal
        for play in self.plays:
            self._say(play.started(self))
        interval = self.rt.settings.sweep_interval_seconds
        jobs = [(service, job) for service, job in self.rt.registry.jobs()
                if job.every is not None and self.rt.names(service.kind)]
        self._run_until_stop(_sweeper, self.stop, interval, self.rt, jobs)
        self.console.print(f"sweeper: a thread calling tasks.delivery.run_sweep every {interval:g} s"
                           + "".join(f" and {job.title}" for _, job in jobs)
                           + f" (what `motcua-relay beat` schedules in production); logs in {self.logs}/")

    def _run_until_stop(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Run ``target`` in a thread that the demo's end stops and joins before anything it uses (servers,
        processes, the log file) goes away: a sweep still running then would log to a closed file."""
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()

        def join() -> None:
            self.stop.set()
            thread.join(30)

        self.stack.callback(join)
        return thread

    def _say(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line)

    def play(self, dossiers: int, fault_rate: float) -> None:
        """Each service's input and faults, then the day's events sent in time order, signed, through the intake."""
        self.dossiers, self.fault_rate = dossiers, fault_rate
        # the run counts from before the plays: what they start (an online dossier pushed by the portal) is the
        # day's too, and the plays take longer than a second on a loaded machine
        self.since = datetime.now(UTC) - timedelta(seconds=1)
        for play in self.plays:
            self._say(play.play(self))
        produced = set().union(*(play.produces for play in self.plays))
        self.events = _day(dossiers, self.rng, postal_statuses="postal.status" not in produced,
                           payments="fee.paid" not in produced)
        for play in self.plays:
            self._say(play.shape(self, self.events))
        rate = float(os.environ.get("MOTCUA_DEMO_RATE", "20"))
        inbound = sum(1 for e in self.events if e.get("origin", "onestop") != "onestop")
        faked = " and ".join(name for name, event in (("the payment gateway", "fee.paid"),
                                                       ("the post", "postal.status")) if event not in produced)
        played = f" ({inbound} from {faked}, played through the intake)" if inbound else ""
        self.console.print(f"the day: {len(self.events)} events of {dossiers} dossiers{played}, {rate:g} events/s, "
                           f"to {self.api}/v1/events")
        self.started = time.monotonic()
        self.accepted = self.refused = self.sent = 0
        self.errors: list[str] = []
        self.sender = self._run_until_stop(self._send, rate)

    def _send(self, rate: float) -> None:
        """A compressed day: a batch every quarter second (the intake is idempotent, the sender retries)."""
        from sandbox.workload import send_events_sync

        step = max(1, round(rate / 4))
        for i in range(0, len(self.events), step):
            if self.stop.is_set():
                return
            report = send_events_sync(f"{self.api}/v1/events", os.environ["MOTCUA_INTAKE_SECRET"],
                                      self.events[i : i + step])
            self.accepted += report.accepted
            self.refused += report.rejected + report.failed
            self.errors += report.errors
            self.sent = min(len(self.events), i + step)
            self.stop.wait(max(0.0, self.started + self.sent / rate - time.monotonic()))

    def follow(self, timeout: float) -> bool:
        """Live progress per destination until every delivery is final; True on timeout."""
        from store.queries import status_counts, unrouted_count
        from store.tables import FINAL_STATUSES

        deadline = self.started + timeout
        with Live(console=self.console, refresh_per_second=4) as live:
            while True:
                # the services first: news they report after the counts are read would open deliveries unseen;
                # asked in order, and no further than the first that is still busy
                services_settled = all(play.settled(self) for play in self.plays)
                counts, unrouted = status_counts(self.rt.engine, self.since), unrouted_count(self.rt.engine, self.since)
                live.update(_progress(counts, unrouted, time.monotonic() - self.started, self.sent, len(self.events)))
                still_open = {d: {s: n for s, n in c.items() if s not in FINAL_STATUSES} for d, c in counts.items()}
                if (counts and not any(still_open.values()) and not unrouted and not self.sender.is_alive()
                        and services_settled):
                    break
                if time.monotonic() > deadline:
                    live.stop()
                    self.console.print(f"[red]timed out after {timeout:g} s: {len(self.events) - self.sent} events not "
                                       f"sent, {unrouted} not routed; still open: "
                                       f"{ {d: c for d, c in still_open.items() if c} }[/]")
                    return True
                self._alive()
                time.sleep(0.25)
        if not self.console.is_terminal:
            self.console.line()
        return False

    def report(self, timed_out: bool, json_path: Path | None) -> int:
        """The summary table (and JSON), each service's verdict, the next commands to try; the exit code."""
        from store.queries import deliveries_since

        refused = self.refused + len(self.events) - self.sent
        self.console.print(f"intake: {self.accepted} events accepted, {refused} refused or not sent")
        for error in self.errors[:3]:
            self.console.print(f"[red]  {error}[/]")
        rows = deliveries_since(self.rt.engine, self.since)
        stats: dict[str, Any] = {}
        figures: dict[str, Any] = {}
        repeated = 0
        for play in self.plays:
            measured = play.measure(self, rows)
            stats |= measured.stats
            repeated += measured.repeated
            if measured.key is not None:
                figures[measured.key] = measured.figures
        rows = deliveries_since(self.rt.engine, self.since)  # what the plays' measures made (a recovered fee.paid)
        summary = _summary(rows, stats)
        summary["audit"] = self._audit_archive()
        summary["repeated"] = repeated
        summary |= {"broker": {"mode": self.mode, "url": masked_url(os.environ["MOTCUA_BROKER_URL"])},
                    "database": self.database, "dossiers": self.dossiers, "events": len(self.events),
                    "intake": {"accepted": self.accepted, "refused": refused},
                    "elapsed_seconds": round(time.monotonic() - self.started, 1), "timed_out": timed_out, **figures}
        _print_summary(self.console, summary)
        good = True
        for play in self.plays:
            said = play.verdict(summary)
            if said is not None:
                self.console.print(said[0])
                good &= said[1]
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        example = next((r for r in rows if r["attempts"] > 1), rows[0] if rows else {"dossier_code": "<code>"})
        self.console.print(f"\nNext, on this demo's ledger:\n  export MOTCUA_DATABASE_URL={self.database}\n"
                           f"  {_command()} trace {example['dossier_code']}   # a dossier's events and attempts\n"
                           f"  {_command()} deadletters   # what gave up, and why")
        good &= bool(summary["audit"].get("verified"))
        return 0 if summary["open"] == 0 and summary["total"] > 0 and not refused and good else 1

    def _audit_archive(self) -> dict[str, Any]:
        """The day's audit chain signed once more, exported and verified offline, as an inspector would."""
        from schemas.timestamps import verify_token
        from store.audit.archive import read_archive
        from store.audit.export import export
        from store.audit.verify import verify
        from tasks.audit import run_checkpoint, signer_of, tsa_certificates

        run_checkpoint(self.rt)
        now = datetime.now(UTC)
        out = VAR / f"demo-audit-{self.stamp}.zip"
        done = export(self.rt.engine, out, self.since, now, now, tsa_certificates=tsa_certificates(self.rt.settings))
        signer = signer_of(self.rt.settings)
        report = verify(read_archive(out), public_key_pem=signer.public_pem if signer else None,
                        tsa_check=verify_token)
        first = report.first_failure
        said = (f"[green]the archive verifies[/] ({report.counts.signatures} signatures, {report.counts.tokens} "
                "time-stamps)" if first is None else f"[red]the archive does not verify: {first.subject}: "
                                                     f"{first.message}[/]")
        self.console.print(f"audit chain: {sum(done.entries.values())} entries in {len(done.entries)} chains, "
                           f"{done.checkpoints} checkpoints; {said}\n  {_command()} audit verify {out}")
        return {"archive": str(out), "entries": sum(done.entries.values()), "checkpoints": done.checkpoints,
                "time_stamps": report.counts.tokens, "verified": first is None}

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """``motcua-relay <args>`` in its own session (Ctrl-C reaches only the demo, which stops it)."""
        out = self.stack.enter_context((self.logs / f"{args[0]}.log").open("ab"))
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)

        def stop() -> None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)

        self.stack.callback(stop)
        return proc

    def _alive(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise DemoError(f"the {name} stopped (exit {proc.returncode}); see {self.logs / name}.log")
        return True


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _demo_routing(path: Path) -> str:
    """The embedded routing, with compressed retries where a destination has no schedule of its own."""
    from config.settings import DEFAULT_ROUTING_FILE

    text = DEFAULT_ROUTING_FILE.read_text(encoding="utf-8")
    for name, dest in tomllib.loads(text).get("destinations", {}).items():
        if "retry" not in dest:
            text = text.replace(f"[destinations.{name}]\n", f"[destinations.{name}]\n{DEMO_RETRY}\n", 1)
    # a callback lost is queried after 3 s, not 30 min
    text = re.sub(r'^(query_after|query_every) = ".*"$', r'\1 = "3s"', text, flags=re.MULTILINE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path.resolve())


def _command() -> str:
    """How to call ``motcua-relay`` from here: its name when the PATH finds this one, else its path (the quick
    start's ``.venv/bin/motcua-relay``, relative to the working directory when it is below it)."""
    mine = Path(sys.executable).parent / "motcua-relay"
    found = shutil.which("motcua-relay")
    if found and Path(found).resolve() == mine.resolve():
        return "motcua-relay"
    with contextlib.suppress(ValueError):
        return str(mine.absolute().relative_to(Path.cwd()))
    return str(mine)


# Set in the Redis database the demo used: the next demo flushes it without asking.
DEMO_MARK = "motcua-relay:demo"


def _choose_broker(console: Console) -> str:
    import redis

    env = os.environ
    if env.get("MOTCUA_BROKER_URL"):
        env.setdefault("MOTCUA_REDIS_URL", env["MOTCUA_BROKER_URL"])
        console.print(f"broker: [bold]{masked_url(env['MOTCUA_BROKER_URL'])}[/] (MOTCUA_BROKER_URL)")
        return "memory" if env["MOTCUA_BROKER_URL"].startswith("memory://") else "redis"
    probe = env.get("MOTCUA_DEMO_REDIS_PROBE", "127.0.0.1:6379")
    url = f"redis://{probe}/{env.get('MOTCUA_DEMO_REDIS_DB', '3')}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        keys = client.dbsize()
        if keys and not client.exists(DEMO_MARK) and not _may_flush(console, url, keys):
            env["MOTCUA_BROKER_URL"] = env["MOTCUA_REDIS_URL"] = "memory://"
            console.print(f"[yellow]{url} holds {keys} keys the demo did not write: left as it is, and an "
                          "in-process broker (memory://) used instead; MOTCUA_DEMO_REDIS_DB=N picks another "
                          "database, MOTCUA_DEMO_FLUSH=yes flushes this one[/]")
            return "memory"
        client.flushdb()
        client.set(DEMO_MARK, "this database was flushed for motcua-relay demo, and may be again")
    except redis.RedisError:
        env["MOTCUA_BROKER_URL"] = env["MOTCUA_REDIS_URL"] = "memory://"
        console.print(f"[yellow]no Redis on {probe}: using an in-process broker (memory://); for production use Redis")
        return "memory"
    env["MOTCUA_BROKER_URL"] = url
    env.setdefault("MOTCUA_REDIS_URL", url)
    console.print(f"broker: [bold]{url}[/] (Redis answered; this database was flushed for the demo)")
    return "redis"


def _may_flush(console: Console, url: str, keys: int) -> bool:
    """Whether a Redis database holding keys the demo did not write may be flushed: ``MOTCUA_DEMO_FLUSH=yes``,
    or a person at a terminal who says so; never without asking."""
    said = os.environ.get("MOTCUA_DEMO_FLUSH", "").strip().lower()
    if said in ("1", "yes", "true", "y"):
        return True
    if said or not sys.stdin.isatty():
        return False
    return bool(typer.confirm(f"{url} holds {keys} keys the demo did not write. Flush them for the demo?",
                              default=False))


def _log_to(stream: Any) -> None:
    """This process's logs (structlog and the stdlib root logger) go to the demo's log file, not the terminal."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().handlers[:] = [handler]


def _bind(port: int) -> socket.socket:
    """A loopback socket on ``port`` if it is free, else on any free port (IPPROTO_TCP: asyncio sets NODELAY)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    return sock


def _serve(app: Any, port: int, stack: contextlib.ExitStack) -> str:
    """Serve an ASGI app with uvicorn in a thread until the demo ends; return its base URL."""
    import uvicorn

    sock = _bind(port)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(5)
        sock.close()

    stack.callback(stop)
    _wait(lambda: server.started, 15, "a server to start")
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _wait(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _pong(celery_app: Any) -> bool:
    try:
        return bool(celery_app.control.ping(timeout=0.5))
    except Exception as exc:  # kombu's OperationalError and friends: the broker does not answer
        url = masked_url(os.environ["MOTCUA_BROKER_URL"])
        raise DemoError(f"the broker {url} does not answer ({type(exc).__name__}: {exc})") from exc


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def _sweeper(stop: threading.Event, interval: float, rt: Runtime, jobs: list[tuple[Service, BeatJob[Any]]]) -> None:
    from tasks.audit import run_checkpoint
    from tasks.delivery import run_sweep
    from tasks.jobs import run_job

    ran = 0.0
    while not stop.wait(interval):
        try:
            run_sweep(rt)
            if time.monotonic() - ran > JOBS_EVERY:  # the beat jobs (the callbacks' fallbacks), every few seconds
                for service, job in jobs:
                    run_job(service, job, rt)
                run_checkpoint(rt)  # the audit chain's: every minute in production
                ran = time.monotonic()
        except Exception:
            log.exception("demo sweep failed")


def _day(dossiers: int, rng: random.Random, postal_statuses: bool, payments: bool) -> list[dict[str, Any]]:
    """The day of a ward's desk and of the provincial centre (a fifth as many dossiers), plus payments (origin
    ``payment``) and postal statuses (origin ``postal``) coming back when no payment or postal simulator makes
    real ones."""
    from sandbox.workload import centre_day, generate_day
    from schemas.events import event_json, parse_event

    seed = rng.randrange(2**31)
    events = sorted(generate_day(dossiers, seed=seed) + centre_day(max(1, dossiers // 5), seed=seed + 1),
                    key=lambda e: (e["occurred_at"], e["dossier_code"], e["sequence"]))
    by_dossier: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for e in events:
        by_dossier[e["dossier_code"]].setdefault(e["type"], e)

    def inbound(base: dict[str, Any], origin: str, seq: int, type_: str, at: datetime, **data: Any) -> dict[str, Any]:
        raw = {k: base[k] for k in ("unit_code", "dossier_code", "procedure_code", "applicant")}
        raw |= {"event_id": str(uuid.uuid4()), "type": type_, "origin": origin, "sequence": seq,
                "occurred_at": at.isoformat(), "data": data}
        return event_json(parse_event(raw))  # exactly what the intake accepts

    extra: list[dict[str, Any]] = []
    for code, kinds in by_dossier.items():
        if payments and (fee := kinds.get("fee.assessed")) and "fee.paid" not in kinds:  # paid online
            at = datetime.fromisoformat(fee["occurred_at"]) + timedelta(minutes=rng.randint(5, 90))
            extra.append(inbound(fee, "payment", 1, "fee.paid", at, fee_id=fee["data"]["fee_id"],
                                 amount=fee["data"]["amount"], provider="keypay",
                                 transaction_id=f"KP{rng.randrange(10**12):012d}", paid_at=at.isoformat()))
        post = kinds.get("postal.delivery_requested") if postal_statuses else None
        if post and (rng.random() < 0.3 or not any(e["origin"] == "postal" for e in extra)):
            at = datetime.fromisoformat(post["occurred_at"])
            steps = [("collected", "100", "Đã nhận bưu gửi"), ("in_transit", "300", "Đang vận chuyển"),
                     ("delivered", "500", "Phát thành công")][:rng.randint(2, 3)]
            for seq, (status, status_code, message) in enumerate(steps, start=1):
                at += timedelta(minutes=rng.randint(10, 120))
                extra.append(inbound(post, "postal", seq, "postal.status", at, order_number=f"{code}-KQ",
                                     status_code=status_code, status=status, message=message))
    return sorted(events + extra, key=lambda e: e["occurred_at"])


def _progress(counts: dict[str, dict[str, int]], unrouted: int, elapsed: float, sent: int, events: int) -> Table:
    table = Table(title=f"Deliveries, live: {elapsed:.0f} s, {sent} / {events} events sent, {unrouted} to route",
                  box=box.SIMPLE_HEAD)
    for col in ("destination", "delivered / total", "", "in flight", "retrying", "superseded", "dead"):
        table.add_column(col, justify="left" if col in ("destination", "") else "right")
    for dest, c in sorted(counts.items()):
        total, done = sum(c.values()), c.get("delivered", 0)
        filled = round(20 * done / total) if total else 0
        table.add_row(dest, f"{done} / {total}", "█" * filled + "·" * (20 - filled),
                      str(c.get("in_flight", 0) + c.get("pending", 0)), str(c.get("retrying", 0)),
                      str(c.get("superseded", 0)), str(c.get("dead", 0)))
    return table


def _figures(rows: list[dict[str, Any]], sandbox: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, intake→delivered percentiles (nearest rank), and what the simulators applied and received."""
    from store.reports import percentile
    from store.tables import FINAL_STATUSES

    ms = sorted((r["delivered_at"] - r["received_at"]).total_seconds() * 1000 for r in rows if r["delivered_at"])
    count: dict[str, int] = {s: sum(1 for r in rows if r["status"] == s) for s in FINAL_STATUSES}

    def pct(p: float) -> float:
        return round(percentile(ms, p) or 0.0, 1)

    def sandbox_sum(key: str, fault: str = "") -> int:
        return sum((s.get("faults", {}).get(fault, 0) if fault else s.get(key, 0)) for s in sandbox)

    return {"total": len(rows), **count, "retried": sum(1 for r in rows if r["attempts"] > 1),
            "open": len(rows) - sum(count.values()), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "effects": sandbox_sum("distinct"), "receipts": sandbox_sum("receipts"),
            "injected_503": sandbox_sum("", "error"), "injected_resets": sandbox_sum("", "reset")}


def _summary(rows: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
    names = sorted({r["destination"] for r in rows} | set(stats))
    per = {n: _figures([r for r in rows if r["destination"] == n], [stats.get(n, {})]) for n in names}
    return {**_figures(rows, list(stats.values())), "destinations": per,
            "no_duplicate_effect": all(f["effects"] == f["delivered"] for f in per.values())}


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    cols = {"total": "deliveries", "delivered": "delivered", "retried": "retried", "superseded": "superseded",
            "dead": "dead", "open": "open", "p50_ms": "p50 ms", "p99_ms": "p99 ms"}
    table = Table(title=f"Summary: {summary['events']} events of {summary['dossiers']} dossiers in "
                        f"{summary['elapsed_seconds']} s (broker: {summary['broker']['mode']})", box=box.SIMPLE_HEAD)
    for header in ("destination", *cols.values(), "simulator: effects / requests"):
        table.add_column(header, justify="left" if header == "destination" else "right")

    def row(name: str, f: dict[str, Any], style: str = "") -> None:
        cells = [f"{f[c]:.0f}" for c in cols] + [f"{f['effects']} / {f['receipts']}"]
        table.add_row(name, *(f"{style}{c}" for c in cells))

    for name, f in summary["destinations"].items():
        row(name, f)
    table.add_section()
    row("total", summary, "[bold]")
    console.print(table)
    done = summary["open"] == 0 and not summary["timed_out"]
    console.print(("[green]every delivery is final" if done else "[red]deliveries are still open") + "[/]; "
                  f"faults injected: {summary['injected_503']} × 503, {summary['injected_resets']} connection resets; "
                  f"{summary['repeated']} repeated webhook requests recognised by idempotency key; "
                  + ("[green]no duplicate effect (one per delivered event)[/]" if summary["no_duplicate_effect"]
                     else "[red]effects and delivered events differ[/]"))
