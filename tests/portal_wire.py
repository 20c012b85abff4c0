"""What the portal's tests share: the simulator's account, raw calls over HTTP, and records and entries written
out as the contract spells them (so a test reads as the wire looks), plus today's dialect for the refusals."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.workload import PROCEDURES
from schemas.portal import AUTH_PATH, INTEGRATION_PATH

USER, PASSWORD, DSTCODE = "lgsp-halong", "mat-khau-thu-nghiem", "DVCQG"
UNIT = "000.21.00.H49"
AGENCY = "UBND phường Hồng Gai"
LOGIN, SERVICE = AUTH_PATH, INTEGRATION_PATH
APPLICANT, PHONE = "Nguyễn Thị Hương Giang", "0912 345 678"
BIRTH = PROCEDURES[2]  # Đăng ký khai sinh


def login(client: httpx.Client, **body: Any) -> httpx.Response:
    headers = {"dstcode": body.pop("dstcode")} if "dstcode" in body else {"dstcode": DSTCODE}
    if headers["dstcode"] is None:
        headers = {}
    return client.post(LOGIN, json={"username": USER, "password": PASSWORD, **body}, headers=headers)


def session(client: httpx.Client) -> str:
    answer = login(client).json()
    assert answer["error_code"] == 0, answer
    return str(answer["session"])


def raw(client: httpx.Client, body: Any, dstcode: str | None = DSTCODE) -> dict[str, Any]:
    """One integration call of any body; the answer (always HTTP 200 for a business answer)."""
    headers = {"dstcode": dstcode} if dstcode is not None else {}
    response = client.post(SERVICE, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def call(client: httpx.Client, sid: str, service: str, unit: str = UNIT, **params: Any) -> dict[str, Any]:
    return raw(client, {"session": sid, "madonvi": unit, "service": service, **params})


def sync(client: httpx.Client, sid: str, records: list[dict[str, Any]], updating: bool = False) -> dict[str, Any]:
    return call(client, sid, "DongBoHoSoMC", isUpdating=str(updating), data=records)


def progress(client: httpx.Client, sid: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return call(client, sid, "CapNhatTienDoHoSoMC", data=entries)


def record(code: str, status: str = "2", **overrides: Any) -> dict[str, Any]:
    """A dossier record with every field OpenCPS sends (DVCQG L163-322)."""
    base: dict[str, Any] = {
        "MaHoSo": code, "MaTTHC": BIRTH.code, "TenTTHC": BIRTH.name, "MaLinhVuc": "G09-TP",
        "TenLinhVuc": "Hộ tịch, chứng thực", "ChuHoSo": APPLICANT, "LoaiDoiTuong": "1", "MaDoiTuong": "",
        "ThongTinKhac": "", "Email": "", "Fax": "", "SoDienThoai": PHONE, "TrichYeuHoSo": "",
        "NgayTiepNhan": "20240315083000", "NgayHenTra": "20240318083000", "TrangThaiHoSo": status, "NgayTra": "",
        "ThongTinTra": "", "HinhThuc": "0", "NgayKetThucXuLy": "", "DonViXuLy": AGENCY, "GhiChu": "",
        "DanhSachLePhi": [{"TenPhiLePhi": "Lệ phí đăng ký khai sinh", "MaPhiLePhi": "LP01", "HinhThucThu": "",
                           "Gia": "8000", "LoaiPhiLePhi": ""}],
        "DanhSachTepDinhKemKhac": [],
        "DanhSachHoSoBoSung": [],
        "DanhSachGiayToKetQua": [],
        "TaiLieuNop": [{"TenTepDinhKem": "Tờ khai đăng ký khai sinh.pdf", "MaThanhPhanHoSo": "",
                        "TepDinhKemId": f"{code}-TL1", "DuongDanTaiTepTin": "", "IsDeleted": "False"}],
    }
    return {**base, **overrides}


def entry(code: str, status: str = "2", at: str = "20240315090000", **overrides: Any) -> dict[str, Any]:
    """A progress entry with the nine fields OpenCPS sends (DVCQG L507-523)."""
    base = {
        "MaHoSo": code, "NguoiXuLy": "Trần Văn Hùng", "ChucDanh": "Chuyên viên", "ThoiDiemXuLy": at,
        "PhongBanXuLy": "Phòng Tư pháp", "NoiDungXuLy": "Tiếp nhận hồ sơ từ Bộ phận một cửa", "TrangThai": status,
        "NgayBatDau": at, "NgayKetThucTheoQuyDinh": "",
    }
    return {**base, **overrides}


def todays_record(code: str, status: str = "2") -> dict[str, Any]:
    """A record as the connector sent it before it spoke the contract: its own field names and types."""
    return {
        "MaHoSo": code, "MaTTHC": BIRTH.code, "TenTTHC": BIRTH.name, "MaLinhVuc": "G09-TP", "ChuHoSo": APPLICANT,
        "LoaiDoiTuong": "1", "SoGiayToChuHoSo": "022190012345", "SoDienThoai": PHONE,
        "NgayTiepNhan": "20240315083000", "NgayHenTra": "20240318083000", "TrangThaiHoSo": status, "HinhThuc": "2",
        "DonViXuLy": UNIT,
        "DanhSachTepDinhKem": [{"TenTep": "Tờ khai đăng ký khai sinh.pdf", "MaBam": "ab" * 32, "KichThuoc": 81234}],
        "DanhSachLePhi": [{"MaLePhi": "LP01", "TenLePhi": "Lệ phí", "SoTien": 8000}],
    }


def todays_entry(code: str, status: str = "2") -> dict[str, Any]:
    """A progress entry as the connector sent it before: the fields it had no value for left out."""
    return {"MaHoSo": code, "NguoiXuLy": "Cán bộ một cửa", "ThoiDiemXuLy": "20240315090000",
            "PhongBanXuLy": "Bộ phận tiếp nhận và trả kết quả", "NoiDungXuLy": "Tiếp nhận hồ sơ", "TrangThai": status,
            "NgayBatDau": "20240315090000"}
