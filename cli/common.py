"""What the commands share: the typer apps, the console they print on, and how they read days, times and
destinations."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import typer
from rich.console import Console

from config.logging import configure_logging
from config.settings import get_settings
from schemas.vietnam import FIRST_YEAR, LAST_YEAR, VN_TZ, day_bounds

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


PIPE_WIDTH = 4000  # into a pipe or a file: wider than any table's rows, so that no column is folded or cut


def operator_console() -> Console:
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

console = operator_console()


def vn_time(dt: datetime | None) -> str:
    if dt is None:
        return "—"
    return dt.astimezone(VN_TZ).strftime("%Y-%m-%d %H:%M:%S")


def setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


DAY = "YYYY-MM-DD"


def day_option(value: str) -> date:
    """A day option's value (``--since``, ``--until``, ``--date``), read before anything else runs: a wrong one is
    typer's one-line error naming the option (exit 2), not a traceback."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"expected a day, {DAY}, not {value!r}") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise typer.BadParameter(f"expected a day of {FIRST_YEAR}-{LAST_YEAR}, not {value!r}")
    return day


def moment_option(value: str) -> datetime:
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


def start_of(day: date | None) -> datetime | None:
    return day_bounds(day)[0] if day is not None else None


@contextlib.contextmanager
def reading_ledger(engine: Any) -> Iterator[None]:
    """A ledger that cannot be read is said in one line, with what to check, not as a traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        console.print(f"[red]cannot read the ledger at {url}: {str(exc.orig).splitlines()[0]}[/]\n"
                      "check MOTCUA_DATABASE_URL, or create the schema with `motcua-relay db upgrade`")
        raise typer.Exit(2) from None


def known_destination(name: str | None) -> None:
    """Exit 2 naming the choices unless the routing file has destination ``name`` (or none is named)."""
    from tasks.runtime import get_runtime

    known = list(get_runtime().routing.destinations)
    if name is not None and name not in known:
        console.print(f"[red]--destination: {name!r} is not a destination of the routing file; name one of "
                      f"{', '.join(known) or 'none configured'}[/]")
        raise typer.Exit(2)


def destination_of(kind: str, label: str, name: str | None) -> str:
    """The destination of ``kind`` named ``name``, or the only one; exit 2 naming the choices otherwise."""
    from tasks.runtime import get_runtime

    found = [n for n, d in get_runtime().routing.destinations.items() if d.kind == kind]
    if name is None and len(found) == 1:
        return found[0]
    if name not in found:
        console.print(f"[red]name one of the {label} destinations: {', '.join(found) or 'none configured'}[/]")
        raise typer.Exit(2)
    return name


def zalo_destination(name: str | None) -> str:
    return destination_of("zalo", "Zalo", name)
