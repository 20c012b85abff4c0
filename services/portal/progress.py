"""Each progress entry on the portal exactly once, without a history to read back.

The portal's ``TraCuuHoSo`` says whether it holds a dossier, not which progress entries it took (P5), and
``CapNhatTienDoHoSoMC`` appends (P18). So the relay keeps in its own ledger what it knows of each entry:

- an entry whose delivery is ``delivered`` was taken: the portal answered it (the ledger's ordering never sends
  a delivered or superseded delivery again);
- an entry whose call failed in a way that **may have landed** (a read timeout, the connection dropped after the
  request went out, a gateway's 502/504: :func:`connectors.portal.may_have_landed`) is marked *unanswered* in
  the ledger before the attempt ends; a failure that cannot have landed (a refusal, a connection never made, a
  503 or a "96") leaves no mark, and the next attempt simply sends the entry;
- the next attempt of an unanswered entry resolves it by the portal's answer to a repeat: the portal keys
  entries by (MaHoSo, TrangThai, ThoiDiemXuLy) and answers "06" for one it holds, which is success; "0" means
  the first call had not landed after all. Either way the mark becomes *taken*, and a later attempt (after a
  crash between the answer and the ledger's commit) sends nothing.

A portal that would append a repeat rather than answer "06" is configured ``ambiguous_progress =
"assume_taken"``: an unanswered entry is then taken as landed and never sent again (at most once: an entry
whose first call did not land is missing, and a warning names it) — the operator's choice, not the default.

The marks live in the ledger's ``progress_marks`` table (``store/marks.py``), committed at once, so they survive
restarts. Only ambiguous attempts write one, so an ordinary delivery costs one read by primary key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

import structlog
from sqlalchemy import Engine

from connectors.base import DeliveryError
from connectors.portal import PortalConnector, may_have_landed
from schemas.portal import progress_key
from store.marks import ENTRY_MAX, get_mark, set_mark

log = structlog.get_logger(__name__)

UNANSWERED = "unanswered"
TAKEN = "taken"
AmbiguousProgress = Literal["resend", "assume_taken"]


def entry_key(entry: Mapping[str, str]) -> str:
    """The ledger's key of an entry: the portal's own (MaHoSo, TrangThai, ThoiDiemXuLy).

    The schema holds a dossier code to 80 characters, so the key fits; one that would not (a caller that skipped
    the schema) is keyed by its digest rather than cut, so two entries never share a mark.
    """
    key = "|".join(progress_key(entry))
    if len(key) > ENTRY_MAX:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


class ProgressLedger:
    """What the ledger knows of one portal destination's progress entries."""

    def __init__(self, engine: Engine, destination: str, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.destination = destination
        self._clock = clock or (lambda: datetime.now(UTC))

    def state(self, entry: Mapping[str, str]) -> str | None:
        """``"unanswered"``, ``"taken"``, or ``None`` when no attempt left a mark."""
        return get_mark(self.engine, self.destination, entry_key(entry))

    def mark(self, entry: Mapping[str, str], state: str) -> None:
        set_mark(self.engine, self.destination, entry_key(entry), state, self._clock())


def append_once(connector: PortalConnector, ledger: ProgressLedger, unit: str, entry: Mapping[str, str],
                ambiguous: AmbiguousProgress) -> str:
    """Send one progress entry unless the ledger knows it taken; what became of it, in words for the attempt.

    Raises the connector's error when the portal did not take it; an error that may have landed is marked
    unanswered first, so the next attempt knows it resolves an ambiguity.
    """
    state = ledger.state(entry)
    if state == TAKEN:
        return "already taken (the ledger)"
    if state == UNANSWERED and ambiguous == "assume_taken":
        ledger.mark(entry, TAKEN)
        log.warning("portal.progress_assumed_taken", destination=ledger.destination, dossier_code=entry["MaHoSo"],
                    status=entry["TrangThai"], at=entry["ThoiDiemXuLy"])
        return "assumed taken: an earlier call went unanswered (ambiguous_progress = assume_taken)"
    try:
        answer = connector.progress(unit, dict(entry))
    except DeliveryError as exc:
        if may_have_landed(exc):
            ledger.mark(entry, UNANSWERED)
        raise
    if state == UNANSWERED or answer == "held":
        ledger.mark(entry, TAKEN)
    if answer == "held":
        return "held by the portal (06): an earlier call had landed"
    if state == UNANSWERED:
        return "taken: the earlier unanswered call had not landed"
    return "appended"
