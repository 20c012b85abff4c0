"""The relay's processes (``api``, ``worker``, ``beat``, ``sandbox``, ``demo``), the ledger's schema, and what an
integrator or an operator sets up with (``services``, ``events sample``, ``env-example``, ``console hash-password``)."""

from __future__ import annotations

import inspect
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.common import DAY, app, console, console_app, db_app, events_app, moment_option, setup
from config.settings import get_settings


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the ledger's migrations (the API and workers also do it at start)."""
    from store.db import upgrade

    setup()
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

    setup()
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

    setup()
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
    setup()
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

    setup()
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

    setup()
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
        parser=moment_option, metavar=f"{DAY}THH:MM",
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
