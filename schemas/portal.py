"""Payloads of the national public service portal (Cổng DVC quốc gia), reached through the provincial LGSP.

As OpenCPS integrates it (``DVCQGIntegrationActionImpl.java``, DOMAIN.md): JSON over HTTPS.
A login (``POST {base}{auth_endpoint}``, header ``dstcode``) answers a ``session``; every
call is ``POST {base}{integration_endpoint}`` with ``{"session", "madonvi", "service", ...}``.
Dates are ``yyyyMMddHHmmss`` in Vietnam time; status codes (``TrangThaiHoSo``) are strings
``"1"`` … ``"10"``. ``error_code`` ``0`` and ``"00"`` both mean success.

The field names below are the portal's own (Vietnamese, PascalCase): a province's contract
that names a field differently changes this module and the adapter, nothing else. Where
the public sources are silent (online dossiers coming down, the error codes other than
success) the simulator in ``sandbox/portal.py`` defines the interface and this module
documents it; :data:`ERROR_CODES` is that table.

Models are lenient about fields they do not know (``extra="allow"``): the real portal
returns more than we read, and the record we send back on an update keeps what it had.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.privacy import PersonalStr

# Where the LGSP adapter serves the login and the integration calls, under its base URL (the usual
# paths; a destination whose LGSP serves them elsewhere names its own auth_path and integration_path).
AUTH_PATH = "/api/dvcqg/login"
INTEGRATION_PATH = "/api/dvcqg/service"

# The portal's services (the ``service`` field of an integration call).
LOOKUP = "TraCuuHoSo"
SYNC = "DongBoHoSoMC"
PROGRESS = "CapNhatTienDoHoSoMC"
ONLINE = "LayHoSoTrucTuyen"
CATALOGUE = "LayDanhSachTTHC"
SERVICES = (LOOKUP, SYNC, PROGRESS, ONLINE, CATALOGUE, "LayThuTuc", "LayDanhMucCoQuan")

# Answer codes (``error_code``). Success is 0 or "00"; the rest is the simulator's documented table.
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
    INVALID_DATA: "dữ liệu không hợp lệ (thiếu trường bắt buộc, sai định dạng, mã TTHC không có trong CSDL quốc gia)",
    NOT_FOUND: "không tìm thấy hồ sơ",
    INVALID_TRANSITION: "chuyển trạng thái không hợp lệ, hoặc tiến độ không khớp trạng thái hồ sơ",
    ALREADY_EXISTS: "hồ sơ đã tồn tại",
    UNIT_REFUSED: "đơn vị (madonvi) không được phép",
    UNKNOWN_SERVICE: "dịch vụ không tồn tại",
    BUSY: "hệ thống đang bận, thử lại sau",
    SYSTEM_ERROR: "lỗi hệ thống",
}

STATUS_CODES = tuple(str(n) for n in range(1, 11))
TERMINAL_STATUSES = frozenset({"3", "7", "10"})  # refused, withdrawn, returned

PortalDate = Annotated[str, Field(pattern=r"^\d{14}$", description="yyyyMMddHHmmss, Vietnam time")]
StatusCode = Literal["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]


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


class _Portal(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Attachment(_Portal):
    """A submitted file (``DanhSachTepDinhKem``)."""

    TenTep: str
    DuongDan: str | None = None
    MaBam: str | None = Field(None, description="SHA-256 hex")
    KichThuoc: int | None = None


class FeeItem(_Portal):
    """A fee line (``DanhSachLePhi``): amounts in đồng."""

    MaLePhi: str
    TenLePhi: str
    SoTien: int


class SupplementItem(_Portal):
    """A request for more documents (``DanhSachHoSoBoSung``)."""

    NoiDung: str
    ThanhPhan: list[str] = Field(default_factory=list)
    NgayYeuCau: PortalDate
    HanBoSung: PortalDate | None = None


class ResultDocument(_Portal):
    """A result document (``DanhSachGiayToKetQua``)."""

    TenGiayTo: str
    DuongDan: str | None = None
    MaBam: str | None = None


class DossierRecord(_Portal):
    """A dossier as ``DongBoHoSoMC`` takes it and ``TraCuuHoSo`` returns it."""

    MaHoSo: str = Field(min_length=1, max_length=80)
    MaTTHC: str = Field(min_length=1, max_length=60)
    TenTTHC: str = Field(min_length=1, max_length=500)
    MaLinhVuc: str | None = None
    ChuHoSo: PersonalStr = Field(min_length=1, max_length=200)
    LoaiDoiTuong: Literal["1", "2"]
    SoGiayToChuHoSo: PersonalStr | None = None
    SoDienThoai: PersonalStr | None = None
    Email: PersonalStr | None = None
    NgayTiepNhan: PortalDate
    NgayHenTra: PortalDate | None = None
    TrangThaiHoSo: StatusCode
    NgayTra: PortalDate | None = None
    HinhThuc: Literal["0", "1", "2"] = Field(description="0 at the desk, 1 online, 2 by post")
    DonViXuLy: str = Field(min_length=1, max_length=60)
    DanhSachTepDinhKem: list[Attachment] = Field(default_factory=list)
    DanhSachLePhi: list[FeeItem] = Field(default_factory=list)
    DanhSachHoSoBoSung: list[SupplementItem] = Field(default_factory=list)
    DanhSachGiayToKetQua: list[ResultDocument] = Field(default_factory=list)


class ProgressEntry(_Portal):
    """One entry of a dossier's processing history (``CapNhatTienDoHoSoMC``)."""

    MaHoSo: str = Field(min_length=1, max_length=80)
    NguoiXuLy: PersonalStr = Field(min_length=1, max_length=200)
    ChucDanh: str | None = None
    ThoiDiemXuLy: PortalDate
    PhongBanXuLy: str = Field(min_length=1, max_length=300)
    NoiDungXuLy: str = Field(min_length=1, max_length=2000)
    TrangThai: StatusCode
    NgayBatDau: PortalDate | None = None
    NgayKetThucTheoQuyDinh: PortalDate | None = None

    def identity(self) -> tuple[str, str, str, str]:
        """What makes two entries the same hand-over: used to push each entry once."""
        return (self.ThoiDiemXuLy, self.TrangThai, self.PhongBanXuLy, self.NoiDungXuLy)


class OnlineDossier(_Portal):
    """A dossier a citizen submitted on the national portal, as ``LayHoSoTrucTuyen`` returns it
    and the portal's push callback carries it (interface defined by the simulator)."""

    ThuTu: int = Field(ge=1, description="the portal's increasing position: the pull cursor")
    MaHoSo: str = Field(min_length=1, max_length=80)
    MaDonVi: str = Field(min_length=1, max_length=60, description="the receiving unit's code")
    MaTTHC: str = Field(min_length=1, max_length=60)
    TenTTHC: str | None = None
    NgayNopHoSo: PortalDate
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


class PortalAnswer(_Portal):
    """Every answer: ``error_code`` (0 or "00" is success), a message, and what the call returns."""

    error_code: str = "0"
    message: str | None = None
    session: str | None = None
    data: Any = None

    @field_validator("error_code", mode="before")
    @classmethod
    def _code(cls, value: Any) -> str:
        return normalise_code(value)

    @property
    def ok(self) -> bool:
        return self.error_code in SUCCESS_CODES


class OnlineCallback(BaseModel):
    """What the portal pushes to ``POST /v1/callbacks/portal``: online dossiers of one unit."""

    model_config = ConfigDict(extra="ignore")

    madonvi: str = Field(min_length=1, max_length=60)
    data: list[OnlineDossier] = Field(min_length=1, max_length=500)
