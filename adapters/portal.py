"""Canonical events ⇄ the national portal's dossier records and progress entries. Pure: no I/O.

One lifecycle event (``dossier.*``) becomes, on the portal, the dossier's whole record as it stands after the
event (``DongBoHoSoMC``) and one progress entry (``CapNhatTienDoHoSoMC``). As OpenCPS builds the record from its
own database, the relay builds it from its own ledger: :func:`dossier_record` folds the dossier's lifecycle
events up to this one, so what only an earlier event knew (the due date, the submitted files, a fee) stays in
the record; nothing is read back from the portal, whose ``TraCuuHoSo`` says only whether it holds the dossier.
Online dossiers the portal sends down become ``dossier.submitted`` events of origin ``portal``.

What a province changes lives in :class:`PortalMapping`, made from the destination's options in
``config/relay.toml``: the status map (docs/domain.md's table is the default), local → national procedure codes,
procedure names the catalogue lacks, the desk's name, and each unit's agency name for ``DonViXuLy`` (P17).
:func:`expected_truth`, :func:`holds` and :func:`content_issues` say what the portal must end up holding for a
day of the one-stop software's events (the demo, the bench and the tests use them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from schemas.events import (
    DEFAULT_CODE_PATTERNS,
    EVENT_CLASSES,
    CodePatterns,
    DossierCompleted,
    DossierEvent,
    DossierFeeRequested,
    DossierProcessing,
    DossierReceived,
    DossierReturned,
    DossierSubmitted,
    DossierSupplementRequested,
    Event,
    parse_event,
)
from schemas.portal import PORTAL_FORMAT, STATUS_CODES, OnlineDossier, looks_like_unit_code
from schemas.vietnam import VN_TZ

ORIGIN = "portal"

DEFAULT_STATUS_MAP: dict[str, str] = {
    "dossier.submitted": "1",
    "dossier.received": "2",
    "dossier.refused": "3",
    "dossier.processing": "4",
    "dossier.supplement_requested": "5",
    "dossier.fee_requested": "6",
    "dossier.withdrawn": "7",
    "dossier.suspended": "8",
    "dossier.completed": "9",
    "dossier.returned": "10",
}
DESK = "Bộ phận tiếp nhận và trả kết quả"
DESK_HANDLER = "Cán bộ một cửa"
METHODS = {"desk": "trực tiếp tại Bộ phận một cửa", "post": "qua dịch vụ bưu chính công ích", "online": "trực tuyến"}
_CONTENT_LIMIT = 2000
DOSSIER_TYPES = frozenset(kind for kind, model in EVENT_CLASSES.items() if issubclass(model, DossierEvent))


class MappingError(ValueError):
    """The event cannot be expressed for the portal with this configuration (an operator fixes the map)."""


@dataclass(frozen=True)
class PortalMapping:
    """The province's side of the mapping; defaults are docs/domain.md's. ``agency_names`` maps a unit code to the
    agency's name the portal shows (``DonViXuLy``)."""

    status_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    procedure_map: Mapping[str, str] = field(default_factory=dict)
    procedure_names: Mapping[str, str] = field(default_factory=dict)
    desk_name: str = DESK
    desk_handler: str = DESK_HANDLER
    agency_names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.status_map.items() if str(v) not in STATUS_CODES}
        if bad:
            raise ValueError(f"status_map: portal status codes are 1..10, not {bad}")
        # the record and the progress entry are made of the lifecycle events' data: refused here, at the options,
        # rather than as a dead letter per delivery
        foreign = sorted(k for k in self.status_map if k not in DOSSIER_TYPES)
        if foreign:
            raise ValueError(f"status_map: the portal follows the dossier lifecycle (dossier.*), not {foreign}")
        coded = sorted(unit for unit, name in self.agency_names.items()
                       if not name.strip() or looks_like_unit_code(name))
        if coded:
            raise ValueError(f"agency_names: the portal takes the agency's name, not a code or nothing, for {coded}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PortalMapping:
        """From a destination's options: ``status_map`` (overrides single entries), ``procedure_map``,
        ``procedure_names``, ``desk_name``, ``desk_handler``, ``agency_names``."""
        status = {**DEFAULT_STATUS_MAP, **{k: str(v) for k, v in dict(options.get("status_map", {})).items()}}
        return cls(
            status_map=status,
            procedure_map={str(k): str(v) for k, v in dict(options.get("procedure_map", {})).items()},
            procedure_names={str(k): str(v) for k, v in dict(options.get("procedure_names", {})).items()},
            desk_name=str(options.get("desk_name", DESK)),
            desk_handler=str(options.get("desk_handler", DESK_HANDLER)),
            agency_names={str(k): str(v) for k, v in dict(options.get("agency_names", {})).items()},
        )

    def status(self, event_type: str) -> str:
        try:
            return str(self.status_map[event_type])
        except KeyError:
            raise MappingError(f"no portal status for {event_type}: add it to the destination's status_map") from None

    def national_procedure(self, local: str) -> str:
        return self.procedure_map.get(local, local)

    def local_procedure(self, national: str) -> str:
        for local, mapped in self.procedure_map.items():
            if mapped == national:
                return local
        return national

    def agency(self, unit_code: str) -> str:
        """The agency's name for ``DonViXuLy`` (P17): never the code, which the portal would show as a name."""
        try:
            return self.agency_names[unit_code]
        except KeyError:
            raise MappingError(f"no agency name for unit {unit_code}: name it in the portal destination's "
                               "agency_names, or in its units_file") from None


@dataclass(frozen=True)
class Procedure:
    """What the national catalogue says of a procedure (``LayThuTuc``, P6); ``""`` where it says nothing."""

    name: str = ""
    field_code: str = ""
    field_name: str = ""


def portal_time(value: str | datetime) -> str:
    """An ISO time or aware datetime → ``yyyyMMddHHmmss`` in Vietnam time."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(VN_TZ).strftime(PORTAL_FORMAT)


def from_portal_time(value: str) -> datetime:
    """``yyyyMMddHHmmss`` (Vietnam time) → an aware datetime."""
    return datetime.strptime(value, PORTAL_FORMAT).replace(tzinfo=VN_TZ)


def takes(event: Event, mapping: PortalMapping) -> TypeGuard[DossierEvent]:
    """Whether the portal follows this event (the lifecycle events of the status map)."""
    return isinstance(event, DossierEvent) and event.type in mapping.status_map


def by_post(events: Iterable[DossierEvent]) -> bool:
    """Whether the result goes by post (P12): the dossier was received to be returned by post, its result was
    to be picked up by post, or it was returned by post."""
    return any((isinstance(e, DossierReceived) and e.data.return_by_post)
               or (isinstance(e, DossierCompleted) and e.data.pickup == "post")
               or (isinstance(e, DossierReturned) and e.data.method == "post") for e in events)


def lifecycle_until(event: DossierEvent, earlier: Iterable[Event], mapping: PortalMapping) -> list[DossierEvent]:
    """The dossier's lifecycle events before ``event`` (from the same system, in ``sequence`` order), then it.

    One event per ``sequence``, the first given (the ledger's oldest): a late copy under another id, which the
    ledger supersedes, is not a second step."""
    before: dict[int, DossierEvent] = {}
    for e in earlier:
        if (takes(e, mapping) and e.dossier_code == event.dossier_code and e.origin == event.origin
                and e.sequence < event.sequence):
            before.setdefault(e.sequence, e)
    return [*(before[n] for n in sorted(before)), event]


def dossier_record(event: DossierEvent, earlier: Iterable[Event], mapping: PortalMapping,
                   procedure: Procedure | None = None) -> dict[str, Any]:
    """The whole dossier record as it must stand after ``event``: every field OpenCPS sends (P9), ``""`` or
    ``[]`` where nothing is known, made of ``event`` and the dossier's ``earlier`` events (the ledger's).

    ``procedure`` is the national catalogue's answer for the procedure (its name and field); without one the
    name comes from the events, then from ``procedure_names``. Raises :class:`MappingError` when the unit has no
    agency name or the event no status.
    """
    events = lifecycle_until(event, earlier, mapping)
    applicant, code = event.applicant, event.dossier_code
    procedure = procedure or Procedure()
    named = [e.data.procedure_name for e in events if isinstance(e, DossierSubmitted | DossierReceived)]
    received = _last(events, DossierReceived)
    completed = _last(events, DossierCompleted)
    returned = _last(events, DossierReturned)
    submitted = _last(events, DossierSubmitted)
    record: dict[str, Any] = {
        "MaHoSo": code,
        "MaTTHC": mapping.national_procedure(event.procedure_code),
        "TenTTHC": procedure.name or next((n for n in reversed(named) if n), None)
                   or mapping.procedure_names.get(event.procedure_code, ""),
        "MaLinhVuc": procedure.field_code,
        "TenLinhVuc": procedure.field_name,
        "ChuHoSo": applicant.name,
        "LoaiDoiTuong": "2" if applicant.kind == "business" else "1",
        "MaDoiTuong": "",
        "ThongTinKhac": "",
        "Email": applicant.email or "",
        "Fax": "",
        "SoDienThoai": applicant.phone or "",
        "TrichYeuHoSo": "",
        "NgayTiepNhan": portal_time(received.occurred_at) if received else "",
        "NgayHenTra": portal_time(received.data.due_at) if received else "",
        "TrangThaiHoSo": mapping.status(event.type),
        "NgayTra": portal_time(returned.data.returned_at) if returned else "",
        "ThongTinTra": "",
        "HinhThuc": "1" if by_post(events) else "0",
        "NgayKetThucXuLy": portal_time(completed.occurred_at) if completed else "",
        "DonViXuLy": mapping.agency(event.unit_code),
        "GhiChu": "",
        "DanhSachLePhi": _fees(events),
        "DanhSachTepDinhKemKhac": [],
        "DanhSachHoSoBoSung": _supplements(events, mapping),
        "DanhSachGiayToKetQua": [
            {"TenGiayTo": d.name or f"Kết quả {n}", "MaThanhPhanHoSo": "", "GiayToId": f"{code}-KQ{n}",
             "DuongDanTepTinKetQua": d.url or ""}
            for n, d in enumerate(completed.data.result_documents if completed else [], start=1)],
        "TaiLieuNop": [
            {"TenTepDinhKem": name, "MaThanhPhanHoSo": "", "TepDinhKemId": f"{code}-TL{n}",
             "DuongDanTaiTepTin": url, "IsDeleted": "False"}
            for n, (name, url) in enumerate(_files(submitted), start=1)],
    }
    return record


def _files(submitted: DossierSubmitted | None) -> list[tuple[str, str]]:
    """The submitted files' names (a file without one named by its place) and links."""
    documents = submitted.data.documents if submitted else []
    return [(d.name or f"Tệp {n}", d.url or "") for n, d in enumerate(documents, start=1)]


def _last(events: Sequence[DossierEvent], kind: type[Any]) -> Any:
    return next((e for e in reversed(events) if isinstance(e, kind)), None)


def _fees(events: Sequence[DossierEvent]) -> list[dict[str, str]]:
    """Every fee requested, a later request of the same fee replacing the earlier."""
    fees: dict[str, list[dict[str, str]]] = {}
    for e in events:
        if isinstance(e, DossierFeeRequested):
            fee = e.data
            lines = [(line.code, line.name, line.amount) for line in fee.lines] or [
                (fee.fee_id or "LP", "Phí, lệ phí", fee.amount)]
            fees[fee.fee_id] = [{"TenPhiLePhi": title or code, "MaPhiLePhi": code, "HinhThucThu": "",
                                 "Gia": str(int(amount)), "LoaiPhiLePhi": ""} for code, title, amount in lines]
    return [line for lines in fees.values() for line in lines]


def _supplements(events: Sequence[DossierEvent], mapping: PortalMapping) -> list[dict[str, Any]]:
    """One item per request for more documents; the due date before it is the reception's."""
    out: list[dict[str, Any]] = []
    due = ""
    for e in events:
        if isinstance(e, DossierReceived):
            due = portal_time(e.data.due_at)
        elif isinstance(e, DossierSupplementRequested):
            out.append({
                "HoSoBoSungId": e.event_id, "NguoiYeuCauBoSung": mapping.desk_handler,
                "NoiDungBoSung": _supplement_text(e)[:_CONTENT_LIMIT], "NgayBoSung": portal_time(e.occurred_at),
                "NguoiTiepNhanBoSung": "", "ThongTinTiepNhan": "", "NgayTiepNhanBoSung": "", "TrangThaiBoSung": "",
                "DanhSachGiayToBoSung": [], "DanhSachLePhiBoSung": [], "NgayHenTraTruoc": due, "NgayHenTraMoi": "",
            })
    return out


def _supplement_text(event: DossierSupplementRequested) -> str:
    text = event.data.reason or "Yêu cầu bổ sung hồ sơ"
    if event.data.items:
        text += ". Thành phần cần bổ sung: " + "; ".join(event.data.items)
    if event.data.due_at:
        text += f". Hạn bổ sung: {event.data.due_at.astimezone(VN_TZ):%d/%m/%Y}"
    return text


def progress_entry(event: DossierEvent, mapping: PortalMapping) -> dict[str, str]:
    """The progress entry that records ``event`` in the dossier's history on the portal: the nine fields of
    P18, ``""`` where the event says nothing."""
    step = event.data.step if isinstance(event, DossierProcessing) else None
    due = step.due_at if step else (
        event.data.due_at if isinstance(event, DossierReceived | DossierSupplementRequested) else None)
    return {
        "MaHoSo": event.dossier_code,
        "NguoiXuLy": (step.handler if step else None) or mapping.desk_handler,
        "ChucDanh": (step.title if step else None) or "",
        "ThoiDiemXuLy": portal_time(event.occurred_at),
        "PhongBanXuLy": (step.department if step else None) or mapping.desk_name,
        "NoiDungXuLy": _content(event)[:_CONTENT_LIMIT],
        "TrangThai": mapping.status(event.type),
        "NgayBatDau": portal_time((step.started_at if step else None) or event.occurred_at),
        "NgayKetThucTheoQuyDinh": portal_time(due) if due else "",
    }


def _content(event: DossierEvent) -> str:
    if isinstance(event, DossierSubmitted):
        return {"online": "Nộp hồ sơ trực tuyến", "postal": "Nộp hồ sơ qua dịch vụ bưu chính công ích"}.get(
            event.data.channel, "Nộp hồ sơ trực tiếp tại Bộ phận một cửa")
    if isinstance(event, DossierReceived):
        return f"Tiếp nhận hồ sơ, số biên nhận {event.data.receipt_no}"
    if isinstance(event, DossierProcessing):
        step = event.data.step
        return str(step.note or f"Chuyển xử lý: {step.department}")
    if isinstance(event, DossierSupplementRequested):
        return f"Yêu cầu bổ sung hồ sơ: {event.data.reason}"
    if isinstance(event, DossierFeeRequested):
        return f"Yêu cầu thực hiện nghĩa vụ tài chính: {int(event.data.amount):,} đồng".replace(",", ".")
    if isinstance(event, DossierCompleted):
        return "Hoàn thành giải quyết hồ sơ" + (" (quá hạn)" if event.data.late else "")
    if isinstance(event, DossierReturned):
        return "Trả kết quả " + METHODS.get(event.data.method, METHODS["desk"])
    # refused, withdrawn, suspended: a reason
    prefix = {"dossier.refused": "Từ chối tiếp nhận", "dossier.withdrawn": "Công dân rút hồ sơ",
              "dossier.suspended": "Dừng xử lý hồ sơ"}.get(event.type, event.type)
    return f"{prefix}: {event.data.reason}" if event.data.reason else prefix


# ---------------------------------------------------------------- what the portal must end up holding

@dataclass(frozen=True)
class DossierTruth:
    """What the portal must hold of one dossier after the one-stop software's events: its progress entries
    (``TrangThai``, ``ThoiDiemXuLy``) in ``sequence`` order, whether the result goes by post, the files submitted."""

    history: tuple[tuple[str, str], ...]
    by_post: bool = False
    files: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return self.history[-1][0]


def expected_truth(events: Iterable[Event], mapping: PortalMapping | None = None) -> dict[str, DossierTruth]:
    """Per dossier, what the portal must end up holding for these events of the one-stop software."""
    mapping = mapping or PortalMapping()
    per: dict[str, list[DossierEvent]] = {}
    for e in sorted(events, key=lambda e: e.sequence):
        if takes(e, mapping) and e.origin == "onestop":
            per.setdefault(e.dossier_code, []).append(e)
    out: dict[str, DossierTruth] = {}
    for code, lifecycle in per.items():
        submitted = _last(lifecycle, DossierSubmitted)
        out[code] = DossierTruth(
            history=tuple((mapping.status(e.type), portal_time(e.occurred_at)) for e in lifecycle),
            by_post=by_post(lifecycle),
            files=tuple(name for name, _ in _files(submitted)),
        )
    return out


def content_issues(view: Mapping[str, Any], truth: DossierTruth) -> list[str]:
    """What in the portal's final record disagrees with the events although the portal took it: the way the
    result goes (P12), a submitted file missing (P14), a unit code where the agency's name belongs (P17)."""
    issues = []
    if view.get("HinhThuc") != ("1" if truth.by_post else "0"):
        way = "by post" if truth.by_post else "not by post"
        issues.append(f"HinhThuc {view.get('HinhThuc')!r} but the result goes {way}")
    held = {f.get("TenTepDinhKem") for f in view.get("TaiLieuNop") or [] if f.get("IsDeleted") != "True"}
    missing = [name for name in truth.files if name not in held]
    if missing:
        issues.append(f"TaiLieuNop lacks {len(missing)} submitted file(s)")
    if looks_like_unit_code(str(view.get("DonViXuLy", ""))):
        issues.append("DonViXuLy is a unit code, not the agency's name")
    return issues


def holds(view: Mapping[str, Any] | None, truth: DossierTruth) -> bool:
    """Whether the portal's view of a dossier (the simulator's ``/_admin/dossiers``: the record and the entries
    it took, in order) is the truth: the status, every entry once in order, and no content issue."""
    if not view or not truth.history:
        return False
    held = [(p.get("TrangThai"), p.get("ThoiDiemXuLy")) for p in view.get("QuaTrinhXuLy") or []]
    return (view.get("TrangThaiHoSo") == truth.status and held == list(truth.history)
            and not content_issues(view, truth))


# ---------------------------------------------------------------- online dossiers coming down

def online_event_id(dossier_code: str) -> str:
    return f"{ORIGIN}:{dossier_code}:submitted"


def online_event(dossier: OnlineDossier, mapping: PortalMapping,
                 patterns: CodePatterns = DEFAULT_CODE_PATTERNS) -> DossierSubmitted:
    """An online dossier from the portal → the canonical ``dossier.submitted`` event for the one-stop software.

    Deterministic (the id is the dossier code), so the same dossier pulled and pushed is one event.
    Raises pydantic's ``ValidationError`` when the record cannot make a valid event (its codes are the portal's,
    checked against ``patterns`` as the intake checks the one-stop software's).
    """
    address = {"street": dossier.DiaChi, "ward": dossier.PhuongXa, "district": dossier.QuanHuyen,
                "province": dossier.TinhThanh}
    applicant = {
        "kind": "business" if dossier.LoaiDoiTuong == "2" else "citizen",
        "name": dossier.ChuHoSo,
        "id_number": dossier.SoGiayToChuHoSo,
        "phone": dossier.SoDienThoai,
        "email": dossier.Email,
        "zalo_consent": dossier.DongYNhanZalo,
        "address": {k: v for k, v in address.items() if v} or None,
    }
    documents = [
        {k: v for k, v in {"name": f.TenTep, "url": f.DuongDan, "sha256": f.MaBam.lower() if f.MaBam else None,
                          "size": f.KichThuoc}.items()
         if v is not None}
        for f in dossier.DanhSachTepDinhKem
    ]
    data: dict[str, Any] = {"channel": "online", "documents": documents}
    if dossier.TenTTHC:
        data["procedure_name"] = dossier.TenTTHC
    raw = {
        "event_id": online_event_id(dossier.MaHoSo),
        "type": "dossier.submitted",
        "origin": ORIGIN,
        "unit_code": dossier.MaDonVi,
        "dossier_code": dossier.MaHoSo,
        "procedure_code": mapping.local_procedure(dossier.MaTTHC),
        "sequence": 1,
        "occurred_at": from_portal_time(dossier.NgayNopHoSo).isoformat(),
        "applicant": {k: v for k, v in applicant.items() if v is not None},
        "data": data,
    }
    return parse_event(raw, patterns, kind=DossierSubmitted)
