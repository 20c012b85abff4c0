"""The postal adapter and the administrative-unit table: events → orders, tracking records → events."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.postal import (
    AddressError,
    OrderError,
    PostalMapping,
    cancellations,
    order_for,
    order_number,
    parse_order_number,
    resolve,
    status_event,
    status_event_id,
    takes,
)
from config.admin_units import AdminUnits, AdminUnitsError, load_admin_units, normalise_name
from config.routing import get_routing
from sandbox.workload import generate_day
from schemas.events import Address, Event, event_json, parse_event
from schemas.postal import TrackingRecord

UNITS = load_admin_units()
OPTIONS: dict[str, Any] = {
    "customer_code": "HCC-QNI-HALONG",
    "agency": {"name": "Bộ phận một cửa phường Hồng Gai", "phone": "02033835588", "address": "Số 1 đường 25/4",
               "province": "Quảng Ninh", "district": "Hạ Long"},
}
MAPPING = PostalMapping.from_options(OPTIONS)
EVENTS = [parse_event(e) for e in generate_day(300, day=date(2026, 11, 20), seed=5)]  # as a claim hands them on


def first(kind: str) -> Any:
    return next(e for e in EVENTS if e.type == kind)


def changed(event: Event, **fields: Any) -> Any:
    """The event with some of its JSON fields replaced, validated again."""
    return parse_event(event_json(event) | fields)


# ---------------------------------------------------------------- the administrative-unit table


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Tỉnh Quảng Ninh", "quang ninh"),
        ("quảng  ninh", "quang ninh"),
        ("T. Quảng Ninh", "quang ninh"),
        ("Thành phố Hồ Chí Minh", "ho chi minh"),
        ("TP.HCM", "hcm"),
        ("Thành phố Đà Nẵng", "da nang"),
        ("Huyện Đầm Hà", "dam ha"),
        ("Tây Ninh", "tay ninh"),  # "T" of Tây is not the abbreviation of Tỉnh
        ("Thái Nguyên", "thai nguyen"),
        ("Hà Nội", "ha noi"),
    ],
)
def test_names_match_the_way_people_write_them(written: str, expected: str) -> None:
    assert normalise_name(written) == expected


@pytest.mark.parametrize(
    ("province", "code"),
    [("Tỉnh Quảng Ninh", "22"), ("Hà Nội", "01"), ("TP. Hồ Chí Minh", "79"), ("Tỉnh Bình Dương", "79"),
     ("Hà Giang", "08"), ("Thừa Thiên Huế", "46"), ("Tỉnh Kon Tum", "51"), ("Bà Rịa - Vũng Tàu", "79")],
)
def test_provinces_and_the_provinces_merged_into_them_in_2025_resolve(province: str, code: str) -> None:
    assert UNITS.province(province) == code


def test_the_bundled_table_has_the_34_provinces_in_force() -> None:
    assert len(UNITS.names) == 34
    assert all(len(code) == 2 and code.isdigit() for code in UNITS.names)


def test_a_district_resolves_within_its_province_only() -> None:
    assert UNITS.district("22", "Thành phố Hạ Long") == "193"
    assert UNITS.district("22", "Hoành Bồ") == "193"  # merged into Hạ Long in 2019
    assert UNITS.district("01", "Hạ Long") is None


def test_resolving_an_address_gives_the_line_and_both_codes() -> None:
    address = {"street": "Số 12 phố Lê Thánh Tông", "ward": "Phường Hồng Gai", "district": "Thành phố Hạ Long",
               "province": "Tỉnh Quảng Ninh"}
    line, province, district = resolve(Address.model_validate(address), UNITS, False, "the citizen")
    assert (province, district) == (22, 193)  # integers, as MOrder types them (V3)
    assert line == "Số 12 phố Lê Thánh Tông, Phường Hồng Gai, Thành phố Hạ Long, Tỉnh Quảng Ninh"


def test_a_two_level_address_has_no_district_code_unless_the_contract_requires_one() -> None:
    address = Address(street="Số 3 ngõ 5", ward="Phường Ba Đình", province="Thành phố Hà Nội")
    assert resolve(address, UNITS, False, "the citizen")[1:] == (1, None)  # the district is optional
    with pytest.raises(AddressError, match="names no district"):
        resolve(address, UNITS, True, "the citizen")


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ({"street": "Số 1", "province": "Tỉnh Atlantis"}, "province 'Tỉnh Atlantis' is not in the administrative"),
        ({"street": "Số 1"}, "names no province"),
        (None, "names no province"),
    ],
)
def test_an_address_that_does_not_resolve_says_which_part_and_where_to_look(
    address: dict[str, str] | None, words: str
) -> None:
    with pytest.raises(AddressError) as caught:
        resolve(Address.model_validate(address) if address is not None else None, UNITS, False, "the citizen")
    assert words in str(caught.value)
    if "table" in words:  # the operator is told which file to correct
        assert "admin_units.csv" in str(caught.value)


def test_the_table_is_data_a_province_replaces(tmp_path: Path) -> None:
    table = tmp_path / "units.csv"
    table.write_text("# our post's table\ncode,level,name,parent,aliases\n"
                     "22,province,Quảng Ninh,,\n2201,district,Phường Hồng Gai,22,Hồng Gai\n", encoding="utf-8")
    units = AdminUnits.load(table)
    assert units.province("Quảng Ninh") == "22" and units.district("22", "Hồng Gai") == "2201"
    assert units.province("Hà Nội") is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("code,level,name,parent,aliases\n22,commune,X,,\n", "level in"),
        ("code,level,name,parent,aliases\n193,district,Hạ Long,,\n", "names no parent"),
        ("code,level,name,parent,aliases\n193,district,Hạ Long,22,\n", "not in the table: 22"),
    ],
)
def test_a_broken_table_is_refused_with_the_row(tmp_path: Path, text: str, words: str) -> None:
    table = tmp_path / "units.csv"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(AdminUnitsError, match=words):
        AdminUnits.load(table)


def test_a_missing_table_says_which_file() -> None:
    with pytest.raises(AdminUnitsError, match=r"nowhere\.csv"):
        AdminUnits.load("/nonexistent/nowhere.csv")


# ---------------------------------------------------------------- orders


MORDER_FIELDS = ["CustomerCode", "OrderNumber", "CODAmount", "SenderProvince", "SenderDistrict", "SenderAddress",
                 "SenderName", "SenderEmail", "SenderTel", "SenderDesc", "Description", "ReceiverName",
                 "ReceiverAddress", "ReceiverTel", "ReceiverProvince", "ReceiverDistrict", "ReceiverEmail"]


def test_order_numbers_are_the_dossier_code_and_the_purpose_and_parse_back() -> None:
    code = "000.21.00.H49-261120-0042"
    assert order_number(code, "pickup", MAPPING) == f"{code}-TN"
    assert order_number(code, "delivery", MAPPING) == f"{code}-KQ"
    assert parse_order_number(f"{code}-KQ", MAPPING) == (code, "delivery")
    assert parse_order_number(f"{code}-XX", MAPPING) is None
    assert parse_order_number("-KQ", MAPPING) is None


def test_an_unknown_former_district_is_left_out_unless_the_contract_requires_one() -> None:
    address = Address(street="Số 1", ward="Phường Hồng Gai", district="Huyện Hoàng Sa", province="Quảng Ninh")
    line, province, district = resolve(address, UNITS, False, "the citizen")
    assert (province, district) == (22, None) and "Phường Hồng Gai" in line
    with pytest.raises(AddressError, match="district 'Huyện Hoàng Sa' is not a district of Quảng Ninh"):
        resolve(address, UNITS, True, "the citizen")


def test_a_delivery_order_is_sent_by_the_desk_to_the_citizen_with_the_fee_due() -> None:
    event = next(e for e in EVENTS if e.type == "postal.delivery_requested" and e.data.cod_amount)
    order = order_for(event, MAPPING, UNITS)
    assert order.OrderNumber == f"{event.dossier_code}-KQ"
    assert order.SenderName == OPTIONS["agency"]["name"] and order.SenderTel == "02033835588"
    assert order.ReceiverName == event.applicant.name and order.ReceiverTel == event.applicant.phone  # V5
    assert order.ReceiverProvince == 22 and order.SenderProvince == 22
    assert order.SenderDistrict == 193  # the desk's configuration still names its former district
    assert order.CODAmount == float(int(event.data.cod_amount)) > 0
    assert order.Description is not None and event.dossier_code in order.Description
    assert list(order.wire()) == MORDER_FIELDS  # every field, in MOrder's order, null where empty


def test_a_pickup_order_is_sent_by_the_citizen_to_the_desk_without_cod() -> None:
    event = first("postal.pickup_requested")
    order = order_for(event, MAPPING, UNITS)
    assert order.OrderNumber.endswith("-TN")
    assert order.SenderName == event.applicant.name and order.ReceiverName == OPTIONS["agency"]["name"]  # V5
    assert order.CODAmount == 0


def test_a_unit_with_its_own_desk_sends_from_it() -> None:
    event = first("postal.delivery_requested")
    own = {**OPTIONS["agency"], "name": "Một cửa phường Hồng Gai", "phone": "02033111222"}
    mapping = PostalMapping.from_options({**OPTIONS, "agencies": {event.unit_code: own}})
    assert order_for(event, mapping, UNITS).SenderName == "Một cửa phường Hồng Gai"


def test_a_request_with_an_empty_address_is_sent_to_the_applicant_s() -> None:
    event = next(e for e in EVENTS if e.type == "postal.delivery_requested" and e.applicant.address)
    home = event.applicant.address
    order = order_for(changed(event, data={**event_json(event)["data"], "address": {}}), MAPPING, UNITS)
    assert order.ReceiverAddress == ", ".join(p for p in (home.street, home.ward, home.district, home.province) if p)


def test_an_applicant_without_a_phone_cannot_be_sent_anything() -> None:
    event = first("postal.delivery_requested")
    event = changed(event, applicant={k: v for k, v in event_json(event)["applicant"].items() if k != "phone"})
    with pytest.raises(OrderError, match="no phone"):
        order_for(event, MAPPING, UNITS)


def test_an_unresolvable_address_is_named_without_the_citizen_s_street() -> None:
    event = first("postal.delivery_requested")
    data = event_json(event)["data"]
    address = {**data["address"], "province": "Tỉnh Không Có"}
    with pytest.raises(AddressError) as caught:
        order_for(changed(event, data={**data, "address": address}), MAPPING, UNITS)
    assert "Tỉnh Không Có" in str(caught.value) and address["street"] not in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "data", "cancels"),
    [
        ("dossier.withdrawn", {"reason": "Công dân rút hồ sơ"}, ["pickup", "delivery"]),
        ("dossier.returned", {"returned_at": "2026-11-20T10:00:00+07:00", "method": "desk"}, ["delivery"]),
        ("dossier.returned", {"returned_at": "2026-11-20T10:00:00+07:00", "method": "online"}, ["delivery"]),
        ("dossier.returned", {"returned_at": "2026-11-20T10:00:00+07:00", "method": "post"}, []),
        ("dossier.completed", {}, []),
    ],
)
def test_what_an_event_cancels(kind: str, data: dict[str, Any], cancels: list[str]) -> None:
    event = changed(first("dossier.received"), type=kind, data=data)
    assert cancellations(event) == cancels
    assert takes(event) == (kind != "dossier.completed")


def test_the_mapping_refuses_a_status_it_cannot_express_and_equal_suffixes() -> None:
    with pytest.raises(ValueError, match="not one of"):
        PostalMapping.from_options({**OPTIONS, "status_map": {"45": "lost_in_space"}})
    with pytest.raises(ValueError, match="not an integer status code"):
        PostalMapping.from_options({**OPTIONS, "status_map": {"giao": "delivered"}})
    with pytest.raises(ValueError, match="answers: 409"):
        PostalMapping.from_options({**OPTIONS, "answers": {"409": "maybe"}})
    with pytest.raises(ValueError, match="cannot be remapped"):
        PostalMapping.from_options({**OPTIONS, "answers": {"200": "error"}})
    remapped = PostalMapping.from_options({**OPTIONS, "answers": {"1": "duplicate"}})
    assert remapped.answers[1] == "duplicate" and remapped.answers[409] == "duplicate"
    with pytest.raises(ValueError, match="must differ"):
        PostalMapping.from_options({**OPTIONS, "order_suffixes": {"pickup": "KQ"}})
    with pytest.raises(ValueError, match="customer_code"):
        PostalMapping.from_options({"agency": OPTIONS["agency"]})
    with pytest.raises(ValueError, match="phone"):
        PostalMapping.from_options({**OPTIONS, "agency": {"name": "x", "address": "y", "province": "22"}})


def test_the_bundled_routing_s_postal_destination_makes_a_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.options import resolve
    from services.postal.deliver import PostalOptions

    destination = get_routing(str(Path("config/relay.toml").resolve())).destinations["postal"]
    monkeypatch.setenv("MOTCUA_POSTAL_CONSUMER_KEY", "k")
    monkeypatch.setenv("MOTCUA_POSTAL_CONSUMER_SECRET", "s")
    mapping = resolve(destination, PostalOptions).mapping()
    assert mapping.customer_code and UNITS.province(mapping.agency.province) == "22"


# ---------------------------------------------------------------- statuses


def record(code: int, at: datetime, number: str, rid: int = 7) -> TrackingRecord:
    return TrackingRecord.model_validate({
        "_id": {"$oid": f"{rid:024x}"}, "CustomerCode": OPTIONS["customer_code"], "OrderNumber": number,
        "EventTime": int(at.timestamp() * 1000), "POSID": "200000", "ItemCode": "EB000000007VN",
        "StatusCode": code, "StatusMessage": "Phát thành công", "Notes": None})


def test_a_tracking_record_becomes_a_postal_status_event_built_on_the_request() -> None:
    request = first("postal.delivery_requested")
    number = f"{request.dossier_code}-KQ"
    made = status_event(record(4, datetime(2026, 11, 21, 2, 30, 5, 123, tzinfo=UTC), number), request,
                        MAPPING, "postal")
    assert made is not None
    event = event_json(made)  # as the ledger stores it
    parsed = parse_event(event)
    assert parsed.type == "postal.status" and parsed.origin == "postal.delivery"  # one stream per order
    assert event["event_id"] == f"postal:{number}:4:20261121093005"
    assert event["occurred_at"] == "2026-11-21T09:30:05+07:00"
    assert (event["unit_code"], event["dossier_code"], event["procedure_code"]) == (
        request.unit_code, request.dossier_code, request.procedure_code)
    assert event["applicant"] == event_json(request)["applicant"]
    assert event["data"] == {"order_number": number, "purpose": "delivery", "item_code": "EB000000007VN",
                             "status_code": "4", "status": "delivered", "message": "Phát thành công"}


def test_the_same_status_pushed_and_polled_has_one_id_and_repeats_of_a_code_differ() -> None:
    at = datetime(2026, 11, 21, 2, 30, 5, tzinfo=UTC)
    assert status_event_id(record(5, at, "X-KQ", 7)) == status_event_id(record(5, at, "X-KQ", 99))
    assert status_event_id(record(5, at, "X-KQ")) != status_event_id(
        record(5, at.replace(second=6), "X-KQ"))


def test_waiting_is_not_news_and_an_unmapped_code_is_refused() -> None:
    request = first("postal.delivery_requested")
    at = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)
    assert status_event(record(1, at, "X-KQ"), request, MAPPING, "postal") is None
    with pytest.raises(ValueError, match="45"):
        status_event(record(45, at, "X-KQ"), request, MAPPING, "postal")
    # V12: the codes are configuration, not code
    remapped = PostalMapping.from_options({**OPTIONS, "status_map": {"45": "in_transit", "1": "collected"}})
    assert status_event(record(45, at, "X-KQ"), request, remapped, "postal") is not None
    assert status_event(record(1, at, "X-KQ"), request, remapped, "postal") is not None
