"""The national portal simulator, served by a real uvicorn on loopback and spoken to over HTTP.

The rules of the contract have a test each in ``tests/test_portal_contract.py``; this file covers the rest of
what the simulator does: its counters, sessions, status rules, all-or-nothing calls, catalogues, online dossiers
and pushes, faults and admin endpoints.
"""

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
from sandbox.workload import CENTRE_PROCEDURES, PROCEDURES
from schemas.portal import OnlineCallback, OnlineDossier
from schemas.vietnam import VN_TZ
from tests.portal_wire import (
    APPLICANT,
    BIRTH,
    DSTCODE,
    LOGIN,
    PASSWORD,
    PHONE,
    SERVICE,
    UNIT,
    USER,
    call,
    entry,
    login,
    progress,
    raw,
    record,
    session,
    sync,
)
from tests.servers import SignedPushReceiver, run_asgi

OTHER_UNIT = "000.00.13.H49"
PUSH_SECRET = "whsec_" + base64.b64encode(b"portal-push-sandbox-test-secret!").decode()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(create_app(username=USER, password=PASSWORD, dstcode=DSTCODE)) as url:
        yield url


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_admin/stats").json())


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_login_answers_error_code_0_and_a_new_session_each_time(client: httpx.Client) -> None:
    # when
    answers = [login(client).json() for _ in range(2)]
    # then
    assert [a["error_code"] for a in answers] == [0, 0]
    assert answers[0]["session"] != answers[1]["session"]
    assert stats(client)["logins"] == {"ok": 2, "refused": 0}


@pytest.mark.parametrize("body", [{"password": "sai"}, {"username": "khac"}, {"dstcode": "KHAC"}, {"dstcode": ""}])
def test_login_refusals_answer_2(client: httpx.Client, body: dict[str, Any]) -> None:
    response = login(client, **body)
    assert response.status_code == 200
    assert response.json()["error_code"] == 2
    assert "session" not in response.json()
    assert stats(client)["logins"] == {"ok": 0, "refused": 1}


def test_a_login_that_is_not_the_contracts_shape_is_invalid_data(client: httpx.Client) -> None:
    assert login(client, password=None).json()["error_code"] == 3
    assert client.post(LOGIN, json=[USER, PASSWORD], headers={"dstcode": DSTCODE}).json()["error_code"] == 3
    assert stats(client)["logins"] == {"ok": 0, "refused": 0}


def test_integration_checks_dstcode_body_session_unit_service_then_params(client: httpx.Client) -> None:
    sid = session(client)
    lookup = {"session": sid, "madonvi": UNIT, "service": "TraCuuHoSo", "mahoso": "x"}
    assert raw(client, lookup)["error_code"] == 0
    assert raw(client, lookup, dstcode=None)["error_code"] == 2
    assert raw(client, lookup, dstcode="KHAC")["error_code"] == 2
    assert raw(client, [lookup])["error_code"] == 3
    assert client.post(SERVICE, content=b"{not json", headers={"dstcode": DSTCODE}).json()["error_code"] == 3
    assert raw(client, {**lookup, "session": "khong-ton-tai"})["error_code"] == 1
    assert raw(client, {k: v for k, v in lookup.items() if k != "session"})["error_code"] == 1
    assert raw(client, {k: v for k, v in lookup.items() if k != "madonvi"})["error_code"] == 9
    assert raw(client, {**lookup, "service": "XoaHoSo"})["error_code"] == 10
    assert raw(client, {**lookup, "mahoso": 42})["error_code"] == 3
    counters = stats(client)
    assert counters["calls"] == {"TraCuuHoSo": 2}  # a call is counted once it names a service
    assert counters["answers"] == {"0": 2, "02": 2, "03": 3, "01": 2, "09": 1, "10": 1}  # the login and the lookup
    assert counters["sessions_expired"] == 0


def test_session_expires_after_its_ttl(client: httpx.Client) -> None:
    # given sessions issued while the TTL is short
    client.post("/_admin/faults", json={"session_ttl_seconds": 0.2}).raise_for_status()
    sid = session(client)
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == 0
    # when
    time.sleep(0.3)
    # then
    answer = call(client, sid, "LayDanhSachTTHC")
    assert answer == {"error_code": 1, "message": "Phiên làm việc hết hạn hoặc không hợp lệ"}
    assert stats(client)["sessions_expired"] == 1
    # and sessions issued after the faults are cleared have the configured TTL again
    client.delete("/_admin/faults")
    sid = session(client)
    time.sleep(0.3)
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == 0


def test_lookup_not_found_then_found_and_the_admin_view_keeps_the_entries_in_order(client: httpx.Client) -> None:
    sid = session(client)
    code = f"{UNIT}-240315-0001"
    assert call(client, sid, "TraCuuHoSo", mahoso=code) == {"error_code": 0, "message": "Thành công", "result": []}
    # given
    assert sync(client, sid, [record(code)])["error_code"] == 0
    first, second = entry(code), entry(code, at="20240315100000", NoiDungXuLy="Thẩm định hồ sơ")
    assert progress(client, sid, [first, second])["error_code"] == 0
    # when
    answer = call(client, sid, "TraCuuHoSo", mahoso=code)
    # then the portal answers the record it holds, without a history
    assert answer["error_code"] == 0
    assert answer["result"] == [record(code)]
    # and its admin view shows the entries it took, in arrival order
    view = client.get(f"/_admin/dossiers/{code}").json()
    assert view == {**record(code), "QuaTrinhXuLy": [first, second]}
    assert client.get("/_admin/dossiers").json() == {code: view}


def test_create_and_update_semantics(client: httpx.Client) -> None:
    sid = session(client)
    code = f"{UNIT}-240315-0002"
    created = sync(client, sid, [record(code)])
    assert created == {"error_code": 0, "message": "Thành công"}
    progress(client, sid, [entry(code)])
    # creating it again is 6, updating an unknown one 4
    assert sync(client, sid, [record(code)])["error_code"] == 6
    unknown = sync(client, sid, [record(f"{UNIT}-240315-0099", "4")], updating=True)
    assert unknown["error_code"] == 4
    # an update replaces the record (optional fields left out are the defaults), keeps the entries;
    # DonViXuLy is an agency's name, not madonvi
    new = record(code, "4", NgayHenTra="20240320083000", DonViXuLy="Sở Tư pháp tỉnh Quảng Ninh")
    del new["GhiChu"]
    assert sync(client, sid, [new], updating=True)["error_code"] == 0
    stored = client.get(f"/_admin/dossiers/{code}").json()
    assert {k: v for k, v in stored.items() if k != "QuaTrinhXuLy"} == {**new, "GhiChu": ""}
    assert stored["QuaTrinhXuLy"] == [entry(code)]
    assert client.get("/_admin/dossiers/nope").status_code == 404


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"MaHoSo": ""}, "Thiếu trường bắt buộc: MaHoSo"),
        ({"DonViXuLy": ""}, "Thiếu trường bắt buộc: DonViXuLy"),
        ({"NgayHenTra": "2024-03-18 08:30"}, "Sai định dạng NgayHenTra (yyyyMMddHHmmss)"),
        ({"NgayHenTra": "20241318083000"}, "Sai định dạng NgayHenTra (yyyyMMddHHmmss)"),
        ({"TrangThaiHoSo": "11"}, "Sai giá trị trường: TrangThaiHoSo"),
        ({"HinhThuc": "online"}, "Sai giá trị trường: HinhThuc"),
        ({"LoaiDoiTuong": 1}, "Sai kiểu dữ liệu (phải là chuỗi hoặc danh sách): LoaiDoiTuong"),
        ({"SoDienThoai": 912345678}, "Sai kiểu dữ liệu (phải là chuỗi hoặc danh sách): SoDienThoai"),
    ],
)
def test_invalid_record_is_3_naming_the_field_not_the_personal_data(
    client: httpx.Client, change: dict[str, Any], expected: str
) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(f"{UNIT}-240315-0003", **change)])
    assert answer["error_code"] == 3
    assert expected in answer["message"]
    for personal in (APPLICANT, PHONE, "912345678"):
        assert personal not in json.dumps(answer, ensure_ascii=False)
    assert client.get("/_admin/dossiers").json() == {}


def test_missing_required_field_is_named(client: httpx.Client) -> None:
    sid = session(client)
    incomplete = record(f"{UNIT}-240315-0004")
    del incomplete["TenTTHC"]
    answer = sync(client, sid, [incomplete])
    assert answer == {"error_code": 3, "message": "Thiếu trường bắt buộc: TenTTHC (bản ghi thứ 1)"}
    assert APPLICANT not in answer["message"] and PHONE not in answer["message"]


def test_procedure_must_be_in_the_national_catalogue(client: httpx.Client) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(f"{UNIT}-240315-0005", MaTTHC="1.999999.000.00.00.H49")])
    assert answer["error_code"] == 3
    assert answer["message"] == "Mã TTHC 1.999999.000.00.00.H49 không có trong CSDL TTHC quốc gia"


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
    assert sync(client, sid, [record(code, current)])["error_code"] == 0
    # when
    answer = sync(client, sid, [record(code, new)], updating=True)
    # then
    stored = client.get(f"/_admin/dossiers/{code}").json()["TrangThaiHoSo"]
    if allowed:
        assert answer["error_code"] == 0
        assert stored == new
    else:
        assert answer["error_code"] == 5
        assert f"từ {current} sang {new}" in answer["message"]
        assert stored == current


def test_progress_unknown_dossier_mismatch_and_repeats(client: httpx.Client) -> None:
    sid = session(client)
    code = f"{UNIT}-240315-0007"
    unknown = progress(client, sid, [entry(f"{UNIT}-240315-0098")])
    assert (unknown["error_code"], unknown["message"]) == (4, f"Không tìm thấy hồ sơ {UNIT}-240315-0098")
    sync(client, sid, [record(code, "4")])
    mismatch = progress(client, sid, [entry(code, "2")])
    assert mismatch["error_code"] == 5
    assert mismatch["message"].startswith("Tiến độ không khớp trạng thái hồ sơ")
    invalid = progress(client, sid, [entry(code, "4", ThoiDiemXuLy="hôm nay")])
    assert (invalid["error_code"], "ThoiDiemXuLy" in invalid["message"]) == (3, True)
    # when the same entry is pushed twice
    answers = [progress(client, sid, [entry(code, "4")])["error_code"] for _ in range(2)]
    # then the portal takes it once, refuses the repeat as held, and counts it
    assert answers == [0, 6]
    assert client.get(f"/_admin/dossiers/{code}").json()["QuaTrinhXuLy"] == [entry(code, "4")]
    assert stats(client)["repeated_progress"] == 1
    # and another time is another entry
    assert progress(client, sid, [entry(code, "4", at="20240315110000")])["error_code"] == 0


def test_calls_are_all_or_nothing(client: httpx.Client) -> None:
    sid = session(client)
    good, bad = f"{UNIT}-240315-0010", f"{UNIT}-240315-0011"
    broken = record(bad)
    del broken["MaTTHC"]
    answer = sync(client, sid, [record(good), broken])
    assert answer["error_code"] == 3
    assert "bản ghi thứ 2" in answer["message"]
    assert client.get("/_admin/dossiers").json() == {}
    # a code twice in one create is refused as it would be in two calls
    assert sync(client, sid, [record(good), record(good)])["error_code"] == 6
    assert sync(client, sid, [record(good)])["error_code"] == 0
    # progress: one good entry and one for an unknown dossier store nothing
    assert progress(client, sid, [entry(good), entry(bad)])["error_code"] == 4
    assert client.get(f"/_admin/dossiers/{good}").json()["QuaTrinhXuLy"] == []
    # nor does a batch holding the same entry twice
    assert progress(client, sid, [entry(good), entry(good)])["error_code"] == 6
    assert client.get(f"/_admin/dossiers/{good}").json()["QuaTrinhXuLy"] == []
    # an update batch with one forbidden change leaves the others as they were
    sync(client, sid, [record(bad, "9")])
    assert sync(client, sid, [record(good, "4"), record(bad, "4")], updating=True)["error_code"] == 5
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
        assert page["error_code"] == 0
        pages.append([d["MaHoSo"] for d in page["result"]])
        if not page["ConTiep"]:
            break
        cursor = page["result"][-1]["ThuTu"]
    # then
    assert pages == [[d["MaHoSo"] for d in mine[i:i + 2]] for i in (0, 2, 4)]
    other = call(client, sid, "LayHoSoTrucTuyen", unit=OTHER_UNIT)
    assert ([d["MaHoSo"] for d in other["result"]], other["ConTiep"]) == ([d["MaHoSo"] for d in theirs], False)
    everything = call(client, sid, "LayHoSoTrucTuyen")["result"]
    assert everything == [d for d in stored if d["MaDonVi"] == UNIT]
    assert call(client, sid, "LayHoSoTrucTuyen", TuThuTu=numbers[-1])["result"] == []
    for wrong in ({"SoLuong": 0}, {"SoLuong": 101}, {"TuThuTu": -1}, {"TuThuTu": "đầu"}, {"tuthutu": 0}):
        assert call(client, sid, "LayHoSoTrucTuyen", **wrong)["error_code"] == 3
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
    assert sync(client, sid, [record(code)]) == {"error_code": 96, "message": "Hệ thống đang bận"}
    assert login(client).json()["error_code"] == 0
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
    assert retry.json()["error_code"] == 6
    counters = stats(client)
    assert counters["faults"]["timeout"] == 2 and counters["unanswered"] == {"DongBoHoSoMC": 2}


def test_faults_can_hit_chosen_services_only(client: httpx.Client) -> None:
    # given timeouts and 503s on the progress entries only
    client.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 1.0, "error_rate": 0.5, "seed": 3,
                                        "services": ["CapNhatTienDoHoSoMC"]}).raise_for_status()
    # when the relay logs in, syncs and appends
    sid = session(client)
    code = f"{UNIT}-240315-0023"
    assert sync(client, sid, [record(code)])["error_code"] == 0
    answers = []
    for _ in range(4):
        try:
            answers.append(client.post(SERVICE, json={"session": sid, "madonvi": UNIT, "service": "CapNhatTienDoHoSoMC",
                                                      "data": [entry(code)]}, headers={"dstcode": DSTCODE},
                                       timeout=0.3).status_code)
        except httpx.ReadTimeout:
            answers.append(0)
    # then the login and the record went through, and every progress call was hit: 503 before, or a hang after
    assert set(answers) == {0, 503}
    counters = stats(client)
    assert counters["unanswered"] == {"CapNhatTienDoHoSoMC": answers.count(0)}
    assert counters["faults"]["error"] == answers.count(503) and counters["logins"]["ok"] == 1
    assert client.get(f"/_admin/dossiers/{code}").json()["QuaTrinhXuLy"] == [entry(code)]
    assert counters["repeated_progress"] == answers.count(0) - 1


def test_expire_rate_drops_the_session(client: httpx.Client) -> None:
    sid = session(client)
    client.post("/_admin/faults", json={"expire_rate": 1})
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == 1
    client.delete("/_admin/faults")
    assert call(client, sid, "LayDanhSachTTHC")["error_code"] == 1
    assert call(client, session(client), "LayDanhSachTTHC")["error_code"] == 0
    counters = stats(client)
    assert counters["faults"]["expire"] == 1 and counters["sessions_expired"] == 0


def test_faults_are_validated_and_shown(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"error_rate": 2}).status_code == 422
    assert client.post("/_admin/faults", json={"reset_rate": 1}).status_code == 422
    assert client.post("/_admin/faults", json={"services": "CapNhatTienDoHoSoMC"}).status_code == 422
    client.post("/_admin/faults", json={"busy_rate": 0.5, "seed": 4})
    assert client.get("/_admin/faults").json()["busy_rate"] == 0.5
    client.post("/_admin/reset")
    assert client.get("/_admin/faults").json() is None


def test_catalogue_services_answer_upper_case_rows(client: httpx.Client) -> None:
    sid = session(client)
    procedures = call(client, sid, "LayDanhSachTTHC")
    assert procedures["error_code"] == 0
    assert {p["MATTHC"] for p in procedures["result"]} == {p.code for p in (*PROCEDURES, *CENTRE_PROCEDURES)}
    assert {"MATTHC": BIRTH.code, "TENTTHC": BIRTH.name} in procedures["result"]
    details = call(client, sid, "LayThuTuc", maTTHC=BIRTH.code)
    assert [d["MATTHC"] for d in details["result"]] == [BIRTH.code]
    agencies = call(client, sid, "LayDanhMucCoQuan")
    assert agencies["error_code"] == 0
    assert {"MADONVI": UNIT, "TENDONVI": "UBND phường Hồng Gai", "CAPDONVI": "3"} in agencies["result"]
    fields = call(client, sid, "LayDanhMucLinhVuc")["result"]
    assert {"MALINHVUC": "G09-TP", "TENLINHVUC": "Hộ tịch, chứng thực", "MANGANH": "G09"} in fields
    assert call(client, sid, "LayDanhMucCoQuan", madonvicha=UNIT)["error_code"] == 3


def test_custom_catalogue_paths_and_dstcode() -> None:
    app = create_app(
        username=USER, password=PASSWORD, dstcode="QNI", catalogue={"1.000001": ("Thủ tục thử", "G09-TH")},
        auth_path="/lgsp/auth", integration_path="/lgsp/dvcqg",
    )
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        sid = c.post("/lgsp/auth", json={"username": USER, "password": PASSWORD}, headers={"dstcode": "QNI"})
        body = {"session": sid.json()["session"], "madonvi": UNIT, "service": "LayDanhSachTTHC"}
        answer = c.post("/lgsp/dvcqg", json=body, headers={"dstcode": "QNI"}).json()
    assert answer["result"] == [{"MATTHC": "1.000001", "TENTTHC": "Thủ tục thử"}]


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


def test_the_online_dossiers_service_takes_the_destinations_name() -> None:
    # given a simulator whose LGSP names the online dossiers' service otherwise (it is not in OpenCPS)
    app = create_app(username=USER, password=PASSWORD, online_service="LayHoSoDVCQG")
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=5) as c:
        stored = add_online(c, online_dossiers(2, day=date(2024, 3, 15)))
        sid = session(c)
        # then it answers under that name only
        assert call(c, sid, "LayHoSoDVCQG", SoLuong=1) == {"error_code": 0, "message": "Thành công",
                                                           "result": stored[:1], "ConTiep": True}
        assert call(c, sid, "LayHoSoTrucTuyen")["error_code"] == 10
