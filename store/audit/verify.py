"""``audit verify``: check an archive with no database and no network, and name what does not match.

The checks are ``docs/audit.md``'s "What verify checks", in three passes over the archive's members:

1. ``checkpoints.jsonl``: numbered one after another, each ``prev`` the hash of the one before, each signature
   good under its key (the pinned one, when given), each time-stamp token good (when a checker is given),
   times increasing and at most an hour apart (a warning), heads never going back; the first checkpoint's heads
   are the chains' anchors.
2. ``entries.jsonl``, chain by chain: each chain follows on from its anchor, each ``hash`` and ``prev_hash``
   recomputes, every head a good checkpoint names is the entry of that number with that hash; entries after the
   last checkpoint's heads are a warning, not a failure.
3. ``attempts.jsonl``: each row matches its attempt's last entry, field by field (through a digest of its
   fields, so that only the mismatched rows' entries are read again); rows without an entry and entries
   without a row are named.

Memory grows with the checkpoints' heads and with one 16-byte digest per attempt, not with the entries.
A finding names its subject as ``entry portal#4711``, ``attempt 812``, ``checkpoint 12``, ``chain portal``,
``manifest`` or ``entries.jsonl line 17`` (an unreadable line, which ends the verification).
"""

from __future__ import annotations

import base64
import hashlib
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import from_json

from store.audit.archive import (
    ATTEMPTS,
    CHECKPOINTS,
    ENTRIES,
    Anchor,
    Archive,
    ArchiveError,
    AttemptLine,
    CheckpointLine,
    EntryLine,
    Hash,
    Stamp,
)
from store.audit.chain import (
    ATTEMPT_ROW_FIELDS,
    FORMAT,
    GENESIS,
    Head,
    attempt_row_fields,
    canonical,
    digest,
    entry_hash,
    key_id,
    stamp,
)

# time-stamp token (DER), SHA-256 of the checkpoint's body (32 bytes), the authority's certificates (PEM) →
# the token's time; raises ValueError when the token does not verify
TsaCheck = Callable[[bytes, bytes, Sequence[str]], datetime]
Severity = Literal["failure", "warning"]

HOURLY = timedelta(hours=1, seconds=60)  # checkpoints are made at least hourly; a minute's slack
SLACK = timedelta(seconds=60)
DETAILED_ROWS = 10_000  # mismatched attempt rows whose fields are named; the others are named alone


@dataclass(frozen=True)
class Finding:
    severity: Severity
    subject: str  # `entry portal#4711`, `attempt 812`, `checkpoint 12`, `chain portal`, `manifest`, …
    message: str


@dataclass
class Counts:
    """What was checked."""

    entries: dict[str, int] = field(default_factory=dict)  # entry lines read, per chain
    covered: dict[str, int] = field(default_factory=dict)  # of them, those a good checkpoint's head covers
    checkpoints: int = 0  # checkpoint lines read
    signatures: int = 0  # signatures checked under a key
    heads: int = 0  # heads compared with an entry or an anchor
    tokens: int = 0  # time-stamp tokens given to the checker
    tokens_unchecked: int = 0  # time-stamp tokens there was no checker for
    attempts: int = 0  # attempt rows read


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    key_pinned: bool = False

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "failure"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def first_failure(self) -> Finding | None:
        return next((f for f in self.findings if f.severity == "failure"), None)

    @property
    def ok(self) -> bool:
        return self.first_failure is None


def verify(archive: Archive, *, public_key_pem: str | None = None, tsa_check: TsaCheck | None = None) -> Report:
    """Check ``archive`` (docs/audit.md, "What verify checks"). ``public_key_pem`` pins the signing key: a
    checkpoint signed by any other fails. ``tsa_check`` checks the checkpoints' time-stamp tokens (without it,
    the report says they were not checked). Raises ValueError only for a ``public_key_pem`` that is not an
    Ed25519 public key; everything about the archive is a finding."""
    pinned = _ed25519(public_key_pem) if public_key_pem is not None else None
    return _Verifier(archive, pinned, tsa_check).run()


def _ed25519(pem: str) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(pem.encode())
    except UnsupportedAlgorithm as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key but {type(key).__name__}")
    return key


def verify_signature(public_key_pem: str, body: str, signature: str) -> bool:
    """Whether ``signature`` (base64) is the Ed25519 signature of ``body`` under the PEM public key (what a
    dossier's proof is checked with)."""
    try:
        _ed25519(public_key_pem).verify(base64.b64decode(signature, validate=True), body.encode())
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_id(key: Ed25519PublicKey) -> str:
    return key_id(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _short(hash_: str) -> str:
    return f"{hash_[:12]}…"


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min"


T = TypeVar("T")


@dataclass
class _Gap:
    first: int  # the numbers missing where ``jumper`` came
    last: int
    jumper: int
    late: dict[int, int] = field(default_factory=dict)  # those of them that came later: number → line


class _Numbering:
    """Numbers that should come one after another after ``floor``: which are missing, which came late."""

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.high = floor
        self.gaps: list[_Gap] = []

    def arrive(self, number: int, line: int) -> Literal["next", "jump", "late", "twice", "early"]:
        if number == self.high + 1:
            self.high = number
            return "next"
        if number > self.high:
            self.gaps.append(_Gap(self.high + 1, number - 1, number))
            self.high = number
            return "jump"
        if number <= self.floor:
            return "early"
        at = bisect_right(self.gaps, number, key=lambda gap: gap.first) - 1
        if at >= 0 and number <= self.gaps[at].last and number not in self.gaps[at].late:
            self.gaps[at].late[number] = line
            return "late"
        return "twice"


class _Links(Generic[T]):
    """Pairs each item with the one numbered before it, whichever of the two comes first."""

    def __init__(self) -> None:
        self.done: dict[int, T] = {}  # items whose successor has not come yet
        self.waiting: dict[int, T] = {}  # items whose predecessor has not come yet

    def arrive(self, number: int, item: T) -> list[tuple[int, T, T]]:
        """The (number, predecessor, successor) pairs ``item`` completes."""
        pairs = []
        before = self.done.pop(number - 1, None)
        if before is not None:
            pairs.append((number, before, item))
        else:
            self.waiting[number] = item
        after = self.waiting.pop(number + 1, None)
        if after is not None:
            pairs.append((number + 1, item, after))
        else:
            self.done[number] = item
        return pairs


class _HeadRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seq: int
    hash: Hash


class _Body(BaseModel):
    """A checkpoint's body (chain.checkpoint_body), read back."""

    model_config = ConfigDict(extra="forbid", strict=True)

    v: int
    format: str
    checkpoint: int
    made_at: Stamp
    heads: dict[str, _HeadRef]
    prev: Hash
    key: str


@dataclass
class _Checkpoint:
    number: int
    line: int
    digest: str  # SHA-256 of the body: what the next one's prev names
    prev: str | None
    made_at: datetime | None
    heads: dict[str, Head]
    good: bool  # its body reads and its signature verifies: its heads and times are the relay's word


_GENESIS_CHECKPOINT = _Checkpoint(0, 0, GENESIS, None, None, {}, True)


@dataclass
class _Chain:
    name: str
    anchor: Anchor
    last: int | None  # the manifest's last number, None for a chain it does not name
    numbering: _Numbering
    links: _Links[tuple[str, str]]  # (hash, prev_hash)
    wanted: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # seq → (checkpoint, hash) naming it
    arrived: int = 0  # entries that came in their turn (neither twice nor before the anchor)
    cover: int = 0  # the highest seq whose entry a good checkpoint names, with its hash
    covered: int = 0  # the entries arrived up to it


def _comparable(name: str, value: Any) -> Any:
    if name == "duration_ms" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name == "external_ref" and value == "":  # chain.attempt_content writes an empty reference as null
        return None
    return value


_DURATION, _REFERENCE, _STARTED = (ATTEMPT_ROW_FIELDS.index(n) for n in ("duration_ms", "external_ref", "started_at"))


def _row_key(values: list[Any]) -> bytes:
    """A digest of an attempt's row fields (in :data:`ATTEMPT_ROW_FIELDS`' order), to compare a row with its entry
    in 16 bytes a row. The ``repr`` of JSON's scalars says their type and is unambiguous, and quicker than
    ``canonical``."""
    values[_DURATION] = _comparable("duration_ms", values[_DURATION])
    values[_REFERENCE] = _comparable("external_ref", values[_REFERENCE])
    return hashlib.sha256(repr(values).encode()).digest()[:16]


def _entry_key(content: Mapping[str, Any]) -> bytes:
    return _row_key([content.get(name) for name in ATTEMPT_ROW_FIELDS])


def _row_values(row: AttemptLine) -> list[Any]:
    values = [getattr(row, name) for name in ATTEMPT_ROW_FIELDS]
    values[_STARTED] = stamp(values[_STARTED])
    return values


def _fields_differing(row: Mapping[str, Any], entry: Mapping[str, Any]) -> list[str]:
    return [
        f"{name} is {canonical(row[name])} in the row, {canonical(entry[name])} in the entry"
        for name in row if canonical(_comparable(name, row[name])) != canonical(_comparable(name, entry[name]))
    ]


class _Verifier:
    def __init__(self, archive: Archive, pinned: Ed25519PublicKey | None, tsa_check: TsaCheck | None) -> None:
        self.archive = archive
        self.manifest = archive.manifest
        self.pinned = pinned
        self.tsa_check = tsa_check
        self.report = Report(key_pinned=pinned is not None)
        self.counts = self.report.counts
        self.keys: dict[str, Ed25519PublicKey] = {}
        self.chains: dict[str, _Chain] = {}
        self.last_attempt: dict[int, tuple[str, int, bytes]] = {}  # attempt → its last entry and its fields' key

    def fail(self, subject: str, message: str) -> None:
        self.report.findings.append(Finding("failure", subject, message))

    def warn(self, subject: str, message: str) -> None:
        self.report.findings.append(Finding("warning", subject, message))

    def run(self) -> Report:
        self._keys()
        for name, span in self.manifest.chains.items():
            self._chain(name, span.anchor, span.last.seq)
        try:
            self._checkpoints()
            self._entries()
            self._attempts()
        except ArchiveError as exc:
            where = exc.member if exc.line is None else f"{exc.member} line {exc.line}"
            self.fail(where or "archive", f"{exc.reason}; the verification stopped there")
            return self.report
        self._totals()
        return self.report

    def _chain(self, name: str, anchor: Anchor, last: int | None) -> _Chain:
        chain = _Chain(name, anchor, last, _Numbering(anchor.seq), _Links(), cover=anchor.seq)
        chain.links.done[anchor.seq] = (anchor.hash, "")
        self.chains[name] = chain
        self.counts.entries[name] = 0
        self.counts.covered[name] = 0
        return chain

    # -- keys --------------------------------------------------------------------------------------------------

    def _keys(self) -> None:
        for named, pem in self.manifest.public_keys.items():
            try:
                key = _ed25519(pem)
            except ValueError as exc:
                self.fail("manifest", f"public key {named} is not an Ed25519 public key in PEM: {exc}")
                continue
            if (actual := _key_id(key)) != named:
                self.fail("manifest", f"public key {named} is in fact key {actual}")
                continue
            self.keys[named] = key
        if self.pinned is not None:
            self.keys = {_key_id(self.pinned): self.pinned}
        else:
            self.warn("manifest", "no key was pinned: the signatures were checked under the archive's own keys, "
                                  "which whoever made the archive chose; give the relay's public key to be sure")

    # -- checkpoints -------------------------------------------------------------------------------------------

    def _checkpoints(self) -> None:
        numbering: _Numbering | None = None
        links: _Links[_Checkpoint] = _Links()
        links.done[0] = _GENESIS_CHECKPOINT
        first: _Checkpoint | None = None
        last: _Checkpoint | None = None
        heads: list[tuple[int, str, Head]] = []
        for line, cp in self.archive.numbered(CHECKPOINTS, CheckpointLine):
            self.counts.checkpoints += 1
            item = self._checkpoint(line, cp)
            if numbering is None:
                numbering = _Numbering(cp.number - 1)
            arrival = numbering.arrive(cp.number, line)
            if arrival == "twice":
                self.fail(f"checkpoint {cp.number}", f"appears twice (again at line {line})")
                continue
            if arrival == "early":
                self.fail(f"checkpoint {numbering.floor + 1}",
                          f"out of order: it comes before checkpoint {cp.number} (line {line})")
            for _, before, after in links.arrive(cp.number, item):
                self._follows(before, after)
            if first is None or cp.number < first.number:
                first = item
            if last is None or cp.number > last.number:
                last = item
            if item.good:
                heads += [(cp.number, name, head) for name, head in item.heads.items()]
        if numbering is not None:
            for gap in numbering.gaps:
                self._checkpoint_gap(gap, links)
        if last is not None and last.made_at is not None and last.made_at < self.manifest.to:
            self.warn(f"checkpoint {last.number}", f"the archive's last, is made before the period's end "
                      f"({stamp(self.manifest.to)}): no later one was made yet, or it was left out")
        self._heads(first, sorted(heads))

    def _checkpoint(self, line: int, cp: CheckpointLine) -> _Checkpoint:
        subject = f"checkpoint {cp.number}"
        bad = _Checkpoint(cp.number, line, digest(cp.body), None, None, {}, False)
        try:
            body = _Body.model_validate_json(cp.body)
        except ValidationError as exc:
            self.fail(subject, f"its body is not a checkpoint's: {exc.errors()[0]['msg']}")
            return bad
        said = {"number": (cp.number, body.checkpoint), "made_at": (cp.made_at, body.made_at),
                "key_id": (cp.key_id, body.key)}
        for name, (line_says, body_says) in said.items():
            if line_says != body_says:
                shown = [stamp(v) if isinstance(v, datetime) else v for v in (line_says, body_says)]
                self.fail(subject, f"its line says {name} {shown[0]}, its signed body {shown[1]}")
        if body.format != FORMAT or body.v != 1:
            self.fail(subject, f"its body is of format {body.format!r} v{body.v}, not {FORMAT!r} v1")
            return bad
        if not self._signature(subject, cp, body.key):
            return bad
        self._token(subject, cp, body.made_at)
        return _Checkpoint(cp.number, line, bad.digest, body.prev, body.made_at,
                           {name: Head(h.seq, h.hash) for name, h in body.heads.items()}, True)

    def _signature(self, subject: str, cp: CheckpointLine, named: str) -> bool:
        key = self.keys.get(named)
        if key is None:
            self.fail(subject, f"signed by key {named}, not the pinned key {_key_id(self.pinned)}" if self.pinned
                      else f"signed by key {named}, which the manifest does not list (or lists wrongly)")
            return False
        try:
            signature = base64.b64decode(cp.signature, validate=True)
        except ValueError:
            self.fail(subject, "its signature is not base64")
            return False
        self.counts.signatures += 1
        try:
            key.verify(signature, cp.body.encode())
        except InvalidSignature:
            self.fail(subject, f"its signature does not verify under key {named}: its body or its signature was "
                               "changed")
            return False
        return True

    def _token(self, subject: str, cp: CheckpointLine, made_at: datetime) -> None:
        if cp.tsa_token is None:
            return
        if self.tsa_check is None:
            self.counts.tokens_unchecked += 1
            return
        self.counts.tokens += 1
        try:
            token = base64.b64decode(cp.tsa_token, validate=True)
            at = self.tsa_check(token, hashlib.sha256(cp.body.encode()).digest(), self.manifest.tsa_certificates)
        except ValueError as exc:
            self.fail(subject, f"its time-stamp token does not verify: {exc}")
            return
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if at < made_at - SLACK:
            self.warn(subject, f"its time-stamp ({stamp(at)}) is before the time it says it was made "
                               f"({stamp(made_at)})")

    def _follows(self, before: _Checkpoint, after: _Checkpoint) -> None:
        subject = f"checkpoint {after.number}"
        if not (before.good and after.good):
            return  # named already: its body or its signature was changed
        if after.prev != before.digest:
            self.fail(subject, "its prev is not 64 zeros, as the first checkpoint's is" if before.number == 0
                      else f"its prev is not the hash of checkpoint {before.number}")
        if before.made_at is None or after.made_at is None:
            return
        if after.made_at <= before.made_at:
            self.fail(subject, f"made at {stamp(after.made_at)}, not after checkpoint {before.number} "
                               f"({stamp(before.made_at)})")
        elif after.made_at - before.made_at > HOURLY:
            self.warn(subject, f"made {_span(after.made_at - before.made_at)} after checkpoint {before.number}: "
                               "checkpoints are made at least hourly")
        for name, head in before.heads.items():
            now = after.heads.get(name)
            if now is None:
                self.fail(subject, f"does not name chain {name}, which checkpoint {before.number} named")
            elif now.seq < head.seq:
                self.fail(subject, f"names {name}#{now.seq}, before checkpoint {before.number}'s {name}#{head.seq}")

    def _checkpoint_gap(self, gap: _Gap, links: _Links[_Checkpoint]) -> None:
        if gap.late:
            line = min(gap.late.values())
            self.fail(f"checkpoint {gap.jumper}", f"out of order: it comes where checkpoint {gap.first} should be, "
                                                  f"which comes later (line {line})")
        missing = [n for n in range(gap.first, gap.last + 1) if n not in gap.late]
        if not missing:
            return
        more = f", and so are {len(missing) - 1} more up to checkpoint {missing[-1]}" if len(missing) > 1 else ""
        self.fail(f"checkpoint {missing[0]}", f"missing{more}: checkpoint {gap.first - 1} is followed by "
                                              f"checkpoint {gap.jumper}")
        before, after = links.done.get(gap.first - 1), links.waiting.get(gap.last + 1)
        if not gap.late and before and after and before.good and after.good and after.prev != before.digest:
            self.fail(f"checkpoint {after.number}", f"its prev is not the hash of checkpoint {before.number}, the "
                                                    "one before it in the archive")

    def _heads(self, first: _Checkpoint | None, heads: list[tuple[int, str, Head]]) -> None:
        """Register the good checkpoints' heads against the entries, and check the first's against the anchors."""
        if first is None:
            for name, span in self.manifest.chains.items():
                if span.anchor.seq > 0:
                    self.warn("manifest", f"no checkpoint names the anchor of chain {name}, {name}#{span.anchor.seq}")
            return
        if first.good and first.made_at is not None and first.made_at <= self.manifest.from_:
            for name, chain in self.chains.items():
                head = first.heads.get(name)
                if head is None and chain.anchor.seq > 0:
                    self.fail(f"checkpoint {first.number}", f"the archive's first, does not name chain {name}, "
                                                            f"whose anchor is {name}#{chain.anchor.seq}")
                elif head is not None and head.seq != chain.anchor.seq:
                    self.fail("manifest", f"the anchor of chain {name} is {name}#{chain.anchor.seq}, but the "
                                          f"archive's first checkpoint, {first.number}, names {name}#{head.seq}")
        elif first.made_at is not None and first.made_at > self.manifest.from_:
            if first.number != 1:
                self.fail(f"checkpoint {first.number}", f"the archive's first, is made after the period's start "
                          f"({stamp(self.manifest.from_)}) and is not checkpoint 1: the one before it is missing")
            for name, chain in self.chains.items():
                if chain.anchor.seq > 0:
                    self.fail("manifest", f"the anchor of chain {name}, {name}#{chain.anchor.seq}, is named by no "
                                          "checkpoint: the archive's first is made after the period's start")
        unheld: set[str] = set()
        anchor_named: set[str] = set()
        for number, name, head in heads:
            held = self.chains.get(name)
            if held is None:
                if name not in unheld:
                    unheld.add(name)
                    self.warn(f"checkpoint {number}", f"names chain {name}, which the archive does not hold")
                continue
            if head.seq < held.anchor.seq:
                self.fail(f"checkpoint {number}", f"names {name}#{head.seq}, before the archive's anchor "
                                                  f"{name}#{held.anchor.seq}")
            elif head.seq == held.anchor.seq:
                self.counts.heads += 1
                if head.hash != held.anchor.hash and name not in anchor_named:
                    anchor_named.add(name)
                    self.fail("manifest", f"the anchor of chain {name}, {name}#{head.seq}, has hash "
                                          f"{_short(held.anchor.hash)}, but checkpoint {number} names "
                                          f"{_short(head.hash)}")
            else:
                held.wanted.setdefault(head.seq, []).append((number, head.hash))

    # -- entries -----------------------------------------------------------------------------------------------

    def _entries(self) -> None:
        current: str | None = None
        finished: set[str] = set()
        scattered: set[str] = set()
        for line, entry in self.archive.numbered(ENTRIES, EntryLine):
            if entry.chain != current:
                if entry.chain in finished and entry.chain not in scattered:
                    scattered.add(entry.chain)
                    self.warn(f"entry {entry.chain}#{entry.seq}", f"out of the archive's order (by chain, then "
                              f"number): chain {entry.chain} comes again at line {line}, after another chain")
                if current is not None:
                    finished.add(current)
                current = entry.chain
            chain = self.chains.get(entry.chain)
            if chain is None:
                self.fail(f"entry {entry.chain}#{entry.seq}", f"of chain {entry.chain}, which the manifest does "
                                                              "not name")
                chain = self._chain(entry.chain, Anchor(seq=0, hash=GENESIS), None)
            self._entry(chain, line, entry)
        for chain in self.chains.values():
            self._chain_end(chain)

    def _entry(self, chain: _Chain, line: int, entry: EntryLine) -> None:
        name, seq = chain.name, entry.seq
        subject = f"entry {name}#{seq}"
        self.counts.entries[name] += 1
        arrival = chain.numbering.arrive(seq, line)
        if arrival == "twice":
            self.fail(subject, f"appears twice (again at line {line})")
            return
        if arrival == "early":
            self.fail(subject, f"is at or before the chain's anchor, {name}#{chain.anchor.seq}: the archive's "
                               "entries begin after it")
            return
        if entry_hash(name, seq, entry.prev_hash, digest(entry.content)) != entry.hash:
            self.fail(subject, "its hash does not recompute: its content, its number or its prev_hash was changed")
        for number, before, after in chain.links.arrive(seq, (entry.hash, entry.prev_hash)):
            if after[1] != before[0]:
                self.fail(f"entry {name}#{number}", f"its prev_hash is not the hash of {name}#{number - 1}")
        chain.arrived += 1
        claims = chain.wanted.pop(seq, None) if chain.wanted else None
        for number, hash_ in claims or ():
            self.counts.heads += 1
            if hash_ != entry.hash:
                self.fail(f"checkpoint {number}", f"names {name}#{seq} with hash {_short(hash_)}, but the "
                                                  f"archive's {name}#{seq} has {_short(entry.hash)}")
            elif seq > chain.cover:
                chain.cover, chain.covered = seq, chain.arrived
        self._content(subject, entry)

    def _content(self, subject: str, entry: EntryLine) -> None:
        try:
            content = from_json(entry.content, allow_inf_nan=False)  # some three times quicker than json.loads
        except ValueError:
            content = None
        if not isinstance(content, dict):
            self.fail(subject, "its content is not a JSON object")
            return
        said = {"kind": (entry.kind, content.get("kind")), "delivery_id": (entry.delivery_id, content.get("delivery")),
                "attempt_id": (entry.attempt_id, content.get("attempt_id"))}
        for name, (line_says, content_says) in said.items():
            if line_says != content_says:
                self.fail(subject, f"its {name} is {line_says}, its content says {content_says}")
        attempt = content.get("attempt_id")
        if content.get("kind") != "attempt" or not isinstance(attempt, int):
            return
        last = self.last_attempt.get(attempt)
        if last is None or last[1] < entry.seq:
            self.last_attempt[attempt] = (entry.chain, entry.seq, _entry_key(content))

    def _chain_end(self, chain: _Chain) -> None:
        name = chain.name
        for gap in chain.numbering.gaps:
            if gap.late:
                line = min(gap.late.values())
                self.fail(f"entry {name}#{gap.jumper}", f"out of order: it comes where {name}#{gap.first} should "
                                                        f"be, which comes later (line {line})")
            missing = [n for n in range(gap.first, gap.last + 1) if n not in gap.late]
            if missing:
                more = f", and so are {len(missing) - 1} more up to {name}#{missing[-1]}" if len(missing) > 1 else ""
                self.fail(f"entry {name}#{missing[0]}", f"missing{more}: {name}#{gap.first - 1} is followed by "
                                                        f"{name}#{gap.jumper}")
        high = chain.numbering.high
        if chain.last is not None and high < chain.last:
            self.fail(f"entry {name}#{high + 1}", f"missing: the manifest says chain {name} goes on to "
                                                  f"{name}#{chain.last}, its entries end at {name}#{high}")
        elif chain.last is not None and high > chain.last:
            self.fail("manifest", f"says chain {name} ends at {name}#{chain.last}, but its entries go on to "
                                  f"{name}#{high}")
        end = max(high, chain.last or 0)
        for seq, claims in sorted(chain.wanted.items()):
            for number, _ in claims:
                if seq <= end:
                    self.fail(f"checkpoint {number}", f"names {name}#{seq}, which is not in the archive")
                else:
                    self.warn(f"checkpoint {number}", f"names {name}#{seq}, after the archive's last entry of "
                                                      f"chain {name}: not checked")
        self.counts.covered[name] = chain.covered
        if uncovered := chain.arrived - chain.covered:
            some = f"{uncovered} entries of chain {name} are" if uncovered > 1 else f"1 entry of chain {name} is"
            span = f"{name}#{chain.cover + 1}" + (f" to {name}#{high}" if high > chain.cover + 1 else "")
            self.warn(f"chain {name}", f"{some} not yet covered by a checkpoint ({span})")

    # -- attempt rows ------------------------------------------------------------------------------------------

    def _attempts(self) -> None:
        seen: set[int] = set()
        mismatched: dict[tuple[str, int], tuple[AttemptLine, list[str]]] = {}
        for line, row in self.archive.numbered(ATTEMPTS, AttemptLine):
            self.counts.attempts += 1
            subject = f"attempt {row.attempt_id}"
            if row.attempt_id in seen:
                self.fail(subject, f"a second row for it, at line {line}")
                continue
            seen.add(row.attempt_id)
            last = self.last_attempt.pop(row.attempt_id, None)
            if last is None:
                self.fail(subject, "a row with no entry: no attempt entry of the archive names it")
                continue
            chain, seq, key = last
            if _row_key(_row_values(row)) != key:
                if len(mismatched) < DETAILED_ROWS:
                    mismatched[(chain, seq)] = (row, [])
                else:
                    self.fail(subject, f"its row does not match its last entry, {chain}#{seq}")
        if mismatched:
            self._differences(mismatched)
        for attempt, (chain, seq, _) in sorted(self.last_attempt.items()):
            self.fail(f"attempt {attempt}", f"its row is missing: entry {chain}#{seq} names it")

    def _differences(self, mismatched: dict[tuple[str, int], tuple[AttemptLine, list[str]]]) -> None:
        """Read the entries again for those whose row does not match, and name the fields that differ."""
        for entry in self.archive.entries():
            found = mismatched.get((entry.chain, entry.seq))
            if found is not None:
                row, differences = found
                differences += _fields_differing(attempt_row_fields(row.model_dump(mode="json")),
                                            attempt_row_fields(from_json(entry.content)))
        for (chain, seq), (row, differences) in mismatched.items():
            self.fail(f"attempt {row.attempt_id}", f"its row does not match its last entry, {chain}#{seq}: "
                                                   + "; ".join(differences or ["a field differs"]))

    # -- totals ------------------------------------------------------------------------------------------------

    def _totals(self) -> None:
        said = self.manifest.counts
        for name in sorted(set(said.entries) | set(self.counts.entries)):
            if said.entries.get(name, 0) != self.counts.entries.get(name, 0):
                self.fail("manifest", f"says it holds {said.entries.get(name, 0)} entries of chain {name}, the "
                                      f"archive holds {self.counts.entries.get(name, 0)}")
        for what, says, holds in (("checkpoints", said.checkpoints, self.counts.checkpoints),
                                  ("attempt rows", said.attempts, self.counts.attempts)):
            if says != holds:
                self.fail("manifest", f"says it holds {says} {what}, the archive holds {holds}")
        if self.counts.tokens_unchecked:
            self.warn("checkpoints", f"{self.counts.tokens_unchecked} time-stamp tokens were not checked: no "
                                     "time-stamp verifier was given")
