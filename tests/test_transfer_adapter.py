"""The unit directory, hop planning and the exchange's answers as events (pure: no I/O)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.transfer import TransferError, chain, hop_request, parse_transfer_id, update_events
from config.units import ClosedCode, DirectoryError, Resolved, load_directory
from sandbox.lgsp import COMMUNE, DEPARTMENT, JUSTICE, MINISTRY, NEIGHBOUR, OFFICE
from sandbox.workload import generate_day
from schemas import transfer as tx
from schemas.events import event_json, parse_event
from schemas.vietnam import VN_TZ

PROVINCE = "000.00.00.H49"  # UBND tỉnh: the provincial exchange, passed through
DIRECTORY = load_directory()
DOCUMENT = {"name": "To khai.pdf", "url": "http://127.0.0.1:1/files/a", "sha256": "a" * 64, "size": 1234}


BASE = next(e for e in generate_day(30, seed=3) if e["type"] == "dossier.received")


def request(origin: str = COMMUNE, target: str = OFFICE, **data: Any) -> Any:
    return parse_event({**BASE, "type": "transfer.requested", "unit_code": origin,
                        "data": {"target_unit": target, "reason": "Liên thông", "documents": [DOCUMENT], **data}})


def test_the_bundled_directory_is_quang_ninh_on_two_levels() -> None:
    units = DIRECTORY.units.values()
    communes = Counter(u.kind for u in units if u.level == "commune")
    assert communes == {"ward": 30, "commune": 22, "special_zone": 2}  # Resolution 1679/NQ-UBTVQH15
    assert not any(u.level == "district" for u in units)
    assert {u.level for u in units} == {"national", "province", "commune", "closed"}
    assert all(DIRECTORY.unit(u.parent).level in ("national", "province") for u in units
               if u.level == "commune" and u.parent)
    assert DIRECTORY.unit(COMMUNE).name == "UBND phường Hồng Gai"
    assert DIRECTORY.unit("000.00.04.H49").name == "Sở Tư pháp tỉnh Quảng Ninh"


def test_the_paths_that_exist_now_are_one_hop_and_no_path_has_a_district() -> None:
    assert DIRECTORY.path(COMMUNE, DEPARTMENT) == [COMMUNE, DEPARTMENT]  # commune → department
    assert DIRECTORY.path(DEPARTMENT, COMMUNE) == [DEPARTMENT, COMMUNE]  # and back
    assert DIRECTORY.path(JUSTICE, MINISTRY) == [JUSTICE, MINISTRY]  # province → ministry
    assert DIRECTORY.path(COMMUNE, NEIGHBOUR) == [COMMUNE, NEIGHBOUR]  # commune → commune
    # a deeper tree is a longer chain: the land registration office is under its department
    assert DIRECTORY.path(COMMUNE, OFFICE) == [COMMUNE, DEPARTMENT, OFFICE]
    handling = DIRECTORY.handling()
    for origin in list(handling)[::7]:
        for target in list(handling)[::11]:
            if origin != target:
                assert all(DIRECTORY.unit(u).level != "district" for u in DIRECTORY.path(origin, target))
    with pytest.raises(DirectoryError, match=r"unit 000\.99\.99\.H49 is not in the unit directory"):
        DIRECTORY.path(COMMUNE, "000.99.99.H49")
    with pytest.raises(DirectoryError, match="to itself"):
        DIRECTORY.path(COMMUNE, COMMUNE)
    with pytest.raises(DirectoryError, match="is an exchange"):
        DIRECTORY.path(COMMUNE, PROVINCE)


def test_a_closed_code_resolves_to_its_successor_and_one_with_none_is_refused_naming_it() -> None:
    assert DIRECTORY.resolve(COMMUNE) == Resolved(COMMUNE)
    resolved = DIRECTORY.resolve("000.31.12.H22")  # phường Hồng Gai's code before 1 July 2025
    assert resolved.code == COMMUNE and resolved.closed is not None and resolved.closed.code == "000.31.12.H22"
    assert DIRECTORY.resolve("000.00.16.H22").code == DEPARTMENT  # Natural Resources → Agriculture and Environment
    assert DIRECTORY.resolve("000.77.77.H49") == Resolved("000.77.77.H49")  # not listed: taken as it is
    with pytest.raises(ClosedCode, match=r"000\.00\.12\.H22 \(UBND thành phố Hạ Long \(cấp huyện\)\) is closed"):
        DIRECTORY.resolve("000.00.12.H22")
    assert DIRECTORY.path("000.31.12.H22", DEPARTMENT) == [COMMUNE, DEPARTMENT]


def test_a_directory_file_with_a_missing_parent_a_loop_or_a_bad_successor_is_refused(tmp_path: Path) -> None:
    header = "code,level,kind,name,parent,successor\n"
    cases = {
        "A,commune,ward,a,B,\n": "A's parent B is not in the file",
        "A,commune,ward,a,,\nB,closed,,b,,C\n": "B's successor C is not in the file",
        "A,commune,ward,a,,B\nB,commune,ward,b,,\n": "is given for a unit that is not closed",
        "A,closed,,a,B,\nB,commune,ward,b,,\n": "names a parent",
        "A,ward,,a,,\n": "a row needs a code and a level",
        "A,commune,ward,a,,\nA,commune,ward,a,,\n": "listed twice",
    }
    for n, (rows, words) in enumerate(cases.items()):
        bad = tmp_path / f"bad{n}.csv"
        bad.write_text("# a comment\n" + header + rows, encoding="utf-8")
        with pytest.raises(DirectoryError, match=words):
            load_directory(str(bad))
    loop = tmp_path / "loop.csv"
    loop.write_text(header + "A,commune,ward,a,B,\nB,province,department,b,A,\nC,province,department,c,,\n",
                    encoding="utf-8")
    with pytest.raises(DirectoryError, match="loop"):
        load_directory(str(loop)).path("A", "C")


def test_a_request_is_its_first_hop_with_a_deterministic_id() -> None:
    event = request()
    hop = hop_request(event, DIRECTORY)
    assert (hop.fromUnit, hop.toUnit, hop.finalUnit) == (COMMUNE, DEPARTMENT, OFFICE)
    assert hop.transferId == f"{event.dossier_code}:{COMMUNE}:{DEPARTMENT}"
    assert parse_transfer_id(hop.transferId) == (event.dossier_code, COMMUNE, DEPARTMENT)
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
    hop1 = tx.transfer_id(first.dossier_code, COMMUNE, DEPARTMENT)
    accepted_event, onward_event = update_events(update("ACCEPTED", hop1), first, DIRECTORY)
    accepted, onward = event_json(accepted_event), event_json(onward_event)  # as the ledger stores them
    assert (accepted["type"], accepted["origin"], accepted["event_id"]) == (
        "transfer.accepted", "transfer", f"transfer:{hop1}:accepted")
    assert accepted["data"] == {"target_unit": DEPARTMENT, "transfer_id": hop1, "from_unit": COMMUNE}
    hop2 = tx.transfer_id(first.dossier_code, DEPARTMENT, OFFICE)
    assert (onward["type"], onward["unit_code"], onward["event_id"]) == (
        "transfer.requested", DEPARTMENT, f"transfer:{hop2}:requested")
    assert onward["data"]["previous_transfer_id"] == hop1 and onward["data"]["target_unit"] == OFFICE
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
    code = "000.21.00.H49-261120-0001"
    hop1, hop2 = f"{code}:{COMMUNE}:{DEPARTMENT}", f"{code}:{DEPARTMENT}:{OFFICE}"
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
        (COMMUNE, DEPARTMENT, "accepted", "rejected", True), (DEPARTMENT, OFFICE, "accepted", "rejected", False)]


def test_the_chain_follows_each_hop_with_the_hop_it_made_whenever_their_deliveries_were_recorded() -> None:
    # a first hop whose answer was lost to a timeout is recorded when its retry succeeds: after the second hop,
    # which the exchange's acceptance of the first had already made possible
    code = "000.21.00.H49-261120-0002"
    hop1, hop2 = f"{code}:{COMMUNE}:{DEPARTMENT}", f"{code}:{DEPARTMENT}:{OFFICE}"
    other = f"000.21.00.H49-261120-0003:{COMMUNE}:{DEPARTMENT}"
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    sent = {hop2: at.replace(minute=5), other: at.replace(minute=6), hop1: at.replace(minute=8)}
    assert [h.transfer_id for h in chain(sent, [])] == [hop2, other, hop1]  # by time alone: out of order
    hops = chain(sent, [], {hop1: None, hop2: hop1, other: None})
    assert [h.transfer_id for h in hops] == [other, hop1, hop2]
    # a predecessor the ledger does not hold, or a loop, still shows every hop once
    assert [h.transfer_id for h in chain(sent, [], {hop2: "elsewhere", hop1: hop2, other: hop1})] == [hop2, hop1,
                                                                                                       other]
    assert sorted(h.transfer_id for h in chain(sent, [], {hop1: hop2, hop2: hop1})) == sorted(sent)
