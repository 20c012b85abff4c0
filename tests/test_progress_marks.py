"""The portal's progress marks in the ledger (store/marks.py): on SQLite and PostgreSQL, per destination."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from services.portal.progress import TAKEN, UNANSWERED, ProgressLedger, entry_key
from store.marks import ENTRY_MAX

ENTRY = {"MaHoSo": "000.00.01.H12-261201-0001", "TrangThai": "2", "ThoiDiemXuLy": "20261201083000"}


def test_a_mark_is_written_then_moved_and_is_kept_per_destination(engine: Engine) -> None:
    clock = lambda: datetime(2026, 12, 1, 8, 30, tzinfo=UTC)  # noqa: E731
    portal, other = ProgressLedger(engine, "portal", clock), ProgressLedger(engine, "portal-2", clock)
    assert portal.state(ENTRY) is None
    portal.mark(ENTRY, UNANSWERED)
    assert portal.state(ENTRY) == UNANSWERED
    portal.mark(ENTRY, TAKEN)
    assert portal.state(ENTRY) == TAKEN
    assert other.state(ENTRY) is None
    assert portal.state({**ENTRY, "TrangThai": "3"}) is None  # another entry of the same dossier


def test_an_entry_too_long_for_the_column_is_keyed_by_its_digest_not_cut(engine: Engine) -> None:
    long_a = {**ENTRY, "MaHoSo": "H" * 300 + "A"}
    long_b = {**ENTRY, "MaHoSo": "H" * 300 + "B"}
    assert entry_key(ENTRY) == "000.00.01.H12-261201-0001|2|20261201083000"
    assert len(entry_key(long_a)) <= ENTRY_MAX and entry_key(long_a) != entry_key(long_b)
    ledger = ProgressLedger(engine, "portal")
    ledger.mark(long_a, TAKEN)
    assert ledger.state(long_a) == TAKEN and ledger.state(long_b) is None
