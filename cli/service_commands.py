"""The services' own commands: the post's tracking poll, the Zalo Official Account's tokens, pauses and held
messages."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import console, destination_of, postal_app, reading_ledger, setup, vn_time, zalo_app, zalo_destination


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

    setup()
    name = destination_of("postal", "postal", destination)
    rt = get_runtime()
    try:
        with reading_ledger(rt.engine):
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

    setup()
    name = zalo_destination(destination)
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
    until = f", until {vn_time(datetime.fromtimestamp(pause.until, UTC))}" if pause.until is not None else ""
    return (f"paused: {pause.condition}{scope} since {vn_time(datetime.fromtimestamp(pause.since, UTC))} (VN){until} — "
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

    setup()
    name = zalo_destination(destination)
    rt = get_runtime()
    pauses = PauseStore(rt.redis, rt.settings.redis_prefix)
    with reading_ledger(rt.engine):
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

    setup()
    name = zalo_destination(destination)
    rt = get_runtime()
    try:
        quiet = QuietHours.parse(rt.options_of(ZaloOptions, name).quiet_hours)
    except OptionsError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    now = datetime.now(UTC)
    if quiet is not None and (end := quiet.until(now)) is not None:
        console.print(f"[red]{name}: quiet hours ({quiet.start:%H:%M}-{quiet.end:%H:%M} Vietnam time) until "
                      f"{vn_time(end)}: nothing sent; what they hold goes by itself then[/]")
        raise typer.Exit(1)
    with reading_ledger(rt.engine):
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

    setup()
    name = zalo_destination(destination)
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
