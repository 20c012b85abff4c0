"""The audit chain on real ledgers (both engines): every attempt's end and every final outcome appended in the
transaction that records it, checkpoints signed, an archive exported and verified offline — and each kind of
tampering with the ledger named by `audit verify`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select, text, update

from store import deliveries as claims
from store import intake
from store.audit.archive import read_archive
from store.audit.chain import GENESIS, digest, entry_hash
from store.audit.checkpoints import Signer, make_checkpoint
from store.audit.export import ExportError, check_proof, export, prove, prune
from store.audit.ledger import unaudited
from store.audit.verify import verify
from store.deadletters import DeadLetterFilter, replay
from store.deliveries import Claimed, Outcome
from store.sweep import sweep
from store.tables import Status, attempts, audit_checkpoints, audit_entries, audit_heads, deliveries
from tests.test_ledger import GAP, LEASE, ONESTOP, RULES, T0, WAREHOUSE, at, make_event, to

DOSSIERS = [f"000.21.00.H49-240315-{n:04d}" for n in range(1, 7)]
LATE = "000.21.00.H49-240315-0099"  # its sequence 1 arrives after 2 was sent: superseded


def ended(c: Claimed, status: Status = Status.DELIVERED, code: int = 200) -> tuple[Claimed, Outcome]:
    outcome = {Status.DELIVERED: "delivered", Status.RETRYING: "retryable", Status.DEAD: "permanent"}[status]
    return c, Outcome(status=status, attempt_outcome=outcome, duration_ms=12.5, status_code=code,
                      error=None if status == Status.DELIVERED else f"HTTP {code}: Nguyễn Văn A 0912345678",
                      excerpt='{"ok":true}', external_ref=f"r-{c.delivery_id}" if code == 200 else None,
                      next_attempt_at=at(30) if status == Status.RETRYING else None)


@dataclass
class Day:
    signer: Signer
    ids: dict[str, list[int]]
    dead: int
    retried: int


def record_a_day(engine: Engine) -> Day:
    """Attempts of every kind, through the ledger's own functions: delivered, retried, dead and replayed, a lease
    lost and swept, a paused attempt released, one superseded, one rerouted; three checkpoints."""
    signer = Signer.generate()
    for sequence in (1, 2):
        intake.ingest_and_route(engine, [make_event(sequence, dossier=d) for d in DOSSIERS], T0,
                                to("warehouse", "onestop"), RULES)
    intake.ingest_and_route(engine, [make_event(2, dossier=LATE)], T0, to("warehouse"), RULES)
    ids: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for did, dossier in conn.execute(select(deliveries.c.id, deliveries.c.dossier_code)
                                         .where(deliveries.c.destination == "warehouse")
                                         .order_by(deliveries.c.sequence, deliveries.c.id)):
            ids.setdefault(dossier, []).append(did)
    first = claims.claim_many(engine, "warehouse", WAREHOUSE, at(1), LEASE, GAP, limit=100)
    heads = {c.dossier_code: c for c in first.claimed}
    dead, retried, lost = heads[DOSSIERS[0]], heads[DOSSIERS[1]], heads[DOSSIERS[2]]
    claims.finish_many(engine, [ended(dead, Status.DEAD, 400), ended(retried, Status.RETRYING, 503),
                                *[ended(c) for c in first.claimed if c not in (dead, retried, lost)]],
                       WAREHOUSE, at(2))
    make_checkpoint(engine, signer, at(3))
    # the lost one's worker died: the sweeper closes its attempt, the retried one goes again and is delivered
    sweep(engine, at(1 + LEASE + 5), requeue_after=60, batch=100)
    again = claims.claim_many(engine, "warehouse", WAREHOUSE, at(LEASE + 10), LEASE, GAP,
                              ids=[retried.delivery_id, lost.delivery_id])
    claims.finish_many(engine, [ended(c) for c in again.claimed], WAREHOUSE, at(LEASE + 11))
    # onestop paused: one attempt answered "paused" is released with its budget; the others delivered
    other = claims.claim_many(engine, "onestop", ONESTOP, at(LEASE + 12), LEASE, GAP, limit=100)
    paused, *rest = other.claimed
    claims.release(engine, paused, Outcome(status=Status.RETRYING, attempt_outcome="paused", duration_ms=3.0,
                                           status_code=403, error="quota spent", excerpt="-124",
                                           next_attempt_at=at(LEASE + 60)), at(LEASE + 13), record=True)
    claims.finish_many(engine, [ended(c) for c in rest], ONESTOP, at(LEASE + 14))
    make_checkpoint(engine, signer, at(LEASE + 15))
    # the late dossier's sequence 2 went after the gap; its 1 arrives after, and is superseded at its claim
    gone = claims.claim_many(engine, "warehouse", WAREHOUSE, at(GAP + LEASE + 20), LEASE, GAP,
                             ids=[ids[LATE][0]])
    claims.finish_many(engine, [ended(c) for c in gone.claimed], WAREHOUSE, at(GAP + LEASE + 21))
    intake.ingest_and_route(engine, [make_event(1, dossier=LATE)], at(GAP + LEASE + 22), to("warehouse"), RULES)
    with engine.connect() as conn:
        stale = conn.execute(select(deliveries.c.id).where(deliveries.c.dossier_code == LATE,
                                                           deliveries.c.sequence == 1)).scalar_one()
    refused = claims.claim_many(engine, "warehouse", WAREHOUSE, at(GAP + LEASE + 23), LEASE, GAP, ids=[stale])
    assert refused.refused[stale].state == "superseded"
    # the dead letter replayed and rerouted
    replay(engine, DeadLetterFilter(destination="warehouse"), {"warehouse": 3600}, at(GAP + LEASE + 24))
    assert claims.reroute(engine, ids[LATE][0], "onestop", RULES, at(GAP + LEASE + 25))[0] is not None
    make_checkpoint(engine, signer, at(GAP + LEASE + 30))
    return Day(signer, ids, dead.delivery_id, retried.delivery_id)


def chain_of(engine: Engine, chain: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(audit_entries).where(audit_entries.c.chain == chain)
                            .order_by(audit_entries.c.seq)).all()


def exported(engine: Engine, tmp_path: Path, name: str = "day.zip") -> Path:
    out = tmp_path / name
    export(engine, out, T0 - timedelta(days=1), at(10_000), at(10_000))
    return out


def checked(path: Path, signer: Signer | None = None) -> Any:
    return verify(read_archive(path), public_key_pem=signer.public_pem if signer else None)


def test_every_attempt_and_final_outcome_is_one_entry_of_a_chain_that_recomputes(engine: Engine) -> None:
    day = record_a_day(engine)
    with engine.connect() as conn:
        recorded = conn.execute(select(func.count()).select_from(attempts).where(attempts.c.outcome.is_not(None))
                                ).scalar()
        per_attempt = Counter(conn.execute(select(audit_entries.c.attempt_id)
                                           .where(audit_entries.c.attempt_id.is_not(None))).scalars())
        kinds = Counter(json.loads(c)["status"] for c in conn.execute(
            select(audit_entries.c.content).where(audit_entries.c.kind == "outcome")).scalars())
        heads = {r.chain: (r.seq, r.hash) for r in conn.execute(select(audit_heads))}
    # exactly one entry per recorded attempt (the paused one included); and the outcomes without an attempt
    assert len(per_attempt) == recorded and set(per_attempt.values()) == {1}
    assert kinds == {"superseded": 1, "replayed": 1, "rerouted": 1}
    for chain in ("warehouse", "onestop"):
        prev = GENESIS
        for n, entry in enumerate(chain_of(engine, chain), 1):
            assert (entry.seq, entry.prev_hash) == (n, prev)
            assert entry.hash == entry_hash(chain, n, prev, digest(entry.content))
            prev = entry.hash
        assert heads[chain] == (n, prev)
    contents = [json.loads(e.content) for e in chain_of(engine, "warehouse")]
    # the lost attempt says so, the paused one kept its budget, and personal data is only hashed
    assert any(c.get("outcome") == "lost" and c["status"] is None for c in contents)
    assert "0912345678" not in json.dumps(contents) and "Nguyễn" not in json.dumps(contents)
    # the replay names the entry that made its delivery a dead letter
    replayed = next(c for c in contents if c.get("status") == "replayed")
    dead_entry = next(e for e in chain_of(engine, "warehouse")
                      if json.loads(e.content).get("status") == "dead" and e.delivery_id == day.dead)
    assert replayed["dead_letter"] == {"chain": "warehouse", "seq": dead_entry.seq, "hash": dead_entry.hash}
    assert replayed["replays"] == 1


def test_the_untouched_archive_verifies_offline(engine: Engine, tmp_path: Path) -> None:
    day = record_a_day(engine)
    report = checked(exported(engine, tmp_path), day.signer)
    assert report.ok, report.findings
    assert not [f for f in report.findings if f.severity == "failure"]


def _attempt_of(engine: Engine, delivery_id: int, number: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(attempts.c.id).where(attempts.c.delivery_id == delivery_id,
                                                            attempts.c.number == number)).scalar_one())


def _change_row(engine: Engine, day: Day) -> str:
    attempt = _attempt_of(engine, day.dead, 1)
    with engine.begin() as conn:
        conn.execute(update(attempts).where(attempts.c.id == attempt).values(status_code=200))
    return f"attempt {attempt}"


def _delete_row(engine: Engine, day: Day) -> str:
    attempt = _attempt_of(engine, day.retried, 2)
    with engine.begin() as conn:
        conn.execute(delete(attempts).where(attempts.c.id == attempt))
    return f"attempt {attempt}"


def _reorder_rows(engine: Engine, day: Day) -> str:
    first, second = _attempt_of(engine, day.retried, 1), _attempt_of(engine, day.retried, 2)
    with engine.begin() as conn:  # the second attempt said to be the first, and the first the second
        conn.execute(update(attempts).where(attempts.c.id == first).values(number=-1))
        conn.execute(update(attempts).where(attempts.c.id == second).values(number=1))
        conn.execute(update(attempts).where(attempts.c.id == first).values(number=2))
    return f"attempt {first}"


def _change_checkpoint(engine: Engine, day: Day) -> str:
    with engine.begin() as conn:
        conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.number == 2).values(
            body=func.replace(audit_checkpoints.c.body, '"made_at":"', '"made_at":"1')))
    return "checkpoint 2"


def _delete_checkpoint(engine: Engine, day: Day) -> str:
    with engine.begin() as conn:
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.number == 2))
    return "checkpoint 2"


def _change_entry(engine: Engine, day: Day) -> str:
    entry = chain_of(engine, "warehouse")[2]
    with engine.begin() as conn:
        conn.execute(update(audit_entries).where(audit_entries.c.chain == "warehouse",
                                                 audit_entries.c.seq == entry.seq)
                     .values(content=entry.content.replace('"status_code":', '"status_code":1')))
    return f"entry warehouse#{entry.seq}"


@pytest.mark.parametrize("tamper", [_change_row, _delete_row, _reorder_rows, _change_checkpoint,
                                    _delete_checkpoint, _change_entry],
                         ids=lambda f: f.__name__.strip("_"))
def test_verify_names_what_was_changed_deleted_or_reordered(
    engine: Engine, tmp_path: Path, tamper: Callable[[Engine, Day], str]
) -> None:
    day = record_a_day(engine)
    untouched = exported(engine, tmp_path, "before.zip")
    named = tamper(engine, day)
    report = checked(exported(engine, tmp_path, "after.zip"), day.signer)
    assert not report.ok
    assert named in {f.subject for f in report.findings if f.severity == "failure"}, report.findings
    assert checked(untouched, day.signer).ok  # the archive made before still verifies


def test_a_chain_switched_off_appends_nothing_and_its_rows_are_named(engine: Engine, tmp_path: Path) -> None:
    day = record_a_day(engine)
    quiet = unaudited(engine)
    intake.ingest_and_route(quiet, [make_event(3, dossier=DOSSIERS[4])], at(500), to("warehouse"), RULES)
    batch = claims.claim_many(quiet, "warehouse", WAREHOUSE, at(501), LEASE, GAP, ids=[
        _open_of(engine, DOSSIERS[4])])
    claims.finish_many(quiet, [ended(c) for c in batch.claimed], WAREHOUSE, at(502))
    make_checkpoint(engine, day.signer, at(503))
    report = checked(exported(engine, tmp_path), day.signer)
    attempt = batch.claimed[0].attempt_id
    assert f"attempt {attempt}" in {f.subject for f in report.findings}


def _open_of(engine: Engine, dossier: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(deliveries.c.id).where(
            deliveries.c.dossier_code == dossier, deliveries.c.destination == "warehouse",
            deliveries.c.status == Status.PENDING).order_by(deliveries.c.sequence).limit(1)).scalar_one())


def test_a_dossiers_proof_leads_each_entry_to_a_signed_head(engine: Engine) -> None:
    record_a_day(engine)
    proof = prove(engine, DOSSIERS[1])
    assert {e["content"]["attempt"] for e in proof["entries"] if e["kind"] == "attempt"} >= {1, 2}
    assert all(e["checkpoint"] is not None for e in proof["entries"])
    assert check_proof(proof) == []
    # one changed digest on the path, or a changed content, no longer leads there
    broken = json.loads(json.dumps(proof))
    first, *later = broken["entries"]
    first["content"]["status_code"] = 201
    next(e for e in later if e["path"])["path"][0] = "0" * 64
    assert len(check_proof(broken)) == 2


def test_retention_cuts_archived_entries_and_the_rest_still_verifies(engine: Engine, tmp_path: Path) -> None:
    day = record_a_day(engine)
    archive = exported(engine, tmp_path, "all.zip")
    with engine.connect() as conn:
        second = conn.execute(select(audit_checkpoints.c.made_at).where(audit_checkpoints.c.number == 2)).scalar_one()
    done = prune(engine, archive, second + timedelta(seconds=1), at(20_000))
    assert done.checkpoint == 2 and done.entries > 0
    # an export reaching back before the cut is refused; from the cut on, it verifies on its own
    with pytest.raises(ExportError, match="archived and removed"):
        exported(engine, tmp_path, "too-early.zip")
    after = tmp_path / "after.zip"
    export(engine, after, second, at(10_000), at(20_000))
    report = checked(after, day.signer)
    assert report.ok, report.findings
    assert read_archive(after).manifest.chains["warehouse"].anchor.seq > 0
    with engine.connect() as conn:  # the cut left the chain's head where it was
        assert conn.execute(text("SELECT count(*) FROM audit_cuts")).scalar() == 2
