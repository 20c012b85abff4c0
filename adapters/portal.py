"""Canonical events ⇄ the national portal's dossier records and progress entries. Pure: no I/O.

One lifecycle event (``dossier.*``) becomes, on the portal, the dossier record brought up to
date (``DongBoHoSoMC``) and one progress entry (``CapNhatTienDoHoSoMC``). The record is built
on what the portal already holds (``TraCuuHoSo``), so fields that only an earlier event knew
(the due date, the submitted files) are kept. Online dossiers the portal sends down become
``dossier.submitted`` events of origin ``portal``.

What a province changes lives in :class:`PortalMapping`, read from the destination's options
in ``config/relay.toml``: the status map (DOMAIN.md's table is the default), local → national
procedure codes, procedure names for dossiers the portal has not seen, the desk's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from schemas.events import (
    DEFAULT_CODE_PATTERNS,
    EVENT_CLASSES,
    CodePatterns,
    Document,
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
from schemas.portal import STATUS_CODES, OnlineDossier, ProgressEntry
from schemas.vietnam import VN_TZ

PORTAL_FORMAT = "%Y%m%d%H%M%S"
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
CHANNELS = {"desk": "0", "online": "1", "postal": "2"}
METHODS = {"desk": "trực tiếp tại Bộ phận một cửa", "post": "qua dịch vụ bưu chính công ích", "online": "trực tuyến"}
_CONTENT_LIMIT = 2000
DOSSIER_TYPES = frozenset(kind for kind, model in EVENT_CLASSES.items() if issubclass(model, DossierEvent))


class MappingError(ValueError):
    """The event cannot be expressed for the portal with this configuration (an operator fixes the map)."""


@dataclass(frozen=True)
class PortalMapping:
    """The province's side of the mapping; defaults are DOMAIN.md's."""

    status_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    procedure_map: Mapping[str, str] = field(default_factory=dict)
    procedure_names: Mapping[str, str] = field(default_factory=dict)
    desk_name: str = DESK
    desk_handler: str = DESK_HANDLER

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.status_map.items() if str(v) not in STATUS_CODES}
        if bad:
            raise ValueError(f"status_map: portal status codes are 1..10, not {bad}")
        # the record and the progress entry are made of the lifecycle events' data: refused here, at the options,
        # rather than as a dead letter per delivery
        foreign = sorted(k for k in self.status_map if k not in DOSSIER_TYPES)
        if foreign:
            raise ValueError(f"status_map: the portal follows the dossier lifecycle (dossier.*), not {foreign}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PortalMapping:
        """From a destination's options: ``status_map`` (overrides single entries), ``procedure_map``,
        ``procedure_names``, ``desk_name``, ``desk_handler``."""
        status = {**DEFAULT_STATUS_MAP, **{k: str(v) for k, v in dict(options.get("status_map", {})).items()}}
        return cls(
            status_map=status,
            procedure_map={str(k): str(v) for k, v in dict(options.get("procedure_map", {})).items()},
            procedure_names={str(k): str(v) for k, v in dict(options.get("procedure_names", {})).items()},
            desk_name=str(options.get("desk_name", DESK)),
            desk_handler=str(options.get("desk_handler", DESK_HANDLER)),
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


def dossier_record(event: DossierEvent, current: Mapping[str, Any] | None, mapping: PortalMapping) -> dict[str, Any]:
    """The whole dossier record as it must stand after ``event``, on top of what the portal holds."""
    applicant = event.applicant
    record: dict[str, Any] = {k: v for k, v in (current or {}).items() if k != "QuaTrinhXuLy"}
    procedure = mapping.national_procedure(event.procedure_code)
    named = event.data.procedure_name if isinstance(event, DossierSubmitted | DossierReceived) else None
    name = named or record.get("TenTTHC") or mapping.procedure_names.get(event.procedure_code)
    record |= {
        "MaHoSo": event.dossier_code,
        "MaTTHC": procedure,
        "ChuHoSo": applicant.name,
        "LoaiDoiTuong": "2" if applicant.kind == "business" else "1",
        "DonViXuLy": event.unit_code,
        "TrangThaiHoSo": mapping.status(event.type),
        "NgayTiepNhan": record.get("NgayTiepNhan") or portal_time(event.occurred_at),
        "HinhThuc": record.get("HinhThuc") or "0",
    }
    optional = {"TenTTHC": name, "SoGiayToChuHoSo": applicant.id_number,
                "SoDienThoai": applicant.phone, "Email": applicant.email}
    record |= {k: v for k, v in optional.items() if v}

    if isinstance(event, DossierSubmitted):
        record["HinhThuc"] = CHANNELS.get(event.data.channel, "0")
        record["DanhSachTepDinhKem"] = [_attachment(d) for d in event.data.documents]
    elif isinstance(event, DossierReceived):
        record["NgayTiepNhan"] = portal_time(event.occurred_at)
        record["NgayHenTra"] = portal_time(event.data.due_at)
    elif isinstance(event, DossierFeeRequested):
        fee = event.data
        lines = [(line.code, line.name, line.amount) for line in fee.lines] or [(fee.fee_id, "Phí, lệ phí", fee.amount)]
        record["DanhSachLePhi"] = [{"MaLePhi": code, "TenLePhi": title, "SoTien": int(amount)}
                                   for code, title, amount in lines]
    elif isinstance(event, DossierSupplementRequested):
        item: dict[str, Any] = {"NoiDung": event.data.reason, "ThanhPhan": list(event.data.items),
                                "NgayYeuCau": portal_time(event.occurred_at)}
        if event.data.due_at:
            item["HanBoSung"] = portal_time(event.data.due_at)
        earlier = [s for s in record.get("DanhSachHoSoBoSung", []) if s.get("NgayYeuCau") != item["NgayYeuCau"]]
        record["DanhSachHoSoBoSung"] = [*earlier, item]
    elif isinstance(event, DossierCompleted):
        record["DanhSachGiayToKetQua"] = [
            {k: v for k, v in {"TenGiayTo": d.name, "DuongDan": d.url, "MaBam": d.sha256}.items() if v}
            for d in event.data.result_documents
        ]
    elif isinstance(event, DossierReturned):
        record["NgayTra"] = portal_time(event.data.returned_at)
    return record


def progress_entry(event: DossierEvent, mapping: PortalMapping) -> dict[str, Any]:
    """The progress entry that records ``event`` in the dossier's history on the portal."""
    step = event.data.step if isinstance(event, DossierProcessing) else None
    due = step.due_at if step else (
        event.data.due_at if isinstance(event, DossierReceived | DossierSupplementRequested) else None)
    entry = {
        "MaHoSo": event.dossier_code,
        "NguoiXuLy": (step.handler if step else None) or mapping.desk_handler,
        "ChucDanh": step.title if step else None,
        "ThoiDiemXuLy": portal_time(event.occurred_at),
        "PhongBanXuLy": (step.department if step else None) or mapping.desk_name,
        "NoiDungXuLy": _content(event)[:_CONTENT_LIMIT],
        "TrangThai": mapping.status(event.type),
        "NgayBatDau": portal_time((step.started_at if step else None) or event.occurred_at),
        "NgayKetThucTheoQuyDinh": portal_time(due) if due else None,
    }
    return {k: v for k, v in entry.items() if v is not None}


def progress_recorded(entry: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether the portal already holds this entry (a repeated attempt must not push it twice)."""
    if not current:
        return False
    wanted = ProgressEntry.model_validate(entry).identity()
    for held in current.get("QuaTrinhXuLy") or []:
        try:
            if ProgressEntry.model_validate(held).identity() == wanted:
                return True
        except ValueError:
            continue
    return False


def expected_history(
    events: Iterable[Event], mapping: PortalMapping | None = None
) -> dict[str, list[tuple[str, str]]]:
    """What the portal must end up holding for these events of the one-stop software: per dossier,
    the (``TrangThai``, ``ThoiDiemXuLy``) of each progress entry in ``sequence`` order."""
    mapping = mapping or PortalMapping()
    out: dict[str, list[tuple[str, str]]] = {}
    for e in sorted(events, key=lambda e: e.sequence):
        if takes(e, mapping) and e.origin == "onestop":
            out.setdefault(e.dossier_code, []).append((mapping.status(e.type), portal_time(e.occurred_at)))
    return out


def holds(record: Mapping[str, Any] | None, history: list[tuple[str, str]]) -> bool:
    """Whether the portal's record (as ``TraCuuHoSo`` returns it) ends in ``history``: status and entries, in order."""
    if not record or not history:
        return False
    held = [(p.get("TrangThai"), p.get("ThoiDiemXuLy")) for p in record.get("QuaTrinhXuLy") or []]
    return record.get("TrangThaiHoSo") == history[-1][0] and held == history


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


def _attachment(document: Document) -> dict[str, Any]:
    out = {"TenTep": document.name, "DuongDan": document.url, "MaBam": document.sha256, "KichThuoc": document.size}
    return {k: v for k, v in out.items() if v is not None}


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
