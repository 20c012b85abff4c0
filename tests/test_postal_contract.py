"""The post's contract (docs/contracts.md V1–V12, the NGSP SDK OpenCPS ships), rule by rule, against the simulator
over real HTTP: what the relay's connector and adapter send is taken, and the relay's old dialect is refused
with the reason. V11 runs end to end in ``tests/test_postal_flow.py``
(``test_v11_every_status_of_our_orders_is_one_event_and_a_foreign_record_none``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest
from pydantic import SecretStr

from adapters.postal import PostalMapping, order_for
from config.admin_units import load_admin_units
from connectors.base import Permanent, Retryable, build_http_client
from connectors.credentials import TokenCache
from connectors.postal import PostalConnector
from sandbox.workload import generate_day
from schemas.events import PostalRequest, parse_event
from schemas.postal import CANCEL_PATH, DEFAULT_STATUS_MAP, FIRST_ID, ORDER_PATH, TOKEN_PATH, TRACKING_PATH
from tests.postal_wire import (
    CUSTOMER,
    KEY,
    NUMBER,
    SECRET,
    admin_order,
    advance,
    ask_token,
    auth,
    basic,
    cancel,
    create,
    old_order,
    order,
    postal_app,
    stats,
    token,
    tracking,
)
from tests.servers import run_asgi

REQUIRED = ["CustomerCode", "OrderNumber", "SenderName", "SenderAddress", "SenderTel", "SenderProvince",
            "ReceiverName", "ReceiverAddress", "ReceiverTel", "ReceiverProvince"]
AGENCY = {"name": "Bộ phận một cửa phường Hồng Gai", "phone": "02033835588",
          "address": "Số 1 đường 25/4, phường Hồng Gai, Quảng Ninh", "province": "Quảng Ninh"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(postal_app()) as url:
        yield url


def relay_connector(base_url: str, secret: str = SECRET) -> PostalConnector:
    return PostalConnector(token_url=base_url + TOKEN_PATH, order_url=base_url + ORDER_PATH,
                           cancel_url=base_url + CANCEL_PATH, tracking_url=base_url + TRACKING_PATH,
                           customer_code=CUSTOMER, consumer_key=KEY, consumer_secret=SecretStr(secret),
                           client=build_http_client(2.0, 5.0), tokens=TokenCache(None, "contract"),
                           credential_name="postal:contract")


def requests_of_the_day() -> dict[str, PostalRequest]:
    """The first pickup and the first delivery request of a generated day."""
    found: dict[str, PostalRequest] = {}
    for raw in generate_day(300, day=date(2026, 11, 20), seed=5):
        if raw["type"] in ("postal.pickup_requested", "postal.delivery_requested"):
            event = parse_event(raw)
            assert isinstance(event, PostalRequest)
            found.setdefault(raw["type"], event)
    return found


MAPPING = PostalMapping.from_options({"customer_code": CUSTOMER, "agency": AGENCY})


# ---------------------------------------------------------------- V1, V2: the token


def test_v1_the_token_is_basic_with_a_client_credentials_form(client: httpx.Client, base_url: str) -> None:
    # the relay's connector gets one
    authorization, lifetime = relay_connector(base_url).obtain_token()
    assert authorization.startswith("Bearer ") and lifetime == 3600
    # today's dialect, a JSON body of the keys, is refused as the OAuth2 gateway refuses it
    old = client.post(TOKEN_PATH, json={"consumerKey": KEY, "consumerSecret": SECRET})
    assert (old.status_code, old.json()["error"]) == (400, "invalid_request")
    assert "application/x-www-form-urlencoded" in old.json()["error_description"]
    # so are a form without Basic, wrong keys and another grant
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    no_basic = client.post(TOKEN_PATH, content=b"grant_type=client_credentials", headers=form)
    assert (no_basic.status_code, no_basic.json()["error"]) == (401, "invalid_client")
    assert ask_token(client, secret="sai").json()["error"] == "invalid_client"
    other = client.post(TOKEN_PATH, content=b"grant_type=password", headers={**form, "Authorization": basic()})
    assert (other.status_code, other.json()["error"]) == (400, "unsupported_grant_type")
    assert stats(client)["tokens"]["refused"] == 2
    with pytest.raises(Permanent, match="invalid_client"):
        relay_connector(base_url, secret="sai").obtain_token()


def test_v2_later_calls_carry_the_token_type_and_the_token(client: httpx.Client) -> None:
    answer = ask_token(client).json()
    assert set(answer) >= {"access_token", "token_type", "expires_in"} and answer["token_type"] == "Bearer"
    assert create(client, f"Bearer {answer['access_token']}", order())["Status"] == 200
    for wrong in (answer["access_token"], basic(), "Bearer khong-co"):
        refused = client.post(ORDER_PATH, json=order(f"{NUMBER}2"), headers=auth(wrong))
        assert refused.status_code == 401 and refused.json()["fault"]["message"] == "Invalid Credentials"
    assert len(client.get("/_admin/orders").json()) == 1


# ---------------------------------------------------------------- V3-V6: the order


def test_v3_the_order_is_exactly_morder_as_json(client: httpx.Client, base_url: str) -> None:
    # the relay's order, from a real request event, is taken
    event = requests_of_the_day()["postal.delivery_requested"]
    built = order_for(event, MAPPING, load_admin_units())
    assert relay_connector(base_url).create(built).meaning == "done"
    held = admin_order(client, built.OrderNumber)["order"]
    assert held == built.wire() and list(held) == list(order())  # all 17, in MOrder's order
    assert isinstance(held["ReceiverProvince"], int) and isinstance(held["CODAmount"], float)
    # today's dialect is refused, each unknown field named
    access = token(client)
    old = create(client, access, old_order(f"{NUMBER}-OLD"))
    assert old["Status"] == 400
    for name in ("customerCode", "purpose", "serviceCode", "weight", "senderProvinceCode", "codAmount"):
        assert name in old["Message"]
    # and so are the right names with the wrong types
    assert "SenderProvince" in create(client, access, order(f"{NUMBER}-A", SenderProvince="22"))["Message"]
    assert "CODAmount" in create(client, access, order(f"{NUMBER}-B", CODAmount="50000"))["Message"]
    assert "ReceiverDistrict" in create(client, access, order(f"{NUMBER}-C", ReceiverDistrict="193"))["Message"]
    as_form = client.post(ORDER_PATH, content=b"OrderNumber=X", headers={
        **auth(access), "Content-Type": "application/x-www-form-urlencoded"}).json()
    assert as_form["Status"] == 400 and "application/json" in as_form["Message"]
    assert [o["OrderNumber"] for o in client.get("/_admin/orders").json()] == [built.OrderNumber]


@pytest.mark.parametrize("field", REQUIRED)
def test_v4_the_keys_and_both_sides_names_addresses_phones_and_provinces_are_required(
    client: httpx.Client, field: str
) -> None:
    answer = create(client, token(client), {k: v for k, v in order().items() if k != field})
    assert answer["Status"] == 400 and field in answer["Message"]
    assert "Nguyễn" not in answer["Message"] and "0912" not in answer["Message"]  # names, never values
    assert client.get("/_admin/orders").json() == []


def test_v4_the_customer_code_must_be_the_account_s(client: httpx.Client) -> None:
    assert create(client, token(client), order(CustomerCode="HCC-KHAC"))["Status"] == 403
    assert stats(client)["creates"]["refused"] == 1


def test_v5_the_citizen_receives_a_delivery_and_sends_a_pickup(client: httpx.Client, base_url: str) -> None:
    connector = relay_connector(base_url)
    for kind, event in requests_of_the_day().items():
        built = order_for(event, MAPPING, load_admin_units())
        assert connector.create(built).meaning == "done"
        held = admin_order(client, built.OrderNumber)["order"]
        citizen, desk = ("Receiver", "Sender") if kind == "postal.delivery_requested" else ("Sender", "Receiver")
        assert held[f"{citizen}Name"] == event.applicant.name and held[f"{citizen}Tel"] == event.applicant.phone
        assert held[f"{desk}Name"] == AGENCY["name"] and held[f"{desk}Tel"] == AGENCY["phone"]
        assert held["CODAmount"] == (float(int(event.data.cod_amount)) if citizen == "Receiver" else 0.0)


def test_v6_the_answer_is_mresult_with_http_200_and_status_200_is_done(client: httpx.Client,
                                                                        base_url: str) -> None:
    access = token(client)
    first = client.post(ORDER_PATH, json=order(), headers=auth(access))
    assert first.status_code == 200 and first.json() == {"Status": 200, "Message": "Thành công"}
    repeat = client.post(ORDER_PATH, json=order(), headers=auth(access))
    assert repeat.status_code == 200 and repeat.json()["Status"] == 409  # a refusal is a Status, not an HTTP code
    # the relay's connector reads both, and a non-200 HTTP status is a failure as in the SDK
    connector = relay_connector(base_url)
    built = order_for(requests_of_the_day()["postal.delivery_requested"], MAPPING, load_admin_units())
    assert connector.create(built).meaning == "done" and connector.create(built).meaning == "duplicate"
    client.post("/_admin/faults", json={"error_rate": 1, "error_status": 503})
    with pytest.raises(Retryable, match="503"):
        connector.create(built)


# ---------------------------------------------------------------- V7, V8: cancel, and no look-up


def test_v7_cancel_is_a_get_of_exactly_the_customer_and_the_number(client: httpx.Client, base_url: str) -> None:
    access = token(client)
    create(client, access, order())
    # today's dialect, a POST of JSON, is not a route of the gateway
    old = client.post(CANCEL_PATH, json={"customerCode": CUSTOMER, "orderNumber": NUMBER, "reason": "x"},
                      headers=auth(access))
    assert old.status_code == 405
    extra = client.get(CANCEL_PATH, params={"CustomerCode": CUSTOMER, "OrderNumber": NUMBER, "reason": "x"},
                       headers=auth(access)).json()
    assert extra["Status"] == 400 and "reason" in extra["Message"]
    missing = client.get(CANCEL_PATH, params={"OrderNumber": NUMBER}, headers=auth(access)).json()
    assert missing["Status"] == 400 and "CustomerCode" in missing["Message"]
    assert admin_order(client)["StatusCode"] == 1
    # the relay's connector cancels
    assert relay_connector(base_url).cancel(NUMBER).meaning == "done"
    assert admin_order(client)["StatusCode"] == 7
    assert cancel(client, access, NUMBER)["Status"] == 200  # again: still cancelled, no new record


def test_v8_there_is_no_look_up_of_an_order_by_number(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    assert client.get(f"{ORDER_PATH}/{NUMBER}", headers=auth(access)).status_code == 404
    assert client.get(f"/api/v1/orders/{NUMBER}", params={"customerCode": CUSTOMER},
                      headers=auth(access)).status_code == 404  # today's dialect
    assert client.get(ORDER_PATH, params={"OrderNumber": NUMBER}, headers=auth(access)).status_code == 405


# ---------------------------------------------------------------- V9, V10: the tracking list


def test_v9_tracking_is_pagesize_and_an_object_id_last_id(client: httpx.Client, base_url: str) -> None:
    access = token(client)
    for n in range(3):
        create(client, access, order(f"{NUMBER}{n}"))
    # the relay's connector pages from OpenCPS's first id, each next lastId the last record's _id.$oid
    connector, last, seen = relay_connector(base_url), FIRST_ID, []
    while records := connector.tracking(last, 2).records:
        seen += [r.OrderNumber for r in records]
        last = records[-1].oid
    assert seen == [f"{NUMBER}{n}" for n in range(3)]
    # today's dialect, and anything else, is refused in RESTHeart's words
    for params in ({"customerCode": CUSTOMER, "lastId": 0, "limit": 100}, {"pagesize": 50, "lastId": 0},
                   {"pagesize": 50, "lastId": FIRST_ID, "customerCode": CUSTOMER}, {"pagesize": 0, "lastId": FIRST_ID},
                   {"pagesize": 50}):
        refused = client.get(TRACKING_PATH, params=params, headers=auth(access))
        assert refused.status_code == 400 and refused.json()["http status description"] == "Bad Request", params
    assert "ObjectId" in client.get(TRACKING_PATH, params={"pagesize": 50, "lastId": 7},
                                    headers=auth(access)).json()["message"]


def test_v10_a_page_is_restheart_shaped_and_an_empty_one_has_no_embedded(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    advance(client, steps=1)
    raw = client.get(TRACKING_PATH, params={"pagesize": 50, "lastId": FIRST_ID}, headers=auth(access)).json()
    assert (raw["_size"], raw["_total_pages"], raw["_returned"]) == (2, 1, 2)
    docs = raw["_embedded"]["rh:doc"]
    assert [set(d) for d in docs] == [{"_id", "CustomerCode", "OrderNumber", "EventTime", "POSID", "ItemCode",
                                       "StatusCode", "StatusMessage", "Notes"}] * 2
    assert all(len(d["_id"]["$oid"]) == 24 and isinstance(d["EventTime"], int) and isinstance(d["StatusCode"], int)
               for d in docs)
    empty = client.get(TRACKING_PATH, params={"pagesize": 50, "lastId": docs[-1]["_id"]["$oid"]},
                       headers=auth(access)).json()
    assert "_embedded" not in empty and empty["_returned"] == 0


# ---------------------------------------------------------------- V12: status codes


def test_v12_status_codes_are_small_integers_and_the_default_map_names_each(client: httpx.Client) -> None:
    access = token(client)
    create(client, access, order())
    advance(client, steps=4)
    codes = [r.StatusCode for r in tracking(client, access).records]
    assert codes == [1, 2, 3, 8, 4] and all(isinstance(c, int) for c in codes)
    assert set(codes) <= set(DEFAULT_STATUS_MAP) and DEFAULT_STATUS_MAP[4] == "delivered"  # OpenCPS's 4
    # a province's own codes are configuration (status_map), tested with the adapter
    remapped = PostalMapping.from_options({"customer_code": CUSTOMER, "agency": AGENCY,
                                           "status_map": {"9": "in_transit", "8": ""}})
    assert remapped.status_map[9] == "in_transit" and remapped.status_map[8] is None
