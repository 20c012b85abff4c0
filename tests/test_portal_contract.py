"""The national portal's contract, rule by rule (docs/contracts.md P1–P18), against the simulator over real HTTP.

Each test shows both halves of a rule: the simulator refuses what breaks it (as the real portal would), and what
the relay's connector and adapter send keeps it. The last test sends today's dialect (the connector's requests
before it spoke the contract) and sees each refused, with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.portal import (
    MappingError,
    PortalMapping,
    Procedure,
    content_issues,
    dossier_record,
    expected_truth,
    portal_time,
    progress_entry,
    takes,
)
from connectors.base import Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.portal import PortalConnector
from sandbox.portal import create_app
from sandbox.workload import generate_day
from schemas.events import Event, parse_event
from schemas.portal import DossierRecord, ProgressEntry
from tests.portal_wire import (
    AGENCY,
    BIRTH,
    DSTCODE,
    LOGIN,
    PASSWORD,
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
    todays_entry,
    todays_record,
)
from tests.servers import run_asgi

DAY = date(2026, 11, 20)
EVENTS = [parse_event(e) for e in generate_day(60, day=DAY, seed=11)]
MAPPING = PortalMapping(agency_names={UNIT: AGENCY})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(create_app(username=USER, password=PASSWORD, dstcode=DSTCODE)) as url:
        yield url


def relay(url: str, dstcode: str = DSTCODE, password: str = PASSWORD) -> PortalConnector:
    """The relay's connector to the simulator, its session cached in this process."""
    return PortalConnector(base_url=url, dstcode=dstcode, username=USER, password=SecretStr(password),
                           client=build_http_client(2.0, 5.0), tokens=TokenCache(None, uuid.uuid4().hex),
                           credential_name="portal:contract", session_ttl=600)


def code_of(n: int) -> str:
    return f"{UNIT}-240315-{n:04d}"


def lifecycle(kind: str) -> tuple[Event, list[Event]]:
    """The first event of ``kind`` in the day and its dossier's lifecycle events before it."""
    event = next(e for e in EVENTS if e.type == kind and e.origin == "onestop")
    earlier = [e for e in EVENTS if e.dossier_code == event.dossier_code and e.sequence < event.sequence]
    return event, earlier


def synced_through(connector: PortalConnector, event: Any) -> dict[str, Any]:
    """``event``'s dossier synced by the relay's connector and adapter as the deliverer does, one lifecycle event
    after the other up to ``event`` (catalogue, look up, create or update, append); the last record sent."""
    steps = sorted((e for e in EVENTS if e.dossier_code == event.dossier_code and takes(e, MAPPING)
                    and e.sequence <= event.sequence), key=lambda e: e.sequence)
    sent: dict[str, Any] = {}
    for step in steps:
        row = connector.procedure(UNIT, step.procedure_code)
        assert row is not None
        found = Procedure(row.TENTTHC, row.LINHVUCTHUCHIEN[0].MALINHVUC, row.LINHVUCTHUCHIEN[0].TENLINHVUC)
        sent = dossier_record(step, steps, MAPPING, found)
        held = connector.lookup(UNIT, step.dossier_code) is not None
        connector.sync(UNIT, sent, updating=held)
        assert connector.progress(UNIT, progress_entry(step, MAPPING)) == "taken"
    return sent


def sections(message: str) -> dict[str, set[str]]:
    """A refusal's message as its parts: title → the fields it names."""
    out: dict[str, set[str]] = {}
    for part in message.split(" (bản ghi thứ")[0].split("; "):
        title, _, names = part.partition(": ")
        out.setdefault(title, set()).update(names.split(", "))
    return out


# ------------------------------------------------------------------------------------------ P1–P3: the session


def test_p01_login_is_json_username_password_answered_error_code_0_and_a_session(
        client: httpx.Client, base_url: str) -> None:
    answer = login(client)
    assert answer.status_code == 200
    assert answer.json()["error_code"] == 0 and isinstance(answer.json()["session"], str)
    for wrong in ({"username": "khac"}, {"password": "sai"}):
        refused = login(client, **wrong).json()
        assert refused["error_code"] == 2 and "session" not in refused
    assert login(client, madonvi=UNIT).json()["error_code"] == 3  # a field the login does not take
    assert client.post(LOGIN, content=b"username=x", headers={"dstcode": DSTCODE}).json()["error_code"] == 3
    # the relay logs in so, and a refused login is an operator's to fix
    session_id, ttl = relay(base_url).login()
    assert session_id and ttl == 600
    with pytest.raises(Permanent, match="username, password and dstcode"):
        relay(base_url, password="sai").login()


def test_p02_every_call_carries_the_configured_dstcode_login_included(client: httpx.Client) -> None:
    assert login(client, dstcode=None).json()["error_code"] == 2
    assert login(client, dstcode="KHAC").json()["error_code"] == 2
    sid = session(client)
    lookup = {"session": sid, "madonvi": UNIT, "service": "TraCuuHoSo", "mahoso": code_of(1)}
    assert raw(client, lookup)["error_code"] == 0
    assert raw(client, lookup, dstcode=None)["error_code"] == 2
    assert raw(client, lookup, dstcode="KHAC")["error_code"] == 2
    # the relay sends its destination's dstcode on the login and on each call
    with run_asgi(create_app(username=USER, password=PASSWORD, dstcode="QNI")) as other:
        assert relay(other, dstcode="QNI").lookup(UNIT, code_of(1)) is None
        with pytest.raises(Permanent, match="error_code 02"):
            relay(other, dstcode=DSTCODE).lookup(UNIT, code_of(1))


def test_p03_an_integration_call_is_session_madonvi_service_and_its_params(
        client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    good = {"session": sid, "madonvi": UNIT, "service": "LayDanhSachTTHC"}
    assert raw(client, good)["error_code"] == 0
    assert raw(client, {**good, "session": "khong-ton-tai"})["error_code"] == 1
    assert raw(client, {k: v for k, v in good.items() if k != "session"})["error_code"] == 1
    assert raw(client, {k: v for k, v in good.items() if k != "madonvi"})["error_code"] == 9
    assert raw(client, {**good, "madonvi": " "})["error_code"] == 9
    assert raw(client, {**good, "service": "XoaHoSo"})["error_code"] == 10
    # the wrong envelope: parameters wrapped in an object of their own, or a list of calls
    wrapped = raw(client, {**good, "service": "TraCuuHoSo", "params": {"mahoso": code_of(1)}})
    assert wrapped["error_code"] == 3 and "params" in wrapped["message"]
    assert raw(client, [good])["error_code"] == 3
    # the relay's calls are that envelope
    assert relay(base_url).call(UNIT, "LayDanhSachTTHC").ok


# ------------------------------------------------------------------------------------------ P4–P6: reading


def test_p04_tracuuhoso_takes_exactly_mahoso(client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    assert call(client, sid, "TraCuuHoSo", mahoso=code_of(2))["error_code"] == 0
    upper = call(client, sid, "TraCuuHoSo", MaHoSo=code_of(2))
    assert upper["error_code"] == 3
    assert sections(upper["message"]) == {"Tham số không được hỗ trợ": {"MaHoSo"},
                                          "Thiếu tham số bắt buộc": {"mahoso"}}
    both = call(client, sid, "TraCuuHoSo", mahoso=code_of(2), MaHoSo=code_of(2))
    assert both["error_code"] == 3 and "MaHoSo" in both["message"]
    assert relay(base_url).lookup(UNIT, code_of(2)) is None


def test_p05_rows_are_in_result_and_no_history_comes_back(client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    code = code_of(3)
    absent = call(client, sid, "TraCuuHoSo", mahoso=code)
    assert absent == {"error_code": 0, "message": "Thành công", "result": []}
    assert sync(client, sid, [record(code)])["error_code"] == 0
    assert progress(client, sid, [entry(code)])["error_code"] == 0
    found = call(client, sid, "TraCuuHoSo", mahoso=code)
    [row] = found["result"]
    assert "data" not in found and "QuaTrinhXuLy" not in row and row["MaHoSo"] == code
    # the relay reads result: a held dossier is a row, so the next sync is an update
    assert relay(base_url).lookup(UNIT, code) == row


def test_p06_laythutuc_takes_matthc_and_answers_upper_case(client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    answer = call(client, sid, "LayThuTuc", maTTHC=BIRTH.code)
    [row] = answer["result"]
    assert row["TENTTHC"] == BIRTH.name
    assert row["LINHVUCTHUCHIEN"][0] == {"MALINHVUC": "G09-TP", "TENLINHVUC": "Hộ tịch, chứng thực"}
    assert call(client, sid, "LayThuTuc", maTTHC="1.999999")["result"] == []
    wrong = call(client, sid, "LayThuTuc", MaTTHC=BIRTH.code)
    assert wrong["error_code"] == 3 and "MaTTHC" in wrong["message"]
    found = relay(base_url).procedure(UNIT, BIRTH.code)
    assert found is not None
    assert found.model_dump(include={"TENTTHC"}) == {"TENTTHC": BIRTH.name}
    assert found.LINHVUCTHUCHIEN[0].model_dump() == {"MALINHVUC": "G09-TP", "TENLINHVUC": "Hộ tịch, chứng thực"}
    assert relay(base_url).procedure(UNIT, "1.999999") is None


# ------------------------------------------------------------------------------------------ P7–P8: syncing


def test_p07_dongbohosomc_is_isupdating_as_a_string_and_a_list_of_records(client: httpx.Client) -> None:
    sid = session(client)
    code = code_of(4)
    for wrong in ({"isUpdating": False, "data": [record(code)]}, {"isUpdating": "false", "data": [record(code)]},
                  {"isUpdating": "False", "data": record(code)}, {"isUpdating": "False", "data": []},
                  {"data": [record(code)]}):
        answer = call(client, sid, "DongBoHoSoMC", **wrong)
        assert answer["error_code"] == 3, wrong
    assert client.get("/_admin/dossiers").json() == {}
    assert call(client, sid, "DongBoHoSoMC", isUpdating="False", data=[record(code)]) == {
        "error_code": 0, "message": "Thành công"}


def test_p08_false_only_for_a_dossier_not_held_true_only_for_one_held(
        client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    code = code_of(5)
    assert sync(client, sid, [record(code)], updating=True)["error_code"] == 4
    assert sync(client, sid, [record(code)])["error_code"] == 0
    assert sync(client, sid, [record(code)])["error_code"] == 6
    assert sync(client, sid, [record(code, "4")], updating=True)["error_code"] == 0
    # the relay decides from TraCuuHoSo, as OpenCPS does: after the look-up says held it updates
    connector = relay(base_url)
    assert connector.lookup(UNIT, code) is not None
    connector.sync(UNIT, record(code, "4", NgayHenTra="20240320083000"), updating=True)
    assert client.get(f"/_admin/dossiers/{code}").json()["NgayHenTra"] == "20240320083000"


# ------------------------------------------------------------------------------------------ P9–P13: the record


def test_p09_record_fields_are_opencps_list_and_nothing_else(client: httpx.Client) -> None:
    sid = session(client)
    for unknown in ("DanhSachTepDinhKem", "SoGiayToChuHoSo", "QuaTrinhXuLy", "mahoso"):
        answer = sync(client, sid, [record(code_of(6), **{unknown: []})])
        assert answer["error_code"] == 3 and f"Trường không được hỗ trợ: {unknown}" in answer["message"]
    required = ("TenTTHC", "MaLinhVuc", "TenLinhVuc", "Email", "SoDienThoai", "TrichYeuHoSo", "NgayTiepNhan",
                "NgayHenTra", "HinhThuc")
    for name in required:
        incomplete = {k: v for k, v in record(code_of(6)).items() if k != name}
        answer = sync(client, sid, [incomplete])
        assert (answer["error_code"], answer["message"]) == (3, f"Thiếu trường bắt buộc: {name} (bản ghi thứ 1)")
    optional = ("ChuHoSo", "MaDoiTuong", "Fax", "NgayTra", "GhiChu", "DanhSachLePhi", "TaiLieuNop")
    assert sync(client, sid, [{k: v for k, v in record(code_of(6)).items() if k not in optional}])["error_code"] == 0
    # the relay's record has exactly OpenCPS's fields
    event, earlier = lifecycle("dossier.completed")
    assert set(dossier_record(event, earlier, MAPPING)) == set(DossierRecord.model_fields)


@pytest.mark.parametrize("name", ["MaHoSo", "MaTTHC", "TrangThaiHoSo", "DonViXuLy"])
def test_p10_the_four_keys_are_non_empty_strings(client: httpx.Client, name: str) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(code_of(7), **{name: ""})])
    assert answer["error_code"] == 3 and name in answer["message"]


@pytest.mark.parametrize(("name", "value"), [("LoaiDoiTuong", 1), ("TrangThaiHoSo", 2), ("NgayHenTra", 20240318083000),
                                             ("SoDienThoai", 912345678), ("HinhThuc", 0), ("TenTTHC", None)])
def test_p10_scalar_fields_are_strings(client: httpx.Client, name: str, value: Any) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(code_of(7), **{name: value})])
    assert answer["error_code"] == 3
    assert f"Sai kiểu dữ liệu (phải là chuỗi hoặc danh sách): {name}" in answer["message"]
    assert client.get("/_admin/dossiers").json() == {}


def test_p10_the_relays_records_are_strings_throughout() -> None:
    for event in (e for e in EVENTS if takes(e, MAPPING)):
        sent = dossier_record(event, EVENTS, MAPPING)
        DossierRecord.model_validate(sent)  # strict: a number where a string belongs is refused
        assert all(sent[k] for k in ("MaHoSo", "MaTTHC", "TrangThaiHoSo", "DonViXuLy"))


def test_p11_loaidoituong_is_1_or_2(client: httpx.Client) -> None:
    sid = session(client)
    assert sync(client, sid, [record(code_of(8), LoaiDoiTuong="3")])["error_code"] == 3
    assert sync(client, sid, [record(code_of(8), LoaiDoiTuong="2")])["error_code"] == 0
    kinds = {e.applicant.kind: dossier_record(e, [], MAPPING)["LoaiDoiTuong"] for e in EVENTS if takes(e, MAPPING)}
    assert kinds == {"citizen": "1", "business": "2"}


def test_p12_hinhthuc_is_0_or_1_and_1_when_the_result_goes_by_post(client: httpx.Client) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(code_of(9), HinhThuc="2")])
    assert answer["error_code"] == 3 and "Sai giá trị trường: HinhThuc" in answer["message"]
    assert sync(client, sid, [record(code_of(9), HinhThuc="1")])["error_code"] == 0
    # the relay's final record says "1" exactly for the dossiers whose result goes by post
    truth = expected_truth(EVENTS, MAPPING)
    posted = {e.dossier_code for e in EVENTS if e.type == "dossier.received" and e.data.return_by_post}
    assert posted and {c for c, t in truth.items() if t.by_post} >= posted
    for code, t in truth.items():
        last = max((e for e in EVENTS if e.dossier_code == code and takes(e, MAPPING)), key=lambda e: e.sequence)
        assert dossier_record(last, EVENTS, MAPPING)["HinhThuc"] == ("1" if t.by_post else "0"), code
    # and the portal's final record disagreeing with the events counts as a content issue
    some = next(c for c, t in truth.items() if t.by_post)
    assert "HinhThuc '0' but the result goes by post" in content_issues({"HinhThuc": "0"}, truth[some])


@pytest.mark.parametrize("value", ["2024-03-18 08:30", "20241318083000", "2024031808300", "18032024083000 "])
def test_p13_dates_are_yyyymmddhhmmss_or_empty(client: httpx.Client, value: str) -> None:
    sid = session(client)
    answer = sync(client, sid, [record(code_of(10), NgayHenTra=value)])
    assert (answer["error_code"], "Sai định dạng NgayHenTra (yyyyMMddHHmmss)" in answer["message"]) == (3, True)
    assert sync(client, sid, [record(code_of(10), NgayHenTra="")])["error_code"] == 0


def test_p13_the_relays_dates_are_vietnam_time() -> None:
    event, earlier = lifecycle("dossier.returned")
    sent = dossier_record(event, earlier, MAPPING)
    received = next(e for e in earlier if e.type == "dossier.received")
    assert sent["NgayTiepNhan"] == portal_time(received.occurred_at) == received.occurred_at.strftime("%Y%m%d%H%M%S")
    assert sent["NgayTra"] == portal_time(event.data.returned_at)
    assert sent["NgayKetThucXuLy"] != "" and len(sent["NgayKetThucXuLy"]) == 14


# ------------------------------------------------------------------------------------------ P14–P16: the lists


def test_p14_tailieunop_items_and_the_submitted_files_end_up_in_the_record(
        client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    item = record(code_of(11))["TaiLieuNop"][0]
    for wrong in ({"TenTep": "to-khai.pdf", "DuongDan": ""}, {k: v for k, v in item.items() if k != "IsDeleted"},
                  {**item, "IsDeleted": False}, {**item, "MaBam": "ab" * 32}):
        assert sync(client, sid, [record(code_of(11), TaiLieuNop=[wrong])])["error_code"] == 3, wrong
    # the relay's record of a submitted dossier carries its files, and keeps them after later events
    submitted = next(e for e in EVENTS if e.type == "dossier.submitted" and len(e.data.documents) > 1)
    event = max((e for e in EVENTS if e.dossier_code == submitted.dossier_code and takes(e, MAPPING)),
                key=lambda e: e.sequence)
    assert event.type != "dossier.submitted"
    sent = synced_through(relay(base_url), event)
    view = client.get(f"/_admin/dossiers/{event.dossier_code}").json()
    names = [d.name for d in submitted.data.documents]
    assert [f["TenTepDinhKem"] for f in view["TaiLieuNop"]] == names == [f["TenTepDinhKem"] for f in sent["TaiLieuNop"]]
    assert {f["IsDeleted"] for f in view["TaiLieuNop"]} == {"False"}
    truth = expected_truth(EVENTS, MAPPING)[event.dossier_code]
    assert "TaiLieuNop" not in " ".join(content_issues(view, truth))
    assert content_issues({**view, "TaiLieuNop": view["TaiLieuNop"][1:]}, truth) == [
        "TaiLieuNop lacks 1 submitted file(s)"]


def test_p15_result_documents(client: httpx.Client) -> None:
    sid = session(client)
    good = {"TenGiayTo": "Giấy khai sinh", "MaThanhPhanHoSo": "", "GiayToId": "KQ1", "DuongDanTepTinKetQua": ""}
    assert sync(client, sid, [record(code_of(12), DanhSachGiayToKetQua=[good])])["error_code"] == 0
    for wrong in ({"TenGiayTo": "Giấy khai sinh", "DuongDan": "", "MaBam": "ab" * 32},
                  {k: v for k, v in good.items() if k != "GiayToId"}):
        assert sync(client, sid, [record(code_of(13), DanhSachGiayToKetQua=[wrong])])["error_code"] == 3
    event, earlier = lifecycle("dossier.completed")
    documents = dossier_record(event, earlier, MAPPING)["DanhSachGiayToKetQua"]
    assert [d["TenGiayTo"] for d in documents] == [d.name for d in event.data.result_documents]
    assert all(set(d) == set(good) for d in documents)


def test_p16_fee_other_paper_and_supplement_items(client: httpx.Client) -> None:
    sid = session(client)
    other = {"TenGiayTo": "Bản sao sổ hộ khẩu", "SoLuong": "1", "LoaiGiayTo": "Bản sao"}
    supplement = {"HoSoBoSungId": "BS1", "NguoiYeuCauBoSung": "Cán bộ một cửa", "NoiDungBoSung": "Bổ sung tờ khai",
                  "NgayBoSung": "20240316090000", "NguoiTiepNhanBoSung": "", "ThongTinTiepNhan": "",
                  "NgayTiepNhanBoSung": "", "TrangThaiBoSung": "", "DanhSachGiayToBoSung": [],
                  "DanhSachLePhiBoSung": "", "NgayHenTraTruoc": "20240318083000", "NgayHenTraMoi": ""}
    taken = record(code_of(14), DanhSachTepDinhKemKhac=[other], DanhSachHoSoBoSung=[supplement])
    assert sync(client, sid, [taken])["error_code"] == 0
    for field, wrong in (("DanhSachLePhi", {"MaLePhi": "LP01", "TenLePhi": "Lệ phí", "SoTien": 8000}),
                         ("DanhSachLePhi", {**record("x")["DanhSachLePhi"][0], "Gia": 8000}),
                         ("DanhSachTepDinhKemKhac", {**other, "SoLuong": 1}),
                         ("DanhSachHoSoBoSung", {"NoiDung": "Bổ sung", "ThanhPhan": [],
                                                 "NgayYeuCau": "20240316090000"}),
                         ("DanhSachHoSoBoSung", {k: v for k, v in supplement.items() if k != "NgayHenTraMoi"})):
        answer = sync(client, sid, [record(code_of(15), **{field: [wrong]})])
        assert answer["error_code"] == 3 and field in answer["message"], (field, wrong)
    # the relay's fee lines and supplement requests are those items
    asked, asked_earlier = lifecycle("dossier.supplement_requested")
    sent = dossier_record(asked, asked_earlier, MAPPING)
    DossierRecord.model_validate(sent)
    assert [s["HoSoBoSungId"] for s in sent["DanhSachHoSoBoSung"]] == [asked.event_id]
    assert set(sent["DanhSachHoSoBoSung"][0]) == set(supplement)


# ------------------------------------------------------------------------------------------ P17–P18


def test_p17_donvixuly_is_the_agencys_name_a_code_is_taken_and_flagged(client: httpx.Client) -> None:
    sid = session(client)
    assert sync(client, sid, [record(code_of(16), DonViXuLy=UNIT)])["error_code"] == 0
    assert sync(client, sid, [record(code_of(17))])["error_code"] == 0
    assert client.get("/_admin/issues").json() == [
        {"MaHoSo": code_of(16), "field": "DonViXuLy", "issue": "mã đơn vị thay cho tên cơ quan xử lý"}]
    assert client.get("/_admin/stats").json()["content_issues"] == 1
    # fixed by the next update
    assert sync(client, sid, [record(code_of(16))], updating=True)["error_code"] == 0
    assert client.get("/_admin/issues").json() == []
    # the relay names the agency, and will not send a unit it cannot name
    event, earlier = lifecycle("dossier.received")
    assert dossier_record(event, earlier, MAPPING)["DonViXuLy"] == AGENCY
    with pytest.raises(MappingError, match="agency_names"):
        dossier_record(event, earlier, PortalMapping())
    with pytest.raises(ValueError, match="not a code"):
        PortalMapping(agency_names={UNIT: "000.21.00.H49"})


def test_p18_progress_entries_are_the_nine_fields_for_a_synced_dossier_each_taken_once(
        client: httpx.Client, base_url: str) -> None:
    sid = session(client)
    code = code_of(18)
    assert progress(client, sid, [entry(code)])["error_code"] == 4  # not synced yet
    assert sync(client, sid, [record(code)])["error_code"] == 0
    for wrong in ({**entry(code), "TrangThaiHoSo": "2"}, {k: v for k, v in entry(code).items() if k != "ChucDanh"},
                  {**entry(code), "ThoiDiemXuLy": ""}, {**entry(code), "TrangThai": 2}):
        assert progress(client, sid, [wrong])["error_code"] == 3, wrong
    envelope = call(client, sid, "CapNhatTienDoHoSoMC", data=[entry(code)], isUpdating="True")
    assert envelope["error_code"] == 3 and "isUpdating" in envelope["message"]
    assert progress(client, sid, [entry(code)])["error_code"] == 0
    # the same (MaHoSo, TrangThai, ThoiDiemXuLy) again, whatever else differs, is refused as held
    again = progress(client, sid, [entry(code, NoiDungXuLy="Nội dung khác", NguoiXuLy="Người khác")])
    assert again["error_code"] == 6
    assert [e["NoiDungXuLy"] for e in client.get(f"/_admin/dossiers/{code}").json()["QuaTrinhXuLy"]] == [
        entry(code)["NoiDungXuLy"]]
    assert client.get("/_admin/stats").json()["repeated_progress"] == 1
    # the relay's entries are the nine fields, and a repeat is "held" to it, not an error
    event, _ = lifecycle("dossier.processing")
    sent = progress_entry(event, MAPPING)
    assert set(sent) == set(ProgressEntry.model_fields) and all(isinstance(v, str) for v in sent.values())
    assert relay(base_url).progress(UNIT, entry(code)) == "held"


# ------------------------------------------------------------------------------------------ today's dialect


def test_todays_dialect_is_refused_with_the_reason(client: httpx.Client) -> None:
    # given requests shaped as the connector sent them before it spoke the contract
    sid = session(client)
    code = code_of(19)
    # then the look-up by MaHoSo is refused as an unknown parameter (it used to miss every dossier)
    lookup = call(client, sid, "TraCuuHoSo", MaHoSo=code)
    assert lookup["error_code"] == 3 and "Tham số không được hỗ trợ: MaHoSo" in lookup["message"]
    # and the record: its own file list, the citizen's id number, "2" for the post, a unit code, a number for Gia
    created = sync(client, sid, [todays_record(code)])
    assert created["error_code"] == 3
    message = created["message"]
    said = sections(message)
    assert said["Trường không được hỗ trợ"] == {"SoGiayToChuHoSo", "DanhSachTepDinhKem", "DanhSachLePhi.0.MaLePhi",
                                                 "DanhSachLePhi.0.TenLePhi", "DanhSachLePhi.0.SoTien"}
    assert {"TenLinhVuc", "Email", "TrichYeuHoSo", "DanhSachLePhi.0.TenPhiLePhi", "DanhSachLePhi.0.Gia"} <= said[
        "Thiếu trường bắt buộc"]
    assert said["Sai giá trị trường"] == {"HinhThuc"}
    for personal in ("022190012345", "Nguyễn Thị Hương Giang", "0912 345 678"):
        assert personal not in message
    # and the progress entry without the fields it had nothing for
    assert sync(client, sid, [record(code)])["error_code"] == 0
    entry_answer = progress(client, sid, [todays_entry(code)])
    assert entry_answer["error_code"] == 3
    assert entry_answer["message"] == "Thiếu trường bắt buộc: ChucDanh, NgayKetThucTheoQuyDinh (bản ghi thứ 1)"
    assert client.get(f"/_admin/dossiers/{code}").json()["QuaTrinhXuLy"] == []
    # and the answer was never in "data"
    assert "data" not in call(client, sid, "TraCuuHoSo", mahoso=code)
