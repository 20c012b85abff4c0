"""The wire of the national public service portal (Cổng DVC quốc gia), reached through the provincial LGSP.

The contract is the one OpenCPS integrates in production (``DVCQGIntegrationActionImpl.java``; the rules
P1–P18 of docs/contracts.md). JSON over HTTP(S), header ``dstcode`` on every call, login included:

- login: ``POST {adapter_url}{auth_endpoint}`` ``{"username", "password"}`` → ``{"error_code": 0, "session"}``;
- every other call: ``POST {adapter_url}{integration_endpoint}`` ``{"session", "madonvi", "service", …params}``,
  answered ``{"error_code", "message", "result": [rows]}``: rows are in ``result``, never in ``data``.

The requests, by ``service`` (:data:`PARAMS` holds each one's parameters, and nothing else is taken):

- ``TraCuuHoSo`` ``{"mahoso"}`` (lower case) → ``result`` non-empty when the portal holds the dossier; no
  processing history comes back (P4, P5);
- ``LayThuTuc`` ``{"maTTHC"}`` → ``result[0].TENTTHC`` and ``LINHVUCTHUCHIEN[0].MALINHVUC/TENLINHVUC`` (P6);
- ``DongBoHoSoMC`` ``{"isUpdating": "True"|"False", "data": [DossierRecord]}``: "False" creates a dossier the
  portal does not hold, "True" replaces the record of one it holds (P7, P8);
- ``CapNhatTienDoHoSoMC`` ``{"data": [ProgressEntry]}``: one entry per hand-over, for a dossier already synced,
  each taken once by (MaHoSo, TrangThai, ThoiDiemXuLy) (P18);
- ``LayDanhSachTTHC``, ``LayDanhMucCoQuan``, ``LayDanhMucLinhVuc`` ``{}``: catalogues, in upper-case rows;
- ``LayHoSoTrucTuyen``: online dossiers coming down, **not in OpenCPS**: the simulator defines it
  (``{"TuThuTu", "SoLuong"}`` → rows :class:`OnlineDossier` and ``ConTiep``), a destination's
  ``online_service`` renames it.

Request models are strict (``extra="forbid"``, strict types): a field the portal does not know, a number where
it takes a string, or a missing field that OpenCPS does not mark optional ("ko bb") is a field it may refuse,
and the simulator does. Answers are read leniently (:class:`PortalAnswer`): the real portal returns more than
we read. Dates are ``yyyyMMddHHmmss`` in Vietnam time, or ``""`` when unknown. OpenCPS checks only
``error_code == 0``; the other codes are the simulator's documented table (:data:`ERROR_CODES`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from schemas.events import DEFAULT_UNIT_PATTERN
from schemas.privacy import PersonalStr

# OpenCPS's auth_endpoint and integration_endpoint under the adapter URL, as the usual LGSP serves them.
AUTH_PATH = "/api/dvcqg/login"
INTEGRATION_PATH = "/api/dvcqg/service"

# The portal's services (the ``service`` field of an integration call).
LOOKUP = "TraCuuHoSo"
PROCEDURE = "LayThuTuc"
SYNC = "DongBoHoSoMC"
PROGRESS = "CapNhatTienDoHoSoMC"
CATALOGUE = "LayDanhSachTTHC"
AGENCIES = "LayDanhMucCoQuan"
FIELDS = "LayDanhMucLinhVuc"
ONLINE = "LayHoSoTrucTuyen"  # not in OpenCPS: the simulator's, renamed by a destination's online_service

# Answer codes (``error_code``, a number on the wire). Success is 0; OpenCPS reads nothing else, so the rest is
# the simulator's documented table. "06" is the portal refusing to take a thing twice: a dossier created again,
# or a progress entry it already holds (the key of P18).
SUCCESS_CODES = frozenset({"0", "00"})
SESSION_INVALID = "01"
LOGIN_REFUSED = "02"
INVALID_DATA = "03"
NOT_FOUND = "04"
INVALID_TRANSITION = "05"
ALREADY_EXISTS = "06"
UNIT_REFUSED = "09"
UNKNOWN_SERVICE = "10"
BUSY = "96"
SYSTEM_ERROR = "99"
ERROR_CODES: dict[str, str] = {
    "0": "thành công",
    "00": "thành công",
    SESSION_INVALID: "phiên làm việc hết hạn hoặc không hợp lệ",
    LOGIN_REFUSED: "sai tên đăng nhập, mật khẩu hoặc dstcode",
    INVALID_DATA: "dữ liệu không hợp lệ (tham số lạ hoặc thiếu, sai kiểu, sai định dạng, mã TTHC không có trong CSDL)",
    NOT_FOUND: "không tìm thấy hồ sơ",
    INVALID_TRANSITION: "chuyển trạng thái không hợp lệ, hoặc tiến độ không khớp trạng thái hồ sơ",
    ALREADY_EXISTS: "hồ sơ hoặc tiến độ đã tồn tại",
    UNIT_REFUSED: "thiếu mã đơn vị (madonvi)",
    UNKNOWN_SERVICE: "dịch vụ không tồn tại",
    BUSY: "hệ thống đang bận, thử lại sau",
    SYSTEM_ERROR: "lỗi hệ thống",
}

STATUS_CODES = tuple(str(n) for n in range(1, 11))
TERMINAL_STATUSES = frozenset({"3", "7", "10"})  # refused, withdrawn, returned
StatusCode = Literal["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
PORTAL_FORMAT = "%Y%m%d%H%M%S"
_UNIT_CODE = re.compile(DEFAULT_UNIT_PATTERN)


def _portal_date(value: str) -> str:
    if value:
        try:
            if len(value) != 14 or not (value.isascii() and value.isdigit()):  # strptime reads Arabic-Indic digits
                raise ValueError
            datetime.strptime(value, PORTAL_FORMAT)
        except ValueError:
            raise PydanticCustomError("portal_date", "yyyyMMddHHmmss or empty") from None
    return value


# P13: yyyyMMddHHmmss (Vietnam time, a real calendar time) or "" when unknown.
PortalDate = Annotated[str, AfterValidator(_portal_date)]
Moment = Annotated[str, Field(min_length=1), AfterValidator(_portal_date)]  # a date that must be given
Text = str  # a string, "" allowed
Code = Annotated[str, Field(min_length=1)]  # P10: a non-empty string


def normalise_code(value: Any) -> str:
    """``error_code`` as the portal sends it (0, "0", "00", 3, "03") → a two-digit string, or "0"."""
    text = str(value).strip() if value is not None else ""
    if text in SUCCESS_CODES:
        return text
    if text.lstrip("-").isdigit():
        number = int(text)
        return "0" if number == 0 else f"{number:02d}"
    return text


def is_success(value: Any) -> bool:
    return normalise_code(value) in SUCCESS_CODES


def looks_like_unit_code(value: str) -> bool:
    """Whether a ``DonViXuLy`` is an electronic identifier code (``000.21.00.H49``) rather than a name (P17)."""
    return bool(_UNIT_CODE.match(value.strip()))


def allowed_transition(current: str, new: str) -> bool:
    """The portal's status rules: no way out of a final status, returned only after completed,
    submitted only as the first status, completed only forward to returned. Same status is a no-op."""
    if current == new:
        return True
    if current in TERMINAL_STATUSES:
        return False
    if new == "1":
        return False
    if new == "10":
        return current == "9"
    return current != "9"


class _Strict(BaseModel):
    """A request the portal takes exactly: no field it does not know, strings where it takes strings."""

    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------- the dossier record (DongBoHoSoMC)

class SubmittedFile(_Strict):
    """A submitted file (``TaiLieuNop``, P14)."""

    TenTepDinhKem: Code
    MaThanhPhanHoSo: Text
    TepDinhKemId: Code
    DuongDanTaiTepTin: Text
    IsDeleted: Literal["False", "True"]


class ResultDocument(_Strict):
    """A result document (``DanhSachGiayToKetQua``, P15)."""

    TenGiayTo: Code
    MaThanhPhanHoSo: Text
    GiayToId: Code
    DuongDanTepTinKetQua: Text


class FeeItem(_Strict):
    """A fee line (``DanhSachLePhi``, P16): ``Gia`` in đồng, as a string like every scalar."""

    TenPhiLePhi: Code
    MaPhiLePhi: Code
    HinhThucThu: Text
    Gia: Annotated[str, Field(pattern=r"^\d{1,15}$")]
    LoaiPhiLePhi: Text


class OtherDocument(_Strict):
    """Another paper handed in (``DanhSachTepDinhKemKhac``, P16)."""

    TenGiayTo: Code
    SoLuong: Text
    LoaiGiayTo: Text


class SupplementItem(_Strict):
    """A request for more documents (``DanhSachHoSoBoSung``, P16). OpenCPS names the two lists' keys without their
    items (it puts ``""``): either is taken, the relay sends empty lists."""

    HoSoBoSungId: Code
    NguoiYeuCauBoSung: PersonalStr
    NoiDungBoSung: Code
    NgayBoSung: Moment
    NguoiTiepNhanBoSung: PersonalStr
    ThongTinTiepNhan: Text
    NgayTiepNhanBoSung: PortalDate
    TrangThaiBoSung: Text
    DanhSachGiayToBoSung: str | list[dict[str, Any]]
    DanhSachLePhiBoSung: str | list[dict[str, Any]]
    NgayHenTraTruoc: PortalDate
    NgayHenTraMoi: PortalDate


class DossierRecord(_Strict):
    """A dossier as ``DongBoHoSoMC`` takes it: OpenCPS's fields and nothing else (P9). Those OpenCPS marks
    "ko bb" (optional) have defaults; the others must be present, as strings (P10)."""

    MaHoSo: Annotated[str, Field(min_length=1, max_length=80)]
    MaTTHC: Annotated[str, Field(min_length=1, max_length=60)]
    TenTTHC: Text
    MaLinhVuc: Text
    TenLinhVuc: Text
    ChuHoSo: PersonalStr = ""
    LoaiDoiTuong: Literal["1", "2"]  # P11: 1 a citizen, 2 a business
    MaDoiTuong: Text = ""
    ThongTinKhac: Text = ""
    Email: PersonalStr
    Fax: PersonalStr = ""
    SoDienThoai: PersonalStr
    TrichYeuHoSo: Text
    NgayTiepNhan: PortalDate
    NgayHenTra: PortalDate
    TrangThaiHoSo: StatusCode
    NgayTra: PortalDate = ""
    ThongTinTra: Text = ""
    HinhThuc: Literal["0", "1"]  # P12: "1" when the result goes by post
    NgayKetThucXuLy: PortalDate = ""
    DonViXuLy: Annotated[str, Field(min_length=1, max_length=300)]  # P17: the agency's name
    GhiChu: Text = ""
    DanhSachLePhi: list[FeeItem] = Field(default_factory=list)
    DanhSachTepDinhKemKhac: list[OtherDocument] = Field(default_factory=list)
    DanhSachHoSoBoSung: list[SupplementItem] = Field(default_factory=list)
    DanhSachGiayToKetQua: list[ResultDocument] = Field(default_factory=list)
    TaiLieuNop: list[SubmittedFile] = Field(default_factory=list)


class ProgressEntry(_Strict):
    """One hand-over in a dossier's processing (``CapNhatTienDoHoSoMC``, P18): the nine fields OpenCPS sends,
    ``""`` where it has nothing."""

    MaHoSo: Annotated[str, Field(min_length=1, max_length=80)]
    NguoiXuLy: PersonalStr
    ChucDanh: Text
    ThoiDiemXuLy: Moment
    PhongBanXuLy: Text
    NoiDungXuLy: Annotated[str, Field(max_length=2000)]
    TrangThai: StatusCode
    NgayBatDau: PortalDate
    NgayKetThucTheoQuyDinh: PortalDate

    def key(self) -> tuple[str, str, str]:
        """What makes two entries the same (P18): the portal takes each once."""
        return progress_key(self.model_dump())


def progress_key(entry: Any) -> tuple[str, str, str]:
    """(``MaHoSo``, ``TrangThai``, ``ThoiDiemXuLy``) of an entry as a mapping."""
    return (str(entry.get("MaHoSo", "")), str(entry.get("TrangThai", "")), str(entry.get("ThoiDiemXuLy", "")))


# ---------------------------------------------------------------- requests

class Login(_Strict):
    """The login body (P1)."""

    username: str
    password: str


class LookupParams(_Strict):
    mahoso: Code  # P4: lower case; "MaHoSo" is an unknown parameter


class ProcedureParams(_Strict):
    maTTHC: Code  # P6


class SyncParams(_Strict):
    """P7: the records are checked one by one (:class:`DossierRecord`), so a refusal names the record."""

    isUpdating: Literal["True", "False"]
    data: Annotated[list[Any], Field(min_length=1, max_length=100)]


class ProgressParams(_Strict):
    data: Annotated[list[Any], Field(min_length=1, max_length=100)]


class NoParams(_Strict):
    pass


class OnlineParams(_Strict):
    """``LayHoSoTrucTuyen``'s (the simulator's): the exclusive cursor and the page size."""

    TuThuTu: int = Field(0, ge=0)
    SoLuong: int = Field(50, ge=1, le=100)


# What each service takes besides the envelope (session, madonvi, service).
PARAMS: dict[str, type[_Strict]] = {
    LOOKUP: LookupParams, PROCEDURE: ProcedureParams, SYNC: SyncParams, PROGRESS: ProgressParams,
    CATALOGUE: NoParams, AGENCIES: NoParams, FIELDS: NoParams, ONLINE: OnlineParams,
}
ENVELOPE = ("session", "madonvi", "service")


# ---------------------------------------------------------------- answers (read leniently)

class _Read(BaseModel):
    """What the portal answers or sends: more than we read, kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PortalAnswer(_Read):
    """Every answer: ``error_code`` (0 is success), a message, a login's ``session``, the rows in ``result``."""

    error_code: str = "0"
    message: str | None = None
    session: str | None = None
    result: Any = None

    @field_validator("error_code", mode="before")
    @classmethod
    def _code(cls, value: Any) -> str:
        return normalise_code(value)

    @property
    def ok(self) -> bool:
        return self.error_code in SUCCESS_CODES

    def rows(self) -> list[dict[str, Any]]:
        """The objects in ``result`` (a single object counts as one row)."""
        found = self.result if isinstance(self.result, list) else [self.result] if self.result else []
        return [row for row in found if isinstance(row, dict)]


class FieldRow(_Read):
    """A field of activity (lĩnh vực) of a procedure, upper case as ``LayThuTuc`` answers it."""

    MALINHVUC: str = ""
    TENLINHVUC: str = ""


class ProcedureRow(_Read):
    """``LayThuTuc``'s first row (P6)."""

    MATTHC: str = ""
    TENTTHC: str = ""
    LINHVUCTHUCHIEN: list[FieldRow] = Field(default_factory=list)


# ---------------------------------------------------------------- online dossiers (not in OpenCPS)

class Attachment(_Read):
    """A file of an online dossier (the simulator's shape for ``LayHoSoTrucTuyen``)."""

    TenTep: str
    DuongDan: str | None = None
    MaBam: str | None = Field(None, description="SHA-256 hex")
    KichThuoc: int | None = None


class OnlineDossier(_Read):
    """A dossier a citizen submitted on the national portal, as ``LayHoSoTrucTuyen`` returns it and the portal's
    push callback carries it. Not in OpenCPS: the simulator defines it."""

    ThuTu: int = Field(ge=1, le=2**63 - 1, description="the portal's increasing position (a long): the pull cursor")
    MaHoSo: str = Field(min_length=1, max_length=80)
    MaDonVi: str = Field(min_length=1, max_length=60, description="the receiving unit's code")
    MaTTHC: str = Field(min_length=1, max_length=60)
    TenTTHC: str | None = None
    NgayNopHoSo: Moment
    ChuHoSo: PersonalStr = Field(min_length=1, max_length=200)
    LoaiDoiTuong: Literal["1", "2"] = "1"
    SoGiayToChuHoSo: PersonalStr | None = None
    SoDienThoai: PersonalStr | None = None
    Email: PersonalStr | None = None
    DiaChi: PersonalStr | None = None
    PhuongXa: str | None = None
    QuanHuyen: str | None = None
    TinhThanh: str | None = None
    DongYNhanZalo: bool = False
    DanhSachTepDinhKem: list[Attachment] = Field(default_factory=list)


class OnlineCallback(BaseModel):
    """What the portal pushes to ``POST /v1/callbacks/portal``: online dossiers of one unit."""

    model_config = ConfigDict(extra="ignore")

    madonvi: str = Field(min_length=1, max_length=60)
    data: list[OnlineDossier] = Field(min_length=1, max_length=500)
