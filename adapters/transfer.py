"""Canonical transfer events ⇄ the LGSP exchange's hops (pure: no I/O).

Out: a ``transfer.requested`` from unit A for target T is the first hop of A's path to T in the unit
directory (:meth:`config.units.Directory.path`): commune → department, department → ministry or commune →
commune in one hop, commune → department → an office under it in two. Each hop has its own id
(:func:`schemas.transfer.transfer_id`: dossier, from, to), the idempotency key at the exchange.

Back: a unit's answer to a hop becomes one event of origin ``transfer`` (id ``transfer:<hop>:<status>``):
``transfer.accepted``, ``transfer.refused`` or ``transfer.result``, built on the request's envelope. An
intermediate unit's acceptance also makes the next hop's ``transfer.requested`` (from that unit, with
``previous_transfer_id``), and a result of a later hop names the hop it must travel back down
(``return_to``): two linked deliveries each way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.units import Directory, DirectoryError
from schemas import transfer as tx
from schemas.events import (
    DEFAULT_CODE_PATTERNS,
    CodePatterns,
    TransferAccepted,
    TransferAnswer,
    TransferRefused,
    TransferRequested,
    TransferResult,
    parse_event,
    parse_stored_json,
)

ORIGIN = "transfer"
KINDS = {tx.ACCEPTED: "transfer.accepted", tx.REFUSED: "transfer.refused", tx.RESULT: "transfer.result"}
ANSWERS: dict[str, type[TransferAccepted] | type[TransferRefused] | type[TransferResult]] = {
    tx.ACCEPTED: TransferAccepted, tx.REFUSED: TransferRefused, tx.RESULT: TransferResult}


class TransferError(ValueError):
    """A transfer that cannot be sent as it is (no way to the target, a document without its checksum)."""


def next_unit(directory: Directory, origin: str, target: str) -> str:
    try:
        return directory.path(origin, target)[1]
    except DirectoryError as exc:
        raise TransferError(str(exc)) from exc


def hop_request(event: TransferRequested, directory: Directory) -> tx.TransferRequest:
    """The exchange's ``SendDossier`` for the hop this ``transfer.requested`` starts."""
    data = event.data
    origin, target = event.unit_code, data.target_unit
    to = next_unit(directory, origin, target)
    documents = []
    for document in data.documents:
        if not document.sha256 or document.size is None:
            raise TransferError(f"document {document.name!r} has no SHA-256 and size: it cannot be checked")
        documents.append(tx.DocumentRef(name=document.name, sha256=document.sha256, size=document.size))
    return tx.TransferRequest(
        transferId=tx.transfer_id(event.dossier_code, origin, to), fromUnit=origin, toUnit=to,
        finalUnit=target, dossierCode=event.dossier_code, procedureCode=event.procedure_code,
        reason=data.reason, previousTransferId=data.previous_transfer_id, documents=documents,
    )


def parse_transfer_id(transfer_id: str) -> tuple[str, str, str] | None:
    """``(dossier code, from unit, to unit)`` of a hop id this relay made, else ``None``."""
    parts = transfer_id.rsplit(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def _follow_up(request: TransferRequested, kind: str, event_id: str, at: datetime, unit: str,
               data: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "origin": ORIGIN, "unit_code": unit,
            "dossier_code": request.dossier_code, "procedure_code": request.procedure_code, "sequence": 1,
            "occurred_at": at.isoformat(), "applicant": request.applicant,  # the applicant validated already
            "data": data}


def update_events(update: tx.Update, request: TransferRequested, directory: Directory,
                  patterns: CodePatterns = DEFAULT_CODE_PATTERNS) -> list[TransferAnswer | TransferRequested]:
    """What a unit's answer to a hop means: its event, and the next hop's request when the dossier goes on.

    ``request`` is the ``transfer.requested`` that made the hop (its envelope: procedure, applicant; its
    target; the hop before it). The events' unit is the exchange's, so their codes are checked against
    ``patterns`` as the intake checks the one-stop software's.
    """
    data = request.data
    target = data.target_unit
    base = {"target_unit": update.toUnit, "transfer_id": update.transferId, "from_unit": update.fromUnit}
    if update.status == tx.RESULT:
        result = {**base, "outcome": update.outcome or "approved",
                  "documents": [d.model_dump() for d in update.documents]}
        if data.previous_transfer_id:
            result["return_to"] = data.previous_transfer_id
        body: dict[str, Any] = result
    else:
        body = {**base, **({"reason": update.reason} if update.reason else {})}
    answer = _follow_up(request, KINDS[update.status], f"transfer:{update.transferId}:{update.status.lower()}",
                        update.at, update.fromUnit, body)
    events: list[TransferAnswer | TransferRequested] = [parse_event(answer, patterns, kind=ANSWERS[update.status])]
    if update.status == tx.ACCEPTED and update.toUnit != target:
        onward = {"target_unit": target, "previous_transfer_id": update.transferId, "documents": data.documents,
                  **({"reason": data.reason} if data.reason else {})}
        hop = tx.transfer_id(update.dossierCode, update.toUnit, next_unit(directory, update.toUnit, target))
        raw = _follow_up(request, "transfer.requested", f"transfer:{hop}:requested", update.at, update.toUnit, onward)
        events.append(parse_event(raw, patterns, kind=TransferRequested))
    return events


@dataclass(frozen=True)
class Hop:
    """One hop of a dossier's transfer chain as the ledger knows it (for ``motcua-relay trace``)."""

    transfer_id: str
    from_unit: str
    to_unit: str
    sent_at: datetime | None
    answer: str | None = None
    answered_at: datetime | None = None
    reason: str | None = None
    outcome: str | None = None
    result_at: datetime | None = None
    returned: bool = False


def chain(sent: Mapping[str, datetime | None], answers: Iterable[TransferAnswer],
          previous: Mapping[str, str | None] | None = None) -> list[Hop]:
    """The hops of a chain: ``sent`` maps each hop id the relay sent to when its delivery was recorded;
    ``answers`` are the chain's ``transfer.accepted`` / ``refused`` / ``result`` events; ``previous`` maps an
    onward hop to the hop whose acceptance made it (its request's ``previous_transfer_id``).

    In causal order: each hop right after the hop it follows, the first hops of independent chains by the time
    they were sent. Times alone cannot order a chain: a first hop whose answer was lost to a timeout is
    recorded when its retry succeeds, after the exchange took it, and after the next hop it made possible."""
    by_hop: dict[str, dict[str, Any]] = {}
    for event in answers:
        hop = by_hop.setdefault(str(event.data.transfer_id), {})
        if isinstance(event, TransferResult):
            hop.update(outcome=event.data.outcome, result_at=event.occurred_at)
            if event.data.return_to:
                by_hop.setdefault(event.data.return_to, {})["returned"] = True
        else:
            hop.update(answer=event.type.split(".")[1], answered_at=event.occurred_at, reason=event.data.reason)
    hops: dict[str, Hop] = {}
    for transfer_id, sent_at in sent.items():
        parts = parse_transfer_id(transfer_id)
        if parts is not None:
            hops[transfer_id] = Hop(transfer_id, parts[1], parts[2], sent_at, **by_hop.get(transfer_id, {}))
    far_past = datetime.min.replace(tzinfo=UTC)
    by_time = sorted(hops.values(), key=lambda h: h.sent_at or far_past)
    before = {h: p for h, p in (previous or {}).items() if p in hops and h in hops and h != p}
    after: dict[str, list[Hop]] = {}
    for step in by_time:
        if step.transfer_id in before:
            after.setdefault(before[step.transfer_id], []).append(step)
    ordered: list[Hop] = []
    seen: set[str] = set()

    def walk(step: Hop) -> None:
        if step.transfer_id not in seen:
            seen.add(step.transfer_id)
            ordered.append(step)
            for onward in after.get(step.transfer_id, []):
                walk(onward)

    for step in by_time:
        if step.transfer_id not in before:
            walk(step)
    for step in by_time:  # a loop of predecessors (no real chain has one) still shows every hop
        walk(step)
    return ordered


def traced_chain(events: Iterable[Any], deliveries: Iterable[Any]) -> list[Hop]:
    """:func:`chain` of one dossier's ledger rows (``store.queries.dossier_trace``'s events and deliveries)."""
    stored = {e.id: parse_stored_json(e.payload) for e in events
              if e.type in ("transfer.requested", "transfer.accepted", "transfer.refused", "transfer.result")}
    requests = {pk: event for pk, event in stored.items() if isinstance(event, TransferRequested)}
    sent: dict[str, datetime | None] = {}
    previous: dict[str, str | None] = {}
    for d in deliveries:
        if d.event_pk in requests and d.external_ref:
            sent[d.external_ref] = d.delivered_at
            previous[d.external_ref] = requests[d.event_pk].data.previous_transfer_id
    return chain(sent, [e for e in stored.values() if isinstance(e, TransferAnswer)], previous)
