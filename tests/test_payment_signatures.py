"""The payment providers' signatures: the platform's request and callback checksums, VNPAY's HMAC-SHA512."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from schemas.payment import (
    VNPAY_REPLIES,
    PlatformCallback,
    PlatformTransaction,
    callback_checksum,
    checksum_matches,
    platform_reply,
    request_checksum,
    settlement_checksum,
    vnpay_reply,
    vnpay_signature,
    vnpay_verify,
)

REQUEST_KEY, CALLBACK_KEY, VNP_SECRET = "khoa-yeu-cau", "khoa-goi-lai", "VNPAYSECRETKEY0123456789ABCDEF"


def transaction(**changes: object) -> PlatformTransaction:
    fields: dict[str, object] = {"client_id": "UBND-HALONG", "transaction_id": "000.00.12.H22-261120-0042-LP",
                                 "trans_amount": 1250000, "return_url": "https://motcua.halong.gov.vn/ket-qua"}
    return PlatformTransaction.model_validate(fields | changes)


def callback(**changes: object) -> PlatformCallback:
    fields: dict[str, object] = {"client_id": "UBND-HALONG", "transaction_id": "000.00.12.H22-261120-0042-LP",
                                 "trans_amount": 1250000, "status": 0, "payment_time": "20261120103005",
                                 "gateway_trans_id": "KP000000123456", "check_sum": ""}
    return PlatformCallback.model_validate(fields | changes)


def test_the_request_checksum_is_hmac_sha256_over_the_pipe_joined_fields() -> None:
    joined = "UBND-HALONG|000.00.12.H22-261120-0042-LP|pay|1.0|1250000|0|https://motcua.halong.gov.vn/ket-qua"
    expected = hmac.new(REQUEST_KEY.encode(), joined.encode(), hashlib.sha256).hexdigest()
    assert request_checksum(REQUEST_KEY, transaction()) == expected


@pytest.mark.parametrize("change", [{"trans_amount": 1250001}, {"transaction_id": "X-1"}, {"command": "query"},
                                    {"addition_fee": 1}, {"return_url": "https://evil.example/"}])
def test_every_signed_field_changes_the_request_checksum(change: dict[str, object]) -> None:
    assert request_checksum(REQUEST_KEY, transaction(**change)) != request_checksum(REQUEST_KEY, transaction())


def test_the_callback_checksum_uses_the_second_key_and_covers_amount_and_status() -> None:
    joined = "UBND-HALONG|000.00.12.H22-261120-0042-LP|1250000|0|20261120103005|KP000000123456"
    expected = hmac.new(CALLBACK_KEY.encode(), joined.encode(), hashlib.sha256).hexdigest()
    assert callback_checksum(CALLBACK_KEY, callback()) == expected
    assert callback_checksum(REQUEST_KEY, callback()) != expected
    assert callback_checksum(CALLBACK_KEY, callback(trans_amount=125000)) != expected
    assert callback_checksum(CALLBACK_KEY, callback(status=2)) != expected
    assert settlement_checksum(REQUEST_KEY, "UBND-HALONG", "20261120") == hmac.new(
        REQUEST_KEY.encode(), b"UBND-HALONG|20261120", hashlib.sha256).hexdigest()


def test_checksums_compare_in_constant_time_and_ignore_hex_case() -> None:
    good = callback_checksum(CALLBACK_KEY, callback())
    assert checksum_matches(good.upper(), good) and checksum_matches(f" {good} ", good)
    assert not checksum_matches(good[:-1] + ("0" if good[-1] != "0" else "1"), good)
    assert not checksum_matches("", good)


def test_the_platform_reply_asks_for_a_retry_only_when_nothing_was_recorded() -> None:
    assert platform_reply(True, "ok") == {"return_code": 0, "return_msg": "ok"}
    assert platform_reply(False, "busy") == {"return_code": -1, "return_msg": "busy"}


VNP_PARAMS = {
    "vnp_Amount": "125000000", "vnp_BankCode": "NCB", "vnp_OrderInfo": "Le phi ho so 000.00.12.H22-261120-0042",
    "vnp_ResponseCode": "00", "vnp_TmnCode": "HALONG01", "vnp_TransactionNo": "14123456",
    "vnp_TxnRef": "000.00.12.H22-261120-0042-LP", "vnp_PayDate": "20261120103005", "vnp_TransactionStatus": "00",
}


def test_vnpay_signs_the_sorted_url_encoded_parameters_with_hmac_sha512() -> None:
    query = "&".join(f"{k}={v.replace(' ', '+')}" for k, v in sorted(VNP_PARAMS.items()))
    expected = hmac.new(VNP_SECRET.encode(), query.encode(), hashlib.sha512).hexdigest()
    assert vnpay_signature(VNP_SECRET, VNP_PARAMS) == expected
    assert vnpay_signature(VNP_SECRET, dict(reversed(list(VNP_PARAMS.items())))) == expected


def test_vnpay_verification_ignores_the_hash_fields_and_catches_any_change() -> None:
    signed = {**VNP_PARAMS, "vnp_SecureHashType": "HmacSHA512"}
    signed["vnp_SecureHash"] = vnpay_signature(VNP_SECRET, signed)
    assert vnpay_verify(VNP_SECRET, signed)
    assert not vnpay_verify(VNP_SECRET, {**signed, "vnp_Amount": "125000100"})
    assert not vnpay_verify("another-secret", signed)
    assert not vnpay_verify(VNP_SECRET, {k: v for k, v in signed.items() if k != "vnp_SecureHash"})
    assert vnpay_verify(VNP_SECRET, {**signed, "utm_source": "zalo"})  # not a vnp_ parameter: not signed


@pytest.mark.parametrize("code", ["00", "01", "02", "04", "97", "99"])
def test_vnpay_replies_have_the_documented_codes(code: str) -> None:
    assert vnpay_reply(code) == {"RspCode": code, "Message": VNPAY_REPLIES[code]}
