"""``motcua-relay demo``: the whole relay on one machine, with no configuration at all.

It starts the simulators (faults injected), the intake API, a worker and the sweeper; plays a
district desk's working day through the signed intake (the post's simulator sends its statuses
itself, by callback and tracking list; citizens pay their bills at the payment simulator, which
calls back, sometimes not, sometimes twice: ``cli/demo_payment.py``); follows every delivery in
the ledger until it is final; reconciles the day's payments; and ends with a summary and the
simulators' own count of effects.

Each default gives way to its ``MOTCUA_*`` variable: fresh ``whsec_`` secrets; a fresh SQLite
ledger ``./var/demo-<timestamp>.db``; Redis db 3 on 127.0.0.1:6379 (flushed) when it answers,
else Celery's in-process ``memory://`` broker and a worker thread; the embedded routing with
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
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer
from kombu.utils.url import maybe_sanitize_url
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cli.demo_payment import PaymentPlay
from cli.demo_transfer import TransferPlay

VAR = Path("var")
DEMO_UNIT = "000.00.12.H22"  # the workload generator's district
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
    """One run: what it configured and started (stopped by the exit stack), what it sent."""

    def __init__(self, console: Console, stack: contextlib.ExitStack) -> None:
        seed = os.environ.get("MOTCUA_DEMO_SEED")
        self.console, self.stack, self.rng = console, stack, random.Random(int(seed) if seed else None)
        self.stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.logs = VAR / "demo-logs" / self.stamp
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log_file = stack.enter_context((self.logs / "demo.log").open("a", encoding="utf-8"))
        stack.callback(logging.getLogger().handlers.clear)  # runs last but one: after everything has stopped
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stop = threading.Event()  # the sweeper and the sender
        stack.callback(self.stop.set)

    def configure(self) -> None:
        """Secrets, ledger, routing and broker: the environment's, else the demo's; the simulators' URLs."""
        from config.routing import load_routing
        from sandbox.onestop import create_app

        env = os.environ
        env.setdefault("MOTCUA_LOG_FORMAT", "json")
        env.setdefault("MOTCUA_DATABASE_URL", f"sqlite:///{(VAR / f'demo-{self.stamp}.db').resolve()}")
        env.setdefault("MOTCUA_INTAKE_SECRET", _secret())
        if "MOTCUA_ROUTING_FILE" not in env:
            env["MOTCUA_ROUTING_FILE"] = _demo_routing(VAR / "demo-routing.toml")
            self.console.print("retries: compressed for the demo to 1, 2, 4, 8 s, then every 10 s "
                               "(config/relay.toml: 5 s, 30 s, 2 min …)")
        routing = load_routing(env["MOTCUA_ROUTING_FILE"])
        webhooks = {name: d for name, d in routing.destinations.items() if d.kind == "webhook"}
        secrets = {name: env.setdefault(d.options.get("secret_env", f"MOTCUA_{name.upper()}_SECRET"), _secret())
                   for name, d in webhooks.items()}
        self.sandbox = _serve(create_app(secrets), 8701, self.stack)
        for name, d in webhooks.items():
            env[d.options.get("url_env", f"MOTCUA_{name.upper()}_URL")] = f"{self.sandbox}/subscribers/{name}/events"
        self.portals = [name for name, d in routing.destinations.items() if d.kind == "portal"]
        self.portal = self._portal_simulator(routing) if self.portals else None
        self.zalo, self.sms = self._zalo_simulators(routing)
        self.postals = [name for name, d in routing.destinations.items() if d.kind == "postal"]
        self.postal = self._postal_simulator(routing) if self.postals else None
        self.payment = PaymentPlay.configure(routing, self.rng, lambda app, port: _serve(app, port, self.stack))
        self.transfer = TransferPlay.configure(routing, lambda app, port: _serve(app, port, self.stack))
        self.mode = _choose_broker(self.console)

    def _zalo_simulators(self, routing: Any) -> tuple[str | None, str | None]:
        """The Zalo Official Account and the SMS gateway, when destinations of those kinds exist."""
        from sandbox.sms import create_app as sms_app
        from sandbox.zalo import create_app as zalo_app

        env = os.environ
        zalos = [d for d in routing.destinations.values() if d.kind == "zalo"]
        smss = [d for d in routing.destinations.values() if d.kind == "sms"]
        zalo = sms = None
        if zalos:
            app_id = env.setdefault("MOTCUA_ZALO_APP_ID", "4301520984")
            secret = env.setdefault("MOTCUA_ZALO_APP_SECRET", uuid.uuid4().hex)
            oa_key = env.setdefault("MOTCUA_ZALO_OA_SECRET_KEY", uuid.uuid4().hex)
            zalo = _serve(zalo_app(app_id=app_id, app_secret=secret, oa_secret_key=oa_key), 8703, self.stack)
            for d in zalos:
                env[d.options.get("url_env", "MOTCUA_ZALO_ZNS_URL")] = zalo
                env[d.options.get("oauth_url_env", "MOTCUA_ZALO_OAUTH_URL")] = zalo
                env.setdefault(d.options.get("quiet_hours_env", "MOTCUA_ZALO_QUIET_HOURS"), "none")
        if smss:
            key = env.setdefault("MOTCUA_SMS_API_KEY", uuid.uuid4().hex)
            sms = _serve(sms_app(api_key=key, brandname=str(smss[0].option("brandname", "UBND-HALONG"))), 8704,
                         self.stack)
            for d in smss:
                env[d.options.get("url_env", "MOTCUA_SMS_URL")] = f"{sms}/api/v1/sms/send"
        return zalo, sms

    def _zalo_tokens(self) -> None:
        """The first token pair, as an operator sets it (`motcua-relay zalo set-token`); receipts come back."""
        from connectors.credentials import TokenPairStore
        from tasks.zalo import set_token

        pair = httpx.post(f"{self.zalo}/_admin/tokens", timeout=10).json()
        for name, dest in self.rt.routing.destinations.items():
            if dest.kind == "zalo":
                set_token(TokenPairStore(self.rt.redis, self.rt.settings.redis_prefix), name, pair["access_token"],
                          pair["refresh_token"], float(pair["expires_in"]))
        httpx.post(f"{self.zalo}/_admin/webhook", json={"url": f"{self.api}/v1/callbacks/zalo", "seen": True},
                   timeout=10).raise_for_status()

    def _portal_simulator(self, routing: Any) -> str:
        """One national-portal simulator for the portal destinations, with the demo's credentials."""
        from sandbox.portal import create_app as portal_app

        env = os.environ
        for name in self.portals:
            options = routing.destinations[name].options
            env.setdefault(options.get("username_env", "MOTCUA_PORTAL_USERNAME"), "motcua-demo")
            env.setdefault(options.get("password_env", "MOTCUA_PORTAL_PASSWORD"), uuid.uuid4().hex)
            env.setdefault(options.get("callback_secret_env", "MOTCUA_PORTAL_CALLBACK_SECRET"), _secret())
            env.setdefault(options.get("pull_units_env", "MOTCUA_PORTAL_PULL_UNITS"), DEMO_UNIT)
        options = routing.destinations[self.portals[0]].options
        url = _serve(portal_app(username=env[options.get("username_env", "MOTCUA_PORTAL_USERNAME")],
                                password=env[options.get("password_env", "MOTCUA_PORTAL_PASSWORD")]),
                     8702, self.stack)
        for name in self.portals:
            env[routing.destinations[name].options.get("url_env", "MOTCUA_PORTAL_URL")] = url
        self.callback_secret = env[options.get("callback_secret_env", "MOTCUA_PORTAL_CALLBACK_SECRET")]
        return url

    def _postal_simulator(self, routing: Any) -> str:
        """One postal simulator for the postal destinations: orders collected after 2 s, a step a second."""
        from sandbox.postal import create_app as postal_app

        env = os.environ
        customers = []
        for name in self.postals:
            dest = routing.destinations[name]
            env.setdefault(dest.options.get("consumer_key_env", "MOTCUA_POSTAL_CONSUMER_KEY"), "motcua-demo")
            env.setdefault(dest.options.get("consumer_secret_env", "MOTCUA_POSTAL_CONSUMER_SECRET"), uuid.uuid4().hex)
            env.setdefault(dest.options.get("callback_secret_env", "MOTCUA_POSTAL_CALLBACK_SECRET"), _secret())
            customers.append(str(dest.option("customer_code")))
        options = routing.destinations[self.postals[0]].options
        url = _serve(postal_app(consumer_key=env[options.get("consumer_key_env", "MOTCUA_POSTAL_CONSUMER_KEY")],
                                consumer_secret=env[options.get("consumer_secret_env",
                                                                "MOTCUA_POSTAL_CONSUMER_SECRET")],
                                customer_codes=customers, step_seconds=1.0, collect_after_seconds=2.0,
                                fail_rate=0.1, seed=self.rng.randrange(2**31)),
                     8705, self.stack)
        for name in self.postals:
            env[routing.destinations[name].options.get("url_env", "MOTCUA_POSTAL_URL")] = url
        self.postal_secret = env[options.get("callback_secret_env", "MOTCUA_POSTAL_CALLBACK_SECRET")]
        return url

    def start(self) -> None:
        """The ledger's schema, then the API and a worker (subprocesses with Redis, threads without), the sweeper."""
        from config.celery import worker_queues
        from config.logging import configure_logging
        from store.db import upgrade
        from tasks.app import configure_app
        from tasks.runtime import get_runtime, reset_runtime

        reset_runtime()
        celery_app = configure_app()
        configure_logging("json", os.environ.get("MOTCUA_LOG_LEVEL", "INFO"))
        _log_to(self.log_file)
        upgrade()
        self.rt = get_runtime()
        self.database = self.rt.engine.url.render_as_string(hide_password=True)
        self.console.print(f"ledger: [bold]{self.database}[/]\n"
                           f"simulators (one-stop software, data warehouse): {self.sandbox}"
                           + (f"; national portal: {self.portal}" if self.portal else "")
                           + (f"; Zalo: {self.zalo}" if self.zalo else "") + (f"; SMS: {self.sms}" if self.sms else "")
                           + (f"; post: {self.postal}" if self.postal else "")
                           + (f"; {self.payment.describe()}" if self.payment else "")
                           + (f"; {self.transfer.describe()}" if self.transfer else "")
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
        if self.zalo:
            self._zalo_tokens()
            self.console.print("Zalo: a token pair set as an operator would; quiet hours off for the demo "
                               "(production: 21:00–07:00); phones ending in 000 have no Zalo and get an SMS")
        interval = self.rt.settings.sweep_interval_seconds
        threading.Thread(target=_sweeper, args=(self.stop, interval, bool(self.portals), bool(self.postals),
                                                bool(self.payment), bool(self.transfer)), daemon=True).start()
        self.console.print(f"sweeper: a thread calling tasks.delivery.run_sweep every {interval:g} s"
                           + (" and pulling the portal's online dossiers" if self.portals else "")
                           + (" and reading the post's tracking list" if self.postals else "")
                           + (" and querying bills no callback answered" if self.payment else "")
                           + (" and reading the LGSP exchange's answers" if self.transfer else "")
                           + f" (what `motcua-relay beat` schedules in production); logs in {self.logs}/")

    def play(self, dossiers: int, fault_rate: float) -> None:
        """Inject the faults, then start sending the day's events in time order, signed, through the intake."""
        self.faults = {"error_rate": round(fault_rate * 0.8, 4), "error_status": 503, "reset_after_store": True,
                       "reset_rate": round(fault_rate * 0.2, 4), "seed": self.rng.randrange(2**31)}
        httpx.post(f"{self.sandbox}/_admin/faults", json=self.faults, timeout=10).raise_for_status()
        self.console.print(f"faults: {self.faults['error_rate']:.0%} of webhook calls answer 503; "
                           f"{self.faults['reset_rate']:.0%} apply the event, then drop the connection (the relay "
                           "retries, the subscriber must recognise the idempotency key); no hangs (read timeout 15 s)")
        if self.portal:
            self._play_portal(dossiers, fault_rate)
        if self.postal:
            self._play_postal(fault_rate)
        self.dossiers, self.events = dossiers, _day(dossiers, self.rng, postal_statuses=not self.postal,
                                                    payments=not self.payment)
        if self.transfer:
            self.console.print(self.transfer.prepare(self.events))
        if self.payment:
            self.console.print(self.payment.start(self.api, self.rt.routing, fault_rate, self.events))
            threading.Thread(target=self.payment.run, args=(self.stop, self.rt.engine), daemon=True).start()
        rate = float(os.environ.get("MOTCUA_DEMO_RATE", "20"))
        inbound = sum(1 for e in self.events if e.get("origin", "onestop") != "onestop")
        came_back = " and ".join(name for name, simulated in (("the payment gateway", self.payment),
                                                               ("the post", self.postal)) if not simulated)
        played = f" ({inbound} from {came_back}, played through the intake)" if inbound else ""
        self.console.print(f"the day: {len(self.events)} events of {dossiers} dossiers{played}, {rate:g} events/s, "
                           f"to {self.api}/v1/events")
        self.since, self.started = datetime.now(UTC) - timedelta(seconds=1), time.monotonic()
        self.accepted = self.refused = self.sent = 0
        self.errors: list[str] = []
        self.sender = threading.Thread(target=self._send, args=(rate,), daemon=True)
        self.sender.start()

    def _play_portal(self, dossiers: int, fault_rate: float) -> None:
        """Faults and short sessions on the portal; citizens' online dossiers, half pushed, half left to the pull."""
        from sandbox.portal import online_dossiers

        # a delivery is three portal calls: a third of the rate per call fails about as many deliveries as --faults
        faults = {"error_rate": round(fault_rate * 0.8 / 3, 4), "busy_rate": round(fault_rate * 0.2 / 3, 4),
                  "session_ttl_seconds": 20, "seed": self.rng.randrange(2**31)}
        httpx.post(f"{self.portal}/_admin/faults", json=faults, timeout=10).raise_for_status()
        self.online = online_dossiers(max(2, dossiers // 10), unit_code=DEMO_UNIT, seed=self.rng.randrange(2**31))
        half = len(self.online) // 2
        httpx.post(f"{self.portal}/_admin/push", json={"url": f"{self.api}/v1/callbacks/portal",
                                                      "secret": self.callback_secret}, timeout=10).raise_for_status()
        httpx.post(f"{self.portal}/_admin/online", json={"dossiers": self.online[:half]}, timeout=10)
        httpx.delete(f"{self.portal}/_admin/push", timeout=10)
        httpx.post(f"{self.portal}/_admin/online", json={"dossiers": self.online[half:]}, timeout=10)
        self.console.print(f"national portal: {faults['error_rate']:.1%} of calls answer 503, "
                           f"{faults['busy_rate']:.1%} 'busy' (96), sessions expire every 20 s; "
                           f"{len(self.online)} citizens submitted online there ({half} pushed to the callback, "
                           f"{len(self.online) - half} left for the pull)")

    def _play_postal(self, fault_rate: float) -> None:
        """Faults on the post's API; its statuses pushed to the callback, some lost or repeated."""
        faults = {"error_rate": round(fault_rate * 0.8 / 2, 4), "busy_rate": round(fault_rate * 0.2 / 2, 4),
                  "push_loss_rate": 0.2, "push_duplicate_rate": 0.1, "seed": self.rng.randrange(2**31)}
        httpx.post(f"{self.postal}/_admin/faults", json=faults, timeout=10).raise_for_status()
        httpx.post(f"{self.postal}/_admin/push", json={"url": f"{self.api}/v1/callbacks/postal",
                                                      "secret": self.postal_secret}, timeout=10).raise_for_status()
        self.console.print(f"post: {faults['error_rate']:.1%} of calls answer 503, {faults['busy_rate']:.1%} "
                           "'busy' (96); orders move a step a second, 10 % of deliveries fail once; statuses are "
                           "pushed to the callback (20 % lost, 10 % repeated) and polled from the tracking list")

    def _services_settled(self) -> bool:
        """The simulated services have nothing more to report: the post, the citizens paying, the transfers
        (asked in that order, and no further than the first that is still busy)."""
        return ((not self.postal or self._postal_settled())
                and (not self.payment or self.payment.settled(self.rt.engine))
                and (not self.transfer or self.transfer.settled(self.sandbox, self.events)))

    def _postal_settled(self) -> bool:
        """Every order at the post is final and every status it recorded is in the ledger."""
        from store.queries import event_count

        orders = httpx.get(f"{self.postal}/_admin/orders", timeout=10).json()
        if any(o["statusCode"] not in ("500", "600", "700") for o in orders):
            return False
        recorded = sum(1 for o in orders for h in o["history"] if h["statusCode"] != "100")
        return event_count(self.rt.engine, "postal.status", self.since) >= recorded

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
                # the services first: news they report after the counts are read would open deliveries unseen
                services_settled = self._services_settled()
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
        """The summary table (and JSON), the next commands to try; the exit code."""
        from store.queries import deliveries_since

        refused = self.refused + len(self.events) - self.sent
        self.console.print(f"intake: {self.accepted} events accepted, {refused} refused or not sent")
        for error in self.errors[:3]:
            self.console.print(f"[red]  {error}[/]")
        rows = deliveries_since(self.rt.engine, self.since)
        stats = httpx.get(f"{self.sandbox}/_admin/stats", timeout=10).json()
        portal: dict[str, Any] = {}
        if self.portal:
            from adapters.portal import expected_history, holds

            view = httpx.get(f"{self.portal}/_admin/dossiers", timeout=10).json()
            portal_stats = httpx.get(f"{self.portal}/_admin/stats", timeout=10).json()
            entries = sum(len(d["QuaTrinhXuLy"]) for d in view.values())
            for name in self.portals:  # effects: progress entries the portal holds; requests: its calls
                stats[name] = {"distinct": entries, "receipts": sum(portal_stats["calls"].values()),
                               "faults": {"error": portal_stats["faults"]["error"], "reset": 0}}
            truth = expected_history(self.events)
            portal = {"dossiers": len(truth), "matching": sum(1 for c, t in truth.items() if holds(view.get(c), t)),
                      "sessions_expired": portal_stats["sessions_expired"], "online": len(self.online),
                      "online_delivered": _online_delivered(self.sandbox, self.online)}
        if self.zalo:
            zalo_stats = httpx.get(f"{self.zalo}/_admin/stats", timeout=10).json()
            for name, dest in self.rt.routing.destinations.items():
                if dest.kind == "zalo":
                    stats[name] = {"distinct": zalo_stats["sent"], "receipts": sum(zalo_stats["answers"].values()),
                                   "faults": {"error": zalo_stats["faults"]["error"], "reset": 0}}
        if self.sms:  # only when the fallback was used: a table row of zeros says nothing
            sms_stats = httpx.get(f"{self.sms}/_admin/stats", timeout=10).json()
            for name in {r["destination"] for r in rows} & {n for n, d in self.rt.routing.destinations.items()
                                                             if d.kind == "sms"}:
                stats[name] = {"distinct": sms_stats["sent"], "receipts": sms_stats["sent"] + sms_stats["duplicates"],
                               "faults": {"error": sms_stats["faults"]["error"], "reset": 0}}
        postal: dict[str, Any] = self._postal_report(stats, rows) if self.postal else {}
        payments: dict[str, Any] = {}
        if self.payment:
            payments = self.payment.reconcile(self.sandbox)
            stats |= {name: self.payment.provider_stats() for name in self.payment.names}
            rows = deliveries_since(self.rt.engine, self.since)  # with the reconciliation's fee.paid, if any
        transfers: dict[str, Any] = {}
        if self.transfer:
            transfers = self.transfer.report(self.sandbox, self.events)
            if transfers["transfers"]:  # a day without transfers has no row for the exchange
                stats |= {name: self.transfer.provider_stats() for name in self.transfer.names}
        summary = _summary(rows, stats)
        webhooks = {n for n, d in self.rt.routing.destinations.items() if d.kind == "webhook"}
        summary["repeated"] = sum(f["receipts"] - f["effects"] for name, f in summary["destinations"].items()
                                  if name in webhooks)  # a portal delivery is several calls, a Zalo one may be two
        summary |= {"broker": {"mode": self.mode, "url": maybe_sanitize_url(os.environ["MOTCUA_BROKER_URL"])},
                    "database": self.database, "faults": self.faults, "dossiers": self.dossiers,
                    "events": len(self.events), "intake": {"accepted": self.accepted, "refused": refused},
                    "elapsed_seconds": round(time.monotonic() - self.started, 1), "timed_out": timed_out,
                    "portal": portal, "postal": postal, "payments": payments, "transfers": transfers}
        _print_summary(self.console, summary)
        if portal:
            good = portal["matching"] == portal["dossiers"] and portal["online_delivered"] == portal["online"]
            self.console.print(("[green]" if good else "[red]") + f"national portal: {portal['matching']} / "
                               f"{portal['dossiers']} dossiers hold exactly the one-stop software's status and "
                               f"progress history, in order ({portal['sessions_expired']} expired sessions renewed); "
                               f"{portal['online_delivered']} / {portal['online']} online dossiers reached the "
                               "one-stop software once[/]")
        if postal:
            good = postal["created_once"] == postal["orders"] and postal["delivered_back"] == postal["delivered"]
            self.console.print(("[green]" if good else "[red]") + f"post: {postal['created_once']} / "
                               f"{postal['orders']} orders created exactly once, {postal['cancelled']} cancelled "
                               f"(withdrawn or handed over at the desk); {postal['delivered_back']} / "
                               f"{postal['delivered']} deliveries reported to the one-stop software once, "
                               f"{postal['statuses']} statuses in all ({postal['pushes_lost']} pushes lost, "
                               f"{postal['pushes_repeated']} repeated: the poller and the ledger made up for them)[/]")
        if payments:
            good = payments["paid_once"] == payments["expected_paid"] and not payments["wrong_amount_paid"]
            found = ", ".join(f"{n} {outcome}" for outcome, n in sorted(payments["reconciliation"].items()))
            self.console.print(("[green]" if good else "[red]") + f"payments: {payments['paid_once']} / "
                               f"{payments['expected_paid']} bills paid online reached the one-stop software once as "
                               f"fee.paid ({payments['callbacks_lost']} callbacks lost, "
                               f"{payments['callbacks_repeated']} repeated); the wrong amount was held, not paid[/]"
                               f"\nreconciliation of {payments['day']}: {found}; signable report: "
                               f"{', '.join(payments['report'])}")
        if transfers:
            good = (transfers["results_home_once"] + transfers["refused"] == transfers["transfers"]
                    and not transfers["results_twice"])
            self.console.print(("[green]" if good else "[red]") + f"transfers: {transfers['results_home_once']} / "
                               f"{transfers['transfers']} results back at the origin once, {transfers['refused']} "
                               f"refused; {transfers['hops']} hops through the LGSP exchange, "
                               f"{transfers['documents']} documents ({transfers['megabytes']} MB) streamed with "
                               "their checksums[/]")
        if self.zalo:
            from store import receipts

            got, seen = receipts.counts(self.rt.engine)
            by_sms = summary["destinations"].get("sms", {}).get("delivered", 0)
            self.console.print(f"Zalo: {summary['destinations'].get('zalo', {}).get('delivered', 0)} notifications "
                               f"delivered, {got} receipts 'received' and {seen} 'seen' recorded from the signed "
                               "webhook; "
                               f"{by_sms} sent by SMS instead (no Zalo account)")
            summary["zalo_receipts"] = {"received": got, "seen": seen}
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        example = next((r for r in rows if r["attempts"] > 1), rows[0] if rows else {"dossier_code": "<code>"})
        self.console.print(f"\nNext, on this demo's ledger:\n  export MOTCUA_DATABASE_URL={self.database}\n"
                           f"  motcua-relay trace {example['dossier_code']}   # a dossier's events and attempts\n"
                           "  motcua-relay deadletters   # what gave up, and why")
        portal_ok = not portal or (portal["matching"] == portal["dossiers"]
                                   and portal["online_delivered"] == portal["online"])
        postal_ok = not postal or (postal["created_once"] == postal["orders"]
                                   and postal["delivered_back"] == postal["delivered"])
        payments_ok = not payments or (payments["paid_once"] == payments["expected_paid"]
                                       and not payments["wrong_amount_paid"])
        payments_ok &= not transfers or (transfers["results_home_once"] + transfers["refused"]
                                         == transfers["transfers"] and not transfers["results_twice"])
        return 0 if (summary["open"] == 0 and summary["total"] > 0 and not refused and portal_ok and postal_ok
                     and payments_ok) else 1

    def _postal_report(self, stats: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The post's view against the one-stop software's: orders created once, deliveries reported once."""
        from adapters.postal import CANCELLING_TYPES

        orders = httpx.get(f"{self.postal}/_admin/orders", timeout=10).json()
        post = httpx.get(f"{self.postal}/_admin/stats", timeout=10).json()
        # a request's effect is its order at the post; a withdrawal's or hand-over's is its answer
        # (cancelled, or nothing to cancel): one each, whatever the retries
        answered = sum(1 for r in rows if r["destination"] in self.postals and r["status"] == "delivered"
                       and r["type"] in CANCELLING_TYPES)
        for name in self.postals:
            stats[name] = {"distinct": len(orders) + answered,
                           "receipts": sum(post["answers"].values()),
                           "faults": {"error": post["faults"]["error"] + post["faults"]["busy"], "reset": 0}}
        received = httpx.get(f"{self.sandbox}/_admin/received", params={"subscriber": "onestop", "full": True},
                             timeout=30).json()
        statuses = [r["event"]["data"] for r in received if r["type"] == "postal.status"]
        delivered = Counter(s["order_number"] for s in statuses if s["status"] == "delivered")
        return {"orders": len(orders), "created_once": sum(1 for o in orders if o["create_calls"] == 1),
                "cancelled": sum(1 for o in orders if o["statusCode"] == "700"),
                "delivered": sum(1 for o in orders if o["statusCode"] == "500"),
                "delivered_back": sum(1 for o in orders if o["statusCode"] == "500"
                                      and delivered[o["orderNumber"]] == 1),
                "statuses": len(statuses), "pushes_lost": post["pushes"]["lost"],
                "pushes_repeated": post["pushes"]["duplicated"]}

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


def _choose_broker(console: Console) -> str:
    import redis

    env = os.environ
    if env.get("MOTCUA_BROKER_URL"):
        env.setdefault("MOTCUA_REDIS_URL", env["MOTCUA_BROKER_URL"])
        console.print(f"broker: [bold]{maybe_sanitize_url(env['MOTCUA_BROKER_URL'])}[/] (MOTCUA_BROKER_URL)")
        return "memory" if env["MOTCUA_BROKER_URL"].startswith("memory://") else "redis"
    probe = env.get("MOTCUA_DEMO_REDIS_PROBE", "127.0.0.1:6379")
    url = f"redis://{probe}/{env.get('MOTCUA_DEMO_REDIS_DB', '3')}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2).flushdb()
    except redis.RedisError:
        env["MOTCUA_BROKER_URL"] = env["MOTCUA_REDIS_URL"] = "memory://"
        console.print(f"[yellow]no Redis on {probe}: using an in-process broker (memory://); for production use Redis")
        return "memory"
    env["MOTCUA_BROKER_URL"] = url
    env.setdefault("MOTCUA_REDIS_URL", url)
    console.print(f"broker: [bold]{url}[/] (Redis answered; this database was flushed for the demo)")
    return "redis"


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
        url = maybe_sanitize_url(os.environ["MOTCUA_BROKER_URL"])
        raise DemoError(f"the broker {url} does not answer ({type(exc).__name__}: {exc})") from exc


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def _sweeper(stop: threading.Event, interval: float, pull: bool, poll: bool, query: bool, exchange: bool) -> None:
    from tasks.delivery import run_sweep
    from tasks.payment import query_unanswered_bills
    from tasks.portal import pull_online
    from tasks.postal import poll_tracking
    from tasks.runtime import get_runtime
    from tasks.transfer import poll_updates

    polled = 0.0
    while not stop.wait(interval):
        try:
            run_sweep(get_runtime())
            if pull:
                pull_online()
            if time.monotonic() - polled > 3:  # the callbacks' fallbacks, every few seconds
                if poll:
                    poll_tracking()
                if query:
                    query_unanswered_bills()
                if exchange:
                    poll_updates()
                polled = time.monotonic()
        except Exception:
            log.exception("demo sweep failed")


def _online_delivered(sandbox: str, online: list[dict[str, Any]]) -> int:
    """How many online dossiers the one-stop simulator received as ``dossier.submitted``, each counted once."""
    received = httpx.get(f"{sandbox}/_admin/received", params={"subscriber": "onestop"}, timeout=10).json()
    codes = [r["dossier_code"] for r in received if r["type"] == "dossier.submitted"]
    wanted = {d["MaHoSo"] for d in online}
    return sum(1 for c in set(codes) if c in wanted and codes.count(c) == 1)


def _day(dossiers: int, rng: random.Random, postal_statuses: bool, payments: bool) -> list[dict[str, Any]]:
    """The desk's day, plus payments (origin ``payment``) and postal statuses (origin ``postal``) coming back
    when no payment or postal simulator makes real ones."""
    from sandbox.workload import generate_day
    from schemas.events import event_json, parse_event

    events = generate_day(dossiers, seed=rng.randrange(2**31))
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
