"""The unit directory, hop planning and the exchange's answers as events (pure: no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.transfer import TransferError, chain, hop_request, parse_transfer_id, update_events
from config.units import DirectoryError, load_directory
from sandbox.workload import generate_day
from schemas import transfer as tx
from schemas.events import event_json, parse_event
from schemas.vietnam import VN_TZ

COMMUNE, DISTRICT, PROVINCE, JUSTICE = "000.31.12.H49", "000.00.12.H49", "000.00.00.H49", "000.00.18.H49"
DIRECTORY = load_directory()
DOCUMENT = {"name": "To khai.pdf", "url": "http://127.0.0.1:1/files/a", "sha256": "a" * 64, "size": 1234}


BASE = next(e for e in generate_day(30, seed=3) if e["type"] == "dossier.received")


def request(origin: str = COMMUNE, target: str = PROVINCE, **data: Any) -> Any:
    return parse_event({**BASE, "type": "transfer.requested", "unit_code": origin,
                        "data": {"target_unit": target, "reason": "Liên thông", "documents": [DOCUMENT], **data}})


def test_the_bundled_directory_routes_a_commune_to_the_province_through_its_district() -> None:
    assert DIRECTORY.path(COMMUNE, PROVINCE) == [COMMUNE, DISTRICT, PROVINCE]
    assert DIRECTORY.path(PROVINCE, COMMUNE) == [PROVINCE, DISTRICT, COMMUNE]
    assert DIRECTORY.path(DISTRICT, JUSTICE) == [DISTRICT, PROVINCE, JUSTICE]
    assert DIRECTORY.path("000.32.12.H49", COMMUNE) == ["000.32.12.H49", DISTRICT, COMMUNE]
    with pytest.raises(DirectoryError, match=r"unit 000\.99\.99\.H49 is not in the unit directory"):
        DIRECTORY.path(COMMUNE, "000.99.99.H49")
    with pytest.raises(DirectoryError, match="to itself"):
        DIRECTORY.path(COMMUNE, COMMUNE)


def test_a_directory_file_with_a_missing_parent_or_a_loop_is_refused(tmp_path: Path) -> None:
    orphan = tmp_path / "orphan.csv"
    orphan.write_text("code,level,name,parent\nA,commune,a,B\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match="A's parent B is not in the file"):
        load_directory(str(orphan))
    loop = tmp_path / "loop.csv"
    loop.write_text("code,level,name,parent\nA,commune,a,B\nB,district,b,A\nC,province,c,\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match="loop"):
        load_directory(str(loop)).path("A", "C")
    bad = tmp_path / "bad.csv"
    bad.write_text("code,level,name,parent\nA,ward,a,\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match="a row needs a code and a level"):
        load_directory(str(bad))


def test_a_request_is_its_first_hop_with_a_deterministic_id() -> None:
    event = request()
    hop = hop_request(event, DIRECTORY)
    assert (hop.fromUnit, hop.toUnit, hop.finalUnit) == (COMMUNE, DISTRICT, PROVINCE)
    assert hop.transferId == f"{event.dossier_code}:{COMMUNE}:{DISTRICT}"
    assert parse_transfer_id(hop.transferId) == (event.dossier_code, COMMUNE, DISTRICT)
    assert hop.documents == [tx.DocumentRef(name="To khai.pdf", sha256="a" * 64, size=1234)]
    assert hop_request(event, DIRECTORY) == hop


def test_a_document_without_its_checksum_or_a_target_outside_the_directory_cannot_go() -> None:
    with pytest.raises(TransferError, match="has no SHA-256 and size"):
        hop_request(request(documents=[{"name": "scan.pdf", "url": "http://x/scan"}]), DIRECTORY)
    with pytest.raises(TransferError, match="not in the unit directory"):
        hop_request(request(target="000.77.77.H49"), DIRECTORY)


def update(status: str, transfer_id: str, **fields: Any) -> tx.Update:
    dossier, origin, to = transfer_id.rsplit(":", 2)
    return tx.Update(id=1, transferId=transfer_id, status=status, fromUnit=origin, toUnit=to, dossierCode=dossier,
                     at=datetime(2026, 11, 20, 9, 0, tzinfo=VN_TZ), **fields)


def test_an_intermediate_units_acceptance_makes_the_next_hop_and_a_later_result_returns_down() -> None:
    first = request()
    hop1 = tx.transfer_id(first.dossier_code, COMMUNE, DISTRICT)
    accepted_event, onward_event = update_events(update("ACCEPTED", hop1), first, DIRECTORY)
    accepted, onward = event_json(accepted_event), event_json(onward_event)  # as the ledger stores them
    assert (accepted["type"], accepted["origin"], accepted["event_id"]) == (
        "transfer.accepted", "transfer", f"transfer:{hop1}:accepted")
    assert accepted["data"] == {"target_unit": DISTRICT, "transfer_id": hop1, "from_unit": COMMUNE}
    hop2 = tx.transfer_id(first.dossier_code, DISTRICT, PROVINCE)
    assert (onward["type"], onward["unit_code"], onward["event_id"]) == (
        "transfer.requested", DISTRICT, f"transfer:{hop2}:requested")
    assert onward["data"]["previous_transfer_id"] == hop1 and onward["data"]["target_unit"] == PROVINCE
    assert hop_request(onward_event, DIRECTORY).transferId == hop2
    # the province decides: the result names the hop it must go back down; the origin's result names none
    document = tx.DocumentRef(name="ket-qua.pdf", sha256="b" * 64, size=10)
    [result] = map(event_json, update_events(update("RESULT", hop2, outcome="approved", documents=[document]),
                                             onward_event, DIRECTORY))
    assert result["data"]["return_to"] == hop1 and result["data"]["documents"][0]["name"] == "ket-qua.pdf"
    [home] = map(event_json, update_events(update("RESULT", hop1, outcome="approved"), first, DIRECTORY))
    assert "return_to" not in home["data"] and home["event_id"] == f"transfer:{hop1}:result"
    [refused] = map(event_json, update_events(update("REFUSED", hop1, reason="Thiếu giấy tờ"), first, DIRECTORY))
    assert refused["type"] == "transfer.refused" and refused["data"]["reason"] == "Thiếu giấy tờ"


def test_the_chain_lists_hops_in_the_order_they_were_sent_with_their_answers() -> None:
    code = "000.31.12.H49-261120-0001"
    hop1, hop2 = f"{code}:{COMMUNE}:{DISTRICT}", f"{code}:{DISTRICT}:{PROVINCE}"
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

    def answer(kind: str, hop: str, minute: int, **data: Any) -> Any:
        return parse_event({**BASE, "event_id": f"{hop}:{kind}", "type": kind, "origin": "transfer",
                            "occurred_at": at.replace(minute=minute).isoformat(),
                            "data": {"target_unit": hop.rsplit(":", 1)[1], "transfer_id": hop, **data}})

    hops = chain({hop2: at.replace(minute=5), hop1: at},
                 [answer("transfer.accepted", hop1, 2), answer("transfer.accepted", hop2, 7),
                  answer("transfer.result", hop2, 9, outcome="rejected", return_to=hop1),
                  answer("transfer.result", hop1, 10, outcome="rejected")])
    assert [(h.from_unit, h.to_unit, h.answer, h.outcome, h.returned) for h in hops] == [
        (COMMUNE, DISTRICT, "accepted", "rejected", True), (DISTRICT, PROVINCE, "accepted", "rejected", False)]
