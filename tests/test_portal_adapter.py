"""The portal adapter, table by table: canonical events → dossier record and progress entry, and back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.portal import (
    DEFAULT_STATUS_MAP,
    DESK,
    DossierTruth,
    MappingError,
    PortalMapping,
    Procedure,
    by_post,
    content_issues,
    dossier_record,
    expected_truth,
    from_portal_time,
    holds,
    online_event,
    portal_time,
    progress_entry,
    takes,
)
from sandbox.workload import generate_day
from schemas.events import Event, event_json, parse_event
from schemas.portal import DossierRecord, OnlineDossier, ProgressEntry, progress_key

DAY = date(2026, 11, 20)
EVENTS = [parse_event(e) for e in generate_day(60, day=DAY, seed=11)]  # as a claim hands them on
UNIT, AGENCY = "000.21.00.H49", "UBND phường Hồng Gai"
MAPPING = PortalMapping(agency_names={UNIT: AGENCY})


def first(kind: str) -> Any:
    return next(e for e in EVENTS if e.type == kind)


def lifecycle(dossier: str) -> list[Any]:
    return sorted((e for e in EVENTS if e.dossier_code == dossier and takes(e, MAPPING)), key=lambda e: e.sequence)


def changed(event: Event, **fields: Any) -> Any:
    """The event with some of its JSON fields replaced, validated again."""
    return parse_event(event_json(event) | fields)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T07:30:00+07:00", "20261120073000"),
        ("2026-11-20T00:30:05+00:00", "20261120073005"),
        ("2026-11-19T23:59:59+00:00", "20261120065959"),  # the UTC day before is already the VN day
        (datetime(2026, 12, 31, 17, 0, 0, tzinfo=UTC), "20270101000000"),
    ],
)
def test_portal_time_is_vietnam_time(value: Any, expected: str) -> None:
    assert portal_time(value) == expected
    assert portal_time(from_portal_time(expected)) == expected


@pytest.mark.parametrize(("kind", "code"), sorted(DEFAULT_STATUS_MAP.items()))
def test_default_status_map_is_domain_table(kind: str, code: str) -> None:
    assert MAPPING.status(kind) == code


def test_status_map_overrides_single_entries_and_refuses_codes_the_portal_lacks() -> None:
    mapping = PortalMapping.from_options({"status_map": {"dossier.suspended": 4}})
    assert mapping.status("dossier.suspended") == "4"
    assert mapping.status("dossier.received") == "2"
    with pytest.raises(ValueError, match=r"1\.\.10"):
        PortalMapping.from_options({"status_map": {"dossier.received": "11"}})


def test_status_map_refuses_events_outside_the_dossier_lifecycle() -> None:
    # the record is made of the lifecycle events' data: a fee event mapped would be a dead letter per delivery
    with pytest.raises(ValueError, match=r"dossier lifecycle.*fee\.paid"):
        PortalMapping.from_options({"status_map": {"fee.paid": "6"}})
    assert not takes(next(e for e in EVENTS if e.type == "fee.paid"), MAPPING)


def test_an_event_type_without_a_status_is_a_mapping_error() -> None:
    mapping = PortalMapping(status_map={"dossier.received": "2"}, agency_names={UNIT: AGENCY})
    assert not takes(first("dossier.processing"), mapping)
    with pytest.raises(MappingError, match=r"dossier\.processing"):
        progress_entry(first("dossier.processing"), mapping)


# (event type, fields the record must then hold with these values or predicates)
RECORD_TABLE: list[tuple[str, dict[str, Any]]] = [
    ("dossier.submitted", {"TrangThaiHoSo": "1", "HinhThuc": "0", "NgayTiepNhan": "", "NgayHenTra": "",
                           "TaiLieuNop": lambda v: len(v) >= 1 and all(f["IsDeleted"] == "False" for f in v)}),
    ("dossier.received", {"TrangThaiHoSo": "2", "NgayHenTra": lambda v: len(v) == 14,
                          "NgayTiepNhan": lambda v: v.startswith("20261120"), "TenTTHC": bool}),
    ("dossier.processing", {"TrangThaiHoSo": "4", "NgayTiepNhan": lambda v: len(v) == 14}),
    ("dossier.supplement_requested", {"TrangThaiHoSo": "5", "DanhSachHoSoBoSung": lambda v: len(v) == 1
                                      and len(v[0]["NgayBoSung"]) == 14 and v[0]["NoiDungBoSung"]}),
    ("dossier.completed", {"TrangThaiHoSo": "9", "DanhSachGiayToKetQua": lambda v: len(v) == 1,
                           "NgayKetThucXuLy": lambda v: len(v) == 14, "NgayTra": ""}),
    ("dossier.returned", {"TrangThaiHoSo": "10", "NgayTra": lambda v: len(v) == 14}),
]


@pytest.mark.parametrize(("kind", "expect"), RECORD_TABLE, ids=[k for k, _ in RECORD_TABLE])
def test_record_for_each_lifecycle_event(kind: str, expect: dict[str, Any]) -> None:
    # given the dossier's events in the ledger, this one among them
    event = first(kind)
    # when
    record = dossier_record(event, EVENTS, MAPPING)
    # then it is a valid portal record, every field OpenCPS sends, with the fields this event sets
    DossierRecord.model_validate(record)
    assert set(record) == set(DossierRecord.model_fields)
    for name, want in expect.items():
        assert (want(record[name]) if callable(want) else record[name] == want), (name, record.get(name))
    assert record["MaHoSo"] == event.dossier_code
    assert record["ChuHoSo"] == event.applicant.name
    assert record["LoaiDoiTuong"] == ("2" if event.applicant.kind == "business" else "1")
    assert record["DonViXuLy"] == AGENCY


def test_a_later_event_keeps_what_only_earlier_events_knew() -> None:
    dossier = first("dossier.returned").dossier_code
    events = lifecycle(dossier)
    record = dossier_record(events[-1], EVENTS, MAPPING)
    received = next(e for e in events if e.type == "dossier.received")
    assert record["NgayHenTra"] == portal_time(received.data.due_at)
    assert record["NgayTiepNhan"] == portal_time(received.occurred_at)
    assert record["TrangThaiHoSo"] == "10"
    completed = next(e for e in events if e.type == "dossier.completed")
    assert [d["TenGiayTo"] for d in record["DanhSachGiayToKetQua"]] == [d.name for d in completed.data.result_documents]


def test_the_record_is_made_of_this_dossiers_earlier_events_from_the_same_system_only() -> None:
    # given a dossier's received event, and around it: the dossier's later events, another dossier's, and an
    # event of another system with this dossier's code
    event = first("dossier.received")
    later = [e for e in lifecycle(event.dossier_code) if e.sequence > event.sequence]
    other = next(e for e in EVENTS if e.type == "dossier.completed" and e.dossier_code != event.dossier_code)
    foreign = changed(first("dossier.completed"), dossier_code=event.dossier_code, origin="lgsp", sequence=1)
    # when
    record = dossier_record(event, [*later, other, foreign], MAPPING)
    # then none of them shows
    assert record == dossier_record(event, [], MAPPING)
    assert record["DanhSachGiayToKetQua"] == [] and record["NgayKetThucXuLy"] == ""


def test_a_late_copy_of_an_earlier_event_is_not_a_second_step() -> None:
    # given a dossier whose supplement request came again under a new id (the ledger supersedes the copy)
    asked = next(e for e in EVENTS if e.type == "dossier.supplement_requested"
                 and any(later.sequence > e.sequence for later in lifecycle(e.dossier_code)))
    later = next(e for e in lifecycle(asked.dossier_code) if e.sequence > asked.sequence)
    copy = changed(asked, event_id="late-copy")
    # when a later event's record is made
    record = dossier_record(later, [*EVENTS, copy], MAPPING)
    # then the request is in it once, under the first id
    assert [s["HoSoBoSungId"] for s in record["DanhSachHoSoBoSung"]] == [asked.event_id]


def test_procedure_from_the_catalogue_the_events_or_the_map() -> None:
    event = first("dossier.processing")
    mapping = PortalMapping(procedure_map={event.procedure_code: "1.009999"},
                            procedure_names={event.procedure_code: "Tên thủ tục"}, agency_names={UNIT: AGENCY})
    record = dossier_record(event, [], mapping)
    assert record["MaTTHC"] == "1.009999"
    assert record["TenTTHC"] == "Tên thủ tục"
    assert (record["MaLinhVuc"], record["TenLinhVuc"]) == ("", "")
    assert mapping.local_procedure("1.009999") == event.procedure_code
    # the events' name comes before the map's, the national catalogue's before both
    named = dossier_record(event, EVENTS, mapping)["TenTTHC"]
    received = next(e for e in lifecycle(event.dossier_code) if e.type == "dossier.received")
    assert named == received.data.procedure_name
    national = dossier_record(event, EVENTS, mapping, Procedure("Tên quốc gia", "G09-TP", "Hộ tịch"))
    assert (national["TenTTHC"], national["MaLinhVuc"], national["TenLinhVuc"]) == ("Tên quốc gia", "G09-TP", "Hộ tịch")


def test_fee_request_lists_fee_lines_as_strings() -> None:
    base = first("dossier.received")
    raw = {k: v for k, v in event_json(base).items() if k not in ("type", "data")} | {
        "type": "dossier.fee_requested", "event_id": "fee-req-1", "sequence": base.sequence + 1,
        "data": {"fee_id": "LP-1", "amount": 58000, "lines": [{"code": "LP", "name": "Lệ phí", "amount": 8000},
                                                               {"code": "PH", "name": "", "amount": 50000}]},
    }
    event = parse_event(raw)
    again = parse_event(raw | {"event_id": "fee-req-2", "sequence": base.sequence + 2,
                               "data": {"fee_id": "LP-1", "amount": 8000}})
    record = dossier_record(event, [], MAPPING)
    assert record["DanhSachLePhi"] == [
        {"TenPhiLePhi": "Lệ phí", "MaPhiLePhi": "LP", "HinhThucThu": "", "Gia": "8000", "LoaiPhiLePhi": ""},
        {"TenPhiLePhi": "PH", "MaPhiLePhi": "PH", "HinhThucThu": "", "Gia": "50000", "LoaiPhiLePhi": ""}]
    # a later request of the same fee replaces it
    assert dossier_record(again, [event], MAPPING)["DanhSachLePhi"] == [
        {"TenPhiLePhi": "Phí, lệ phí", "MaPhiLePhi": "LP-1", "HinhThucThu": "", "Gia": "8000", "LoaiPhiLePhi": ""}]
    assert progress_entry(event, MAPPING)["NoiDungXuLy"].endswith("58.000 đồng")


def with_data(event: Event, **data: Any) -> Any:
    return changed(event, data=event_json(event)["data"] | data)


def step(kind: str) -> Any:
    """The event of ``kind`` of a dossier that went all the way (so the rows below are one dossier's)."""
    return next(e for e in lifecycle(first("dossier.returned").dossier_code) if e.type == kind)


# (the dossier's events, whether the result goes by post: P12)
BY_POST: list[tuple[str, list[Any], bool]] = [
    ("received to go by post", [with_data(step("dossier.received"), return_by_post=True)], True),
    ("received at the desk", [with_data(step("dossier.received"), return_by_post=False)], False),
    ("picked up by post", [with_data(step("dossier.completed"), pickup="post")], True),
    ("returned by post", [with_data(step("dossier.returned"), method="post")], True),
    ("returned at the desk", [with_data(step("dossier.returned"), method="desk")], False),
    ("to go by post, fetched at the desk", [with_data(step("dossier.received"), return_by_post=True),
                                            with_data(step("dossier.returned"), method="desk")], True),
    ("nothing said", [step("dossier.processing")], False),
]


@pytest.mark.parametrize(("events", "expected"), [(e, x) for _, e, x in BY_POST], ids=[n for n, _, _ in BY_POST])
def test_by_post_row(events: list[Any], expected: bool) -> None:
    assert by_post(events) is expected
    last = max(events, key=lambda e: e.sequence)
    assert dossier_record(last, events, MAPPING)["HinhThuc"] == ("1" if expected else "0")


def test_the_agency_name_comes_from_the_mapping_and_a_code_is_no_name() -> None:
    event = first("dossier.received")
    with pytest.raises(MappingError, match=f"unit {UNIT}.*agency_names"):
        dossier_record(event, [], PortalMapping())
    for bad in ("000.21.00.H49", " "):
        with pytest.raises(ValueError, match="agency_names"):
            PortalMapping(agency_names={UNIT: bad})


@pytest.mark.parametrize("kind", [k for k in DEFAULT_STATUS_MAP if any(e.type == k for e in EVENTS)])
def test_progress_entry_for_each_event(kind: str) -> None:
    event = first(kind)
    entry = progress_entry(event, MAPPING)
    ProgressEntry.model_validate(entry)
    assert set(entry) == set(ProgressEntry.model_fields)
    assert entry["TrangThai"] == DEFAULT_STATUS_MAP[kind]
    assert entry["ThoiDiemXuLy"] == portal_time(event.occurred_at)
    if kind == "dossier.processing":
        step = event.data.step
        assert (entry["PhongBanXuLy"], entry["NguoiXuLy"]) == (step.department, step.handler)
        assert entry["NgayKetThucTheoQuyDinh"] == portal_time(step.due_at)
    else:
        assert entry["PhongBanXuLy"] == DESK and entry["ChucDanh"] == ""


def test_an_entrys_key_is_dossier_status_and_time() -> None:
    event = first("dossier.processing")
    entry = progress_entry(event, MAPPING)
    assert progress_key(entry) == (event.dossier_code, "4", portal_time(event.occurred_at))
    assert ProgressEntry.model_validate(entry).key() == progress_key(entry)
    assert progress_key(entry | {"NoiDungXuLy": "khác", "PhongBanXuLy": "khác"}) == progress_key(entry)
    assert progress_key(entry | {"ThoiDiemXuLy": "20261120235959"}) != progress_key(entry)
    assert progress_key(entry | {"TrangThai": "5"}) != progress_key(entry)


ONLINE = {
    "ThuTu": 7, "MaHoSo": "000.21.00.H49-261120-9001", "MaDonVi": "000.21.00.H49", "MaTTHC": "1.001234",
    "TenTTHC": "Đăng ký khai sinh", "NgayNopHoSo": "20261120091500", "ChuHoSo": "Nguyễn Thị Hoa",
    "LoaiDoiTuong": "1", "SoGiayToChuHoSo": "022190000123", "SoDienThoai": "0912345678",
    "DiaChi": "12 Lê Thánh Tông", "PhuongXa": "Hồng Gai", "QuanHuyen": "Hạ Long", "TinhThanh": "Quảng Ninh",
    "DongYNhanZalo": True,
    "DanhSachTepDinhKem": [{"TenTep": "to-khai.pdf", "MaBam": "AB" * 32, "KichThuoc": 1234}],
}


def test_online_dossier_becomes_a_deterministic_submitted_event() -> None:
    mapping = PortalMapping(procedure_map={"1.001234.000.00.00.H49": "1.001234"})
    model = online_event(OnlineDossier.model_validate(ONLINE), mapping)
    assert model == online_event(OnlineDossier.model_validate(ONLINE | {"ThuTu": 99}), mapping)
    event = event_json(model)  # as the ledger stores it
    assert event["event_id"] == "portal:000.21.00.H49-261120-9001:submitted"
    assert (event["type"], event["origin"], event["sequence"]) == ("dossier.submitted", "portal", 1)
    assert event["procedure_code"] == "1.001234.000.00.00.H49"
    assert event["occurred_at"] == "2026-11-20T09:15:00+07:00"
    assert event["applicant"]["zalo_consent"] is True
    assert event["applicant"]["address"]["province"] == "Quảng Ninh"
    assert event["data"]["documents"][0]["sha256"] == "ab" * 32
    parse_event(event)


def test_online_dossier_that_cannot_be_an_event_raises() -> None:
    bad = OnlineDossier.model_validate(ONLINE | {"MaHoSo": "not a code"})
    with pytest.raises(ValidationError):
        online_event(bad, MAPPING)


def test_expected_truth_holds_and_content_issues() -> None:
    dossier = first("dossier.returned").dossier_code
    truth = expected_truth(EVENTS)[dossier]
    events = lifecycle(dossier)
    assert [s[0] for s in truth.history] == [DEFAULT_STATUS_MAP[e.type] for e in events]
    assert truth.status == "10" and truth.by_post is by_post(events)
    entries = [{"TrangThai": st, "ThoiDiemXuLy": at} for st, at in truth.history]
    view = dossier_record(events[-1], EVENTS, MAPPING) | {"QuaTrinhXuLy": entries}
    assert holds(view, truth) and content_issues(view, truth) == []
    assert not holds({**view, "TrangThaiHoSo": "9"}, truth)
    assert not holds({**view, "QuaTrinhXuLy": entries[::-1]}, truth)
    assert not holds({**view, "QuaTrinhXuLy": entries + entries[-1:]}, truth)
    assert not holds({**view, "HinhThuc": "1" if view["HinhThuc"] == "0" else "0"}, truth)
    assert not holds({**view, "DonViXuLy": UNIT}, truth)
    assert content_issues({**view, "DonViXuLy": UNIT}, truth) == ["DonViXuLy is a unit code, not the agency's name"]
    assert not holds(None, truth)
    files = DossierTruth(history=truth.history, by_post=truth.by_post, files=("Tờ khai.pdf",))
    assert content_issues(view, files) == ["TaiLieuNop lacks 1 submitted file(s)"]
    deleted = {**view, "TaiLieuNop": [{"TenTepDinhKem": "Tờ khai.pdf", "IsDeleted": "True"}]}
    assert content_issues(deleted, files) == ["TaiLieuNop lacks 1 submitted file(s)"]
