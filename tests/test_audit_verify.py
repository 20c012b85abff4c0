"""``audit verify`` on archives built here with the chain's own hashing and a fresh Ed25519 key: an untouched one
verifies, and each tampering is named by the thing it changed."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from store.audit.archive import (
    ATTEMPTS,
    ENTRIES,
    MANIFEST,
    ArchiveError,
    AttemptLine,
    CheckpointLine,
    EntryLine,
    Manifest,
    read_archive,
    write_archive,
)
from store.audit.chain import (
    GENESIS,
    Head,
    attempt_content,
    attempt_row_fields,
    canonical,
    checkpoint_body,
    digest,
    entry_hash,
    key_id,
    outcome_content,
)
from store.audit.verify import Report, verify

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
HISTORY = {"portal": 20, "zalo": 8}  # each chain's entries since its start
# every checkpoint's heads (portal, zalo); the archive holds 5 to 8: from just after 5, to just before 8
HEADS = {1: (2, 1), 2: (4, 1), 3: (6, 2), 4: (7, 2), 5: (8, 2), 6: (11, 4), 7: (15, 6), 8: (18, 8)}
FIRST = 5
LOST_THEN_ANSWERED = ("portal", 10, 11)  # one attempt's two entries: left open (lost), then its late answer


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def kid(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def attempt_id(chain: str, seq: int) -> int:
    name, lost, answered = LOST_THEN_ANSWERED
    seq = lost if (chain, seq) == (name, answered) else seq
    return {"portal": 1000, "zalo": 2000}[chain] + seq


def content(chain: str, seq: int) -> dict[str, Any]:
    at = T0 + timedelta(minutes=seq)
    if seq % 4 == 0:
        return outcome_content(delivery_id=seq, event_id=f"ev-{seq}", event_hash=digest(f"ev-{seq}"),
                               destination=chain, status="dead", at=at, reason="no answer", replays=0)
    lost = (chain, seq) == LOST_THEN_ANSWERED[:2]
    attempt = attempt_id(chain, seq)
    return attempt_content(
        attempt_id=attempt, delivery_id=seq, event_id=f"ev-{seq}", event_hash=digest(f"ev-{seq}"),
        destination=chain, number=attempt % 1000, started_at=T0 + timedelta(minutes=attempt % 1000),
        duration_ms=None if lost else 12.5 + seq,
        outcome="lost" if lost else "ok", status_code=None if lost else 200, external_ref=f"HS-{seq}",
        excerpt=None if lost else '{"ok":true}', error=None, status=None if lost else "delivered", replays=0)


@dataclass
class Built:
    manifest: Manifest
    entries: list[EntryLine]
    checkpoints: list[CheckpointLine]
    attempts: list[AttemptLine]
    hashes: dict[tuple[str, int], str] = field(default_factory=dict)

    def entry(self, chain: str, seq: int) -> int:
        return next(i for i, e in enumerate(self.entries) if (e.chain, e.seq) == (chain, seq))

    def row(self, attempt: int) -> int:
        return next(i for i, r in enumerate(self.attempts) if r.attempt_id == attempt)

    def checkpoint(self, number: int) -> int:
        return next(i for i, c in enumerate(self.checkpoints) if c.number == number)


def build(*, signers: dict[int, Ed25519PrivateKey] | None = None, wrong_heads: dict[int, str] | None = None,
          wrong_prev: dict[int, str] | None = None, late: dict[int, timedelta] | None = None,
          tokens: bool = False) -> Built:
    """The chains' whole history, signed at every checkpoint; the archive of checkpoints 5 to 8's period."""
    entries: list[EntryLine] = []
    hashes: dict[tuple[str, int], str] = {}
    for chain, count in HISTORY.items():
        prev = GENESIS
        for seq in range(1, count + 1):
            body = content(chain, seq)
            text = canonical(body)
            hashes[chain, seq] = entry_hash(chain, seq, prev, digest(text))
            entries.append(EntryLine(chain=chain, seq=seq, kind=body["kind"], delivery_id=body["delivery"],
                                     attempt_id=body.get("attempt_id"), recorded_at=T0 + timedelta(minutes=seq),
                                     content=text, prev_hash=prev, hash=hashes[chain, seq]))
            prev = hashes[chain, seq]
    checkpoints: list[CheckpointLine] = []
    prev = GENESIS
    for number, (portal, zalo) in HEADS.items():
        signer = (signers or {}).get(number, KEY)
        made_at = T0 + timedelta(minutes=10 * number) + (late or {}).get(number, timedelta())
        heads = {"portal": Head(portal, (wrong_heads or {}).get(number, hashes["portal", portal])),
                 "zalo": Head(zalo, hashes["zalo", zalo])}
        body = checkpoint_body(number, made_at, heads, (wrong_prev or {}).get(number, prev), kid(signer))
        token = base64.b64encode(b"token " + body.encode()).decode() if tokens else None
        checkpoints.append(CheckpointLine(number=number, made_at=made_at, body=body, key_id=kid(signer),
                                          signature=base64.b64encode(signer.sign(body.encode())).decode(),
                                          tsa_token=token))
        prev = digest(body)
    anchors = {chain: HEADS[FIRST][i] for i, chain in enumerate(HISTORY)}
    held = [e for e in entries if e.seq > anchors[e.chain]]
    rows = {e.attempt_id: attempt_row_fields(content(e.chain, e.seq)) for e in held if e.attempt_id is not None}
    kept = checkpoints[FIRST - 1:]
    manifest = Manifest.model_validate({
        "made_at": T0 + timedelta(days=1), "from": kept[0].made_at + timedelta(seconds=1),
        "to": kept[-1].made_at - timedelta(seconds=1),
        "chains": {chain: {"anchor": {"seq": anchors[chain], "hash": hashes[chain, anchors[chain]]},
                           "last": {"seq": HISTORY[chain]}} for chain in HISTORY},
        "public_keys": {kid(k): public_pem(k) for k in {KEY, *(signers or {}).values()}},
    })
    return Built(manifest, held, kept, [AttemptLine.model_validate(r) for r in rows.values()], hashes)


def written(tmp_path: Path, built: Built) -> Path:
    path = tmp_path / "audit.zip"
    write_archive(path, built.manifest, built.entries, built.checkpoints, built.attempts)
    return path


def checked(tmp_path: Path, built: Built, **options: Any) -> Report:
    return verify(read_archive(written(tmp_path, built)), public_key_pem=public_pem(KEY), **options)


def rewrite(path: Path, member: str, change: Callable[[list[bytes]], list[bytes]] | None) -> None:
    """Rewrite one member of the archive at ``path`` (``None``: leave it out)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            if name != member:
                archive.writestr(name, data)
            elif change is not None:
                archive.writestr(name, b"".join(line + b"\n" for line in change(data.splitlines())))


# ---- untouched


def test_an_untouched_archive_verifies_and_says_what_it_checked(tmp_path: Path) -> None:
    report = checked(tmp_path, build())

    assert report.ok and report.first_failure is None
    assert report.key_pinned
    counts = report.counts
    assert counts.entries == {"portal": 12, "zalo": 6}
    assert counts.covered == {"portal": 10, "zalo": 6}
    assert (counts.checkpoints, counts.signatures, counts.heads, counts.attempts) == (4, 4, 8, 12)
    assert (counts.tokens, counts.tokens_unchecked) == (0, 0)
    assert [(f.severity, f.subject, f.message) for f in report.findings] == [
        ("warning", "chain portal",
         "2 entries of chain portal are not yet covered by a checkpoint (portal#19 to portal#20)"),
    ]


def test_without_a_pinned_key_the_archives_own_keys_are_used_and_the_report_says_so(tmp_path: Path) -> None:
    report = verify(read_archive(written(tmp_path, build())))

    assert report.ok and not report.key_pinned
    assert ("warning", "manifest") in [(f.severity, f.subject) for f in report.findings]


def test_the_archive_reads_back_as_written(tmp_path: Path) -> None:
    built = build()

    archive = read_archive(written(tmp_path, built))

    assert list(archive.entries()) == built.entries
    assert list(archive.checkpoints()) == built.checkpoints
    assert list(archive.attempts()) == built.attempts
    assert archive.manifest.counts.entries == {"portal": 12, "zalo": 6}
    assert (archive.manifest.counts.checkpoints, archive.manifest.counts.attempts) == (4, 12)
    assert archive.manifest.from_ == built.checkpoints[0].made_at + timedelta(seconds=1)
    assert not list(tmp_path.glob(".*.part"))


def test_an_archive_that_fails_to_be_written_leaves_nothing_behind(tmp_path: Path) -> None:
    built = build()

    def entries() -> Iterator[EntryLine]:
        yield built.entries[0]
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        write_archive(tmp_path / "audit.zip", built.manifest, entries(), built.checkpoints, built.attempts)

    assert list(tmp_path.iterdir()) == []


# ---- each tampering, named


def change_content(b: Built) -> None:
    i = b.entry("portal", 12)
    b.entries[i] = b.entries[i].model_copy(update={"content": b.entries[i].content.replace('"dead"', '"replayed"')})


def recompute_from(b: Built, chain: str, seq: int, text: str) -> None:
    """Change an entry's content and recompute its hash and every later one's: only the checkpoint notices."""
    prev = b.hashes[chain, seq - 1]
    for n in range(seq, HISTORY[chain] + 1):
        i = b.entry(chain, n)
        line = b.entries[i].model_copy(update={"content": text} if n == seq else {})
        line = line.model_copy(update={"prev_hash": prev, "hash": entry_hash(chain, n, prev, digest(line.content))})
        b.entries[i], prev = line, line.hash


def delete_entry(b: Built) -> None:
    del b.entries[b.entry("portal", 12)]


def swap_entries(b: Built) -> None:
    i, j = b.entry("portal", 13), b.entry("portal", 14)
    b.entries[i], b.entries[j] = b.entries[j], b.entries[i]


def change_row(b: Built) -> None:
    i = b.row(1013)
    b.attempts[i] = b.attempts[i].model_copy(update={"status_code": 500})


def delete_row(b: Built) -> None:
    del b.attempts[b.row(1013)]


def add_row(b: Built) -> None:
    b.attempts.append(b.attempts[0].model_copy(update={"attempt_id": 999}))


def swap_row_field(name: str) -> Callable[[Built], None]:
    def swap(b: Built) -> None:
        i, j = b.row(1013), b.row(1014)
        first, second = getattr(b.attempts[i], name), getattr(b.attempts[j], name)
        b.attempts[i] = b.attempts[i].model_copy(update={name: second})
        b.attempts[j] = b.attempts[j].model_copy(update={name: first})
    return swap


def change_checkpoint_body(b: Built) -> None:
    i = b.checkpoint(6)
    b.checkpoints[i] = b.checkpoints[i].model_copy(
        update={"body": b.checkpoints[i].body.replace('"seq":11', '"seq":10')})


def change_signature(b: Built) -> None:
    i = b.checkpoint(6)
    forged = base64.b64encode(KEY.sign(b"something else")).decode()
    b.checkpoints[i] = b.checkpoints[i].model_copy(update={"signature": forged})


def delete_checkpoint(b: Built) -> None:
    del b.checkpoints[b.checkpoint(7)]


def swap_checkpoints(b: Built) -> None:
    i, j = b.checkpoint(6), b.checkpoint(7)
    b.checkpoints[i], b.checkpoints[j] = b.checkpoints[j], b.checkpoints[i]


def swap_first_checkpoints(b: Built) -> None:
    b.checkpoints[0], b.checkpoints[1] = b.checkpoints[1], b.checkpoints[0]


def delete_first_checkpoint(b: Built) -> None:
    del b.checkpoints[0]


def repeat_entry(b: Built) -> None:
    i = b.entry("portal", 12)
    b.entries.insert(i + 1, b.entries[i])


def delete_last_entry(b: Built) -> None:
    del b.entries[b.entry("portal", 20)]


def change_anchor(b: Built) -> None:
    chains = dict(b.manifest.chains)
    chains["zalo"] = chains["zalo"].model_copy(update={"anchor": chains["zalo"].anchor.model_copy(
        update={"hash": "ab" * 32})})
    b.manifest = b.manifest.model_copy(update={"chains": chains})


@pytest.mark.parametrize(("tamper", "named", "says"), [
    (change_content, ["entry portal#12"], "its hash does not recompute"),
    (lambda b: recompute_from(b, "portal", 13, canonical({**content("portal", 13), "status_code": 500})),
     ["checkpoint 7", "checkpoint 8", "attempt 1013"], "names portal#15 with hash"),
    (delete_entry, ["entry portal#12"], "missing: portal#11 is followed by portal#13"),
    (swap_entries, ["entry portal#14"], "out of order: it comes where portal#13 should be"),
    (change_row, ["attempt 1013"], "status_code is 500 in the row, 200 in the entry"),
    (delete_row, ["attempt 1013"], "its row is missing: entry portal#13 names it"),
    (add_row, ["attempt 999"], "a row with no entry"),
    (swap_row_field("attempt"), ["attempt 1013", "attempt 1014"], "attempt is 14 in the row, 13 in the entry"),
    (swap_row_field("started_at"), ["attempt 1013", "attempt 1014"], "started_at is"),
    (change_checkpoint_body, ["checkpoint 6"], "its signature does not verify"),
    (change_signature, ["checkpoint 6"], "its signature does not verify"),
    (delete_checkpoint, ["checkpoint 7", "checkpoint 8"], "missing: checkpoint 6 is followed by checkpoint 8"),
    (swap_checkpoints, ["checkpoint 7"], "out of order: it comes where checkpoint 6 should be"),
    (swap_first_checkpoints, ["checkpoint 6"], "out of order: it comes before checkpoint 5 (line 2)"),
    (delete_first_checkpoint, ["checkpoint 6", "manifest", "manifest"], "is not checkpoint 1"),
    (repeat_entry, ["entry portal#12"], "appears twice (again at line 5)"),
    (delete_last_entry, ["entry portal#20"], "missing: the manifest says chain portal goes on to portal#20"),
    (change_anchor, ["manifest", "entry zalo#3"], "the anchor of chain zalo, zalo#2, has hash"),
], ids=["entry-content", "entries-rehashed", "entry-deleted", "entries-swapped", "row-changed", "row-deleted",
        "row-extra", "rows-numbers-swapped", "rows-times-swapped", "checkpoint-body", "checkpoint-signature",
        "checkpoint-deleted", "checkpoints-swapped", "first-checkpoints-swapped", "first-checkpoint-deleted",
        "entry-twice", "last-entry-deleted", "anchor"])
def test_a_tampering_is_named(tmp_path: Path, tamper: Callable[[Built], None], named: list[str], says: str) -> None:
    # given
    built = build()
    tamper(built)

    # when
    report = checked(tmp_path, built)

    # then
    assert not report.ok
    assert [f.subject for f in report.failures] == named
    assert report.first_failure is not None and says in report.first_failure.message


def test_a_deleted_checkpoints_successor_does_not_link_back_to_the_one_before(tmp_path: Path) -> None:
    built = build()
    delete_checkpoint(built)

    report = checked(tmp_path, built)

    assert report.failures[1].message == "its prev is not the hash of checkpoint 6, the one before it in the archive"


def test_a_checkpoint_signed_by_another_key_fails_when_the_key_is_pinned(tmp_path: Path) -> None:
    built = build(signers={7: OTHER})
    path = written(tmp_path, built)

    pinned = verify(read_archive(path), public_key_pem=public_pem(KEY))
    unpinned = verify(read_archive(path))

    assert [f.subject for f in pinned.failures] == ["checkpoint 7"]
    assert pinned.failures[0].message == f"signed by key {kid(OTHER)}, not the pinned key {kid(KEY)}"
    assert unpinned.ok


def test_a_head_naming_a_hash_not_in_the_chain_is_named(tmp_path: Path) -> None:
    report = checked(tmp_path, build(wrong_heads={7: "cd" * 32}))

    assert [f.subject for f in report.failures] == ["checkpoint 7"]
    assert report.failures[0].message.startswith("names portal#15 with hash cdcdcdcdcdcd…, but the archive's")


def test_a_signed_checkpoint_whose_prev_is_not_the_one_before_is_named(tmp_path: Path) -> None:
    report = checked(tmp_path, build(wrong_prev={7: "ef" * 32}))

    assert [(f.subject, f.message) for f in report.failures] == [
        ("checkpoint 7", "its prev is not the hash of checkpoint 6")]


def test_checkpoints_more_than_an_hour_apart_are_a_warning_naming_both(tmp_path: Path) -> None:
    report = checked(tmp_path, build(late={n: timedelta(hours=2) for n in (8,)}))

    assert report.ok
    assert ("checkpoint 8", "made 2 h 10 min after checkpoint 7: checkpoints are made at least hourly") in [
        (f.subject, f.message) for f in report.warnings]


# ---- time-stamp tokens


def test_tokens_go_to_the_injected_checker_with_the_bodys_digest(tmp_path: Path) -> None:
    built = build(tokens=True)
    seen: list[bytes] = []

    def tsa_check(token: bytes, body_digest: bytes, certificates: Sequence[str]) -> datetime:
        seen.append(body_digest)
        assert token.startswith(b"token ")
        assert body_digest == hashlib.sha256(token.removeprefix(b"token ")).digest()
        return T0 + timedelta(days=1)

    report = checked(tmp_path, built, tsa_check=tsa_check)

    assert report.ok and (report.counts.tokens, report.counts.tokens_unchecked) == (4, 0)
    assert len(seen) == 4


def test_a_token_that_does_not_verify_names_its_checkpoint(tmp_path: Path) -> None:
    def tsa_check(token: bytes, body_digest: bytes, certificates: Sequence[str]) -> datetime:
        if b'"checkpoint":6' in token:
            raise ValueError("not signed by a listed authority")
        return T0 + timedelta(days=1)

    report = checked(tmp_path, build(tokens=True), tsa_check=tsa_check)

    assert [(f.subject, f.message) for f in report.failures] == [
        ("checkpoint 6", "its time-stamp token does not verify: not signed by a listed authority")]


def test_without_a_checker_the_report_says_the_tokens_were_not_checked(tmp_path: Path) -> None:
    report = checked(tmp_path, build(tokens=True))

    assert report.ok and (report.counts.tokens, report.counts.tokens_unchecked) == (0, 4)
    assert ("checkpoints", "4 time-stamp tokens were not checked: no time-stamp verifier was given") in [
        (f.subject, f.message) for f in report.warnings]


# ---- not an archive


@pytest.mark.parametrize(("member", "change", "says"), [
    (ENTRIES, None, "entries.jsonl: missing from the archive"),
    (MANIFEST, lambda lines: [b'{"format": "motcua-audit-archive/9"}'],
     "manifest.json: format is 'motcua-audit-archive/9', not 'motcua-audit-archive/1'"),
    (MANIFEST, lambda lines: [b"{"], "manifest.json: not JSON"),
    (MANIFEST, lambda lines: [b'{"format": "motcua-audit-archive/1"}'], "manifest.json: not a manifest: made_at"),
], ids=["missing-member", "wrong-format", "manifest-not-json", "manifest-incomplete"])
def test_a_file_that_is_not_an_archive_is_refused(
    tmp_path: Path, member: str, change: Callable[[list[bytes]], list[bytes]] | None, says: str,
) -> None:
    path = written(tmp_path, build())
    rewrite(path, member, change)

    with pytest.raises(ArchiveError) as refused:
        read_archive(path)

    assert str(refused.value).startswith(says)


def test_not_a_zip_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.zip"
    path.write_text("hello")

    with pytest.raises(ArchiveError, match="not a readable zip file"):
        read_archive(path)


@pytest.mark.parametrize(("member", "line", "says"), [
    (ENTRIES, b"{not json", "entries.jsonl line 3: not an entry"),
    (ENTRIES, b"", "entries.jsonl line 3: an empty line"),
    (ATTEMPTS, b'{"attempt_id": "12"}', "attempts.jsonl line 3: not an attempt row: attempt_id"),
], ids=["entry-not-json", "empty-line", "row-wrong-type"])
def test_a_line_that_does_not_parse_is_named_by_member_and_line(
    tmp_path: Path, member: str, line: bytes, says: str,
) -> None:
    path = written(tmp_path, build())
    rewrite(path, member, lambda lines: [*lines[:2], line, *lines[3:]])
    archive = read_archive(path)

    with pytest.raises(ArchiveError) as refused:
        list(archive.entries() if member == ENTRIES else archive.attempts())
    report = verify(archive, public_key_pem=public_pem(KEY))

    assert str(refused.value).startswith(says)
    assert not report.ok
    assert report.first_failure is not None and report.first_failure.subject == f"{member} line 3"
