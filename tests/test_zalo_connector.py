"""Zalo: the adapter's tables (phones, templates, quiet hours) and the connector's answer table (SMS's is in
``tests/test_sms_connector.py``)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from adapters.payment import PaymentMapping, bill_created_event
from adapters.zalo import MappingError, QuietHours, message_for, normalise_phone, render, tracking_id
from config.zalo_templates import load_templates
from connectors.base import AuthExpired, DeliveryError, Permanent, Retryable, build_http_client
from connectors.credentials import TokenPair, TokenPairStore
from connectors.pauses import WHOLE
from connectors.zalo import (
    ANSWERS,
    AccountPaused,
    QuotaSpent,
    Unreachable,
    ZaloConnector,
    classify_refresh,
    classify_zns,
)
from sandbox.workload import generate_day
from schemas.events import Event, event_json, parse_event
from schemas.vietnam import VN_TZ
from schemas.zalo import OAUTH_PATH, ZNS_PATH, TemplateSpec, TokenAnswer, ZnsAnswer

TEMPLATES = load_templates()
DAY = generate_day(120, day=date(2026, 11, 20), seed=31)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0912 345 678", "84912345678"),
        ("0912.345.678", "84912345678"),
        ("+84912345678", "84912345678"),
        ("84-912-345-678", "84912345678"),
        ("(+84) 912 345 678", "84912345678"),
        ("0386123456", "84386123456"),
        ("01662345678", "84362345678"),  # renumbered in 2018: 0166 → 036
        ("01203456789", "84703456789"),
        ("0599123456", "84599123456"),
    ],
)
def test_phones_are_normalised(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", ["0243 825 1234", "091234567", "09123456789", "0112345678", "abc", "", "+1 415 555"])
def test_impossible_phones_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(MappingError, match=r"mobile|digits"):
        normalise_phone(raw)


def consenting(kind: str) -> Any:
    return next(parse_event(e) for e in DAY
                if e["type"] == kind and e["applicant"].get("zalo_consent") and e["applicant"].get("phone"))


def changed(event: Event, **fields: Any) -> Any:
    """The event with some of its JSON fields replaced, validated again."""
    return parse_event(event_json(event) | fields)


@pytest.mark.parametrize("kind", sorted(TEMPLATES.templates))
def test_every_template_is_filled_from_its_event(kind: str) -> None:
    if kind == "fee.bill_created":  # made by the payment deliverer from an assessed fee
        mapping = PaymentMapping(provider="platform", beneficiary_account="1", beneficiary_name="UBND",
                                 beneficiary_bank="KBNN")
        event = bill_created_event(consenting("fee.assessed"), mapping, "HS-1-LP", "https://pay.example/p?txn=HS-1-LP",
                                   datetime.now(UTC))
        assert message_for(event, TEMPLATES).data["link_thanh_toan"] == "https://pay.example/p?txn=HS-1-LP"
    else:
        try:
            event = consenting(kind)
        except StopIteration:  # none in the day (the workload has no fee requests): build one from a received event
            base = consenting("dossier.received")
            data = {"dossier.fee_requested": {"fee_id": "LP-1", "amount": 1250000, "lines": []},
                    "dossier.refused": {"reason": "Hồ sơ không thuộc thẩm quyền giải quyết của đơn vị"}}[kind]
            event = changed(base, type=kind, data=data)
    message = message_for(event, TEMPLATES)
    spec = TEMPLATES.templates[kind]
    assert set(message.data) == set(spec.data)
    assert all(value.strip() for value in message.data.values())
    assert message.data["ma_ho_so"] == event.dossier_code
    assert message.template_id == spec.template_id and message.phone.startswith("84")
    assert message.sms and "{" not in message.sms


def test_vietnamese_text_keeps_its_diacritics_and_formats() -> None:
    event = consenting("dossier.received")
    data = message_for(event, TEMPLATES).data
    assert data["ten_cong_dan"] == event.applicant.name
    assert data["ten_thu_tuc"] == event.data.procedure_name
    due = event.data.due_at.astimezone(VN_TZ)
    assert data["ngay_hen_tra"] == due.strftime("%d/%m/%Y")
    fee = changed(event, type="dossier.fee_requested", data={"fee_id": "LP-9", "amount": 1250000, "lines": []})
    assert message_for(fee, TEMPLATES).data["so_tien"] == "1.250.000 đ"
    done = changed(event, type="dossier.completed", data={"pickup": "post"})
    assert message_for(done, TEMPLATES).data["hinh_thuc_nhan"] == "Chuyển phát qua bưu điện đến địa chỉ của công dân"


def test_a_missing_parameter_stops_the_message_before_sending() -> None:
    event = consenting("dossier.received")
    without_name = changed(event, data={k: v for k, v in event_json(event)["data"].items() if k != "procedure_name"})
    with pytest.raises(MappingError, match="ten_thu_tuc is empty"):
        message_for(without_name, TEMPLATES)


def test_a_fallback_fills_an_absent_field_and_long_names_are_shortened() -> None:
    event = consenting("dossier.supplement_requested")
    undated = changed(event, data={k: v for k, v in event_json(event)["data"].items() if k != "due_at"})
    assert message_for(undated, TEMPLATES).data["han_bo_sung"] == "theo thông báo của Bộ phận một cửa"
    company = "Công ty TNHH Xây dựng và Thương mại Hạ Long"
    long_name = changed(event, applicant={**event_json(event)["applicant"], "name": company})
    assert message_for(long_name, TEMPLATES).data["ten_cong_dan"] == "Xây dựng và Thương mại Hạ Long"


def spec(**data_and_types: tuple[str, str | None]) -> TemplateSpec:
    """A one-off template: parameter → (its text, its declared type or None)."""
    return TemplateSpec(template_id="399999", data={k: v[0] for k, v in data_and_types.items()},
                        types={k: v[1] for k, v in data_and_types.items() if v[1]})


@pytest.mark.parametrize(
    ("template", "fields", "refusal"),
    [
        (spec(ten=("{applicant.name}", "customer_name")), {"name": "Nguyễn Thị Hương Giang Phạm Văn Đồng"},
         "parameter ten (customer_name, at most 30 characters) is 36 characters long"),
        (spec(ma=("{data.reason}", "code")), {"reason": "HS 0001"},
         "parameter ma is not of type code (a code without spaces)"),
        (spec(ly_do=("{data.reason}", "product_name")), {"reason": "Xem tại https://dvc.gov.vn/p/9"},
         "parameter ly_do (product_name) holds a link"),
        (spec(ly_do=("{data.reason}", None)), {"reason": "Tra cứu tại dichvucong.gov.vn"},
         "parameter ly_do (text) holds a link"),
        (spec(tien=("{data.reason}", "amount")), {"reason": "một triệu đồng"}, "parameter tien is not of type amount"),
        (spec(han=("{data.reason}", "time")), {"reason": "thứ Hai tuần sau"}, "parameter han is not of type time"),
        (spec(link=("{data.reason}", "url")), {"reason": "dvc.gov.vn/p/9"}, "parameter link is not of type url"),
        (spec(sdt=("{data.reason}", "phone_number")), {"reason": "0912 345 678 9012"},
         "parameter sdt (phone_number, at most 15 characters)"),
    ],
)
def test_a_parameter_outside_its_type_stops_the_message_naming_never_the_value(
    template: TemplateSpec, fields: dict[str, str], refusal: str
) -> None:
    base = changed(consenting("dossier.received"), type="dossier.refused", data={"reason": "Hồ sơ thiếu giấy tờ"})
    applicant = {**event_json(base)["applicant"], **({"name": fields["name"]} if "name" in fields else {})}
    event = changed(base, applicant=applicant, data={"reason": fields.get("reason", "Hồ sơ thiếu giấy tờ")})
    with pytest.raises(MappingError) as refused:
        render(template, event, {})
    assert f"template 399999: {refusal}" in str(refused.value)
    for value in fields.values():
        assert value not in str(refused.value)


def test_a_link_is_taken_in_a_url_parameter_and_a_time_in_zalos_formats() -> None:
    event = changed(consenting("dossier.received"), type="dossier.refused", data={"reason": "https://dvc.gov.vn/p/9"})
    assert render(spec(link=("{data.reason}", "url")), event, {}) == {"link": "https://dvc.gov.vn/p/9"}
    due = consenting("dossier.received")
    assert render(spec(han=("{data.due_at:datetime}", None)), due, {})["han"].count("/") == 2


def test_the_types_are_checked_when_the_file_is_read() -> None:
    with pytest.raises(ValueError, match="unknown ZNS type 'string'"):
        spec(ma=("{dossier_code}", "string"))
    with pytest.raises(ValueError, match="not a parameter of the template"):
        TemplateSpec(template_id="1", data={"a": "{dossier_code}"}, types={"b": "code"})


def test_a_templates_file_without_types_keeps_working_with_the_types_inferred() -> None:
    # given a province's file from before the types (the bundled file as it was)
    old = load_templates(str(Path(__file__).parent / "fixtures" / "zalo-2026-11.toml"))
    # then each parameter is inferred, its max_length the cap, and every event fills the same data as before
    received = old.templates["dossier.received"]
    assert [received.param_type(n) for n in received.data] == [("text", 30), ("text", 200), ("text", 200),
                                                               ("time", 20)]
    fee = old.templates["fee.bill_created"]
    assert (fee.param_type("so_tien"), fee.param_type("link_thanh_toan")) == (("amount", 20), ("url", 200))
    for kind in ("dossier.received", "dossier.supplement_requested", "dossier.completed"):
        event = consenting(kind)
        assert message_for(event, old).data == message_for(event, TEMPLATES).data


def test_consent_and_phone_are_required() -> None:
    event = consenting("dossier.received")
    with pytest.raises(MappingError, match="consented"):
        message_for(changed(event, applicant={**event_json(event)["applicant"], "zalo_consent": False}), TEMPLATES)
    with pytest.raises(MappingError, match="no phone"):
        message_for(changed(event, applicant={**event_json(event)["applicant"], "phone": None}), TEMPLATES)


def test_tracking_id_is_stable_per_event_and_template_and_fits_zns() -> None:
    assert tracking_id("ev-1", "300001") == tracking_id("ev-1", "300001")
    assert len({tracking_id("ev-1", "300001"), tracking_id("ev-2", "300001"), tracking_id("ev-1", "300002")}) == 3
    assert len(tracking_id("x" * 100, "300001")) <= 48


@pytest.mark.parametrize(
    ("local", "until"),
    [
        ("2026-11-20 22:30", "2026-11-21 07:00"),
        ("2026-11-20 21:00", "2026-11-21 07:00"),
        ("2026-11-21 00:10", "2026-11-21 07:00"),
        ("2026-11-21 06:59", "2026-11-21 07:00"),
        ("2026-11-21 07:00", None),
        ("2026-11-21 13:00", None),
        ("2026-11-21 20:59", None),
    ],
)
def test_quiet_hours(local: str, until: str | None) -> None:
    quiet = QuietHours.parse("21:00-07:00")
    assert quiet is not None
    moment = datetime.fromisoformat(local).replace(tzinfo=VN_TZ)
    expected = datetime.fromisoformat(until).replace(tzinfo=VN_TZ) if until else None
    assert quiet.until(moment) == expected
    assert QuietHours.parse("none") is None


# (ZNS error, class)
ZNS_TABLE: list[tuple[int, type[DeliveryError] | None]] = [
    (0, None), (-124, AuthExpired), (-32, Retryable), (-100, Retryable), (-144, QuotaSpent), (-133, Retryable),
    (-115, AccountPaused), (-131, AccountPaused), (-146, AccountPaused), (-147, AccountPaused),
    (-118, Unreachable), (-119, Unreachable), (-110, Unreachable), (-114, Unreachable), (-141, Unreachable),
    (-139, Unreachable), (-101, Permanent), (-104, Permanent), (-105, Permanent), (-117, Permanent),
    (-135, Permanent), (-108, Permanent), (-109, Permanent), (-111, Permanent), (-112, Permanent),
    (-116, Permanent), (-132, Permanent), (-999, Permanent), (-1, Permanent),
]


@pytest.mark.parametrize(("code", "expected"), ZNS_TABLE, ids=[str(c) for c, _ in ZNS_TABLE])
def test_zns_answer_table_row(code: int, expected: type[DeliveryError] | None) -> None:
    error = classify_zns(ZnsAnswer(error=code, message="Lý do"))
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert error is not None and str(code) in error.reason
    if code not in ANSWERS:
        assert "unknown code" in error.reason
    if expected is QuotaSpent:
        assert error.retry_after is not None and 0 < error.retry_after <= 86400


# an account-level answer: (condition, paused scope, ends at Vietnam's next midnight)
PAUSE_TABLE = [(-115, "balance", WHOLE, False), (-144, "oa_daily_quota", WHOLE, True),
               (-131, "template_not_approved", "300003", False), (-146, "template_disabled", "300003", False),
               (-147, "template_daily_quota", "300003", True)]


@pytest.mark.parametrize(("code", "condition", "scope", "daily"), PAUSE_TABLE, ids=[str(r[0]) for r in PAUSE_TABLE])
def test_an_account_level_answer_pauses_the_destination_or_the_template(
    code: int, condition: str, scope: str, daily: bool
) -> None:
    late_evening = datetime(2026, 11, 20, 23, 0, tzinfo=VN_TZ).timestamp()
    error = classify_zns(ZnsAnswer(error=code, message="Lý do"), 200, "300003", now=late_evening)
    assert isinstance(error, AccountPaused) and not isinstance(error, Permanent | Retryable)
    assert (error.condition, error.scope, error.sent, error.outcome) == (condition, scope, True, "paused")
    if daily:  # at 23:00 Vietnam time: one hour to go
        assert (error.retry_after, error.until) == (3600.0, late_evening + 3600)
    else:  # until a probe goes through
        assert error.retry_after is None and error.until is None


@pytest.mark.parametrize(
    ("answer", "condition"),
    [
        ({"error": -14014, "error_name": "Invalid refresh token"}, "token_refused"),
        ({"error_name": "Invalid refresh token", "error_reason": "refresh_token is invalid or expired",
          "error_description": "Refresh token không hợp lệ hoặc đã hết hạn"}, "token_refused"),
        ({"error_name": "Invalid parameter", "error_reason": "Invalid refresh token"}, "token_refused"),
        ({"error": -14002, "error_name": "Invalid app id"}, "app_refused"),
        ({"error_name": "Invalid secret key", "error_reason": "secret_key is invalid"}, "app_refused"),
        ({"error": -14001, "error_name": "Invalid parameter"}, None),
        ({"error_name": "Internal error"}, None),
    ],
)
def test_a_refused_refresh_is_classified_with_or_without_its_number(answer: dict[str, Any],
                                                                      condition: str | None) -> None:
    error = classify_refresh(TokenAnswer.model_validate(answer))
    if condition is None:  # not a verdict on the pair: tried again later, as any weather
        assert type(error) is Retryable
        return
    assert isinstance(error, AccountPaused) and error.condition == condition
    assert ("motcua-relay zalo set-token" in error.reason) == (condition == "token_refused")


ZNS = "http://zalo.test"


def zalo(store: TokenPairStore | None = None) -> tuple[ZaloConnector, TokenPairStore]:
    pairs = store or TokenPairStore(None, "t")
    pairs.put("zalo:test", TokenPair("A1", "R1", time.time() + 3600 * 20))
    conn = ZaloConnector(zns_url=ZNS, oauth_url=ZNS, app_id="app", app_secret=SecretStr("app-secret"),
                         client=build_http_client(1, 5), pairs=pairs, name="zalo:test")
    return conn, pairs


@respx.mock
def test_a_refused_token_is_rotated_once_and_the_send_repeated() -> None:
    refresh = respx.post(f"{ZNS}{OAUTH_PATH}").mock(return_value=httpx.Response(
        200, json={"access_token": "A2", "refresh_token": "R2", "expires_in": "90000"}))
    send = respx.post(f"{ZNS}{ZNS_PATH}").mock(side_effect=[
        httpx.Response(200, json={"error": -124, "message": "token hết hạn"}),
        httpx.Response(200, json={"error": 0, "data": {"msg_id": "m1", "quota": {"remainingQuota": "7"}}}),
    ])
    conn, pairs = zalo()
    sent = conn.send("84912345678", "300001", {"a": "b"}, "t1")
    assert (sent.msg_id, sent.remaining_quota) == ("m1", 7)
    assert refresh.call_count == 1 and send.calls.last.request.headers["access_token"] == "A2"
    assert b"refresh_token=R1" in refresh.calls.last.request.content
    assert refresh.calls.last.request.headers["secret_key"] == "app-secret"
    stored = pairs.get("zalo:test")
    assert stored is not None and (stored.access_token, stored.refresh_token) == ("A2", "R2")


@respx.mock
def test_a_token_refused_twice_is_auth_expired_and_a_refused_refresh_waits_for_the_operator() -> None:
    respx.post(f"{ZNS}{OAUTH_PATH}").mock(return_value=httpx.Response(
        200, json={"access_token": "A2", "refresh_token": "R2", "expires_in": "90000"}))
    respx.post(f"{ZNS}{ZNS_PATH}").mock(return_value=httpx.Response(200, json={"error": -124}))
    with pytest.raises(AuthExpired):
        zalo()[0].send("84912345678", "300001", {"a": "b"}, "t1")
    respx.post(f"{ZNS}{OAUTH_PATH}").mock(return_value=httpx.Response(
        200, json={"error_name": "Invalid refresh token", "error_reason": "refresh_token is invalid or expired"}))
    with pytest.raises(AccountPaused, match="set-token") as refused:
        zalo()[0].send("84912345678", "300001", {"a": "b"}, "t1")
    assert refused.value.condition == "token_refused"


@respx.mock
def test_the_pair_is_renewed_ahead_of_expiry() -> None:
    refresh = respx.post(f"{ZNS}{OAUTH_PATH}").mock(return_value=httpx.Response(
        200, json={"access_token": "A2", "refresh_token": "R2", "expires_in": 90000}))
    respx.post(f"{ZNS}{ZNS_PATH}").mock(return_value=httpx.Response(200, json={"error": 0,
                                                                                     "data": {"msg_id": "m"}}))
    conn, pairs = zalo()
    pairs.put("zalo:test", TokenPair("A1", "R1", time.time() + 60))  # within the hour ahead
    conn.send("84912345678", "300001", {"a": "b"}, "t1")
    assert refresh.call_count == 1
