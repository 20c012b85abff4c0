"""Personal data is masked: in model dumps, in free text, and in log records."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.payment import bill_code, transaction_id
from config.logging import _mask_personal
from schemas.events import DEFAULT_DOSSIER_PATTERN, parse_event
from schemas.privacy import mask_text, mask_value, masked_dump, personal_values
from schemas.vietnam import VN_TZ

NAME = "Nguyễn Thị Bích Ngọc"
ID_NUMBER = "022185004321"
PHONE = "0912 345 678"
EMAIL = "bich.ngoc85@gmail.com"
STREET = "Số 12, đường Trần Hưng Đạo"
HANDLER = "Trần Văn Hùng"

EVENT = parse_event({
    "event_id": "ev-privacy-1",
    "type": "dossier.processing",
    "unit_code": "000.21.00.H49",
    "dossier_code": "000.21.00.H49-240315-0042",
    "procedure_code": "1.001234.000.00.00.H49",
    "sequence": 3,
    "occurred_at": "2024-03-15T09:00:00+07:00",
    "applicant": {
        "name": NAME, "id_number": ID_NUMBER, "phone": PHONE, "email": EMAIL,
        "address": {"street": STREET, "ward": "Phường Hồng Gai", "district": "Thành phố Hạ Long"},
    },
    "data": {"step": {"department": "Phòng Tư pháp", "handler": HANDLER, "title": "Chuyên viên"}},
})
PERSONAL = [NAME, ID_NUMBER, PHONE, EMAIL, STREET, HANDLER]


def test_masked_dump_masks_every_personal_field() -> None:
    dumped = masked_dump(EVENT)

    text = json.dumps(dumped, ensure_ascii=False)
    for value in PERSONAL:
        assert value not in text, value
    applicant = dumped["applicant"]
    assert applicant["name"] == mask_value(NAME)
    assert applicant["id_number"] == mask_value(ID_NUMBER)
    assert applicant["phone"] == mask_value(PHONE)
    assert applicant["email"] == mask_value(EMAIL)
    assert applicant["address"]["street"] == mask_value(STREET)
    assert dumped["data"]["step"]["handler"] == mask_value(HANDLER)


def test_masked_dump_keeps_what_is_not_personal() -> None:
    dumped = masked_dump(EVENT)

    assert dumped["dossier_code"] == "000.21.00.H49-240315-0042"
    assert dumped["applicant"]["address"]["ward"] == "Phường Hồng Gai"
    assert dumped["data"]["step"]["department"] == "Phòng Tư pháp"
    assert dumped["occurred_at"].startswith("2024-03-15T09:00:00")


def test_personal_values_finds_every_personal_value() -> None:
    assert sorted(personal_values(EVENT)) == sorted(PERSONAL)


@pytest.mark.parametrize(("value", "masked"), [
    ("0912345678", "0***78"), ("abcd", "a***"), ("ab", "**"), ("", ""), ("Lan", "L***"),
])
def test_mask_value_keeps_only_enough_to_recognise(value: str, masked: str) -> None:
    assert mask_value(value) == masked


@pytest.mark.parametrize("secret", [
    "0912 345 678", "+84912345678", "0912.345.678", "0912-345-678", "84912345678", "0203 3123 456",
    "022185004321", "123456789", "bich.ngoc85@gmail.com", "van.thu+hs@ubnd.quangninh.gov.vn",
])
def test_mask_text_masks_phones_ids_and_emails_by_pattern(secret: str) -> None:
    text = f'{{"error": "applicant {secret} rejected", "code": 7}}'

    masked = mask_text(text)

    assert secret not in masked
    assert '"code": 7' in masked
    assert masked.startswith('{"error": "applicant ')


def test_mask_text_masks_known_names() -> None:
    text = f"Hồ sơ của {NAME}, cán bộ xử lý {HANDLER}, địa chỉ {STREET}."

    masked = mask_text(text, personal_values(EVENT))

    for value in (NAME, HANDLER, STREET):
        assert value not in masked
    assert masked.startswith("Hồ sơ của ")


def test_mask_text_leaves_ordinary_text_and_codes_alone() -> None:
    text = "dossier 000.21.00.H49-240315-0042 received at 2024-03-15 09:00, fee 150000 VND"

    assert mask_text(text) == text


def test_log_processor_masks_sensitive_keys_and_personal_text() -> None:
    record = {
        "event": "delivery.attempt_failed",
        "phone": PHONE,
        "id_number": ID_NUMBER,
        "name": NAME,
        "applicant": {"name": NAME, "phone": PHONE},
        "secret": "whsec_c3VwZXItc2VjcmV0",
        "access_token": "eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "reason": f"subscriber said: unknown citizen {ID_NUMBER}, call {PHONE}",
        "attempt": 3,
        "dossier_code": "000.21.00.H49-240315-0042",
    }

    out = _mask_personal(None, "info", dict(record))

    text = json.dumps(out, ensure_ascii=False)
    for value in (PHONE, ID_NUMBER, NAME, "c3VwZXItc2VjcmV0", "payload.sig"):
        assert value not in text, value
    assert out["applicant"] == "***"
    assert out["phone"] == mask_value(PHONE)
    assert out["reason"].startswith("subscriber said: unknown citizen ")
    assert (out["event"], out["attempt"], out["dossier_code"]) == (
        "delivery.attempt_failed", 3, "000.21.00.H49-240315-0042")


def test_log_processor_leaves_none_values() -> None:
    assert _mask_personal(None, "info", {"event": "x", "phone": None}) == {"event": "x", "phone": None}


def test_personal_values_of_a_stored_payload_match_those_of_the_validated_event() -> None:
    # the delivery engine once masked excerpts from the stored dict; it now masks them from the model its claim
    # parsed: the values are the same either way
    from sandbox.workload import generate_day
    from schemas.events import EVENT_CLASSES, parse_event
    from schemas.privacy import personal_values, personal_values_in

    for payload in generate_day(60, seed=4):
        expected = sorted(personal_values(parse_event(payload)))
        assert expected, payload["type"]
        assert sorted(personal_values_in(payload, EVENT_CLASSES[payload["type"]])) == expected


# ---------------------------------------------------------------------------------------------- identifiers

HEX, DIGITS = "0123456789abcdef", "0123456789"
RUN_PUNCTUATION = "._:-"
WHOLLY_PERSONAL = re.compile(r"(?:\+?84|0)(?:[.\-]?[0-9]){8,10}|[0-9]{12}|[0-9]{9}")


def _uuid_of(alphabet: str) -> st.SearchStrategy[str]:
    """UUIDs whose groups may be all digits (a last group of 12 digits looks like a CCCD)."""
    return st.tuples(*(st.text(alphabet, min_size=n, max_size=n) for n in (8, 4, 4, 4, 12))).map("-".join)


def _not_wholly_personal(identifier: str) -> bool:
    """An event id that is nothing but a phone or an ID number cannot be told from one in free text."""
    return not WHOLLY_PERSONAL.fullmatch(identifier.rstrip(RUN_PUNCTUATION))


_dossier_codes = st.from_regex(DEFAULT_DOSSIER_PATTERN.replace(r"\d", "[0-9]"), fullmatch=True)
_fee_ids = st.from_regex(r"\A(?:LP|PHI|LEPHI)-?[0-9]{0,4}\Z")
_moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31),
                        timezones=st.sampled_from([UTC, VN_TZ]))
IDENTIFIERS: dict[str, st.SearchStrategy[str]] = {
    "uuid": st.one_of(st.uuids().map(str), _uuid_of(DIGITS), _uuid_of(HEX)),
    "event id": st.from_regex(r"\A[A-Za-z0-9._:\-]{1,100}\Z").filter(_not_wholly_personal),
    "dossier code": _dossier_codes,
    "receipt number": st.from_regex(r"\ATN-[0-9]{6}-[0-9]{4}\Z"),
    "bill code": st.builds(bill_code, _dossier_codes, _fee_ids),
    "transaction id": st.builds(transaction_id, _dossier_codes, _fee_ids),
    "hash": st.one_of(st.binary().map(lambda b: hashlib.sha256(b).hexdigest()),
                      st.text(DIGITS, min_size=64, max_size=64)),
    "timestamp": st.one_of(_moments.map(lambda t: t.isoformat()), _moments.map(lambda t: t.strftime("%Y%m%d%H%M%S")),
                           _moments.map(lambda t: str(int(t.timestamp()))),
                           _moments.map(lambda t: str(int(t.timestamp() * 1000)))),
}
_identifiers = st.sampled_from(sorted(IDENTIFIERS)).flatmap(lambda shape: IDENTIFIERS[shape])

_cccd = st.text(DIGITS, min_size=12, max_size=12)
_cmnd = st.text(DIGITS, min_size=9, max_size=9)
_mobile = st.tuples(st.sampled_from("35789"), st.text(DIGITS, min_size=8, max_size=8)).map("".join)
_phones = st.one_of(
    _mobile.map(lambda n: "0" + n), _mobile.map(lambda n: "+84" + n), _mobile.map(lambda n: "84" + n),
    _mobile.map(lambda n: f"0{n[:3]} {n[3:6]} {n[6:]}"), _mobile.map(lambda n: f"0{n[:3]}.{n[3:6]}.{n[6:]}"),
    _mobile.map(lambda n: f"0{n[:3]}-{n[3:6]}-{n[6:]}"), st.from_regex(r"\A02[0-9]{2} [0-9]{4} [0-9]{3}\Z"),
)
_personal = st.one_of(_cccd, _cmnd, _phones)
MESSAGES = [
    "event {id} for citizen {pid} rejected",
    '{{"event_id": "{id}", "error": "CCCD {pid} không hợp lệ"}}',
    "<MaHoSo>{id}</MaHoSo><SoDienThoai>{pid}</SoDienThoai>",
    "{pid}: unknown subscriber (ref {id})",
    "delivery of {id} failed, call {pid}.",
    "({pid}) {id}",
]


@settings(max_examples=300, deadline=None)
@given(identifier=_identifiers, pid=_personal, message=st.sampled_from(MESSAGES))
def test_free_text_masks_id_numbers_and_phones_and_never_an_identifier(identifier: str, pid: str,
                                                                        message: str) -> None:
    masked = mask_text(message.format(id=identifier, pid=pid))

    assert masked == message.format(id=identifier, pid=mask_value(pid))


@settings(max_examples=300, deadline=None)
@given(identifier=_identifiers, pid=_personal, message=st.sampled_from(MESSAGES))
def test_log_records_mask_personal_fields_and_keep_identifier_fields(identifier: str, pid: str,
                                                                      message: str) -> None:
    record = {"event": message.format(id=identifier, pid=pid), "event_id": identifier, "dossier_code": identifier,
              "reason": f"refused: {pid}", "phone": pid, "id_number": pid,
              "data": {"bill_code": identifier, "note": f"CMND {pid}", "phones": [pid]}}

    out = _mask_personal(None, "info", dict(record))

    assert out["event"] == message.format(id=identifier, pid=mask_value(pid))
    assert (out["event_id"], out["dossier_code"], out["data"]["bill_code"]) == (identifier,) * 3
    assert out["phone"] == out["id_number"] == mask_value(pid)
    assert out["reason"] == f"refused: {mask_value(pid)}" and out["data"]["note"] == f"CMND {mask_value(pid)}"
    assert out["data"]["phones"] == [mask_value(pid)]


@given(identifier=st.from_regex(r"\A[A-Za-z0-9._:\-]{1,100}\Z"))
def test_an_identifier_field_is_kept_whatever_it_looks_like(identifier: str) -> None:
    assert _mask_personal(None, "info", {"event": "x", "event_id": identifier})["event_id"] == identifier


def test_the_uuid_that_once_lost_its_last_group() -> None:
    event_id = "5f3a8864-3f1c-4b2e-8864-312345678900"

    assert mask_text(f"delivery.attempt_failed event {event_id}") == f"delivery.attempt_failed event {event_id}"
    assert _mask_personal(None, "info", {"event": "x", "reason": f"for {event_id}"})["reason"] == f"for {event_id}"


@pytest.mark.parametrize(("text", "masked"), [
    ("số 022185004321.", "số 0***21."),                      # a full stop ends the sentence, not an identifier
    ("CCCD 022185004321, SĐT 0912345678", "CCCD 0***21, SĐT 0***78"),
    ("HS-022185004321", "HS-022185004321"),                  # inside an identifier: not a citizen's number
    ("022185004321.pdf", "022185004321.pdf"),
    ("v2:0912345678", "v2:0912345678"),
    ("Hoang Lan Anh", "Hoang L***nh"),                        # a known name only as a whole word
])
def test_where_a_value_stands_alone(text: str, masked: str) -> None:
    assert mask_text(text, ["Hoa", "Lan Anh"]) == masked
