"""The portal adapter, table by table: canonical events → dossier record and progress entry, and back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.portal import (
    DEFAULT_STATUS_MAP,
    DESK,
    MappingError,
    PortalMapping,
    dossier_record,
    expected_history,
    from_portal_time,
    holds,
    online_event,
    portal_time,
    progress_entry,
    progress_recorded,
    takes,
)
from sandbox.workload import generate_day
from schemas.events import Event, event_json, parse_event
from schemas.portal import DossierRecord, OnlineDossier, ProgressEntry

DAY = date(2026, 11, 20)
EVENTS = [parse_event(e) for e in generate_day(60, day=DAY, seed=11)]  # as a claim hands them on
MAPPING = PortalMapping()


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
    mapping = PortalMapping(status_map={"dossier.received": "2"})
    assert not takes(first("dossier.processing"), mapping)
    with pytest.raises(MappingError, match=r"dossier\.processing"):
        progress_entry(first("dossier.processing"), mapping)


# (event type, fields the record must then hold with these values or predicates)
RECORD_TABLE: list[tuple[str, dict[str, Any]]] = [
    ("dossier.submitted", {"TrangThaiHoSo": "1", "HinhThuc": lambda v: v in ("1", "2"),
                           "DanhSachTepDinhKem": lambda v: len(v) >= 1 and all(len(f["MaBam"]) == 64 for f in v)}),
    ("dossier.received", {"TrangThaiHoSo": "2", "NgayHenTra": lambda v: len(v) == 14,
                          "NgayTiepNhan": lambda v: v.startswith("20261120"), "TenTTHC": bool}),
    ("dossier.processing", {"TrangThaiHoSo": "4"}),
    ("dossier.supplement_requested", {"TrangThaiHoSo": "5", "DanhSachHoSoBoSung": lambda v: len(v) == 1}),
    ("dossier.completed", {"TrangThaiHoSo": "9", "DanhSachGiayToKetQua": lambda v: len(v) == 1}),
    ("dossier.returned", {"TrangThaiHoSo": "10", "NgayTra": lambda v: len(v) == 14}),
]


@pytest.mark.parametrize(("kind", "expect"), RECORD_TABLE, ids=[k for k, _ in RECORD_TABLE])
def test_record_for_each_lifecycle_event(kind: str, expect: dict[str, Any]) -> None:
    # given the portal's record as the events before this one left it
    event = first(kind)
    current = None
    for earlier in lifecycle(event.dossier_code):
        if earlier.sequence >= event.sequence:
            break
        current = dossier_record(earlier, current, MAPPING)
    # when
    record = dossier_record(event, current, MAPPING)
    # then it is a valid portal record with the fields this event sets
    DossierRecord.model_validate(record)
    for name, want in expect.items():
        assert (want(record[name]) if callable(want) else record[name] == want), (name, record.get(name))
    assert record["MaHoSo"] == event.dossier_code
    assert record["ChuHoSo"] == event.applicant.name
    assert record["LoaiDoiTuong"] == ("2" if event.applicant.kind == "business" else "1")


def test_a_later_event_keeps_what_only_earlier_events_knew() -> None:
    dossier = first("dossier.returned").dossier_code
    record: dict[str, Any] | None = None
    for event in lifecycle(dossier):
        record = dossier_record(event, record, MAPPING)
    assert record is not None
    received = next(e for e in lifecycle(dossier) if e.type == "dossier.received")
    assert record["NgayHenTra"] == portal_time(received.data.due_at)
    assert record["NgayTiepNhan"] == portal_time(received.occurred_at)
    assert record["TrangThaiHoSo"] == "10"


def test_record_drops_the_portals_history_and_keeps_its_other_fields() -> None:
    event = first("dossier.processing")
    current = dossier_record(changed(first("dossier.received"), dossier_code=event.dossier_code), None, MAPPING)
    current |= {"QuaTrinhXuLy": [{"x": 1}], "MaHoSoQuocGia": "G22.99-1"}
    record = dossier_record(event, current, MAPPING)
    assert "QuaTrinhXuLy" not in record
    assert record["MaHoSoQuocGia"] == "G22.99-1"


def test_procedure_map_and_names() -> None:
    event = first("dossier.processing")
    mapping = PortalMapping(procedure_map={event.procedure_code: "1.009999"},
                            procedure_names={event.procedure_code: "Tên thủ tục"})
    record = dossier_record(event, None, mapping)
    assert record["MaTTHC"] == "1.009999"
    assert record["TenTTHC"] == "Tên thủ tục"
    assert mapping.local_procedure("1.009999") == event.procedure_code


def test_fee_request_lists_fee_lines() -> None:
    base = first("dossier.received")
    raw = {k: v for k, v in event_json(base).items() if k not in ("type", "data")} | {
        "type": "dossier.fee_requested", "event_id": "fee-req-1",
        "data": {"fee_id": "LP-1", "amount": 50000, "lines": [{"code": "LP", "name": "Lệ phí", "amount": 50000}]},
    }
    event = parse_event(raw)
    record = dossier_record(event, None, MAPPING)
    assert record["DanhSachLePhi"] == [{"MaLePhi": "LP", "TenLePhi": "Lệ phí", "SoTien": 50000}]
    assert progress_entry(event, MAPPING)["NoiDungXuLy"].endswith("50.000 đồng")


@pytest.mark.parametrize("kind", [k for k in DEFAULT_STATUS_MAP if any(e.type == k for e in EVENTS)])
def test_progress_entry_for_each_event(kind: str) -> None:
    event = first(kind)
    entry = progress_entry(event, MAPPING)
    ProgressEntry.model_validate(entry)
    assert entry["TrangThai"] == DEFAULT_STATUS_MAP[kind]
    assert entry["ThoiDiemXuLy"] == portal_time(event.occurred_at)
    if kind == "dossier.processing":
        step = event.data.step
        assert (entry["PhongBanXuLy"], entry["NguoiXuLy"]) == (step.department, step.handler)
        assert entry["NgayKetThucTheoQuyDinh"] == portal_time(step.due_at)
    else:
        assert entry["PhongBanXuLy"] == DESK


def test_progress_recorded_recognises_the_same_entry_only() -> None:
    event = first("dossier.processing")
    entry = progress_entry(event, MAPPING)
    assert not progress_recorded(entry, None)
    assert not progress_recorded(entry, {"QuaTrinhXuLy": []})
    assert progress_recorded(entry, {"QuaTrinhXuLy": [{"junk": True}, dict(entry)]})
    other = dict(entry, ThoiDiemXuLy="20261120235959")
    assert not progress_recorded(entry, {"QuaTrinhXuLy": [other]})


ONLINE = {
    "ThuTu": 7, "MaHoSo": "000.00.12.H22-261120-9001", "MaDonVi": "000.00.12.H22", "MaTTHC": "1.001234",
    "TenTTHC": "Đăng ký khai sinh", "NgayNopHoSo": "20261120091500", "ChuHoSo": "Nguyễn Thị Hoa",
    "LoaiDoiTuong": "1", "SoGiayToChuHoSo": "022190000123", "SoDienThoai": "0912345678",
    "DiaChi": "12 Lê Thánh Tông", "PhuongXa": "Hồng Gai", "QuanHuyen": "Hạ Long", "TinhThanh": "Quảng Ninh",
    "DongYNhanZalo": True,
    "DanhSachTepDinhKem": [{"TenTep": "to-khai.pdf", "MaBam": "AB" * 32, "KichThuoc": 1234}],
}


def test_online_dossier_becomes_a_deterministic_submitted_event() -> None:
    mapping = PortalMapping(procedure_map={"1.001234.000.00.00.H22": "1.001234"})
    model = online_event(OnlineDossier.model_validate(ONLINE), mapping)
    assert model == online_event(OnlineDossier.model_validate(ONLINE | {"ThuTu": 99}), mapping)
    event = event_json(model)  # as the ledger stores it
    assert event["event_id"] == "portal:000.00.12.H22-261120-9001:submitted"
    assert (event["type"], event["origin"], event["sequence"]) == ("dossier.submitted", "portal", 1)
    assert event["procedure_code"] == "1.001234.000.00.00.H22"
    assert event["occurred_at"] == "2026-11-20T09:15:00+07:00"
    assert event["applicant"]["zalo_consent"] is True
    assert event["applicant"]["address"]["province"] == "Quảng Ninh"
    assert event["data"]["documents"][0]["sha256"] == "ab" * 32
    parse_event(event)


def test_online_dossier_that_cannot_be_an_event_raises() -> None:
    bad = OnlineDossier.model_validate(ONLINE | {"MaHoSo": "not a code"})
    with pytest.raises(ValidationError):
        online_event(bad, MAPPING)


def test_expected_history_and_holds() -> None:
    dossier = first("dossier.returned").dossier_code
    steps = expected_history(EVENTS)[dossier]
    events = lifecycle(dossier)
    assert [s[0] for s in steps] == [DEFAULT_STATUS_MAP[e.type] for e in events]
    entries = [{"TrangThai": st, "ThoiDiemXuLy": at} for st, at in steps]
    assert holds({"TrangThaiHoSo": "10", "QuaTrinhXuLy": entries}, steps)
    assert not holds({"TrangThaiHoSo": "9", "QuaTrinhXuLy": entries}, steps)
    assert not holds({"TrangThaiHoSo": "10", "QuaTrinhXuLy": entries[::-1]}, steps)
    assert not holds({"TrangThaiHoSo": "10", "QuaTrinhXuLy": entries + entries[-1:]}, steps)
    assert not holds(None, steps)
