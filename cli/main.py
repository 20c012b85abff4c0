"""``motcua-relay``: run the relay's processes and answer an operator's questions.

Configuration comes from the environment, an optional ``.env`` and, for secrets, ``*_FILE`` variables
(:mod:`config.environ`); see README.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from cli.doctor import doctor
from config.logging import configure_logging
from config.settings import get_settings
from schemas.vietnam import FIRST_YEAR, LAST_YEAR, VN_TZ, day_bounds, vnd

app = typer.Typer(help="motcua-relay: reliable delivery of one-stop-shop dossier events.", no_args_is_help=True)
events_app = typer.Typer(help="Canonical events: samples for integrators.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger's schema.", no_args_is_help=True)
report_app = typer.Typer(help="Reports read from the ledger: tables, exportable as CSV.", no_args_is_help=True)
zalo_app = typer.Typer(help="The Zalo Official Account: its tokens and its pauses.", no_args_is_help=True)
app.add_typer(zalo_app, name="zalo")
postal_app = typer.Typer(help="The postal service: statuses read from its tracking list.", no_args_is_help=True)
app.add_typer(postal_app, name="postal")
app.add_typer(events_app, name="events")
app.add_typer(report_app, name="report")
app.add_typer(db_app, name="db")
console_app = typer.Typer(help="The operator console's accounts.", no_args_is_help=True)
app.add_typer(console_app, name="console")
app.command("doctor")(doctor)
PIPE_WIDTH = 4000  # into a pipe or a file: wider than any table's rows, so that no column is folded or cut


def _operator_console() -> Console:
    """rich's console on a terminal, as wide as it is; into a pipe or a file, where rich would fold and cut tables
    at 80 columns, as wide as ``COLUMNS`` says if it is set, else wide enough for every column of every row (a
    script reads them; ``--json`` or ``--csv`` where a command has them)."""
    columns = os.environ.get("COLUMNS", "").strip()
    try:
        terminal = sys.stdout is not None and sys.stdout.isatty()
    except ValueError:  # a closed stream
        terminal = False
    if terminal or columns.isdigit():
        return Console()
    return Console(width=PIPE_WIDTH)


console = _operator_console()


def _vn(dt: datetime | None) -> str:
    if dt is None:
        return "—"
    return dt.astimezone(VN_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


DAY = "YYYY-MM-DD"


def _day_option(value: str) -> date:
    """A day option's value (``--since``, ``--until``, ``--date``), read before anything else runs: a wrong one is
    typer's one-line error naming the option (exit 2), not a traceback."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"expected a day, {DAY}, not {value!r}") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise typer.BadParameter(f"expected a day of {FIRST_YEAR}-{LAST_YEAR}, not {value!r}")
    return day


def _moment_option(value: str) -> datetime:
    """A time option's value: ``2026-03-10T09:30`` in Vietnam time, or with its offset; not in the future."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"expected a time, {DAY}THH:MM, not {value!r}") from None
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise typer.BadParameter(f"expected a time of {FIRST_YEAR}-{LAST_YEAR}, not {value!r}")
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=VN_TZ)
    if moment > datetime.now(UTC):
        raise typer.BadParameter(f"expected a past time, not {value!r}")
    return moment


def _start_of(day: date | None) -> datetime | None:
    return day_bounds(day)[0] if day is not None else None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the ledger's migrations (the API and workers also do it at start)."""
    from store.db import upgrade

    _setup()
    upgrade(get_settings().database_url)
    console.print("[green]ledger schema is up to date[/]")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port")] = 8700,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the intake, callbacks, health and metrics."""
    import uvicorn

    from store.db import upgrade

    _setup()
    upgrade(get_settings().database_url)
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level="warning")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="deliveries in flight (threads)")] = None,
    queues: Annotated[str | None, typer.Option(help="comma-separated queues (default: all)")] = None,
    loglevel: Annotated[str, typer.Option()] = "WARNING",
    processes: Annotated[int, typer.Option(min=1, help="worker processes, one per core (each with its threads)")
                         ] = 1,
) -> None:
    """Run a Celery worker: routing, deliveries and sweeps (thread pool: many slow calls per core).

    One process uses one core (Python's GIL); ``--processes N`` starts N-1 more beside this
    one, in the same process group, stopped with it.
    """
    import subprocess

    from config.celery import worker_queues
    from store.db import upgrade
    from tasks.runtime import get_runtime

    _setup()
    upgrade(get_settings().database_url)
    settings = get_settings()
    _refuse_unusable_destinations()
    siblings = [
        subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--loglevel", loglevel,
                          *(["--concurrency", str(concurrency)] if concurrency else []),
                          *(["--queues", queues] if queues else [])])
        for _ in range(max(0, processes - 1))
    ]
    all_queues = queues or ",".join(worker_queues(get_runtime().routing))
    try:
        _run_celery([
            "worker", "-P", "threads", "-c", str(concurrency or settings.worker_concurrency), "-Q", all_queues,
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair", "-l", loglevel,
            "-n", f"relay-{os.getpid()}@%h",
        ])
    finally:
        for sibling in siblings:
            sibling.terminate()
        for sibling in siblings:
            sibling.wait(30)


def _run_celery(argv: list[str]) -> None:
    """Run a Celery command in this process, and exit with its status.

    Celery's ``app.start`` (and ``worker_main``) drops the status its command line returns: through them, a
    worker that Celery stopped on an "Unrecoverable error" (a broker restarted under load) exited 0, and a
    supervisor that restarts only on failure left it stopped. Its failure exits 75, as a stalled worker does
    (``tasks/watchdog.py``).
    """
    import structlog
    from celery.bin.celery import celery as celery_command

    from tasks.watchdog import exit_status

    status = exit_status(celery_command.main(["-A", "tasks.app", *argv], prog_name="celery", standalone_mode=False))
    if status:
        structlog.get_logger("cli").error("celery.stopped", command=argv[0], status=status,
                                          action="exit for a restart")
        raise typer.Exit(status)


def _refuse_unusable_destinations() -> None:
    """A destination whose options or secrets cannot be used stops the process at start, naming what to set,
    instead of a dead letter at its first delivery; one that can be used but lacks what its service will ask for
    is warned about."""
    import structlog

    from tasks.runtime import get_runtime

    runtime = get_runtime()
    for notice in runtime.notices():
        console.print(f"[yellow]warning: {notice}[/]")
        structlog.get_logger("cli").warning("destination.notice", notice=notice)
    problems = runtime.problems()
    for problem in problems:
        console.print(f"[red]{problem}[/]")
    if problems:
        console.print("[red]fix the routing file or set the variables above, then start again[/]")
        raise typer.Exit(2)


@app.command()
def beat(loglevel: Annotated[str, typer.Option()] = "WARNING") -> None:
    """Run the scheduler: the sweeper and periodic jobs. Run one or more: the holder of a lease in Redis sends,
    the others stand by and take over when it goes (``tasks/beat.py``)."""
    _setup()
    schedule = get_settings().beat_schedule_file
    schedule.parent.mkdir(parents=True, exist_ok=True)
    _run_celery(["beat", "-s", str(schedule), "-l", loglevel])


def _sandbox_command() -> None:
    """``motcua-relay sandbox``, with a ``--<name>-port`` option per simulator the services declare."""
    from services.registry import get_registry

    simulators = sorted((sim for service in get_registry() for sim in service.simulators), key=lambda sim: sim.port)
    params = [inspect.Parameter("host", inspect.Parameter.KEYWORD_ONLY, default="127.0.0.1",
                                annotation=Annotated[str, typer.Option(help="bind address")])]
    params += [inspect.Parameter(sim.option, inspect.Parameter.KEYWORD_ONLY, default=sim.port,
                                 annotation=Annotated[int, typer.Option(min=0, max=65535,
                                                                        help=f"the {sim.title} simulator's port")])
               for sim in simulators]

    def sandbox(**options: Any) -> None:
        run_sandbox(str(options["host"]), {sim.option: int(options[sim.option]) for sim in simulators})

    sandbox.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    sandbox.__doc__ = ("Start the simulators on loopback: " + ", ".join(sim.title for sim in simulators) + ".\n\n"
                       "Each speaks for the destinations of the routing file that it simulates, with the secrets "
                       "their variables hold.")
    app.command("sandbox")(sandbox)


def run_sandbox(host: str, ports: dict[str, int]) -> None:
    """Serve every simulator whose destinations are configured; say what keeps the others from starting."""
    import asyncio

    import uvicorn

    from config.options import OptionsError
    from services.base import Configured, NotReady
    from tasks.runtime import get_runtime

    _setup()
    rt = get_runtime()
    servers: list[uvicorn.Server] = []
    started: list[str] = []
    declared = sorted(((service, sim) for service in rt.registry for sim in service.simulators),
                      key=lambda pair: pair[1].port)  # the one-stop software first: the others report to it
    for service, sim in declared:
        names = rt.names(service.kind)
        try:
            configured = [Configured(rt.destination(n), rt.options(n)) for n in names]
            taken = [c for c in configured if sim.takes(c.options)]
            if not taken:
                continue
            built = sim.build.load()(taken)
        except (OptionsError, NotReady) as exc:
            if sim.required:
                console.print(f"[red]{sim.title} simulator not started: {exc}[/]")
                raise typer.Exit(2) from None
            console.print(f"[yellow]{sim.title} simulator not started: {exc}[/]")
            continue
        port = ports[sim.option]
        servers.append(uvicorn.Server(uvicorn.Config(built, host=host, port=port, access_log=False,
                                                     log_level="warning")))
        started.append(f"{sim.title}: http://{host}:{port}" + (f" ({sim.help})" if sim.help else ""))
    console.print("; ".join(started))

    async def serve_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(serve_all())


_sandbox_command()


@app.command("services")
def services_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (one per service) instead of a table")] = False,
) -> None:
    """The services this installation knows (bundled, or installed as packages), and what each brings."""
    from services.registry import get_registry
    from tasks.runtime import get_runtime

    _setup()
    configured: dict[str, list[str]] = {}
    for name, dest in get_runtime().routing.destinations.items():
        configured.setdefault(dest.kind, []).append(name)
    registry = get_registry()
    if as_json:
        for service in registry:
            sys.stdout.write(json.dumps({
                "kind": service.kind, "service": service.title, "from": registry.origins.get(service.kind, ""),
                "destinations": configured.get(service.kind, []),
                "beat_jobs": [{"task": job.task, "title": job.title} for job in service.jobs],
                "callbacks": service.callbacks is not None,
                "simulators": [{"title": sim.title, "port": sim.port} for sim in service.simulators],
            }, ensure_ascii=False) + "\n")
        return
    table = Table(title="Services")
    for column in ("kind", "service", "from", "destinations", "beat jobs", "callbacks", "simulators"):
        table.add_column(column, overflow="fold")
    for service in registry:
        table.add_row(service.kind, service.title, registry.origins.get(service.kind, ""),
                      ", ".join(configured.get(service.kind, [])) or "—",
                      "; ".join(f"{job.task}: {job.title}" for job in service.jobs) or "—",
                      "yes" if service.callbacks is not None else "—",
                      ", ".join(f"{sim.title} ({sim.port})" for sim in service.simulators) or "—")
    console.print(table)


@events_app.command("sample")
def events_sample(
    dossiers: Annotated[int, typer.Option(min=1, max=9999, help="how many dossiers")] = 3,
    seed: Annotated[int, typer.Option(help="random seed: its own dossier codes, the same events again")] = 1,
    until: Annotated[datetime | None, typer.Option(
        parser=_moment_option, metavar=f"{DAY}THH:MM",
        help="the latest event time (Vietnam time unless an offset is given; default now)")] = None,
) -> None:
    """Print generated events as JSON lines: one valid event per line, what an integrator sends.

    A ward desk's day up to now (the day before while the desk has been open less than 20 minutes): no event is
    stamped in the future. Each seed has dossier numbers of its own (…-10001 for seed 1, …-20001 for seed 2), so
    samples of different seeds can go to one relay; a seed gives the same dossiers and event ids whenever it is
    drawn, and the same events with the same --until. Sent again later, a seed's events have other times under
    the same ids, which the intake refuses as conflicts: take another seed.
    """
    from sandbox.workload import sample

    for event in sample(dossiers, seed, until=until):
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _reading_ledger(engine: Any) -> Iterator[None]:
    """A ledger that cannot be read is said in one line, with what to check, not as a traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        console.print(f"[red]cannot read the ledger at {url}: {str(exc.orig).splitlines()[0]}[/]\n"
                      "check MOTCUA_DATABASE_URL, or create the schema with `motcua-relay db upgrade`")
        raise typer.Exit(2) from None


def _known_destination(name: str | None) -> None:
    """Exit 2 naming the choices unless the routing file has destination ``name`` (or none is named)."""
    from tasks.runtime import get_runtime

    known = list(get_runtime().routing.destinations)
    if name is not None and name not in known:
        console.print(f"[red]--destination: {name!r} is not a destination of the routing file; name one of "
                      f"{', '.join(known) or 'none configured'}[/]")
        raise typer.Exit(2)


def _dead_letter_table(title: str, rows: list[Any]) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("id", "destination", "dossier", "seq", "event", "attempts", "replays", "when (VN)", "HTTP",
                "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r.id), r.destination, r.dossier_code, str(r.sequence), r.type, str(r.attempts),
                      str(r.replays), _vn(r.updated_at), str(r.last_status_code or ""), r.last_error or "")
    return table


@app.command()
def deadletters(
    destination: Annotated[str | None, typer.Option(help="only this destination")] = None,
    dossier: Annotated[str | None, typer.Option(help="only this dossier code")] = None,
    since: Annotated[date | None, typer.Option(parser=_day_option, metavar=DAY,
                                               help="from this day (YYYY-MM-DD, Vietnam time)")] = None,
    until: Annotated[date | None, typer.Option(parser=_day_option, metavar=DAY,
                                               help="before this day (YYYY-MM-DD)")] = None,
    reason: Annotated[str | None, typer.Option(help="reason contains this text")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List dead letters: deliveries that gave up, with their reason."""
    from store.deadletters import DeadLetterFilter, dead_letters
    from tasks.runtime import get_runtime

    _setup()
    flt = DeadLetterFilter(destination, dossier, _start_of(since), _start_of(until), reason)
    rt = get_runtime()
    with _reading_ledger(rt.engine):
        rows = dead_letters(rt.engine, flt, limit)
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps({**r._asdict(), "updated_at": r.updated_at.isoformat()}) + "\n")
        return
    console.print(_dead_letter_table(f"Dead letters ({len(rows)})", rows))
    if not rows and destination is not None and destination not in rt.routing.destinations:
        console.print(f"[yellow]{destination!r} is not a destination of the routing file "
                      f"({', '.join(rt.routing.destinations)})[/]")


@app.command()
def replay(
    delivery_id: Annotated[list[int] | None, typer.Argument(help="delivery ids (or use filters)")] = None,
    destination: Annotated[str | None, typer.Option(help="only this destination")] = None,
    dossier: Annotated[str | None, typer.Option(help="only this dossier code")] = None,
    since: Annotated[date | None, typer.Option(parser=_day_option, metavar=DAY,
                                               help="dead since this day (YYYY-MM-DD, Vietnam time)")] = None,
    until: Annotated[date | None, typer.Option(parser=_day_option, metavar=DAY,
                                               help="dead before this day (YYYY-MM-DD)")] = None,
    reason: Annotated[str | None, typer.Option(help="reason contains this text")] = None,
    all_matching: Annotated[bool, typer.Option("--all", help="replay every dead letter matching the filters")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be replayed, and change nothing")
                       ] = False,
) -> None:
    """Re-queue dead letters with a fresh attempt budget. Nothing is deleted.

    With --dry-run, the same ids and filters list the dead letters a replay would take, and how many; the
    ledger and the queues are left as they are.
    """
    from store.deadletters import DeadLetterFilter, replayable
    from store.deadletters import replay as replay_dead_letters
    from tasks.runtime import get_runtime

    _setup()
    if not delivery_id and not all_matching:
        console.print("[red]name delivery ids, or pass --all with filters[/]")
        raise typer.Exit(2)
    rt = get_runtime()
    _known_destination(destination)
    flt = DeadLetterFilter(destination, dossier, _start_of(since), _start_of(until), reason,
                           tuple(delivery_id or ()))
    if dry_run:
        with _reading_ledger(rt.engine):
            rows = replayable(rt.engine, flt)
        console.print(_dead_letter_table(f"Would replay ({len(rows)})", rows))
        _not_dead(delivery_id, {r.id for r in rows})
        console.print(f"dry run: {len(rows)} deliveries would be replayed; nothing was changed")
        return
    deadlines = {name: d.retry.deadline for name, d in rt.routing.destinations.items()}
    with _reading_ledger(rt.engine):
        queued = replay_dead_letters(rt.engine, flt, deadlines, datetime.now(UTC))
    rt.enqueue(queued)
    console.print(f"[green]replayed {len(queued)} deliveries[/]")
    _not_dead(delivery_id, {q.delivery_id for q in queued})


def _not_dead(named: list[int] | None, taken: set[int]) -> None:
    """Say which of the ids an operator named a replay leaves alone (not dead letters, or not matching)."""
    left = sorted(set(named or ()) - taken)
    if left:
        console.print(f"[yellow]not replayed (no dead letter matching the filters): "
                      f"{', '.join(map(str, left))}[/]")


@app.command()
def trace(
    dossier_code: Annotated[str, typer.Argument(help="the dossier code")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document (timeline, deliveries, transfer chain) "
                                                         "instead of the tables")] = False,
) -> None:
    """Every event, delivery and attempt of one dossier, as a timeline."""
    from adapters.transfer import traced_chain
    from store import receipts
    from store.queries import describe_attempt, dossier_trace
    from store.tables import Status
    from tasks.runtime import get_runtime

    _setup()
    engine = get_runtime().engine
    with _reading_ledger(engine):
        evs, dels, atts = dossier_trace(engine, dossier_code)
    if not evs:
        console.print(f"[yellow]no events for {dossier_code}[/]")
        raise typer.Exit(1)
    by_event = {e.id: e for e in evs}
    rows: list[tuple[datetime, str, int, str, str]] = []
    for e in evs:
        sent = json.loads(e.payload).get("unit_code_sent")
        unit = f"; unit {e.unit_code}, sent as the closed code {sent}" if sent else ""
        rows.append((e.received_at, f"event {e.type}", e.sequence, "", f"{e.event_id} from {e.origin}{unit}"))
    deliveries = {d.id: d for d in dels}
    for a in atts:
        d = deliveries[a.delivery_id]
        detail = f"attempt {a.number}: {describe_attempt(a)}"
        rows.append((a.started_at, "attempt", by_event[d.event_pk].sequence, a.destination, detail))
    for d in dels:
        if d.status in (Status.SUPERSEDED, Status.DEAD) or d.status in (Status.PENDING, Status.RETRYING):
            detail = d.status + (f": {d.last_error}" if d.last_error else "")
            if d.next_attempt_at and d.status in (Status.PENDING, Status.RETRYING):
                detail += f", next try {_vn(d.next_attempt_at)}"
            rows.append((d.updated_at, "delivery", d.sequence, d.destination, detail))
    by_ref = {d.external_ref: d for d in dels if d.external_ref}
    with _reading_ledger(engine):
        for receipt in receipts.for_messages(engine, list(by_ref)):
            d = by_ref[receipt.msg_id]
            for moment, word in ((receipt.received_at, "received"), (receipt.seen_at, "seen")):
                if moment is not None:
                    rows.append((moment, "receipt", d.sequence, d.destination,
                                 f"{word} by the citizen ({receipt.channel}, message {receipt.msg_id})"))
    rows.sort(key=lambda r: r[0])
    summary = sorted(dels, key=lambda d: (d.destination, d.sequence))
    hops = traced_chain(evs, dels)
    if as_json:
        document = {
            "dossier": dossier_code,
            "timeline": [{"time": when.isoformat(), "what": what, "sequence": seq, "destination": dest or None,
                          "detail": detail} for when, what, seq, dest, detail in rows],
            "deliveries": [{"id": d.id, "destination": d.destination, "sequence": d.sequence, "status": d.status,
                            "attempts": d.attempts, "delivered_at": d.delivered_at.isoformat() if d.delivered_at
                            else None, "ref": d.external_ref} for d in summary],
            "chain": [{key: value.isoformat() if isinstance(value, datetime) else value
                       for key, value in dataclasses.asdict(hop).items()} for hop in hops],
        }
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"Dossier {dossier_code}")
    for col in ("time (VN)", "what", "seq", "destination", "detail"):
        table.add_column(col, overflow="fold")
    for when, what, seq, dest, detail in rows:
        table.add_row(_vn(when), what, str(seq), dest, detail)
    console.print(table)
    deliveries_table = Table(title="Deliveries")
    for col in ("destination", "seq", "status", "attempts", "delivered (VN)", "ref"):
        deliveries_table.add_column(col)
    for d in summary:
        deliveries_table.add_row(d.destination, str(d.sequence), d.status, str(d.attempts), _vn(d.delivered_at),
                                 d.external_ref or "")
    console.print(deliveries_table)
    _print_chain(hops)


def _print_chain(hops: list[Any]) -> None:
    """The dossier's inter-level transfer, hop by hop, when it has one."""
    if not hops:
        return
    table = Table(title="Transfer chain (liên thông)")
    for col in ("hop", "from → to", "sent (VN)", "answer", "answered (VN)", "result", "decided (VN)",
                "result carried back"):
        table.add_column(col)
    for n, hop in enumerate(hops, start=1):
        answer = hop.answer or "waiting"
        if hop.reason:
            answer += f": {hop.reason}"
        table.add_row(str(n), f"{hop.from_unit} → {hop.to_unit}", _vn(hop.sent_at), answer, _vn(hop.answered_at),
                      hop.outcome or "—", _vn(hop.result_at), "yes" if hop.returned else "—")
    console.print(table)


@report_app.command("portal")
def report_portal(
    day: Annotated[date, typer.Option("--date", parser=_day_option, metavar=DAY,
                                      help="the day (YYYY-MM-DD, Vietnam time) of the dossier events")],
    destination: Annotated[list[str] | None, typer.Option(help="portal destinations (default: every one)")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="also write the table as CSV here")] = None,
) -> None:
    """Portal sync per unit: dossiers, synced, pending, failed; lag from the event to the portal's acceptance."""
    from store.reports import portal_sync_report, sync_report_csv
    from tasks.runtime import get_runtime

    _setup()
    rt = get_runtime()
    names, when = _report_scope("portal", destination, day)
    with _reading_ledger(rt.engine):
        rows = portal_sync_report(rt.engine, names, when)
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_text(sync_report_csv(rows), encoding="utf-8")

    def secs(value: float | None) -> str:
        if value is None:
            return "—"
        if abs(value) < 60:
            return f"{value:.1f} s"
        if abs(value) < 3600:
            return f"{int(value // 60)} min {int(value % 60):02d} s"
        return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"

    table = Table(title=f"National portal sync, {when.isoformat()} ({', '.join(names)})")
    headers = ("unit", "dossiers", "synced", "pending", "failed", "events", "delivered", "superseded",
               "lag p50", "lag p99", "relay p50", "relay p99")
    for header in headers:
        table.add_column(header, justify="left" if header == "unit" else "right")
    for row in rows:
        if row.unit == "TOTAL":
            table.add_section()
        style = "[bold]" if row.unit == "TOTAL" else ""
        failed = f"[red]{row.failed}[/]" if row.failed else "0"
        table.add_row(f"{style}{row.unit}", str(row.dossiers), str(row.synced), str(row.pending), failed,
                      str(row.events), str(row.delivered), str(row.superseded), secs(row.lag_p50_s),
                      secs(row.lag_p99_s), secs(row.relay_p50_s), secs(row.relay_p99_s))
    console.print(table)
    console.print("lag: from the event in the one-stop software to the portal's acceptance; relay: from the "
                  "relay's receipt of the event" + (f"; CSV written to {csv_path}" if csv_path else ""))


def _report_scope(kind: str, names: list[str] | None, day: date) -> tuple[list[str], date]:
    """The destinations of ``kind`` a report covers (given, else all) and its day; exit 2 saying what is wrong."""
    from tasks.runtime import get_runtime

    found = [n for n, d in get_runtime().routing.destinations.items() if d.kind == kind]
    if not found:
        console.print(f"[red]no {kind} destination in the routing file[/]")
        raise typer.Exit(2)
    unknown = [n for n in names or () if n not in found]
    if unknown:
        console.print(f"[red]--destination: {', '.join(map(repr, unknown))} not a {kind} destination of the routing "
                      f"file; name one of {', '.join(found)}[/]")
        raise typer.Exit(2)
    return names or found, day


def _destination_of(kind: str, label: str, name: str | None) -> str:
    """The destination of ``kind`` named ``name``, or the only one; exit 2 naming the choices otherwise."""
    from tasks.runtime import get_runtime

    found = [n for n, d in get_runtime().routing.destinations.items() if d.kind == kind]
    if name is None and len(found) == 1:
        return found[0]
    if name not in found:
        console.print(f"[red]name one of the {label} destinations: {', '.join(found) or 'none configured'}[/]")
        raise typer.Exit(2)
    return name


def _zalo_destination(name: str | None) -> str:
    return _destination_of("zalo", "Zalo", name)


@postal_app.command("poll")
def postal_poll(
    destination: Annotated[str | None, typer.Option(help="the postal destination")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line instead of the table")] = False,
) -> None:
    """Read the post's tracking list now, from the ledger's cursor (what beat does every few minutes)."""
    from connectors.base import DeliveryError
    from services.postal.deliver import PostalDeliverer
    from services.postal.inbound import run_poll
    from tasks.runtime import get_runtime

    _setup()
    name = _destination_of("postal", "postal", destination)
    rt = get_runtime()
    try:
        with _reading_ledger(rt.engine):
            polled = run_poll(rt.deliverer_of(PostalDeliverer, name))
    except DeliveryError as exc:
        console.print(f"[red]{name}: the tracking list could not be read: {exc.reason}[/]")
        raise typer.Exit(1) from None
    intake = polled.intake
    if as_json:
        sys.stdout.write(json.dumps({
            "destination": name, "pages": polled.pages, "records": polled.records, "stored": intake.stored,
            "already_stored": intake.duplicates, "late": intake.late, "not_news": intake.ignored,
            "not_our_orders": len(intake.unknown), "unknown_orders": sorted(set(intake.unknown)),
            "cursor": polled.cursor,
        }, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"Tracking list of {name}")
    for column in ("pages", "records", "stored", "already stored", "late (kept, not sent)", "not news",
                   "not our orders", "cursor"):
        table.add_column(column, justify="right")
    table.add_row(*(str(v) for v in (polled.pages, polled.records, intake.stored, intake.duplicates, intake.late,
                                     intake.ignored, len(intake.unknown), polled.cursor)))
    console.print(table)
    if intake.unknown:
        console.print(f"[yellow]order numbers that are not ours: {', '.join(sorted(set(intake.unknown))[:10])}[/]")


@app.command()
def reconcile(
    day: Annotated[date | None, typer.Option("--date", parser=_day_option, metavar=DAY,
                                             help="the day (YYYY-MM-DD, Vietnam time); default yesterday")] = None,
    destination: Annotated[list[str] | None, typer.Option(help="payment destinations (default: every one)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write the CSV and xlsx (default MOTCUA_REPORTS_DIR)")
                   ] = None,
) -> None:
    """Reconcile a day's payments ("đối soát"): the provider's settled list against the bills and callbacks.

    Payments that came without a callback are recorded as paid (fee.paid, once); another amount than the
    bill's is held. The report is printed, stored in the ledger and written as CSV and xlsx; a rerun of
    the same day replaces them. Exit 1 when a provider could not be asked, 3 when there are anomalies.
    """
    from adapters.payment import ANOMALIES, OUTCOMES
    from connectors.base import DeliveryError
    from services.payment.deliver import PaymentDeliverer
    from services.payment.inbound import reconcile_and_report, yesterday
    from tasks.runtime import get_runtime

    _setup()
    rt = get_runtime()
    names, when = _report_scope("payment", destination, day or yesterday())
    failed = anomalies = 0
    for name in names:
        try:
            with _reading_ledger(rt.engine):
                result, csv_path, xlsx_path = reconcile_and_report(rt.deliverer_of(PaymentDeliverer, name), when,
                                                                   out or rt.settings.reports_dir)
        except DeliveryError as exc:
            console.print(f"[red]{name}: the settled list could not be read: {exc.reason}[/]")
            failed += 1
            continue
        except ValueError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
        summary = Table(title=f"Reconciliation of {name}, {when.isoformat()}")
        for column in ("outcome", "transactions", "settled (đ)"):
            summary.add_column(column, justify="left" if column == "outcome" else "right")
        for outcome, label in OUTCOMES.items():
            picked = [line for line in result.lines if line.outcome == outcome]
            style = "[yellow]" if picked and outcome in ANOMALIES else ""
            summary.add_row(f"{style}{outcome}: {label}", str(len(picked)),
                            vnd(sum(line.settled_amount or 0 for line in picked), ""))
        summary.add_section()
        summary.add_row("[bold]total", str(len(result.lines)), vnd(result.settled_total, ""))
        console.print(summary)
        if result.anomalies:
            anomalies += len(result.anomalies)
            table = Table(title="Anomalies")
            for column in ("outcome", "bill", "transaction", "dossier", "bill (đ)", "paid (đ)", "callbacks",
                           "paid at (VN)", "note"):
                table.add_column(column, justify="right" if "(đ)" in column or column == "callbacks" else "left")
            for line in result.anomalies:
                table.add_row(line.outcome, line.bill_code, line.transaction_id or "", line.dossier_code or "",
                              vnd(line.bill_amount, ""), vnd(line.settled_amount, ""),
                              str(line.callbacks), _vn(line.paid_at), line.note)
            console.print(table)
        console.print(f"written: {xlsx_path} and {csv_path}")
    if failed:
        raise typer.Exit(1)
    if anomalies:
        raise typer.Exit(3)


@app.command("env-example")
def env_example(
    routing_file: Annotated[Path | None, typer.Option(
        help="the routing file whose destinations' variables to list (default: MOTCUA_ROUTING_FILE's)")] = None,
) -> None:
    """Print every variable the relay reads, commented, with its default: the start of a new ``.env``
    (``motcua-relay env-example > .env``)."""
    from cli.env_example import render

    sys.stdout.write(render(routing_file or get_settings().routing_file))


@console_app.command("hash-password")
def console_hash_password(
    name: Annotated[str, typer.Argument(help="the operator's account name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help="the password (prompted, hidden, if not given)")],
) -> None:
    """Print an operator's ``name:hash`` entry for MOTCUA_CONSOLE_OPERATORS (PBKDF2-SHA256; the password is
    not kept anywhere)."""
    from api.console.auth import hash_password

    if ":" in name or "," in name or " " in name or not name:
        console.print("[red]an account name has no ':', ',' or spaces[/]")
        raise typer.Exit(2)
    if len(password) < 10:
        console.print("[red]use at least 10 characters[/]")
        raise typer.Exit(2)
    entry = f"{name}:{hash_password(password)}"
    print(entry)
    Console(stderr=True).print(
        "In .env, as printed: MOTCUA_CONSOLE_OPERATORS=" + entry + "\nIn a shell, in single quotes (its $ signs "
        "would be expanded): export MOTCUA_CONSOLE_OPERATORS='" + entry + "'\nSeveral accounts: separated by "
        "commas or spaces.", highlight=False, markup=False, soft_wrap=True)


@zalo_app.command("set-token")
def zalo_set_token(
    access_token: Annotated[str, typer.Option(envvar="MOTCUA_ZALO_ACCESS_TOKEN", prompt=True, hide_input=True,
                                              help="the OA access token (prompted, hidden, if not given)")],
    refresh_token: Annotated[str, typer.Option(envvar="MOTCUA_ZALO_REFRESH_TOKEN", prompt=True, hide_input=True,
                                               help="its refresh token (single-use)")],
    expires_in: Annotated[float, typer.Option(min=1, help="seconds the access token has left")] = 90000,
    destination: Annotated[str | None, typer.Option(help="the Zalo destination (when there are several)")] = None,
) -> None:
    """Store the Official Account's first token pair (or a new one after the refresh token was lost).

    Every worker reads the pair from Redis and rotates it from then on; each refresh spends the
    refresh token and stores the new pair.
    """
    from connectors.credentials import TokenPairStore
    from connectors.pauses import PauseStore
    from services.zalo.deliver import resume, set_token
    from tasks.runtime import get_runtime

    _setup()
    name = _zalo_destination(destination)
    rt = get_runtime()
    set_token(TokenPairStore(rt.redis, rt.settings.redis_prefix), name, access_token.strip(), refresh_token.strip(),
              expires_in)
    where = "Redis" if rt.redis is not None else "this process only (memory mode: it is lost at exit)"
    console.print(f"[green]token pair stored for {name} in {where}; the access token expires in "
                  f"{expires_in / 3600:.1f} h and is renewed ahead of that[/]")
    pauses = PauseStore(rt.redis, rt.settings.redis_prefix)
    waiting = [scope for scope, p in pauses.get(name).items() if p.condition in TOKEN_PAUSES]
    if waiting:  # the messages that waited for this pair go now
        _, released = resume(rt, pauses, name, waiting, by="motcua-relay zalo set-token")
        console.print(f"[green]{name} resumed: {released} waiting deliveries released[/]")


TOKEN_PAUSES = ("token_refused", "token_missing")


def _pause_line(pause: Any) -> str:
    from connectors.zalo import CONDITIONS

    scope = "" if pause.scope == "*" else f" (template {pause.scope})"
    until = f", until {_vn(datetime.fromtimestamp(pause.until, UTC))}" if pause.until is not None else ""
    return (f"paused: {pause.condition}{scope} since {_vn(datetime.fromtimestamp(pause.since, UTC))} (VN){until} — "
            f"{pause.reason}; {CONDITIONS.get(pause.condition, '')}")


@zalo_app.command("resume")
def zalo_resume(
    destination: Annotated[str | None, typer.Option(help="the Zalo destination (when there are several)")] = None,
    template: Annotated[list[str] | None, typer.Option(help="lift only this template's pause (repeatable)")] = None,
) -> None:
    """Lift a pause now (the ZNS account was topped up, the template re-enabled) and send what it held.

    The deliveries go at once, spending no attempt; if the condition has not cleared the first of them pauses the
    destination again. Without --template every pause of the destination ends. A pause also ends by itself:
    within pause_probe_every seconds of the condition clearing, or at its end (a daily limit: 00:00).
    """
    from connectors.pauses import PauseStore
    from services.zalo.deliver import resume
    from tasks.runtime import get_runtime

    _setup()
    name = _zalo_destination(destination)
    rt = get_runtime()
    pauses = PauseStore(rt.redis, rt.settings.redis_prefix)
    with _reading_ledger(rt.engine):
        ended, released = resume(rt, pauses, name, template or None, by="motcua-relay zalo resume")
    if not ended:
        console.print(f"{name} is not paused" + (f" for template {', '.join(template)}" if template else ""))
        return
    for pause in ended:
        console.print(f"[green]resumed {name}[/]: was {_pause_line(pause)}")
    console.print(f"[green]{released} waiting deliveries released[/]")


QUIET_HELD = "quiet hours"  # how the reason of a delivery quiet hours hold begins (ZaloDeliverer.not_before)


@zalo_app.command("send-held")
def zalo_send_held(
    destination: Annotated[str | None, typer.Option(help="the Zalo destination (when there are several)")] = None,
) -> None:
    """Send now the messages quiet hours held, once the quiet hours are over: after they were shortened or turned
    off (quiet_hours, MOTCUA_ZALO_QUIET_HOURS, and the workers restarted), what they held still waits for the old
    end. The messages are made due and the destination's workers woken; no attempt is spent.

    Refused while the destination's quiet hours are on (exit 1, nothing changed): no message goes to a citizen
    then, and Zalo itself refuses some templates at night (-133, 22:00-06:00). Nothing overrides that here: to
    send at night, change the quiet hours the workers read (the same setting this command reads). A pause
    (`zalo status`) still holds what it holds; `zalo resume` lifts it.
    """
    from adapters.zalo import QuietHours
    from config.options import OptionsError
    from services.zalo.deliver import ZaloOptions
    from store.deliveries import wake
    from tasks.runtime import get_runtime

    _setup()
    name = _zalo_destination(destination)
    rt = get_runtime()
    try:
        quiet = QuietHours.parse(rt.options_of(ZaloOptions, name).quiet_hours)
    except OptionsError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    now = datetime.now(UTC)
    if quiet is not None and (end := quiet.until(now)) is not None:
        console.print(f"[red]{name}: quiet hours ({quiet.start:%H:%M}-{quiet.end:%H:%M} Vietnam time) until "
                      f"{_vn(end)}: nothing sent; what they hold goes by itself then[/]")
        raise typer.Exit(1)
    with _reading_ledger(rt.engine):
        released = wake(rt.engine, name, f"{QUIET_HELD}%", now)
    rt.enqueue(released)
    console.print(f"[green]{name}: {len(released)} messages held by quiet hours released[/]")
    if released and rt.pauses.get(name):
        console.print(f"[yellow]{name} is paused: they wait for the pause (`motcua-relay zalo status`)[/]")


@zalo_app.command("status")
def zalo_status(destination: Annotated[str | None, typer.Option()] = None) -> None:
    """Whether the destination is paused (why, since when), and when the stored access token expires (the tokens
    themselves are never shown). Exit 1 without a token pair, 3 while paused."""
    import time

    from connectors.credentials import TokenPairStore
    from connectors.pauses import PauseStore
    from services.zalo.deliver import pair_name
    from tasks.runtime import get_runtime

    _setup()
    name = _zalo_destination(destination)
    rt = get_runtime()
    pauses = PauseStore(rt.redis, rt.settings.redis_prefix).get(name)
    for pause in pauses.values():
        console.print(f"[yellow]{name}: {_pause_line(pause)}[/]")
    if pauses:
        console.print("deliveries wait without spending attempts; `motcua-relay zalo resume` sends them now")
    pair = TokenPairStore(rt.redis, rt.settings.redis_prefix).get(pair_name(name))
    if pair is None:
        console.print(f"[red]no token pair for {name}: run `motcua-relay zalo set-token`[/]")
        raise typer.Exit(1)
    left = pair.expires_at - time.time()
    console.print(f"{name}: {'paused' if pauses else 'not paused'}; access token "
                  f"{'expired' if left <= 0 else f'valid for {left / 3600:.1f} h'}, renewed automatically; refresh "
                  f"token …{pair.refresh_token[-4:]}")
    if pauses:
        raise typer.Exit(3)


@app.command()
def demo(
    dossiers: Annotated[int, typer.Option(min=1, help="dossiers in the simulated working day")] = 100,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON here")] = None,
    faults: Annotated[float, typer.Option(min=0, max=1, help="share of simulator calls that fail (503s, connection "
                                                             "resets)")] = 0.1,
    timeout: Annotated[float | None, typer.Option(min=1, help="give up after this many seconds (default 300)")
                       ] = None,
) -> None:
    """Start the simulators, the API and a worker, play a working day, and summarise."""
    from cli.demo import run_demo

    run_demo(dossiers=dossiers, json_path=json_path, fault_rate=faults, console=console, timeout=timeout)


def main() -> None:
    """The command line; a configuration that cannot be read is one line naming what is wrong (exit 2), not a
    traceback: a setting of a wrong type, a secret set twice or unreadable, a routing file that does not parse."""
    import tomllib

    from pydantic import ValidationError

    from config.environ import EnvironError

    try:
        app()
    except (EnvironError, tomllib.TOMLDecodeError) as exc:
        _configuration_error(str(exc))
    except ValidationError as exc:
        if exc.title not in _CONFIGURATION_MODELS and not exc.title.endswith("Settings"):
            raise
        _configuration_error("; ".join(
            f"{_variable(exc.title, err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)))


# the models a configuration is read into (their errors are the operator's to fix, not the relay's bugs)
_CONFIGURATION_MODELS = {"RoutingConfig", "Destination", "Route"}


def _variable(model: str, loc: tuple[int | str, ...]) -> str:
    """Where a configuration error is: a setting's variable (``MOTCUA_DELIVERY_BATCH``), or the routing file's
    path to the value."""
    where = ".".join(str(part) for part in loc)
    if model.endswith("Settings") and len(loc) == 1:
        return f"MOTCUA_{where}".upper()
    return f"routing file: {where}" if where else "routing file"


def _configuration_error(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]configuration: {message}[/]", highlight=False, soft_wrap=True)
    raise SystemExit(2)


if __name__ == "__main__":
    main()



