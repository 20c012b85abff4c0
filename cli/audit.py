"""``motcua-relay audit``: the hash-chained attempt log (docs/audit.md) — keys, checkpoints, archives, their offline
verification, one dossier's proof, and retention."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.common import app, console, day_option, reading_ledger, setup, vn_time
from schemas.vietnam import day_bounds

if TYPE_CHECKING:
    from store.audit.verify import Report

audit_app = typer.Typer(help="The audit chain: signed checkpoints, archives an inspector verifies offline.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("keygen")
def keygen() -> None:
    """A new Ed25519 checkpoint key: the private key on stdout (for MOTCUA_AUDIT_SIGNING_KEY or its _FILE), the
    public key and its id on stderr (to publish, and to pin with ``audit verify --public-key``)."""
    from store.audit.checkpoints import Signer

    signer = Signer.generate()
    sys.stdout.write(signer.private_text() + "\n")
    err = typer.get_text_stream("stderr")
    err.write(f"key id {signer.key_id}; its public key (publish it, give it to `audit verify --public-key`):\n")
    err.write(signer.public_pem)
    err.write("Put the line above in .env as MOTCUA_AUDIT_SIGNING_KEY=…, or in a file named by "
              "MOTCUA_AUDIT_SIGNING_KEY_FILE.\n")


@audit_app.command("checkpoint")
def checkpoint_now() -> None:
    """Make a checkpoint now (the beat makes one every minute while the chains grow)."""
    from tasks.audit import run_checkpoint
    from tasks.runtime import get_runtime

    setup()
    rt = get_runtime()
    with reading_ledger(rt.engine):
        result = run_checkpoint(rt)
    if result.get("error"):
        console.print(f"[red]no checkpoint: {result['error']}[/]")
        raise typer.Exit(1)
    if result.get("made") is None:
        console.print(result.get("why") or "nothing moved since the last checkpoint: none made")
        return
    console.print(f"checkpoint {result['made']}: {result['chains']} chains, "
                  f"{'time-stamped' if result['stamped'] else 'signed, not time-stamped'}")


def _period(start: date, end: date) -> tuple[datetime, datetime]:
    if end < start:
        raise typer.BadParameter("--to is before --from")
    return day_bounds(start)[0], day_bounds(end)[1]


@audit_app.command("export")
def export_archive(
    start: Annotated[date, typer.Option("--from", parser=day_option, help="the first day (Vietnam time), YYYY-MM-DD")],
    end: Annotated[date, typer.Option("--to", parser=day_option, help="the last day (Vietnam time), YYYY-MM-DD")],
    out: Annotated[Path, typer.Option("--out", help="the archive to write (a zip file)")],
) -> None:
    """Write a self-contained archive of a period: its entries, checkpoints, public keys and attempt rows."""
    from store.audit.export import ExportError, export
    from tasks.audit import tsa_certificates
    from tasks.runtime import get_runtime

    setup()
    rt = get_runtime()
    first, last = _period(start, end)
    with console.status(f"exporting {start} … {end}"), reading_ledger(rt.engine):
        try:
            done = export(rt.engine, out, first, last, datetime.now(UTC),
                          tsa_certificates=tsa_certificates(rt.settings))
        except ExportError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    table = Table(title=f"Archive {out}")
    table.add_column("chain")
    table.add_column("entries", justify="right")
    for chain, count in sorted(done.entries.items()):
        table.add_row(chain, str(count))
    console.print(table)
    span = (f"checkpoints {done.first_checkpoint or 1}–{done.last_checkpoint}" if done.last_checkpoint
            else "no checkpoint after the period yet")
    console.print(f"{done.checkpoints} checkpoints ({span}), {done.attempts} attempt rows; sha256 {done.sha256}")


@audit_app.command("verify")
def verify_archive(
    archive: Annotated[Path, typer.Argument(help="an archive written by `audit export`")],
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="the relay's published public key (PEM): checkpoints signed by another fail")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as one JSON document")] = False,
) -> None:
    """Check an archive with no database and no network: every entry's hash, every checkpoint's signature and
    time-stamp, every attempt row against its entry. Names the first thing that does not match; exit 1 if any."""
    from schemas.timestamps import verify_token
    from store.audit.archive import ArchiveError, read_archive
    from store.audit.verify import verify

    try:
        opened = read_archive(archive)
        with console.status(f"verifying {sum(opened.manifest.counts.entries.values()):,} entries and "
                            f"{opened.manifest.counts.checkpoints:,} checkpoints"):
            report = verify(opened, public_key_pem=public_key.read_text() if public_key else None,
                            tsa_check=verify_token)
    except (ArchiveError, OSError) as exc:
        console.print(f"[red]not an audit archive: {exc}[/]")
        raise typer.Exit(2) from None
    except ValueError as exc:  # the pinned key (the archive's own faults are findings)
        console.print(f"[red]--public-key: {exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps({"ok": report.ok, "counts": dataclasses.asdict(report.counts),
                                     "findings": [dataclasses.asdict(f) for f in report.findings]},
                                    ensure_ascii=False) + "\n")
    else:
        _print_report(archive, report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(archive: Path, report: Report) -> None:
    counts = report.counts
    checked = Table(title=f"Checked in {archive}")
    checked.add_column("what")
    checked.add_column("count", justify="right")
    for chain, n in sorted(counts.entries.items()):
        checked.add_row(f"entries of chain {chain} (under a good checkpoint)", f"{n} ({counts.covered.get(chain, 0)})")
    rows = [("checkpoints", counts.checkpoints), ("signatures verified", counts.signatures),
            ("heads compared", counts.heads), ("time-stamp tokens checked", counts.tokens),
            ("time-stamp tokens not checked", counts.tokens_unchecked), ("attempt rows", counts.attempts)]
    for what, n in rows:
        checked.add_row(what, str(n))
    console.print(checked)
    if report.findings:
        findings = Table(title="Findings")
        for col in ("", "subject", "what"):
            findings.add_column(col, overflow="fold")
        for f in report.findings[:SHOWN]:
            findings.add_row("[red]✗[/]" if f.severity == "failure" else "[yellow]![/]", f.subject, f.message)
        console.print(findings)
        if len(report.findings) > SHOWN:
            console.print(f"… and {len(report.findings) - SHOWN} more (--json lists them all)")
    first = report.first_failure
    if first is None:
        key = "under the pinned key" if report.key_pinned else "(no --public-key given: the archive's own keys)"
        console.print(f"[green]the archive verifies[/] {key}")
    else:
        console.print(f"[red]the archive does not verify: first, {first.subject}: {first.message}[/]")


SHOWN = 50  # findings printed in the table


@audit_app.command("prove")
def prove_dossier(
    dossier_code: Annotated[str, typer.Argument(help="the dossier code")],
    out: Annotated[Path | None, typer.Option("--out", help="write the proof (JSON) to this file")] = None,
) -> None:
    """What an inspector needs to check one dossier's record against a signed checkpoint: each of its entries,
    the checkpoint that covers it and the path from the entry to that checkpoint's head."""
    from store.audit.export import check_proof, prove
    from tasks.runtime import get_runtime

    setup()
    engine = get_runtime().engine
    with reading_ledger(engine):
        proof = prove(engine, dossier_code)
    if not proof["entries"]:
        console.print(f"[yellow]no audit entries for {dossier_code}[/]")
        raise typer.Exit(1)
    if out is not None:
        out.write_text(json.dumps(proof, ensure_ascii=False, indent=1) + "\n")
    table = Table(title=f"Audit entries of dossier {dossier_code}")
    for col in ("entry", "what", "time (VN)", "outcome", "checkpoint", "path"):
        table.add_column(col)
    for entry in proof["entries"]:
        content = entry["content"]
        when = content.get("started_at") or content.get("at")
        what = (f"attempt {content['attempt']}" if entry["kind"] == "attempt" else content["status"])
        outcome = content.get("outcome") or content.get("status") or ""
        if content.get("status_code"):
            outcome += f" (HTTP {content['status_code']})"
        table.add_row(f"{entry['chain']}#{entry['seq']}", what,
                      vn_time(datetime.fromisoformat(when.replace("Z", "+00:00"))) if when else "—", outcome,
                      str(entry["checkpoint"] or "not yet"), f"{len(entry['path'])} digests")
    console.print(table)
    problems = check_proof(proof)
    for problem in problems:
        console.print(f"[red]{problem}[/]")
    if not problems:
        console.print("[green]every entry leads to the head its checkpoint signs[/]"
                      + (f"; the proof is in {out}" if out else "; --out FILE writes it for the inspector"))


@audit_app.command("prune")
def prune_chain(
    archive: Annotated[Path, typer.Option("--archive", help="the archive that holds what is removed")],
    before: Annotated[date, typer.Option("--before", parser=day_option,
                                         help="remove what the last checkpoint before this day covers")],
    yes: Annotated[bool, typer.Option("--yes", help="no question asked")] = False,
) -> None:
    """Retention: remove archived entries (and the attempt rows of final deliveries they are about) from the live
    ledger, once the archive holds them. Later archives start at the cut's checkpoint and verify on their own."""
    from store.audit.export import ExportError, prune
    from tasks.runtime import get_runtime

    setup()
    engine = get_runtime().engine
    if not yes and not typer.confirm(f"remove the audit entries before {before} held by {archive}?"):
        raise typer.Exit(1)
    with reading_ledger(engine):
        try:
            done = prune(engine, archive, day_bounds(before)[0], datetime.now(UTC))
        except ExportError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    console.print(f"cut at checkpoint {done.checkpoint}: {done.entries} entries and {done.attempts} attempt rows "
                  "removed from the live ledger")
