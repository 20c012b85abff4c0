"""Personal data is masked: in model dumps, in free text, and in log records."""

from __future__ import annotations

import json

import pytest

from config.logging import _mask_personal
from schemas.events import parse_event
from schemas.privacy import mask_text, mask_value, masked_dump, personal_values

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
