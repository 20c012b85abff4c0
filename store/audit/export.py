"""From the ledger to an audit archive (docs/audit.md, "The archive"); one dossier's proof; retention's cut.

An archive of a period starts at the last checkpoint made at or before its start (its heads are the chains'
anchors: signed, so the archive needs nothing before them) and ends at the first checkpoint made at or after its
end; entries after the last checkpoint, up to the end, are in it too, and ``verify`` says they are not yet signed.
Beside the entries go the ledger's attempt rows they are about, and the ended attempt rows of the period that have
no entry at all (a row written around the chain, or while it was off), which ``verify`` names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, or_, select

from store.audit.archive import (
    AttemptLine,
    ChainSpan,
    CheckpointLine,
    EntryLine,
    Manifest,
    read_archive,
    write_archive,
)
from store.audit.chain import (
    GENESIS,
    Head,
    attempt_row_fields,
    canonical,
    checkpoint_heads,
    digest,
    entry_hash,
)
from store.audit.ledger import attempt_entry_of_row, attempt_rows
from store.audit.verify import verify_signature
from store.tables import FINAL_STATUSES, attempts, audit_checkpoints, audit_cuts, audit_entries, deliveries


class ExportError(ValueError):
    """What was asked cannot be exported (the period was cut away, nothing signed yet)."""


@dataclass(frozen=True, slots=True)
class Exported:
    path: Path
    entries: dict[str, int]
    checkpoints: int
    attempts: int
    first_checkpoint: int | None
    last_checkpoint: int | None
    sha256: str


def _checkpoint_at_or_before(conn: Connection, moment: datetime) -> Any:
    c = audit_checkpoints.c
    return conn.execute(select(audit_checkpoints).where(c.made_at <= moment).order_by(c.number.desc())
                        .limit(1)).one_or_none()


def _checkpoint_at_or_after(conn: Connection, moment: datetime) -> Any:
    c = audit_checkpoints.c
    return conn.execute(select(audit_checkpoints).where(c.made_at >= moment).order_by(c.number).limit(1)
                        ).one_or_none()


def _cuts(conn: Connection) -> dict[str, Any]:
    return {r.chain: r for r in conn.execute(select(audit_cuts))}


def export(
    engine: Engine, out: Path, start: datetime, end: datetime, now: datetime, *,
    tsa_certificates: Sequence[str] = (),
) -> Exported:
    """Write the archive of ``[start, end]`` to ``out``."""
    if end < start:
        raise ExportError("the period ends before it starts")
    with engine.connect() as conn:
        first = _checkpoint_at_or_before(conn, start)
        last = _checkpoint_at_or_after(conn, end)
        anchors = checkpoint_heads(json.loads(first.body)) if first is not None else {}
        for chain, cut in _cuts(conn).items():
            if anchors.get(chain, Head(0, GENESIS)).seq < cut.seq:
                raise ExportError(
                    f"chain {chain}'s entries up to {cut.seq} were archived and removed from the ledger "
                    f"(checkpoint {cut.checkpoint}): export from that checkpoint's time on, and keep the archive "
                    f"that holds the earlier ones (sha256 {cut.archive_sha256[:16]}…)")
        ends = checkpoint_heads(json.loads(last.body)) if last is not None else {}
        chains = sorted(set(conn.execute(select(audit_entries.c.chain).distinct()).scalars()))
        spans: dict[str, ChainSpan] = {}
        limits: dict[str, int] = {}
        for chain in chains:
            anchor = anchors.get(chain, Head(0, GENESIS))
            top = conn.execute(select(audit_entries.c.seq).where(
                audit_entries.c.chain == chain, audit_entries.c.seq > anchor.seq,
                or_(audit_entries.c.seq <= ends.get(chain, Head(0, "")).seq, audit_entries.c.recorded_at <= end),
            ).order_by(audit_entries.c.seq.desc()).limit(1)).scalar()
            limits[chain] = top if top is not None else anchor.seq
            spans[chain] = ChainSpan.model_validate(
                {"anchor": {"seq": anchor.seq, "hash": anchor.hash}, "last": {"seq": limits[chain]}})
        c = audit_checkpoints.c
        checkpoint_query = select(audit_checkpoints).order_by(c.number)
        if first is not None:
            checkpoint_query = checkpoint_query.where(c.number >= first.number)
        if last is not None:
            checkpoint_query = checkpoint_query.where(c.number <= last.number)
        checkpoint_rows = conn.execute(checkpoint_query).all()
        keys = {r.key_id: r.public_key for r in checkpoint_rows}
        manifest = Manifest.model_validate({
            "made_at": now, "from": start, "to": end, "chains": spans, "public_keys": keys,
            "tsa_certificates": list(tsa_certificates),
        })
        window_start = first.made_at if first is not None else None
        named: set[int] = set()
        write_archive(
            out, manifest, _entries(conn, spans, named), (_checkpoint_line(r) for r in checkpoint_rows),
            _attempt_lines(conn, named, window_start, end),
        )
    archive = read_archive(out)
    counts = archive.manifest.counts
    return Exported(out, dict(counts.entries), counts.checkpoints, counts.attempts,
                    first.number if first is not None else None, last.number if last is not None else None,
                    file_sha256(out))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entries(conn: Connection, spans: dict[str, ChainSpan], named: set[int]) -> Iterator[EntryLine]:
    """The spans' entries, by chain then number; the attempts they name are gathered into ``named``."""
    e = audit_entries.c
    for chain, span in spans.items():
        rows = conn.execution_options(yield_per=5000).execute(
            select(audit_entries).where(e.chain == chain, e.seq > span.anchor.seq, e.seq <= span.last.seq)
            .order_by(e.seq))
        for r in rows:
            if r.attempt_id is not None:
                named.add(r.attempt_id)
            yield EntryLine(chain=r.chain, seq=r.seq, kind=r.kind, delivery_id=r.delivery_id,
                            attempt_id=r.attempt_id, recorded_at=r.recorded_at, content=r.content,
                            prev_hash=r.prev_hash, hash=r.hash)


def _checkpoint_line(r: Any) -> CheckpointLine:
    return CheckpointLine(number=r.number, made_at=r.made_at, body=r.body, signature=r.signature, key_id=r.key_id,
                          tsa_token=r.tsa_token)


_BY_IDS = 1000  # attempt rows read per query


def _attempt_lines(
    conn: Connection, named: set[int], window_start: datetime | None, end: datetime
) -> Iterator[AttemptLine]:
    """The attempt rows the archive's entries name (``named``, complete once the entries are written: the archive
    writes them first), then the ended rows of the period that no entry names."""
    e, a = audit_entries.c, attempts.c
    joined = attempt_rows()
    ids = sorted(named)
    for i in range(0, len(ids), _BY_IDS):
        for r in conn.execute(joined.where(a.id.in_(ids[i:i + _BY_IDS])).order_by(a.id)):
            yield _attempt_line(r)
    unnamed = joined.where(a.outcome.is_not(None), a.started_at <= end, ~exists().where(e.attempt_id == a.id),
                           *([a.started_at >= window_start] if window_start is not None else []))
    for r in conn.execution_options(yield_per=5000).execute(unnamed.order_by(a.id)):
        yield _attempt_line(r)


def _attempt_line(r: Any) -> AttemptLine:
    """The row's fields as its entry says them (the same content the chain appended from it)."""
    return AttemptLine.model_validate(attempt_row_fields(attempt_entry_of_row(r, status=None).content))


# ---- one dossier's proof


def prove(engine: Engine, dossier_code: str) -> dict[str, Any]:
    """What an inspector needs to check a dossier's record against a signed checkpoint: each of its entries, with
    the first checkpoint that covers it and the content digests of the chain's entries after it up to that
    checkpoint's head (enough to recompute the head from the entry; about a minute of entries), and each such
    checkpoint with its signature, key and time-stamp token."""
    e, c = audit_entries.c, audit_checkpoints.c
    with engine.connect() as conn:
        ids = list(conn.execute(select(deliveries.c.id).where(deliveries.c.dossier_code == dossier_code)
                                .order_by(deliveries.c.id)).scalars())
        rows = conn.execute(select(audit_entries).where(e.delivery_id.in_(ids)).order_by(e.recorded_at, e.chain,
                                                                                          e.seq)).all() if ids else []
        checkpoints: dict[int, Any] = {}
        proofs: list[dict[str, Any]] = []
        for r in rows:
            covering = None
            for cp in conn.execute(select(audit_checkpoints).where(c.made_at >= r.recorded_at).order_by(c.number)
                                   .limit(3)):  # the first whose head reached it (one made as it committed may not)
                head = checkpoint_heads(json.loads(cp.body)).get(r.chain)
                if head is not None and head.seq >= r.seq:
                    covering, checkpoints[cp.number] = (cp, head), cp
                    break
            proof: dict[str, Any] = {"chain": r.chain, "seq": r.seq, "kind": r.kind, "prev_hash": r.prev_hash,
                                     "hash": r.hash, "content": json.loads(r.content), "checkpoint": None, "path": []}
            if covering is not None:
                cp, head = covering
                proof["checkpoint"] = cp.number
                proof["path"] = [digest(text) for text in conn.execute(
                    select(e.content).where(e.chain == r.chain, e.seq > r.seq, e.seq <= head.seq).order_by(e.seq)
                ).scalars()]
            proofs.append(proof)
    return {
        "format": "motcua-audit-proof/1", "dossier": dossier_code, "deliveries": ids, "entries": proofs,
        "checkpoints": [{"number": cp.number, "made_at": cp.made_at.isoformat(), "body": cp.body,
                         "signature": cp.signature, "key_id": cp.key_id, "public_key": cp.public_key,
                         "tsa_token": cp.tsa_token} for _, cp in sorted(checkpoints.items())],
    }


def check_proof(proof: dict[str, Any]) -> list[str]:
    """What does not hold in a proof (empty: every entry recomputes to a head its checkpoint signs); what an
    inspector runs, and what ``audit prove --check`` runs on a saved proof."""
    problems: list[str] = []
    checkpoints = {cp["number"]: cp for cp in proof["checkpoints"]}
    for cp in checkpoints.values():
        if not verify_signature(cp["public_key"], cp["body"], cp["signature"]):
            problems.append(f"checkpoint {cp['number']}: the signature does not verify")
    for entry in proof["entries"]:
        name = f"entry {entry['chain']}#{entry['seq']}"
        content = entry["content"]
        if entry_hash(entry["chain"], entry["seq"], entry["prev_hash"], digest(canonical(content))) != entry["hash"]:
            problems.append(f"{name}: its hash does not match its content")
            continue
        if entry["checkpoint"] is None:
            problems.append(f"{name}: no checkpoint covers it yet")
            continue
        current, seq = entry["hash"], entry["seq"]
        for content_digest in entry["path"]:
            seq += 1
            current = entry_hash(entry["chain"], seq, current, content_digest)
        head = checkpoint_heads(json.loads(checkpoints[entry["checkpoint"]]["body"])).get(entry["chain"])
        if head is None or (head.seq, head.hash) != (seq, current):
            problems.append(f"{name}: does not lead to checkpoint {entry['checkpoint']}'s head")
    return problems


# ---- retention


@dataclass(frozen=True, slots=True)
class Pruned:
    checkpoint: int
    entries: int
    attempts: int


def prune(engine: Engine, archive_path: Path, before: datetime, now: datetime) -> Pruned:
    """Remove from the live ledger the chains' entries up to the last checkpoint made before ``before``, and the
    attempt rows of final deliveries they are about, once ``archive_path`` (an archive this ledger exported) holds
    them: its entries must reach that checkpoint's heads, with the same hashes. The chains stay verifiable across
    the cut: later archives start at that checkpoint, whose heads are signed."""
    archive = read_archive(archive_path)
    with engine.begin() as conn:
        cut_at = _checkpoint_at_or_before(conn, before)
        if cut_at is None:
            raise ExportError("no checkpoint was made before that time: nothing can be cut")
        heads = checkpoint_heads(json.loads(cut_at.body))
        numbers = [line.number for line in archive.checkpoints()]
        if cut_at.number not in numbers:
            raise ExportError(f"the archive does not hold checkpoint {cut_at.number}, where the cut would be: "
                              "export a period that reaches it")
        held = {(line.chain, line.seq): line.hash for line in archive.entries()
                if line.seq == heads.get(line.chain, Head(-1, "")).seq}
        earlier = _cuts(conn)
        for chain, head in heads.items():
            span = archive.manifest.chains.get(chain)
            start = earlier[chain].seq if chain in earlier else 0
            if span is None or span.anchor.seq > start or held.get((chain, head.seq)) != head.hash:
                raise ExportError(f"the archive does not hold chain {chain} from {start + 1} to {head.seq} "
                                  "(the entries the cut would remove)")
        e, a = audit_entries.c, attempts.c
        removed_attempts = 0
        removed_entries = 0
        sha = file_sha256(archive_path)
        for chain, head in sorted(heads.items()):
            final = select(deliveries.c.id).where(deliveries.c.status.in_(FINAL_STATUSES))
            named = select(e.attempt_id).where(e.chain == chain, e.seq <= head.seq, e.attempt_id.is_not(None),
                                               e.delivery_id.in_(final))
            removed_attempts += conn.execute(delete(attempts).where(a.id.in_(named))).rowcount or 0
            removed_entries += conn.execute(
                delete(audit_entries).where(e.chain == chain, e.seq <= head.seq)).rowcount or 0
            conn.execute(delete(audit_cuts).where(audit_cuts.c.chain == chain))
            conn.execute(audit_cuts.insert().values(chain=chain, seq=head.seq, hash=head.hash,
                                                    checkpoint=cut_at.number, archive_sha256=sha, cut_at=now))
    return Pruned(cut_at.number, removed_entries, removed_attempts)
