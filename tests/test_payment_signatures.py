"""The payment providers' signatures: the platform's create, detail and callback checksums (docs/contracts.md M2, M11,
M13), VNPAY's HMAC-SHA512 over the hash string its published samples build, and when a VNPAY IPN says paid."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, quote_plus

import pytest
from pydantic import ValidationError

from schemas.payment import (
    VNPAY_DOTNET,
    VNPAY_JAVA,
    VNPAY_PHP,
    VNPAY_REPLIES,
    BillInfo,
    CreateTransaction,
    PlatformCallback,
    VnpayIpn,
    callback_checksum,
    checksum_matches,
    create_checksum,
    detail_checksum,
    platform_reply,
    settlement_checksum,
    vnpay_hash_data,
    vnpay_reply,
    vnpay_signature,
    vnpay_verify,
)

REQUEST_KEY, CALLBACK_KEY, VNP_SECRET = "khoa-yeu-cau", "khoa-goi-lai", "VNPAYSECRETKEY0123456789ABCDEF"
TXN = "6f1c2a9b0d4e8f7a3b21"
BILL = BillInfo.model_validate({
    "MaDichVu": "2", "TKThuHuong": "3511.0.1054321.00000", "MaNHThuHuong": "KBNN", "TenTKThuHuong": "UBND Hạ Long",
    "PhiLePhi": [{"LoaiPhiLePhi": 2, "MaPhiLePhi": "LP-KHNN", "TenPhiLePhi": "Lệ phí", "SoTien": 1250000}],
    "MaDonVi": "000.21.00.H49", "TenDonVi": "UBND Hạ Long", "MaHoSo": "000.21.00.H49-261120-0042",
    "MaTTHC": "1.000893.000.00.00.H49", "TenTTHC": "Đăng ký kết hôn", "MaDVC": "1.000893.000.00.00.H49",
    "TenDVC": "Đăng ký kết hôn", "NoiDungThanhToan": "Lệ phí", "HoTenNguoiNop": "Lê Văn Tám",
    "DSKhoanNop": [{"NoiDung": "Lệ phí", "SoTien": "1250000"}]})


def hmac256(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def transaction(**changes: Any) -> CreateTransaction:
    fields: dict[str, Any] = {
        "client_id": "UBND-HALONG", "transaction_id": TXN, "trans_amount": "1250000", "command": "PAY",
        "version": "3.0", "description": "Lệ phí", "locale": "vn", "country_code": "vi", "currency_code": "VND",
        "environment": "1", "bill_info": BILL, "return_url": "https://motcua.halong.gov.vn/ket-qua",
        "addition_fee": "0", "check_sum": "0" * 64}
    if "trans_amount" in changes:  # the bill pays what the transaction says (M8)
        fields["bill_info"] = BILL.model_copy(update={"DSKhoanNop": [
            BILL.DSKhoanNop[0].model_copy(update={"SoTien": changes["trans_amount"]})]})
    return CreateTransaction.model_validate(fields | changes)


def callback(**changes: Any) -> PlatformCallback:
    fields: dict[str, Any] = {"client_id": "UBND-HALONG", "transaction_id": TXN, "transaction_code": "KP100000001",
                              "trans_amount": "1250000", "payment_fee": "0", "command": "PAY", "addition_fee": "0",
                              "version": "3.0", "status": 0, "check_sum": ""}
    return PlatformCallback.model_validate(fields | changes)


def test_the_create_checksum_signs_six_fields_in_the_platform_s_order_with_hash_key_1() -> None:
    # M2: addition_fee|client_id|command|trans_amount|transaction_id|version, lower-case hex
    expected = hmac256(REQUEST_KEY, f"0|UBND-HALONG|PAY|1250000|{TXN}|3.0")
    assert create_checksum(REQUEST_KEY, transaction()) == expected
    assert expected == expected.lower() and len(expected) == 64
    # today's order (client_id first, return_url signed) is another checksum
    assert create_checksum(REQUEST_KEY, transaction()) != hmac256(
        REQUEST_KEY, f"UBND-HALONG|{TXN}|PAY|3.0|1250000|0|https://motcua.halong.gov.vn/ket-qua")


@pytest.mark.parametrize("change", [{"trans_amount": "1250001"}, {"transaction_id": "X-1"}, {"command": "QUERY"},
                                    {"addition_fee": "1"}, {"version": "1.0"}, {"client_id": "UBND-KHAC"}])
def test_every_signed_field_changes_the_create_checksum(change: dict[str, Any]) -> None:
    assert create_checksum(REQUEST_KEY, transaction(**change)) != create_checksum(REQUEST_KEY, transaction())


@pytest.mark.parametrize("change", [{"return_url": "https://evil.example/"}, {"description": "khác"},
                                    {"environment": "2"}, {"locale": "en"}])
def test_what_is_not_signed_does_not_change_the_create_checksum(change: dict[str, Any]) -> None:
    assert create_checksum(REQUEST_KEY, transaction(**change)) == create_checksum(REQUEST_KEY, transaction())


def test_the_detail_checksum_is_its_own_over_client_command_and_transaction() -> None:
    # M11: client_id|command|transaction_id with hash_key_1
    assert detail_checksum(REQUEST_KEY, "UBND-HALONG", "PAY", TXN) == hmac256(REQUEST_KEY, f"UBND-HALONG|PAY|{TXN}")
    assert detail_checksum(REQUEST_KEY, "UBND-HALONG", "PAY", TXN) != detail_checksum(
        REQUEST_KEY, "UBND-HALONG", "PAY", TXN[:-1] + "0")
    assert settlement_checksum(REQUEST_KEY, "UBND-HALONG", "20261120") == hmac256(REQUEST_KEY, "UBND-HALONG|20261120")


def test_the_callback_checksum_is_the_same_six_fields_with_hash_key_2() -> None:
    # M13: what the partner recomputes from the registered values, with the second key
    expected = hmac256(CALLBACK_KEY, f"0|UBND-HALONG|PAY|1250000|{TXN}|3.0")
    assert callback_checksum(CALLBACK_KEY, callback()) == expected
    assert callback_checksum(REQUEST_KEY, callback()) != expected
    assert callback_checksum(CALLBACK_KEY, callback(trans_amount="125000")) != expected
    # amounts as numbers or as digits are the same amount, signed the same
    assert callback_checksum(CALLBACK_KEY, callback(trans_amount=1250000, addition_fee=0)) == expected
    # status and the unsigned fields are not in it (the contract signs what it signs)
    assert callback_checksum(CALLBACK_KEY, callback(status=2, transaction_code="KP9")) == expected


def test_checksums_compare_in_constant_time_and_ignore_hex_case() -> None:
    good = callback_checksum(CALLBACK_KEY, callback())
    assert checksum_matches(good.upper(), good) and checksum_matches(f" {good} ", good)
    assert not checksum_matches(good[:-1] + ("0" if good[-1] != "0" else "1"), good)
    assert not checksum_matches("", good)


def test_the_platform_reply_is_0_once_recorded_and_minus_1_when_refused() -> None:
    assert platform_reply(True, "ok") == {"return_code": 0, "return_msg": "ok"}
    assert platform_reply(False, "busy") == {"return_code": -1, "return_msg": "busy"}


VNP_PARAMS = {
    "vnp_Amount": "125000000", "vnp_BankCode": "NCB", "vnp_OrderInfo": "Le phi ho so 000.21.00.H49-261120-0042",
    "vnp_ResponseCode": "00", "vnp_TmnCode": "HALONG01", "vnp_TransactionNo": "14123456",
    "vnp_TxnRef": "000.21.00.H49-261120-0042-LP", "vnp_PayDate": "20261120103005", "vnp_TransactionStatus": "00",
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


# The payment URL of VNPAY's integration guide (sandbox.vnpayment.vn/apis/docs/huong-dan-tich-hop/, "Tạo URL Thanh
# toán"), less its vnp_SecureHash: VNPAY's PHP sample builds this query and the hash string alike (vnpay_php,
# vnpay_create_payment.php: ksort, then urlencode($key) . "=" . urlencode($value) joined with "&"). DEMOV210's secret
# is not published, so only the string can be checked against it.
VNPAY_GUIDE_QUERY = (
    "vnp_Amount=1806000&vnp_Command=pay&vnp_CreateDate=20210801153333&vnp_CurrCode=VND&vnp_IpAddr=127.0.0.1"
    "&vnp_Locale=vn&vnp_OrderInfo=Thanh+toan+don+hang+%3A5&vnp_OrderType=other"
    "&vnp_ReturnUrl=https%3A%2F%2Fdomainmerchant.vn%2FReturnUrl&vnp_TmnCode=DEMOV210&vnp_TxnRef=5&vnp_Version=2.1.0"
)


def test_the_hash_string_is_the_one_of_vnpays_integration_guide() -> None:
    params = dict(reversed(parse_qsl(VNPAY_GUIDE_QUERY)))
    assert params["vnp_OrderInfo"] == "Thanh toan don hang :5"
    assert vnpay_hash_data(params) == VNPAY_GUIDE_QUERY


# An IPN whose order info has the characters encoders disagree on. The expected string is PHP urlencode()'s, as
# VNPAY's PHP sample (vnpay_php, vnpay_ipn.php) hashes the IPN: letters, digits and "-_." stay, a space is "+",
# everything else (~ * ( ) ! included) is %XX in upper case.
VNP_SPECIAL = {
    "vnp_Amount": "125000000", "vnp_BankCode": "NCB", "vnp_OrderInfo": "Thanh toan ho so (le phi) ~*!",
    "vnp_PayDate": "20261120103005", "vnp_ResponseCode": "00", "vnp_TmnCode": "HALONG01",
    "vnp_TransactionNo": "14123456", "vnp_TransactionStatus": "00", "vnp_TxnRef": "000.21.00.H49-261120-0042-LP",
}
VNP_SPECIAL_HASH_DATA = (
    "vnp_Amount=125000000&vnp_BankCode=NCB&vnp_OrderInfo=Thanh+toan+ho+so+%28le+phi%29+%7E%2A%21"
    "&vnp_PayDate=20261120103005&vnp_ResponseCode=00&vnp_TmnCode=HALONG01&vnp_TransactionNo=14123456"
    "&vnp_TransactionStatus=00&vnp_TxnRef=000.21.00.H49-261120-0042-LP"
)


def test_the_hash_string_encodes_tilde_star_parentheses_and_bang_as_vnpays_php_sample() -> None:
    # when the parameters are signed
    data = vnpay_hash_data({**VNP_SPECIAL, "vnp_SecureHash": "x", "vnp_SecureHashType": "HmacSHA512"})
    # then the hash string is PHP's, and the signature its HMAC-SHA512 with the secret
    assert data == VNP_SPECIAL_HASH_DATA
    expected = hmac.new(VNP_SECRET.encode(), VNP_SPECIAL_HASH_DATA.encode(), hashlib.sha512).hexdigest()
    assert vnpay_signature(VNP_SECRET, VNP_SPECIAL) == expected


@pytest.mark.parametrize(
    ("encoding", "order_info"),
    [
        (VNPAY_PHP, "Thanh+toan+ho+so+%28le+phi%29+%7E%2A%21"),
        (VNPAY_JAVA, "Thanh+toan+ho+so+%28le+phi%29+%7E*%21"),  # vnpay_jsp: URLEncoder keeps "*"
        (VNPAY_DOTNET, "Thanh+toan+ho+so+(le+phi)+%7E*!"),  # WebUtility.UrlEncode keeps "* ( ) !"
    ],
    ids=["php", "java", "dotnet"],
)
def test_an_ipn_signed_as_any_published_sample_encodes_it_is_verified(encoding: Any, order_info: str) -> None:
    data = VNP_SPECIAL_HASH_DATA.replace("Thanh+toan+ho+so+%28le+phi%29+%7E%2A%21", order_info)
    assert vnpay_hash_data(VNP_SPECIAL, encoding) == data
    signed = {**VNP_SPECIAL, "vnp_SecureHash": hmac.new(VNP_SECRET.encode(), data.encode(), "sha512").hexdigest()}
    assert vnpay_verify(VNP_SECRET, signed)
    assert not vnpay_verify(VNP_SECRET, {**signed, "vnp_OrderInfo": "Thanh toan ho so (le phi) ~*?"})


def test_python_quote_plus_is_not_vnpays_encoding_and_its_hash_is_refused() -> None:
    # given the parameters signed as the relay did before: Python's quote_plus leaves "~" as it is
    ours = "&".join(f"{k}={quote_plus(v)}" for k, v in sorted(VNP_SPECIAL.items()))
    assert "~" in ours and ours != VNP_SPECIAL_HASH_DATA
    signed = {**VNP_SPECIAL, "vnp_SecureHash": hmac.new(VNP_SECRET.encode(), ours.encode(), "sha512").hexdigest()}
    # then it is no published sample's hash
    assert not vnpay_verify(VNP_SECRET, signed)


def test_empty_values_and_text_outside_ascii_as_each_sample_signs_them() -> None:
    params = {"vnp_Amount": "100", "vnp_BankTranNo": "", "vnp_OrderInfo": "Lệ phí"}
    assert vnpay_hash_data(params, VNPAY_PHP) == "vnp_Amount=100&vnp_BankTranNo=&vnp_OrderInfo=L%E1%BB%87+ph%C3%AD"
    assert vnpay_hash_data(params, VNPAY_JAVA) == "vnp_Amount=100&vnp_OrderInfo=L%3F+ph%3F"  # US_ASCII: "?"
    assert vnpay_hash_data(params, VNPAY_DOTNET) == "vnp_Amount=100&vnp_OrderInfo=L%E1%BB%87+ph%C3%AD"
    for encoding in (VNPAY_PHP, VNPAY_JAVA, VNPAY_DOTNET):
        data = vnpay_hash_data(params, encoding)
        signed = {**params, "vnp_SecureHash": hmac.new(VNP_SECRET.encode(), data.encode(), "sha512").hexdigest()}
        assert vnpay_verify(VNP_SECRET, signed), encoding.name


def ipn(**codes: str | None) -> VnpayIpn:
    params = {**VNP_SPECIAL, "vnp_SecureHash": "x"} | codes
    return VnpayIpn.model_validate({k: v for k, v in params.items() if v is not None})


@pytest.mark.parametrize(
    ("response_code", "transaction_status", "paid"),
    [("00", "00", True), ("00", None, False), ("00", "", False), ("00", "02", False), ("00", "01", False),
     ("24", "00", False), ("24", "02", False), ("07", "00", False)],
)
def test_an_ipn_is_paid_only_when_both_codes_say_00(response_code: str, transaction_status: str | None,
                                                    paid: bool) -> None:
    assert ipn(vnp_ResponseCode=response_code, vnp_TransactionStatus=transaction_status).paid is paid


def test_an_ipn_without_a_response_code_is_not_an_ipn() -> None:
    with pytest.raises(ValidationError, match="vnp_ResponseCode"):
        ipn(vnp_ResponseCode=None)
