"""The audit archive: a period of the chains, their checkpoints and the attempt rows, in one zip file.

``docs/audit.md`` ("The archive") defines it; ``audit export`` writes it with :func:`write_archive` and
``audit verify`` reads it with :func:`read_archive`, needing neither the database nor the network.

====================  =====================================================================================
``manifest.json``     :class:`Manifest`: the format, the period, each chain's anchor and last number, the keys
``entries.jsonl``     one :class:`EntryLine` a line, by chain then ``seq``
``checkpoints.jsonl`` one :class:`CheckpointLine` a line, by number
``attempts.jsonl``    one :class:`AttemptLine` a line: the ledger's attempt rows the entries are about
====================  =====================================================================================

The three ``.jsonl`` members are streamed both ways: an archive of a few hundred thousand entries is never held
in memory. A file that is not such an archive is refused with an :class:`ArchiveError` naming the member and,
for a line, its number: :func:`read_archive` reads the manifest, the iterators of :class:`Archive` each line as
they reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, StringConstraints, ValidationError

from store.audit.chain import GENESIS, EntryKind, read_stamp, stamp

ARCHIVE_FORMAT: Final = "motcua-audit-archive/1"
MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
ATTEMPTS = "attempts.jsonl"
MEMBERS = (MANIFEST, ENTRIES, CHECKPOINTS, ATTEMPTS)

_CHUNK = 1 << 20  # bytes of lines written into, or read from, a zip member at a time


def _moment(value: Any) -> Any:
    if isinstance(value, str):
        return read_stamp(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetime given to the audit archive")
    return value


# a time as the chain writes it (``YYYY-MM-DDTHH:MM:SS.ffffffZ``), read back as an aware datetime
Stamp = Annotated[datetime, BeforeValidator(_moment), PlainSerializer(stamp, return_type=str)]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1)]


class ArchiveError(ValueError):
    """The file is not an audit archive, or one of its members or lines is not what the format says."""

    def __init__(self, member: str | None, message: str, line: int | None = None) -> None:
        self.member = member
        self.line = line
        self.reason = message
        where = member if line is None else f"{member} line {line}"
        super().__init__(f"{where}: {message}" if where else message)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Anchor(_Line):
    """The entry just before a chain's first in the archive (``seq`` 0 and :data:`GENESIS` at a chain's start)."""

    seq: int = Field(ge=0)
    hash: Hash


class Last(_Line):
    seq: int = Field(ge=0)


class ChainSpan(_Line):
    anchor: Anchor = Anchor(seq=0, hash=GENESIS)
    last: Last


class ArchiveCounts(_Line):
    """What the archive holds; :func:`write_archive` counts it as it writes."""

    entries: dict[str, int] = {}
    checkpoints: int = 0
    attempts: int = 0


class Manifest(_Line):
    model_config = ConfigDict(populate_by_name=True)

    format: Literal["motcua-audit-archive/1"] = ARCHIVE_FORMAT
    made_at: Stamp
    from_: Stamp = Field(alias="from")
    to: Stamp
    chains: dict[str, ChainSpan]
    public_keys: dict[str, str]  # key id → public key (PEM)
    tsa_certificates: list[str] = []  # PEM
    counts: ArchiveCounts = ArchiveCounts()


class EntryLine(_Line):
    """An entry as the chain holds it; only ``content`` (as its SHA-256), ``chain``, ``seq`` and ``prev_hash``
    enter its hash, so ``kind``, ``delivery_id`` and ``attempt_id`` must say what the content says."""

    chain: Name
    seq: int = Field(ge=1)
    kind: EntryKind
    delivery_id: int
    attempt_id: int | None = None
    recorded_at: Stamp
    content: str  # canonical JSON, as its text
    prev_hash: Hash
    hash: Hash


class CheckpointLine(_Line):
    number: int = Field(ge=1)
    made_at: Stamp
    body: str  # canonical JSON (chain.checkpoint_body): what the signature covers
    signature: str  # Ed25519 over the body's UTF-8 bytes, base64
    key_id: str
    tsa_token: str | None = None  # RFC 3161 time-stamp token (DER, base64) over the body's SHA-256


class AttemptLine(_Line):
    """A ledger attempt row, as the fields an attempt entry names (chain.ATTEMPT_ROW_FIELDS): hashes, never
    texts (``excerpt_hash`` and ``error_hash`` as ``chain.optional_digest`` makes them)."""

    attempt_id: int
    delivery: int
    event: str
    event_hash: str
    destination: str
    attempt: int
    started_at: Stamp
    duration_ms: float | None
    outcome: str | None
    status_code: int | None
    external_ref: str | None
    excerpt_hash: str | None
    error_hash: str | None


Line = TypeVar("Line", EntryLine, CheckpointLine, AttemptLine)


def _error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


@dataclass(frozen=True)
class Archive:
    """An archive whose manifest has been read; its lines are read, and refused, as they are iterated."""

    path: Path
    manifest: Manifest

    def numbered(self, member: str, model: type[Line]) -> Iterator[tuple[int, Line]]:
        """The lines of ``member`` as ``model``, each with its number (from 1)."""
        with zipfile.ZipFile(self.path) as archive, archive.open(member) as stream:
            for number, text in enumerate(_lines(stream, member), 1):
                if not text.strip():
                    raise ArchiveError(member, "an empty line", number)
                try:
                    yield number, model.model_validate_json(text)
                except ValidationError as exc:
                    raise ArchiveError(member, f"not {_a(model)}: {_error(exc)}", number) from exc

    def entries(self) -> Iterator[EntryLine]:
        return (line for _, line in self.numbered(ENTRIES, EntryLine))

    def checkpoints(self) -> Iterator[CheckpointLine]:
        return (line for _, line in self.numbered(CHECKPOINTS, CheckpointLine))

    def attempts(self) -> Iterator[AttemptLine]:
        return (line for _, line in self.numbered(ATTEMPTS, AttemptLine))


def _lines(stream: IO[bytes], member: str) -> Iterator[bytes]:
    """The lines of ``stream``, without their ends, read a chunk at a time (a zip member's ``readline`` is slow)."""
    rest = b""
    while True:
        try:
            chunk = stream.read(_CHUNK)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ArchiveError(member, f"damaged: {exc}") from exc
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _a(model: type[BaseModel]) -> str:
    return {"EntryLine": "an entry", "CheckpointLine": "a checkpoint", "AttemptLine": "an attempt row"}.get(
        model.__name__, model.__name__)


def read_archive(path: str | os.PathLike[str]) -> Archive:
    """Open the archive at ``path``: it must be a zip file with the four members and a manifest of this format.

    Raises :class:`ArchiveError` otherwise.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in MEMBERS:
                if member not in names:
                    raise ArchiveError(member, "missing from the archive")
            text = archive.read(MANIFEST)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(None, f"{path} is not a readable zip file: {exc}") from exc
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise ArchiveError(MANIFEST, f"not JSON: {exc}") from exc
    if not isinstance(fields, dict) or fields.get("format") != ARCHIVE_FORMAT:
        found = fields.get("format") if isinstance(fields, dict) else None
        raise ArchiveError(MANIFEST, f"format is {found!r}, not {ARCHIVE_FORMAT!r}")
    try:
        manifest = Manifest.model_validate(fields)
    except ValidationError as exc:
        raise ArchiveError(MANIFEST, f"not a manifest: {_error(exc)}") from exc
    return Archive(path, manifest)


def _stream(archive: zipfile.ZipFile, member: str, lines: Iterable[BaseModel]) -> int:
    count = 0
    with archive.open(member, "w", force_zip64=True) as out:
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            data = line.model_dump_json(by_alias=True).encode() + b"\n"
            chunk.append(data)
            size += len(data)
            count += 1
            if size >= _CHUNK:
                out.write(b"".join(chunk))
                chunk, size = [], 0
        out.write(b"".join(chunk))
    return count


def _counting(entries: Iterable[EntryLine], counts: dict[str, int]) -> Iterator[EntryLine]:
    for entry in entries:
        counts[entry.chain] = counts.get(entry.chain, 0) + 1
        yield entry


def write_archive(
    path: str | os.PathLike[str], manifest: Manifest, entries: Iterable[EntryLine],
    checkpoints: Iterable[CheckpointLine], attempts: Iterable[AttemptLine],
) -> None:
    """Write the archive at ``path``, streaming the lines (by chain then ``seq``, by number), into a temporary
    file in the same folder renamed to ``path`` once complete. The manifest's ``counts`` are those written."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(temporary, "wb") as file:
            _write(file, manifest, entries, checkpoints, attempts)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _write(
    file: IO[bytes], manifest: Manifest, entries: Iterable[EntryLine], checkpoints: Iterable[CheckpointLine],
    attempts: Iterable[AttemptLine],
) -> None:
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        per_chain: dict[str, int] = {}
        _stream(archive, ENTRIES, _counting(entries, per_chain))
        counts = ArchiveCounts(entries=per_chain, checkpoints=_stream(archive, CHECKPOINTS, checkpoints),
                               attempts=_stream(archive, ATTEMPTS, attempts))
        written = manifest.model_copy(update={"counts": counts})
        archive.writestr(MANIFEST, written.model_dump_json(by_alias=True, indent=2) + "\n")
