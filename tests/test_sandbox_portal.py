"""The national portal simulator, served by a real uvicorn on loopback and spoken to over HTTP."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import httpx
import pytest

from sandbox.portal import create_app, default_catalogue, online_dossiers
from sandbox.workload import PROCEDURES
from schemas.portal import AUTH_PATH, INTEGRATION_PATH, OnlineCallback, OnlineDossier, ProgressEntry
from schemas.vietnam import VN_TZ
from tests.servers import SignedPushReceiver, run_asgi

USER, PASSWORD, DSTCODE = "lgsp-halong", "mat-khau-thu-nghiem", "DVCQG"
UNIT = "000.00.12.H22"
OTHER_UNIT = "000.00.13.H22"
LOGIN, SERVICE = AUTH_PATH, INTEGRATION_PATH
PUSH_SECRET = "whsec_" + base64.b64encode(b"portal-push-sandbox-test-secret!").decode()
APPLICANT, PHONE = "Nguyễn Thị Hương Giang", "0912 345 678"
BIRTH = PROCEDURES[2]  # Đăng ký khai sinh


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(create_app(username=USER, password=PASSWORD, dstcode=DSTCODE)) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


def login(client: httpx.Client, **body: Any) -> httpx.Response:
    headers = {"dstcode": body.pop("dstcode", DSTCODE)}
    return client.post(LOGIN, json={"username": USER, "password": PASSWORD, **body}, headers=headers)


def session(client: httpx.Client) -> str:
    answer = login(client).json()
    assert answer["error_code"] in (0, "00")
    return str(answer["session"])


def call(client: httpx.Client, sid: str, service: str, unit: str = UNIT, **fields: Any) -> dict[str, Any]:
    body = {"session": sid, "madonvi": unit, "service": service, **fields}
    response = client.post(SERVICE, json=body, headers={"dstcode": DSTCODE})
    assert response.status_code == 200
    return dict(response.json())


def record(code: str, status: str = "2", **overrides: Any) -> dict[str, Any]:
    base = {
        "MaHoSo": code, "MaTTHC": BIRTH.code, "TenTTHC": BIRTH.name, "MaLinhVuc": "G09-TP",
        "ChuHoSo": APPLICANT, "LoaiDoiTuong": "1", "SoGiayToChuHoSo": "022190012345", "SoDienThoai": PHONE,
        "NgayTiepNhan": "20240315083000", "NgayHenTra": "20240318083000", "TrangThaiHoSo": status,
        "HinhThuc": "0", "DonViXuLy": UNIT,
        "DanhSachTepDinhKem": [{"TenTep": "Tờ khai đăng ký khai sinh.pdf", "MaBam": "ab" * 32, "KichThuoc": 81234}],
    }
    return {**base, **overrides}


def entry(code: str, status: str = "2", at: str = "20240315090000", **overrides: Any) -> dict[str, Any]:
    base = {
        "MaHoSo": code, "NguoiXuLy": "Trần Văn Hùng", "ChucDanh": "Chuyên viên", "ThoiDiemXuLy": at,
        "PhongBanXuLy": "Phòng Tư pháp", "NoiDungXuLy": "Tiếp nhận hồ sơ từ Bộ phận một cửa", "TrangThai": status,
    }
    return {**base, **overrides}


def sync(client: httpx.Client, sid: str, records: list[dict[str, Any]], updating: bool = False) -> dict[str, Any]:
    return call(client, sid, "DongBoHoSoMC", isUpdating=str(updating), data=records)


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_admin/stats").json())


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_login_answers_both_success_codes(client: httpx.Client) -> None:
    # when
    answers = [login(client).json() for _ in range(2)]
    # then
    assert {type(a["error_code"]) for a in answers} == {int, str}
    assert {a["error_code"] for a in answers} == {0, "00"}
    assert answers[0]["session"] != answers[1]["session"]
    assert stats(client)["logins"] == {"ok": 2, "refused": 0}


@pytest.mark.parametrize(
    "body", [{"password": "sai"}, {"username": "khac"}, {"dstcode": "KHAC"}, {"dstcode": ""}, {"password": None}]
)
def test_login_refusals_answer_02(client: httpx.Client, body: dict[str, Any]) -> None:
    response = login(client, **body)
    assert response.status_code == 200
    assert response.json()["error_code"] == "02"
    assert "session" not in response.json()
    assert stats(client)["logins"] == {"ok": 0, "refused": 1}


def test_integration_checks_dstcode_body_session_unit_and_service(client: httpx.Client) -> None:
    sid = session(client)

    def raw(body: Any, dstcode: str | None = DSTCODE) -> str:
        headers = {"dstcode": dstcode} if dstcode is not None else {}
        return str(client.post(SERVICE, content=json.dumps(body), headers=headers).json()["error_code"])

    lookup = {"session": sid, "madonvi": UNIT, "service": "TraCuuHoSo", "MaHoSo": "x"}
    assert raw(lookup) == "0"
    assert raw(lookup, dstcode=None) == "02"
    assert raw(lookup, dstcode="KHAC") == "02"
    assert raw([lookup]) == "03"
    assert client.post(SERVICE, content=b"{not json", headers={"dstcode": DSTCODE}).json()["error_code"] == "03"
    assert raw({**lookup, "session": "khong-ton-tai"}) == "01"
    assert raw({k: v for k, v in lookup.items() if k != "session"}) == "01"
    assert raw({k: v for k, v in lookup.items() if k != "madonvi"}) == "09"
    assert raw({**lookup, "service": "XoaHoSo"}) == "10"
    counters = stats(client)
    assert counters["calls"] == {"TraCuuHoSo": 1}
    answers = counters["answers"]
    assert answers.pop("0", 0) + answers.pop("00", 0) == 2  # the login and the lookup
    assert answers == {"02": 2, "03": 2, "01": 2, "09": 1, "10": 1}
    assert counters["sessions_expired"] == 0


def test_session_expires_after_its_ttl(client: httpx.Client) -> None:
    # given sessions issued while the TTL is short
    client.post("/_admin/faults", json={"session_ttl_seconds": 0.2}).raise_for_status()
    sid = session(client)
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == "0"
    # when
    time.sleep(0.3)
    # then
    answer = call(client, sid, "LayDanhSachTTHC")
    assert answer == {"error_code": "01", "message": "Phiên làm việc hết hạn hoặc không hợp lệ"}
    assert stats(client)["sessions_expired"] == 1
    # and sessions issued after the faults are cleared have the configured TTL again
    client.delete("/_admin/faults")
    sid = session(client)
    time.sleep(0.3)
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == "0"


def test_lookup_not_found_then_found_with_history(client: httpx.Client) -> None:
    sid = session(client)
    code = f"{UNIT}-240315-0001"
    assert call(client, sid, "TraCuuHoSo", MaHoSo=code) == {"error_code": "0", "message": "Thành công", "data": []}
    # given
    assert sync(client, sid, [record(code)])["error_code"] == "0"
    first, second = entry(code), entry(code, at="20240315100000", NoiDungXuLy="Thẩm định hồ sơ")
    assert call(client, sid, "CapNhatTienDoHoSoMC", data=[first, second])["error_code"] == "0"
    # when
    answer = call(client, sid, "TraCuuHoSo", MaHoSo=code)
    # then
    assert answer["error_code"] == "0"
    [found] = answer["data"]
    assert {k: v for k, v in found.items() if k != "QuaTrinhXuLy"} == record(code)
    assert found["QuaTrinhXuLy"] == [first, second]
    assert client.get(f"/_admin/dossiers/{code}").json() == found
    assert client.get("/_admin/dossiers").json() == {code: found}


def test_create_and_update_semantics(client: httpx.Client) -> None:
    sid = session(client)
    code = f"{UNIT}-240315-0002"
    # a create answers per record
    created = sync(client, sid, [record(code)])
    assert created == {"error_code": "0", "message": "Thành công", "data": [{"MaHoSo": code, "KetQua": "Thành công"}]}
    call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(code)])
    # creating it again is "06", updating an unknown one "04"
    assert sync(client, sid, [record(code)])["error_code"] == "06"
    unknown = sync(client, sid, [record(f"{UNIT}-240315-0099", "4")], updating=True)
    assert unknown["error_code"] == "04"
    # an update replaces the record, keeps the history; DonViXuLy need not be madonvi
    new = record(code, "4", NgayHenTra="20240320083000", DonViXuLy="000.00.16.H22")
    del new["SoDienThoai"]
    assert sync(client, sid, [new], updating=True)["error_code"] == "0"
    stored = client.get(f"/_admin/dossiers/{code}").json()
    assert {k: v for k, v in stored.items() if k != "QuaTrinhXuLy"} == new
    assert stored["QuaTrinhXuLy"] == [entry(code)]
    assert client.get("/_admin/dossiers/nope").status_code == 404


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"TenTTHC": None}, "Thiếu trường bắt buộc: TenTTHC"),
        ({"TenTTHC": ""}, "Thiếu trường bắt buộc: TenTTHC"),
        ({"NgayHenTra": "2024-03-18 08:30"}, "Sai định dạng NgayHenTra (yyyyMMddHHmmss)"),
        ({"NgayHenTra": "20241318083000"}, "Sai định dạng NgayHenTra (yyyyMMddHHmmss)"),
        ({"TrangThaiHoSo": "11"}, "TrangThaiHoSo"),
        ({"HinhThuc": "online"}, "HinhThuc"),
        ({"LoaiDoiTuong": 1}, "LoaiDoiTuong"),
    ],
)
def test_invalid_record_is_03_naming_the_field_not_the_personal_data(
    client: httpx.Client, change: dict[str, Any], expected: str
) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(f"{UNIT}-240315-0003", **change)])
    assert answer["error_code"] == "03"
    assert expected in answer["message"]
    for personal in (APPLICANT, PHONE, "022190012345"):
        assert personal not in json.dumps(answer, ensure_ascii=False)
    assert client.get("/_admin/dossiers").json() == {}


def test_missing_required_field_is_named(client: httpx.Client) -> None:
    sid = session(client)
    incomplete = record(f"{UNIT}-240315-0004")
    del incomplete["TenTTHC"]
    answer = sync(client, sid, [incomplete])
    assert (answer["error_code"], answer["message"]) == ("03", "Thiếu trường bắt buộc: TenTTHC (bản ghi thứ 1)")
    assert APPLICANT not in answer["message"] and PHONE not in answer["message"]


def test_procedure_must_be_in_the_national_catalogue(client: httpx.Client) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(f"{UNIT}-240315-0005", MaTTHC="1.999999.000.00.00.H22")])
    assert answer["error_code"] == "03"
    assert answer["message"] == "Mã TTHC 1.999999.000.00.00.H22 không có trong CSDL TTHC quốc gia"


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("10", "4", False), ("9", "4", False), ("3", "2", False), ("7", "4", False), ("4", "1", False),
        ("4", "10", False), ("2", "4", True), ("4", "9", True), ("9", "10", True), ("4", "4", True), ("2", "3", True),
    ],
)
def test_status_transitions(client: httpx.Client, current: str, new: str, allowed: bool) -> None:
    # given
    sid = session(client)
    code = f"{UNIT}-240315-0006"
    assert sync(client, sid, [record(code, current)])["error_code"] == "0"
    # when
    answer = sync(client, sid, [record(code, new)], updating=True)
    # then
    stored = client.get(f"/_admin/dossiers/{code}").json()["TrangThaiHoSo"]
    if allowed:
        assert answer["error_code"] == "0"
        assert stored == new
    else:
        assert answer["error_code"] == "05"
        assert f"từ {current} sang {new}" in answer["message"]
        assert stored == current


def test_progress_unknown_dossier_mismatch_and_duplicates(client: httpx.Client) -> None:
    sid = session(client)
    code = f"{UNIT}-240315-0007"
    unknown = call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(f"{UNIT}-240315-0098")])
    assert (unknown["error_code"], unknown["message"]) == ("04", f"Không tìm thấy hồ sơ {UNIT}-240315-0098")
    sync(client, sid, [record(code, "4")])
    mismatch = call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(code, "2")])
    assert mismatch["error_code"] == "05"
    assert mismatch["message"].startswith("Tiến độ không khớp trạng thái hồ sơ")
    invalid = call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(code, "4", ThoiDiemXuLy="hôm nay")])
    assert (invalid["error_code"], "ThoiDiemXuLy" in invalid["message"]) == ("03", True)
    # when the same entry is pushed twice
    for _ in range(2):
        assert call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(code, "4")])["error_code"] == "0"
    # then the portal appends both and counts the duplicate
    history = client.get(f"/_admin/dossiers/{code}").json()["QuaTrinhXuLy"]
    assert [ProgressEntry.model_validate(e).identity() for e in history] == [
        ProgressEntry.model_validate(entry(code, "4")).identity()
    ] * 2
    assert stats(client)["duplicate_progress"] == 1


def test_calls_are_all_or_nothing(client: httpx.Client) -> None:
    sid = session(client)
    good, bad = f"{UNIT}-240315-0010", f"{UNIT}-240315-0011"
    broken = record(bad)
    del broken["ChuHoSo"]
    answer = sync(client, sid, [record(good), broken])
    assert answer["error_code"] == "03"
    assert "bản ghi thứ 2" in answer["message"]
    assert client.get("/_admin/dossiers").json() == {}
    # a code twice in one create is refused as it would be in two calls
    assert sync(client, sid, [record(good), record(good)])["error_code"] == "06"
    assert sync(client, sid, [record(good)])["error_code"] == "0"
    # progress: one good entry and one for an unknown dossier store nothing
    assert call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(good), entry(bad)])["error_code"] == "04"
    assert client.get(f"/_admin/dossiers/{good}").json()["QuaTrinhXuLy"] == []
    # an update batch with one forbidden change leaves the others as they were
    sync(client, sid, [record(bad, "9")])
    assert sync(client, sid, [record(good, "4"), record(bad, "4")], updating=True)["error_code"] == "05"
    assert client.get(f"/_admin/dossiers/{good}").json()["TrangThaiHoSo"] == "2"


def add_online(client: httpx.Client, dossiers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = client.post("/_admin/online", json={"dossiers": dossiers})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_online_dossiers_are_paged_by_cursor_per_unit(client: httpx.Client) -> None:
    # given dossiers of two units, interleaved
    day = date(2024, 3, 15)
    mine, theirs = online_dossiers(5, day=day, seed=1), online_dossiers(2, unit_code=OTHER_UNIT, day=day, seed=2)
    stored = add_online(client, [mine[0], theirs[0], *mine[1:3], theirs[1], *mine[3:]])
    numbers = [d["ThuTu"] for d in stored]
    assert numbers == sorted(numbers) and len(set(numbers)) == 7
    sid = session(client)
    # when paging two at a time
    pages, cursor = [], 0
    while True:
        page = call(client, sid, "LayHoSoTrucTuyen", TuThuTu=cursor, SoLuong=2)
        assert page["error_code"] == "0"
        pages.append([d["MaHoSo"] for d in page["data"]])
        if not page["ConTiep"]:
            break
        cursor = page["data"][-1]["ThuTu"]
    # then
    assert pages == [[d["MaHoSo"] for d in mine[i:i + 2]] for i in (0, 2, 4)]
    other = call(client, sid, "LayHoSoTrucTuyen", unit=OTHER_UNIT)
    assert ([d["MaHoSo"] for d in other["data"]], other["ConTiep"]) == ([d["MaHoSo"] for d in theirs], False)
    everything = call(client, sid, "LayHoSoTrucTuyen")["data"]
    assert everything == [d for d in stored if d["MaDonVi"] == UNIT]
    assert call(client, sid, "LayHoSoTrucTuyen", TuThuTu=numbers[-1])["data"] == []
    for wrong in ({"SoLuong": 0}, {"SoLuong": 101}, {"TuThuTu": -1}, {"TuThuTu": "đầu"}):
        assert call(client, sid, "LayHoSoTrucTuyen", **wrong)["error_code"] == "03"
    # ThuTu keeps increasing across a reset
    client.post("/_admin/reset")
    assert add_online(client, mine[:1])[0]["ThuTu"] > numbers[-1]
    assert stats(client)["online"]["added"] == 1


def test_invalid_online_dossier_is_refused_without_echo(client: httpx.Client) -> None:
    dossier = online_dossiers(1, day=date(2024, 3, 15))[0]
    response = client.post("/_admin/online", json={"dossiers": [{**dossier, "NgayNopHoSo": "15/03/2024"}]})
    assert response.status_code == 422
    assert "NgayNopHoSo" in response.text and dossier["ChuHoSo"] not in response.text
    assert client.post("/_admin/online", json={"dossiers": "x"}).status_code == 422


class Receiver(SignedPushReceiver):
    """The relay's callback for the portal's pushes."""

    def __init__(self, status: int = 200) -> None:
        super().__init__("/v1/callbacks/portal", PUSH_SECRET, status)


def test_push_is_signed_and_grouped_by_unit(client: httpx.Client) -> None:
    receiver = Receiver()
    with run_asgi(receiver.app) as url:
        # given
        push = client.post("/_admin/push", json={"url": f"{url}/v1/callbacks/portal", "secret": PUSH_SECRET})
        assert push.status_code == 200 and PUSH_SECRET not in push.text
        # when
        day = date(2024, 3, 15)
        stored = add_online(client, online_dossiers(3, day=day) + online_dossiers(1, unit_code=OTHER_UNIT, day=day))
        # then
        wait_for(lambda: stats(client)["online"]["pushed"] == 2)
    assert receiver.rejected == 0
    by_unit = {body["madonvi"]: body for _, body, _ in receiver.received}
    assert by_unit[UNIT]["data"] == stored[:3]
    assert by_unit[OTHER_UNIT]["data"] == stored[3:]
    for msg_id, body, content_type in receiver.received:
        assert msg_id.startswith("portal-push-")
        assert content_type == "application/json"
        OnlineCallback.model_validate(body)
    assert stats(client)["online"] == {"added": 4, "pushed": 2, "push_failed": 0}


def test_push_failures_are_counted(client: httpx.Client) -> None:
    # given a receiver that refuses, then a port nobody listens on
    receiver = Receiver(status=500)
    with run_asgi(receiver.app) as url:
        client.post("/_admin/push", json={"url": f"{url}/v1/callbacks/portal", "secret": PUSH_SECRET})
        add_online(client, online_dossiers(1, day=date(2024, 3, 15)))
        wait_for(lambda: stats(client)["online"]["push_failed"] == 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    client.post("/_admin/push", json={"url": f"http://127.0.0.1:{closed_port}/cb", "secret": PUSH_SECRET})
    add_online(client, online_dossiers(1, day=date(2024, 3, 15), start=9100))
    wait_for(lambda: stats(client)["online"]["push_failed"] == 2)
    assert stats(client)["online"]["pushed"] == 0
    # and a push configuration must be an http URL with a whsec secret
    assert client.post("/_admin/push", json={"url": "ftp://x", "secret": PUSH_SECRET}).status_code == 422
    bad_secret = client.post("/_admin/push", json={"url": "http://x", "secret": "whsec_not base64!"})
    assert bad_secret.status_code == 422 and "not base64" not in bad_secret.text
    client.delete("/_admin/push")
    add_online(client, online_dossiers(1, day=date(2024, 3, 15), start=9200))
    assert stats(client)["online"] == {"added": 3, "pushed": 0, "push_failed": 2}


def test_error_rate_answers_503_before_anything(client: httpx.Client) -> None:
    sid = session(client)
    client.post("/_admin/faults", json={"error_rate": 1})
    code = f"{UNIT}-240315-0020"
    assert login(client).status_code == 503
    response = client.post(
        SERVICE, json={"session": sid, "madonvi": UNIT, "service": "DongBoHoSoMC", "isUpdating": "False",
                       "data": [record(code)]}, headers={"dstcode": DSTCODE},
    )
    assert response.status_code == 503
    client.delete("/_admin/faults")
    assert client.get("/_admin/dossiers").json() == {}
    counters = stats(client)
    assert counters["faults"] == {"error": 2, "busy": 0, "timeout": 0, "expire": 0}
    assert counters["calls"] == {} and counters["logins"]["ok"] == 1


def test_busy_rate_answers_96_before_anything(client: httpx.Client) -> None:
    sid = session(client)
    client.post("/_admin/faults", json={"busy_rate": 1})
    code = f"{UNIT}-240315-0021"
    assert sync(client, sid, [record(code)]) == {"error_code": "96", "message": "Hệ thống đang bận"}
    assert login(client).json()["error_code"] in (0, "00")
    client.delete("/_admin/faults")
    assert client.get("/_admin/dossiers").json() == {}
    assert stats(client)["faults"]["busy"] == 1


def test_timeout_rate_applies_the_call_then_answers_late(client: httpx.Client) -> None:
    # given
    sid = session(client)
    client.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 1.0})
    code = f"{UNIT}-240315-0022"
    body = {"session": sid, "madonvi": UNIT, "service": "DongBoHoSoMC", "isUpdating": "False", "data": [record(code)]}
    # when the client gives up before the answer
    with pytest.raises(httpx.ReadTimeout):
        client.post(SERVICE, json=body, headers={"dstcode": DSTCODE}, timeout=0.3)
    # then the dossier was stored all the same
    assert code in client.get("/_admin/dossiers").json()
    # and a patient client's retry gets its answer after the hang
    started = time.perf_counter()
    retry = client.post(SERVICE, json=body, headers={"dstcode": DSTCODE}, timeout=5)
    assert time.perf_counter() - started >= 0.9
    assert retry.json()["error_code"] == "06"
    assert stats(client)["faults"]["timeout"] == 2


def test_expire_rate_drops_the_session(client: httpx.Client) -> None:
    sid = session(client)
    client.post("/_admin/faults", json={"expire_rate": 1})
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == "01"
    client.delete("/_admin/faults")
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == "01"
    assert call(client, session(client), "LayDanhSachTTHC")["error_code"] == "0"
    counters = stats(client)
    assert counters["faults"]["expire"] == 1 and counters["sessions_expired"] == 0


def test_faults_are_validated_and_shown(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"error_rate": 2}).status_code == 422
    assert client.post("/_admin/faults", json={"reset_rate": 1}).status_code == 422
    client.post("/_admin/faults", json={"busy_rate": 0.5, "seed": 4})
    assert client.get("/_admin/faults").json()["busy_rate"] == 0.5
    client.post("/_admin/reset")
    assert client.get("/_admin/faults").json() is None


def test_catalogue_services(client: httpx.Client) -> None:
    sid = session(client)
    procedures = call(client, sid, "LayDanhSachTTHC")
    assert procedures["error_code"] == "0"
    assert {p["MaTTHC"] for p in procedures["data"]} == {p.code for p in PROCEDURES}
    assert {"MaTTHC": BIRTH.code, "TenTTHC": BIRTH.name, "MaLinhVuc": "G09-TP"} in procedures["data"]
    details = call(client, sid, "LayThuTuc", MaTTHC=BIRTH.code)
    assert [d["MaTTHC"] for d in details["data"]] == [BIRTH.code]
    agencies = call(client, sid, "LayDanhMucCoQuan")
    assert agencies["error_code"] == "0" and UNIT in {a["MaCoQuan"] for a in agencies["data"]}


def test_custom_catalogue_paths_and_dstcode() -> None:
    app = create_app(
        username=USER, password=PASSWORD, dstcode="QNI", catalogue={"1.000001": ("Thủ tục thử", "G09-TH")},
        auth_path="/lgsp/auth", integration_path="/lgsp/dvcqg",
    )
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        sid = c.post("/lgsp/auth", json={"username": USER, "password": PASSWORD}, headers={"dstcode": "QNI"})
        body = {"session": sid.json()["session"], "madonvi": UNIT, "service": "LayDanhSachTTHC"}
        answer = c.post("/lgsp/dvcqg", json=body, headers={"dstcode": "QNI"}).json()
    assert answer["data"] == [{"MaTTHC": "1.000001", "TenTTHC": "Thủ tục thử", "MaLinhVuc": "G09-TH"}]


def test_online_dossiers_are_realistic_and_valid() -> None:
    day = date(2024, 3, 15)
    dossiers = online_dossiers(200, day=day, seed=5)
    assert dossiers == online_dossiers(200, day=day, seed=5)
    assert dossiers != online_dossiers(200, day=day, seed=6)
    catalogue = default_catalogue()
    for thu_tu, dossier in enumerate(dossiers, start=1):
        model = OnlineDossier.model_validate({**dossier, "ThuTu": thu_tu})
        assert re.fullmatch(r"^[A-Za-z0-9.]{3,40}-\d{6}-\d{1,7}$", model.MaHoSo)
        assert catalogue[model.MaTTHC][0] == model.TenTTHC
        submitted = datetime.strptime(model.NgayNopHoSo, "%Y%m%d%H%M%S").replace(tzinfo=VN_TZ)
        assert submitted.date() == day and "0730" <= f"{submitted:%H%M}" < "1700"
        assert not ("1130" <= f"{submitted:%H%M}" < "1330")
        assert 1 <= len(model.DanhSachTepDinhKem) <= 4
        assert all(re.fullmatch(r"[0-9a-f]{64}", a.MaBam or "") for a in model.DanhSachTepDinhKem)
    assert dossiers[0]["MaHoSo"] == f"{UNIT}-240315-9001"
    assert {d["LoaiDoiTuong"] for d in dossiers} == {"1", "2"}
    assert any("SoDienThoai" in d for d in dossiers) and any("Email" not in d for d in dossiers)
    assert {d["DongYNhanZalo"] for d in dossiers} == {True, False}
