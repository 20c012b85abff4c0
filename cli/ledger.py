"""What an operator reads from the ledger and does with it: dead letters and their replay, a dossier's trace, the
portal report and the payments' reconciliation."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import (
    DAY,
    app,
    console,
    day_option,
    known_destination,
    reading_ledger,
    report_app,
    setup,
    start_of,
    vn_time,
)
from schemas.vietnam import vnd


def _dead_letter_table(title: str, rows: list[Any]) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("id", "destination", "dossier", "seq", "event", "attempts", "replays", "when (VN)", "HTTP",
                "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r.id), r.destination, r.dossier_code, str(r.sequence), r.type, str(r.attempts),
                      str(r.replays), vn_time(r.updated_at), str(r.last_status_code or ""), r.last_error or "")
    return table


@app.command()
def deadletters(
    destination: Annotated[str | None, typer.Option(help="only this destination")] = None,
    dossier: Annotated[str | None, typer.Option(help="only this dossier code")] = None,
    since: Annotated[date | None, typer.Option(parser=day_option, metavar=DAY,
                                               help="from this day (YYYY-MM-DD, Vietnam time)")] = None,
    until: Annotated[date | None, typer.Option(parser=day_option, metavar=DAY,
                                               help="before this day (YYYY-MM-DD)")] = None,
    reason: Annotated[str | None, typer.Option(help="reason contains this text")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List dead letters: deliveries that gave up, with their reason."""
    from store.deadletters import DeadLetterFilter, dead_letters
    from tasks.runtime import get_runtime

    setup()
    flt = DeadLetterFilter(destination, dossier, start_of(since), start_of(until), reason)
    rt = get_runtime()
    with reading_ledger(rt.engine):
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
    since: Annotated[date | None, typer.Option(parser=day_option, metavar=DAY,
                                               help="dead since this day (YYYY-MM-DD, Vietnam time)")] = None,
    until: Annotated[date | None, typer.Option(parser=day_option, metavar=DAY,
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

    setup()
    if not delivery_id and not all_matching:
        console.print("[red]name delivery ids, or pass --all with filters[/]")
        raise typer.Exit(2)
    rt = get_runtime()
    known_destination(destination)
    flt = DeadLetterFilter(destination, dossier, start_of(since), start_of(until), reason,
                           tuple(delivery_id or ()))
    if dry_run:
        with reading_ledger(rt.engine):
            rows = replayable(rt.engine, flt)
        console.print(_dead_letter_table(f"Would replay ({len(rows)})", rows))
        _not_dead(delivery_id, {r.id for r in rows})
        console.print(f"dry run: {len(rows)} deliveries would be replayed; nothing was changed")
        return
    deadlines = {name: d.retry.deadline for name, d in rt.routing.destinations.items()}
    with reading_ledger(rt.engine):
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

    setup()
    engine = get_runtime().engine
    with reading_ledger(engine):
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
                detail += f", next try {vn_time(d.next_attempt_at)}"
            rows.append((d.updated_at, "delivery", d.sequence, d.destination, detail))
    by_ref = {d.external_ref: d for d in dels if d.external_ref}
    with reading_ledger(engine):
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
        table.add_row(vn_time(when), what, str(seq), dest, detail)
    console.print(table)
    deliveries_table = Table(title="Deliveries")
    for col in ("destination", "seq", "status", "attempts", "delivered (VN)", "ref"):
        deliveries_table.add_column(col)
    for d in summary:
        deliveries_table.add_row(d.destination, str(d.sequence), d.status, str(d.attempts), vn_time(d.delivered_at),
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
        table.add_row(str(n), f"{hop.from_unit} → {hop.to_unit}", vn_time(hop.sent_at), answer,
                      vn_time(hop.answered_at), hop.outcome or "—", vn_time(hop.result_at),
                      "yes" if hop.returned else "—")
    console.print(table)


@report_app.command("portal")
def report_portal(
    day: Annotated[date, typer.Option("--date", parser=day_option, metavar=DAY,
                                      help="the day (YYYY-MM-DD, Vietnam time) of the dossier events")],
    destination: Annotated[list[str] | None, typer.Option(help="portal destinations (default: every one)")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="also write the table as CSV here")] = None,
) -> None:
    """Portal sync per unit: dossiers, synced, pending, failed; lag from the event to the portal's acceptance."""
    from store.reports import portal_sync_report, sync_report_csv
    from tasks.runtime import get_runtime

    setup()
    rt = get_runtime()
    names, when = _report_scope("portal", destination, day)
    with reading_ledger(rt.engine):
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


@app.command()
def reconcile(
    day: Annotated[date | None, typer.Option("--date", parser=day_option, metavar=DAY,
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

    setup()
    rt = get_runtime()
    names, when = _report_scope("payment", destination, day or yesterday())
    failed = anomalies = 0
    for name in names:
        try:
            with reading_ledger(rt.engine):
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
                              str(line.callbacks), vn_time(line.paid_at), line.note)
            console.print(table)
        console.print(f"written: {xlsx_path} and {csv_path}")
    if failed:
        raise typer.Exit(1)
    if anomalies:
        raise typer.Exit(3)
