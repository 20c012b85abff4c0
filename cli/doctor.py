"""``motcua-relay doctor``: whether this installation is ready to run, one thing at a time, and how to fix what is not.

The rows, in this order (each: the check, its target, a status, what was found or how to fix it):

- **configuration**: the settings (``MOTCUA_*`` variables, ``.env``), the intake secret, the unit directory, the
  services' settings, the routing file, and each destination's options and secrets (what a worker checks at start);
- **the ledger**: it answers, its migrations are at head, and it takes a write (rolled back);
- **Redis** and **the broker**: they answer, and keep their keys (``maxmemory-policy noeviction``);
- **workers**: which answer, and whether every queue has one. None is a warning, not a failure: before going live
  none runs yet, and the ledger keeps what they have not sent (``--require-workers`` makes it one);
- **each destination**: what its service checks (:meth:`services.base.Deliverer.check`): reachable, and the
  credentials where its contract has a log-in or a token;
- **the clock**: this machine's against the servers' that said their time (:func:`services.checks.clock`).

A status is *ready*, *warning* (works, look at it), *skipped* (cannot apply, the detail says why) or *not ready*;
doctor exits 1 when a row is not ready. Every check ends within ``--timeout`` seconds (a log-in after a reachable
service gets as long again), all at once, so doctor never hangs. Nothing is changed anywhere: no event, bill, order
or message; no token cached for the workers or renewed; the ledger's write is rolled back, a ledger file that does
not exist is not created. No secret is printed: every value of one is masked in the output.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import create_engine
from sqlalchemy.exc import ArgumentError

from cli.common import operator_console
from services.checks import NOT_READY, READY, SKIPPED, WARNING, Finding, clock, ms, offset

if TYPE_CHECKING:
    from pydantic import ValidationError
    from sqlalchemy import Engine

    from config.routing import RoutingConfig
    from config.settings import Settings
    from services.base import Context

LABELS = {READY: "ready", WARNING: "warning", NOT_READY: "not ready", SKIPPED: "skipped"}
STYLES = {READY: "green", WARNING: "yellow", NOT_READY: "bold red", SKIPPED: "dim"}
STATUSES = (READY, WARNING, SKIPPED, NOT_READY)
WORKER_PING_SECONDS = 2.0
SHORTEST_SECRET = 6  # shorter values are not masked in the output: they would mask ordinary words
MASK = "***"
UPGRADE = "`motcua-relay db upgrade`"


@dataclass
class Report:
    """What doctor found, in the table's order."""

    findings: list[Finding]
    timeout: float
    max_skew: float
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ready(self) -> bool:
        return all(f.ready for f in self.findings)

    def counts(self) -> dict[str, int]:
        return {status: sum(f.status == status for f in self.findings) for status in STATUSES}

    def as_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "checked_at": self.checked_at.isoformat(),
            "timeout_seconds": self.timeout,
            "max_skew_seconds": self.max_skew,
            "summary": self.counts(),
            "checks": [{"check": f.check, "target": f.target, "status": f.status, "detail": f.detail,
                        "clock_offset_seconds": None if f.clock is None else round(f.clock, 3)}
                       for f in self.findings],
        }


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document instead of the table")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="seconds each check may take (a ping, a log-in)")] = 5.0,
    max_skew: Annotated[float, typer.Option(min=1, help="seconds a server's clock may differ from this one's")
                        ] = 30.0,
    require_workers: Annotated[bool, typer.Option(help="no worker answering, or a queue none consumes, is not "
                                                       "ready (a warning without this)")] = False,
) -> None:
    """Check the configuration, the ledger, Redis and the broker, the workers, every destination (reachable, its
    credentials) and the clock; print what is ready and what is not, and how to fix it. Exit 1 when something is
    not ready. No event, bill, order or message is sent, and no token is renewed or kept."""
    report = run(timeout=timeout, max_skew=max_skew, require_workers=require_workers)
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), ensure_ascii=False, indent=2) + "\n")
    else:
        render(report, operator_console())
    if not report.ready:
        raise typer.Exit(1)


def render(report: Report, console: Console) -> None:
    table = Table(title="motcua-relay doctor", title_justify="left")
    for column in ("check", "target", "status", "detail"):
        table.add_column(column, overflow="fold")
    for finding in report.findings:
        table.add_row(finding.check, finding.target, Text(LABELS[finding.status], style=STYLES[finding.status]),
                      finding.detail)
    console.print(table)
    counts = report.counts()
    said = ", ".join(f"{counts[status]} {LABELS[status]}" for status in STATUSES if counts[status])
    if report.ready:
        console.print(f"[green]ready[/] ({said})")
    else:
        console.print(f"[bold red]not ready[/] ({said}): fix the rows marked not ready, then run doctor again")


def run(*, timeout: float = 5.0, max_skew: float = 30.0, require_workers: bool = False) -> Report:
    """Every check, at once, each within its budget; the report with the secrets masked."""
    from pydantic import ValidationError

    from config.logging import configure_logging
    from config.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:  # ValidationError, or a NAME_FILE that cannot be read
        configure_logging("auto", "WARNING")
        said = _settings_errors(exc) if isinstance(exc, ValidationError) else str(exc)
        return Report([Finding("settings", "MOTCUA_* variables, .env", NOT_READY, said)], timeout, max_skew)
    configure_logging(settings.log_format, "WARNING")
    doctor_run = _Run(settings, timeout, require_workers)
    try:
        findings = doctor_run.findings()
    finally:
        doctor_run.close()
    findings.append(clock(findings, max_skew))
    return Report(_masked(findings, doctor_run.secrets), timeout, max_skew)


class _Run:
    """The checks of one doctor run, and what they share: the settings, the routing, a context for the
    deliverers (its own ledger engine and Redis client, with short timeouts, and nothing to queue with)."""

    def __init__(self, settings: Settings, timeout: float, require_workers: bool) -> None:
        self.settings = settings
        self.timeout = timeout
        self.require_workers = require_workers
        self.secrets: set[str] = set(_url_secrets(settings))
        self.secrets.update(settings.intake_secrets())
        try:
            self.engine, self.unusable = _ledger_engine(settings.database_url, timeout), None
        except ArgumentError as exc:  # the deliverers get an engine they never use; the ledger's row says why
            self.engine, self.unusable = create_engine("sqlite://"), f"MOTCUA_DATABASE_URL cannot be used: {exc}"
        self.context: Context | None = None

    def findings(self) -> list[Finding]:
        found = [self._intake(), self._console(), self._units(), self._service_settings(), self._audit()]
        routing = self._routing(found)
        usable = self._destinations(routing, found) if routing is not None else []
        jobs = [
            _Job(self._ledger, _fallback(("ledger", "ledger schema", "ledger writable"), self._ledger_target()),
                 self.timeout * 2 + 1),
            _Job(lambda: [redis_finding("redis", "MOTCUA_REDIS_URL", self.settings.redis_url, self.timeout)],
                 _fallback(("redis",), _masked_url(self.settings.redis_url)), self.timeout + 1),
            _Job(lambda: self._broker(routing), _fallback(("broker", "workers"), _masked_url(self.settings.broker_url)),
                 self.timeout + WORKER_PING_SECONDS + 2),
        ]
        jobs += [_Job(partial(self._destination, name), _fallback((f"{name}: check",), f"destination {name}"),
                      self.timeout * 2 + 1) for name in usable]
        for job in _run_all(jobs):
            found += job
        return found

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            if self.context.redis is not None:
                self.context.redis.close()
        self.engine.dispose()

    # ---- configuration

    def _audit(self) -> Finding:
        from store.audit.checkpoints import SigningKeyError
        from tasks.audit import signer_of, tsa_certificates

        settings, target = self.settings, "MOTCUA_AUDIT_*"
        if not settings.audit_chain:
            return Finding("audit chain", target, WARNING, "off (MOTCUA_AUDIT_CHAIN=false): attempts are not chained, "
                                                           "and an archive names every one made meanwhile")
        if settings.audit_signing_key is not None:
            self.secrets.add(settings.audit_signing_key.get_secret_value())
        try:
            signer = signer_of(settings)
        except SigningKeyError as exc:
            return Finding("audit chain", target, NOT_READY, f"MOTCUA_AUDIT_SIGNING_KEY: {exc}")
        if signer is None:
            return Finding("audit chain", target, NOT_READY if settings.audit_fail_closed else WARNING,
                           "no MOTCUA_AUDIT_SIGNING_KEY: the chains grow but no checkpoint signs them"
                           + (", and fail-closed stops every delivery" if settings.audit_fail_closed else "")
                           + "; `motcua-relay audit keygen` makes a key")
        stamped, certificates = "", []
        if settings.audit_tsa_url:
            try:
                certificates = tsa_certificates(settings)
            except OSError as exc:
                return Finding("audit chain", target, NOT_READY, f"MOTCUA_AUDIT_TSA_CERTIFICATE_FILE: {exc.strerror}")
            host = _masked_url(settings.audit_tsa_url)
            stamped = (f", time-stamped by {host}" + ("" if certificates else
                       " (no MOTCUA_AUDIT_TSA_CERTIFICATE_FILE: its tokens are not checked, nor can archives be)"))
        closed = f"; fail-closed after {settings.audit_fail_closed_after_seconds:g} s" if settings.audit_fail_closed \
            else ""
        return Finding("audit chain", target, WARNING if settings.audit_tsa_url and not certificates else READY,
                       f"signing key {signer.key_id}, a checkpoint every {settings.audit_checkpoint_seconds:g} s"
                       f"{stamped}{closed}")

    def _intake(self) -> Finding:
        from schemas.webhook import secret_key

        secrets = self.settings.intake_secrets()
        if not secrets:
            return Finding("intake secret", "MOTCUA_INTAKE_SECRET", NOT_READY,
                           "not set: every event the one-stop software sends would be refused (401); set it to the "
                           "whsec_ secret the one-stop software signs with")
        for index, secret in enumerate(secrets, 1):
            try:
                secret_key(secret)
            except ValueError as exc:
                return Finding("intake secret", "MOTCUA_INTAKE_SECRET", NOT_READY, f"secret {index}: {exc}")
        rotation = " (a rotation: each is accepted)" if len(secrets) > 1 else ""
        return Finding("intake secret", "MOTCUA_INTAKE_SECRET", READY, f"{len(secrets)} whsec_ secret{rotation}")

    def _console(self) -> Finding:
        """The operator console's key and accounts: closed without them (a warning: the relay runs without its
        console), not ready when an account can never log in (its hash mangled, as a shell expands its $)."""
        from api.console.auth import SECRET_MIN, configured, malformed
        from config.environ import EnvironError

        target = "MOTCUA_CONSOLE_SECRET, MOTCUA_CONSOLE_OPERATORS"
        try:
            secret, operators = configured()
        except EnvironError as exc:
            return Finding("console", target, NOT_READY, str(exc))
        self.secrets.add(secret)
        if len(secret) < SECRET_MIN or not operators:
            missing = [why for why, lacking in ((f"a key of {SECRET_MIN} characters or more (MOTCUA_CONSOLE_SECRET)",
                                                 len(secret) < SECRET_MIN),
                                                ("an account (MOTCUA_CONSOLE_OPERATORS, from `motcua-relay console "
                                                 "hash-password NAME`)", not operators)) if lacking]
            return Finding("console", target, WARNING, "closed (it answers 503): it needs " + " and ".join(missing))
        if bad := malformed(operators):
            return Finding("console", target, NOT_READY,
                           f"no password can open {', '.join(bad)}: a hash must read pbkdf2_sha256$ROUNDS$SALT$DIGEST "
                           "as `console hash-password` printed it (a shell expands its $ unless it is in single "
                           "quotes; in .env, write it as printed)")
        return Finding("console", target, READY, f"{len(operators)} account{'s' if len(operators) > 1 else ''}")

    def _units(self) -> Finding:
        from config.units import load_directory

        path = str(self.settings.units_file) if self.settings.units_file else None
        target = path or "config/units.csv (MOTCUA_UNITS_FILE)"
        try:
            directory = load_directory(path)
        except (OSError, ValueError) as exc:
            return Finding("unit directory", target, NOT_READY, f"{exc}: the API refuses to start with it")
        return Finding("unit directory", target, READY, f"{len(directory.units)} units")

    def _service_settings(self) -> Finding:
        from pydantic import ValidationError

        from services.registry import get_registry

        read, problems = [], []
        for service in get_registry():
            if service.settings is None:
                continue
            try:
                service.read_settings()
                read.append(service.kind)
            except ValidationError as exc:
                problems.append(f"{service.kind}: {_settings_errors(exc)}")
        if problems:
            return Finding("service settings", "the services' MOTCUA_* variables", NOT_READY, "; ".join(problems))
        return Finding("service settings", "the services' MOTCUA_* variables", READY,
                       f"read ({', '.join(read) or 'none declared'})")

    def _routing(self, found: list[Finding]) -> RoutingConfig | None:
        from pydantic import ValidationError

        from config.routing import get_routing

        target = str(self.settings.routing_file)
        try:
            routing = get_routing(target)
        except ValidationError as exc:
            found.append(Finding("routing file", target, NOT_READY, _settings_errors(exc, variables=False)))
            return None
        except (OSError, ValueError) as exc:  # not found, not TOML
            found.append(Finding("routing file", target, NOT_READY, f"{type(exc).__name__}: {exc}"))
            return None
        found.append(Finding("routing file", target, READY,
                             f"{len(routing.destinations)} destinations, {len(routing.routes)} routes"))
        return routing

    def _destinations(self, routing: RoutingConfig, found: list[Finding]) -> list[str]:
        """A row per destination's options (and one per notice); the names whose options can be used."""
        from config.options import secret_fields, secret_variable
        from services.base import Context
        from services.registry import get_registry
        from tasks.runtime import rules_for

        registry = get_registry()
        client = None if self.settings.redis_url.startswith("memory://") else _redis(self.settings.redis_url,
                                                                                      self.timeout)
        self.context = context = Context(settings=self.settings, routing=routing, engine=self.engine, redis=client,
                                         rules=rules_for(routing), registry=registry, enqueue=_queue_nothing)
        usable = []
        for name, destination in routing.destinations.items():
            target = f"destination {name} ({destination.kind})"
            try:
                service = registry.kind(destination)
                options = context.options(name)
            except ValueError as exc:  # OptionsError too: it names the variable or the option
                found.append(Finding(f"{name}: options", target, NOT_READY, str(exc).removeprefix(f"destination "
                                                                                                  f"{name}: ")))
                continue
            variables = []
            for key in secret_fields(service.options):
                value = getattr(options, key, None)
                if value is not None:
                    self.secrets.add(value.get_secret_value())
                    variables.append(secret_variable(destination, service.options, key) or key)
            secrets = f"; secrets from {', '.join(variables)}" if variables else ""
            found.append(Finding(f"{name}: options", target, READY, f"options resolve{secrets}"))
            found += [Finding(f"{name}: options", target, WARNING, notice) for notice in options.notices()]
            usable.append(name)
        return usable

    # ---- the ledger, Redis, the broker and the workers

    def _ledger_target(self) -> str:
        return "MOTCUA_DATABASE_URL" if self.unusable else self.engine.url.render_as_string(hide_password=True)

    def _ledger(self) -> list[Finding]:
        if self.unusable:
            return _ledger_failed(self._ledger_target(), self.unusable)
        return ledger_findings(self.settings.database_url, self.engine, self._ledger_target())

    def _broker(self, routing: RoutingConfig | None) -> list[Finding]:
        broker = redis_finding("broker", "MOTCUA_BROKER_URL", self.settings.broker_url, self.timeout)
        target = "celery workers"
        if broker.status == NOT_READY:
            return [broker, Finding("workers", target, SKIPPED, "not asked: the broker is not ready")]
        if routing is None:
            return [broker, Finding("workers", target, SKIPPED, "not asked: the routing file cannot be read")]
        return [broker, workers_finding(routing, min(self.timeout, WORKER_PING_SECONDS), self.require_workers)]

    # ---- destinations

    def _destination(self, name: str) -> list[Finding]:
        assert self.context is not None
        target = f"destination {name}"
        try:
            deliverer = self.context.deliverer(name)
        except Exception as exc:  # a file its options name that cannot be read, ...: what a worker would meet
            return [Finding(f"{name}: deliverer", target, NOT_READY, f"cannot be built: {type(exc).__name__}: {exc}")]
        found = deliverer.check(self.timeout)
        if found is None:
            kind = self.context.destination(name).kind
            return [Finding(f"{name}: check", target, SKIPPED,
                            f"the {kind} service declares no check (Deliverer.check): its first delivery tells")]
        return [Finding(f"{name}: {f.check}", f.target, f.status, f.detail, f.clock) for f in found]


def _queue_nothing(_: Sequence[Any]) -> None:
    raise RuntimeError("doctor queues nothing")


# ---------------------------------------------------------------------------------------------------- the jobs


@dataclass
class _Job:
    """A check run on a thread of its own, given ``budget`` seconds; ``fallback(why)`` gives its rows when it fails
    or outlives the budget (the thread is a daemon: one that hangs does not hold doctor's exit)."""

    run: Callable[[], list[Finding]]
    fallback: Callable[[str], list[Finding]]
    budget: float
    result: list[Finding] | None = None

    def __call__(self) -> None:
        try:
            self.result = self.run()
        except Exception as exc:  # a check's own bug must not hide the other rows
            self.result = self.fallback(f"the check failed: {type(exc).__name__}: {str(exc)[:300]}")


def _run_all(jobs: Sequence[_Job]) -> list[list[Finding]]:
    threads = [threading.Thread(target=job, daemon=True, name=f"doctor-{index}") for index, job in enumerate(jobs)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for job, thread in zip(jobs, threads, strict=True):
        thread.join(max(0.0, started + job.budget - time.monotonic()))
    return [job.result if job.result is not None else job.fallback(f"no answer within {job.budget:.0f} s")
            for job in jobs]


def _fallback(checks: Iterable[str], target: str) -> Callable[[str], list[Finding]]:
    first, *rest = checks
    return lambda why: [Finding(first, target, NOT_READY, why),
                        *(Finding(name, target, SKIPPED, f"not known: {first} did not finish") for name in rest)]


# ---------------------------------------------------------------------------------------------------- the ledger


def _ledger_engine(url: str, timeout: float) -> Engine:
    """An engine of doctor's own: no pool, every wait bounded (PostgreSQL's connect, statements and locks; SQLite's
    busy wait), none of the relay's SQLite turn-taking (doctor writes nothing that stays)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": timeout}, poolclass=NullPool)
    wait = int(timeout * 1000)
    return create_engine(url, poolclass=NullPool, connect_args={
        "connect_timeout": max(1, math.ceil(timeout)),
        "options": f"-c statement_timeout={wait} -c lock_timeout={wait}"})


def ledger_findings(url: str, engine: Engine, target: str) -> list[Finding]:
    """The ledger answers; its migrations are at head; it takes a write, rolled back."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from store.db import alembic_config

    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and (not parsed.database or parsed.database == ":memory:"):
        return _ledger_failed(target, "an in-memory SQLite ledger is each process's own: name a file or PostgreSQL "
                                      "in MOTCUA_DATABASE_URL")
    if sqlite and not Path(str(parsed.database)).exists():
        return _ledger_failed(target, f"no ledger file at {parsed.database}: create it with {UPGRADE}")
    clock = None
    try:
        with engine.connect() as conn:
            sent = time.time()
            if sqlite:
                conn.execute(text("SELECT 1"))
                said = "SQLite " + ".".join(map(str, conn.dialect.server_version_info or ()))
            else:
                now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
                clock = offset(now.timestamp(), sent, time.time())
                said = f"PostgreSQL {conn.execute(text('SHOW server_version')).scalar_one()}"
            took = time.time() - sent
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        return _ledger_failed(target, f"does not answer: {_first_line(exc)}; check MOTCUA_DATABASE_URL and that the "
                                      "database runs")
    found = [Finding("ledger", target, READY, f"{said}, answered in {ms(took)}", clock)]
    script = ScriptDirectory.from_config(alembic_config(url))
    schema = _schema(current, set(script.get_heads()), {r.revision for r in script.walk_revisions()})
    found.append(schema)
    if not current:
        found.append(Finding("ledger writable", target, SKIPPED, "no schema to write to yet"))
        return found
    try:
        with engine.connect() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            conn.rollback()
    except SQLAlchemyError as exc:
        found.append(Finding("ledger writable", target, NOT_READY,
                             f"a write is refused: {_first_line(exc)}; the relay needs the primary "
                             "(target_session_attrs=read-write) and a user that may write its tables"))
    else:
        found.append(Finding("ledger writable", target, READY, "a write went through (and was rolled back)"))
    return found


def _schema(current: set[str], heads: set[str], known: set[str]) -> Finding:
    at, newest = ", ".join(sorted(current)), ", ".join(sorted(heads))
    if current == heads:
        return Finding("ledger schema", "migrations", READY, f"at {newest}, the newest")
    if not current:
        why = f"no schema yet: create it with {UPGRADE}"
    elif current - known:
        why = f"at {at}, which this relay does not know (a newer version migrated it): install that version"
    else:
        why = f"at {at}, the newest is {newest}: run {UPGRADE} (the API and workers also do it when they start)"
    return Finding("ledger schema", "migrations", NOT_READY, why)


def _ledger_failed(target: str, why: str) -> list[Finding]:
    return [Finding("ledger", target, NOT_READY, why),
            Finding("ledger schema", "migrations", SKIPPED, "not known: the ledger does not answer"),
            Finding("ledger writable", target, SKIPPED, "not known: the ledger does not answer")]


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]


# ---------------------------------------------------------------------------------------------------- Redis, workers


def _redis(url: str, timeout: float) -> Any:
    from config.redis_url import connect

    return connect(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def redis_finding(check: str, variable: str, url: str, timeout: float) -> Finding:
    """A Redis (or Sentinel) URL's server answers a ping; its time, version and eviction policy when it says them."""
    import redis

    from config.redis_url import is_redis

    target = _masked_url(url)
    if url.startswith("memory://"):
        return Finding(check, target, NOT_READY, "memory:// is the demo's in-process mode: the API, workers and beat "
                                                 f"would not share it; set {variable} to a redis:// or sentinel:// URL")
    if not is_redis(url):
        return Finding(check, target, SKIPPED, "not a Redis or Sentinel URL: doctor asks only those")
    client = _redis(url, timeout)
    clock, version, policy = None, None, None
    try:
        sent = time.time()
        client.ping()
        took = time.time() - sent
        # a managed Redis may refuse TIME, INFO or CONFIG: the ping is what matters
        with contextlib.suppress(redis.ResponseError):
            asked = time.time()
            seconds, micros = client.time()
            clock = offset(seconds + micros / 1e6, asked, time.time())
        with contextlib.suppress(redis.ResponseError):
            version = client.info("server").get("redis_version")
        with contextlib.suppress(redis.ResponseError):
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except (redis.RedisError, OSError) as exc:
        return Finding(check, target, NOT_READY, f"does not answer ({type(exc).__name__}: {str(exc)[:200]}); check "
                                                 f"{variable} and that Redis runs")
    finally:
        client.close()
    said = f"Redis {version}" if version else "Redis"
    detail = f"{said} answered in {ms(took)}"
    if policy is None:
        return Finding(check, target, READY, f"{detail}; its maxmemory-policy could not be read (want noeviction)",
                       clock)
    if policy != "noeviction":
        return Finding(check, target, WARNING, f"{detail}; maxmemory-policy is {policy}: a full Redis would evict "
                                               "queued messages, leases or the Zalo token pair; set noeviction", clock)
    return Finding(check, target, READY, f"{detail}; maxmemory-policy noeviction", clock)


def workers_finding(routing: RoutingConfig, timeout: float, required: bool) -> Finding:
    """The workers answering a control request, and the queues none of them consumes."""
    from config.celery import worker_queues
    from tasks.app import configure_app

    target = "celery workers"
    absent = NOT_READY if required else WARNING
    replies = configure_app().control.inspect(timeout=timeout).active_queues() or {}
    if not replies:
        return Finding("workers", target, absent,
                       f"none answered within {timeout:g} s: start `motcua-relay worker` (until one runs, events wait "
                       "in the ledger)")
    consumed = {queue.get("name") for queues in replies.values() for queue in (queues or [])}
    missing = [queue for queue in worker_queues(routing) if queue not in consumed]
    names = ", ".join(sorted(replies))
    if missing:
        return Finding("workers", target, absent,
                       f"{len(replies)} answered ({names}); no worker consumes {', '.join(missing)}: start one without "
                       "--queues, or with them")
    return Finding("workers", target, READY, f"{len(replies)} answered ({names}), every queue consumed")


# ---------------------------------------------------------------------------------------------------- secrets, errors


def _masked_url(url: str) -> str:
    from config.redis_url import masked

    return masked(url)


def _url_secrets(settings: Settings) -> list[str]:
    """The passwords the settings' URLs carry (the ledger's, Redis's, the broker's and their sentinels')."""
    from sqlalchemy.engine import make_url

    from config.redis_url import parse_sentinel

    found = []
    with contextlib.suppress(ArgumentError):
        found.append(make_url(settings.database_url).password)
    for url in (settings.redis_url, settings.broker_url):
        target = parse_sentinel(url)  # the settings read it already: it parses
        if target is None:
            found.append(unquote(urlsplit(url).password or ""))
        else:
            found += [s.get_secret_value() for s in (target.password, target.sentinel_password) if s is not None]
    return [str(secret) for secret in found if secret]


def _masked(findings: Iterable[Finding], secrets: Iterable[str]) -> list[Finding]:
    """The findings with every secret's value masked (a server that echoed one, an error that quoted one)."""
    values = sorted({s for s in secrets if len(s) >= SHORTEST_SECRET}, key=len, reverse=True)

    def mask(text: str) -> str:
        for value in values:
            text = text.replace(value, MASK)
        return text

    return [Finding(f.check, mask(f.target), f.status, mask(f.detail), f.clock) for f in findings]


def _settings_errors(exc: ValidationError, variables: bool = True) -> str:
    """A model's refusals, by variable (``MOTCUA_BROKER_URL: …``) or by field, never repeating the values."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error.get("loc", ())]
        where = (f"MOTCUA_{loc[0].upper()}" if variables else ".".join(loc)) if loc else "the file"
        parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts)
