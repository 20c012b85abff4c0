"""Payloads and signatures of the payment providers: the national payment platform (KeyPay for DVCQG) and
VNPAY-style gateways.

**The national payment platform**, as OpenCPS reaches it (docs/contracts.md M1–M15, from OpenCPS's
``PayGateIntegrationActionImpl``, ``PayGateUtil``, ``PayGateTerm`` and ``KeypayDVCQGUtils``). JSON over HTTPS;
every endpoint is a full URL the destination configures (``create_url``, ``detail_url``):

- **create a transaction** (M1–M10, M15): :class:`CreateTransaction`, exactly its fourteen fields. Amounts
  are whole đồng written as strings (OpenCPS's ``String.valueOf(long)``); ``command`` is ``"PAY"`` and
  ``version`` ``"3.0"``; ``bill_info`` is :class:`BillInfo`, in the platform's Vietnamese PascalCase, and its
  ``DSKhoanNop`` add up to ``trans_amount``. ``check_sum`` = HMAC-SHA256 with *hash_key_1* over
  ``addition_fee|client_id|command|trans_amount|transaction_id|version``, lower-case hex
  (:func:`create_checksum`); ``return_url`` is not signed. A ``transaction_id`` longer than
  :data:`TRANSACTION_ID_MAX` may be cut by the platform. The answer :class:`CreateAnswer` is
  ``{"error": "0", "msg", "payment_url"}`` with HTTP 200.
- **detail of a transaction** (M11): :class:`DetailRequest` ``{client_id, transaction_id, command, check_sum}``
  with check_sum = HMAC-SHA256(hash_key_1, ``client_id|command|transaction_id``) (:func:`detail_checksum`).
- **the payment callback** (M12–M14), POSTed to the partner: :class:`PlatformCallback`, the fields OpenCPS's
  kpCallBack reads or names; ``status`` 0 is paid; there is **no payment time**. Its check_sum is HMAC-SHA256
  with *hash_key_2* over the same six fields in the same order (:func:`callback_checksum`). The reply is
  ``{"return_code": 0 | -1, "return_msg"}`` with HTTP 200 (:func:`platform_reply`).
- **the portal's question back**, ``dptracuuthanhtoanhs``, which the one-stop side serves (here: the relay, from
  its bills): :class:`LookupRequest` ``{"MaHoSo"}`` with HTTP Basic credentials, always answered HTTP 200 with
  :class:`LookupAnswer` ``{"error_code", "message"}``: -1 no such dossier (``message`` ``[]``), 0 nothing to
  pay (``[]``), 1 a bill to pay (``message`` :class:`LookupBill`: the bill_info, its ``transaction_id`` and
  ``client_id``, and a ``MaTraCuuTT`` of the dossier code and the time).

**Assumptions**: what OpenCPS does not show is defined here once, and ``sandbox/payment.py`` speaks it:

- the refusal codes besides ``error`` ``"0"`` (:data:`ANSWER_CODES`), and the ``status`` values besides 0;
- the detail answer's fields (:class:`DetailAnswer`): those of the callback, less its checksum, so a payment
  learnt by asking is the payment the callback would have told — and, like it, without a time;
- a create repeated with the same ``transaction_id`` and amount answers the same ``payment_url`` (an attempt
  repeated after a timeout gets its link), with another amount ``"5"``;
- the settlement list: no public contract. :class:`SettlementRequest` (checksum over ``client_id|date`` with
  hash_key_1) answered :class:`SettlementAnswer` of :class:`SettledItem` s, or the same rows in a file the
  bank sends; ``connectors/settlement.py`` reads either.

Answer codes of the platform (``error``; only ``"0"`` is OpenCPS's)::

    0   success                      4   transaction not found
    1   checksum invalid             5   transaction id used with another amount
    2   client refused               96  busy, try again later
    3   invalid data (fields named)  99  system error

**VNPAY-style gateways**: the return and IPN requests carry ``vnp_*`` query parameters signed with
HMAC-SHA512 (hex) over the hash string: the parameters sorted by name, without ``vnp_SecureHash`` and
``vnp_SecureHashType``, each key and value URL-encoded, ``key=value`` joined with ``&``
(:func:`vnpay_hash_data`, :func:`vnpay_signature`, :func:`vnpay_verify`). The URL-encoding is VNPAY's
published samples', not Python's: see :data:`VNPAY_PHP`. Paid means both ``vnp_ResponseCode`` and
``vnp_TransactionStatus`` are ``"00"`` (:attr:`VnpayIpn.paid`). The IPN reply is ``{"RspCode", "Message"}``
with the codes of :data:`VNPAY_REPLIES`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote_plus

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator
from pydantic_core import PydanticCustomError

from schemas.privacy import PersonalStr
from schemas.vietnam import FIRST_YEAR, LAST_YEAR, VN_TZ, in_years
from schemas.wire import Wire

# ---- the national payment platform -------------------------------------------------

# Where each call is under the destination's ``url`` when its own URL option is not set (the simulator's
# paths; a province's real endpoints are options: OpenCPS configures each as a full URL).
CREATE_PATH = "/dvcqg/create_transaction"
DETAIL_PATH = "/dvcqg/detail_transaction"
SETTLEMENT_PATH = "/dvcqg/settlement_list"  # assumed: the settlement list has no public contract

COMMAND = "PAY"  # the partner's command and version, OpenCPS's configuration defaults (M3)
VERSION = "3.0"
CURRENCY = "VND"
ENVIRONMENTS = ("1", "2")  # 1 web, 2 app (M5)
TRANSACTION_ID_MAX = 20  # a longer id may be cut by the platform (M15)

SUCCESS = "0"
CHECKSUM_INVALID = "1"
CLIENT_REFUSED = "2"
INVALID_DATA = "3"
NOT_FOUND = "4"
AMOUNT_CONFLICT = "5"
BUSY = "96"
SYSTEM_ERROR = "99"
ANSWER_CODES: dict[str, str] = {
    SUCCESS: "thành công",
    CHECKSUM_INVALID: "sai chữ ký (check_sum)",
    CLIENT_REFUSED: "client_id không được phép",
    INVALID_DATA: "dữ liệu không hợp lệ",
    NOT_FOUND: "không tìm thấy giao dịch",
    AMOUNT_CONFLICT: "mã giao dịch đã dùng với số tiền khác",
    BUSY: "hệ thống bận, thử lại sau",
    SYSTEM_ERROR: "lỗi hệ thống",
}
PAID = 0  # the only status OpenCPS reads (M12); the others are assumed
UNPAID = 1
FAILED = 2
PLATFORM_STATUSES: dict[int, str] = {PAID: "paid", UNPAID: "unpaid", FAILED: "failed"}

# the portal's question back (OpenCPS's KeypayDVCQGTerm)
LOOKUP_UNKNOWN = -1
LOOKUP_NOTHING_DUE = 0
LOOKUP_DUE = 1

TIME_FORMAT = "%Y%m%d%H%M%S"  # the settlement list, MaTraCuuTT and VNPAY's vnp_PayDate: Vietnam time, to the second


def parse_time(text: str) -> datetime:
    """A ``yyyyMMddHHmmss`` time of the platform or a VNPAY-style gateway (Vietnam time)."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=VN_TZ)


def _provider_time(text: str) -> str:
    """``text`` when it is a ``yyyyMMddHHmmss`` of ASCII digits (strptime reads Arabic-Indic ones too) that is a real
    time in the years a time may have (:mod:`schemas.vietnam`), or empty."""
    if text:
        try:
            if not (len(text) == 14 and text.isascii() and text.isdigit() and in_years(parse_time(text))):
                raise ValueError
        except ValueError:
            raise PydanticCustomError("provider_time", "yyyyMMddHHmmss, a time in the years {first} to {last}",
                                      {"first": FIRST_YEAR, "last": LAST_YEAR}) from None
    return text


ProviderTime = Annotated[str, AfterValidator(_provider_time)]
"""A ``yyyyMMddHHmmss`` (Vietnam time) a provider sends, or ``""``."""


# đồng as the platform writes them in a request: the digits of a whole number (String.valueOf(long))
Digits = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,14})$")]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Text = Annotated[str, Field(min_length=1)]


def _whole(value: Any) -> Any:
    """A whole number sent as a JSON number or as its digits; anything else is left for the type to refuse."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


LONG_MAX = 2**63 - 1  # OpenCPS's amounts are Java longs (M4), and so are the ledger's (BIGINT)
# what the platform sends us: numbers or their digits, read as int, written back as digits
Amount = Annotated[int, BeforeValidator(_whole), Field(ge=0, le=LONG_MAX), PlainSerializer(str, return_type=str)]
Status = Annotated[int, BeforeValidator(_whole)]
Code = Annotated[str, BeforeValidator(_text)]


class Strict(BaseModel):
    """What the platform takes: exactly these fields, of exactly these JSON types (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class FeeItem(Strict):
    """An item of ``bill_info.PhiLePhi`` (M8): numbers where OpenCPS puts numbers."""

    LoaiPhiLePhi: int
    MaPhiLePhi: Text
    TenPhiLePhi: Text
    SoTien: int = Field(ge=0)


class PaymentItem(Strict):
    """An item of ``bill_info.DSKhoanNop`` (M8): the amount as digits, as OpenCPS writes it."""

    NoiDung: Text
    SoTien: Digits


class BillInfo(Strict):
    """What the citizen pays for and to whom: the required fields (M6), then the optional ones (M7), absent
    when we have nothing to say."""

    MaDichVu: Text
    TKThuHuong: Text
    MaNHThuHuong: Text
    TenTKThuHuong: Text
    PhiLePhi: list[FeeItem] = Field(min_length=1)
    MaDonVi: Text
    TenDonVi: Text
    MaHoSo: Text
    MaTTHC: Text
    TenTTHC: Text
    MaDVC: Text
    TenDVC: Text
    NoiDungThanhToan: Text
    HoTenNguoiNop: Annotated[PersonalStr, Field(min_length=1)]
    DSKhoanNop: list[PaymentItem] = Field(min_length=1)
    MaLoaiHinhThuPhat: str | None = None
    TenLoaiHinhThuPhat: str | None = None
    SoCMNDNguoiNop: PersonalStr | None = None
    DiaChiNguoiNop: PersonalStr | None = None
    HuyenNguoiNop: str | None = None
    TinhNguoiNop: str | None = None
    MaCoQuanQD: str | None = None
    TenCoQuanQD: str | None = None
    KhoBac: str | None = None
    NgayQD: str | None = None
    SoQD: str | None = None
    ThoiGianViPham: str | None = None
    DiaDiemViPham: str | None = None
    TenNguoiViPham: str | None = None
    TaiKhoanThuNSNN: str | None = None

    @property
    def total(self) -> int:
        """ΣDSKhoanNop.SoTien: what the citizen pays."""
        return sum(int(item.SoTien) for item in self.DSKhoanNop)


class CreateTransaction(Strict):
    """A create-transaction request (M1), exactly these fourteen fields."""

    client_id: Text
    transaction_id: Text
    trans_amount: Digits
    command: Text
    version: Text
    description: str
    locale: Text
    country_code: Text
    currency_code: Literal["VND"]
    environment: Literal["1", "2"]
    bill_info: BillInfo
    return_url: str
    addition_fee: Digits
    check_sum: Hex64

    @model_validator(mode="after")
    def _pays_the_amount(self) -> CreateTransaction:
        if self.bill_info.total != int(self.trans_amount):
            raise ValueError("bill_info.DSKhoanNop: SoTien must add up to trans_amount")
        return self


class CreateAnswer(Wire):
    """The create answer (M10); ``error`` ``"0"`` is success."""

    error: Code
    msg: str = ""
    payment_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.error == SUCCESS


class DetailRequest(Strict):
    """A detail-transaction request (M11)."""

    client_id: Text
    transaction_id: Text
    command: Text
    check_sum: Hex64


class DetailAnswer(Wire):
    """The detail answer (M11; its fields are our assumption): the transaction as a callback would tell it."""

    error: Code
    msg: str = ""
    transaction_id: str | None = None
    transaction_code: str = ""
    trans_amount: Amount | None = None
    payment_fee: Amount | None = None
    status: Status | None = None

    @property
    def ok(self) -> bool:
        return self.error == SUCCESS


class PlatformCallback(Wire):
    """The payment callback (M12): the six signed fields, ``status`` and ``check_sum`` required, the others
    named by OpenCPS optional. Amounts and status are read whether they come as numbers or digits; fields the
    platform adds are kept, not refused (what it sends us is its business)."""

    client_id: str
    transaction_id: str = Field(min_length=1, max_length=60)  # ours (M15: 20 at most); the ledger keeps 60
    transaction_code: str = Field("", max_length=60)
    trans_amount: Amount
    payment_fee: Amount | None = None
    command: str
    addition_fee: Amount
    version: str
    description: str | None = None
    locale: str | None = None
    country_code: str | None = None
    currency_code: str | None = None
    environment: Code | None = None
    status: Status
    check_sum: str = Field(max_length=128)


class SettlementRequest(Strict):
    """The day's settlement list, asked of the endpoint (assumed: no public contract)."""

    client_id: Text
    date: Annotated[str, Field(pattern=r"^\d{8}$")]
    check_sum: Hex64


class SettledItem(Wire):
    """One settled payment (assumed), in the endpoint's answer or a line of the bank's file."""

    transaction_id: str = Field(min_length=1)
    transaction_code: str = ""
    trans_amount: Amount
    payment_time: str = Field(pattern=r"^\d{14}$", description="yyyyMMddHHmmss, Vietnam time")


class SettlementAnswer(Wire):
    error: Code
    msg: str = ""
    data: list[SettledItem] = Field(default_factory=list)


class LookupRequest(Wire):
    """The portal's ``dptracuuthanhtoanhs`` body: the dossier's code (anything else is ignored, as OpenCPS
    does)."""

    MaHoSo: str = ""


class LookupBill(BillInfo):
    """``message`` of a lookup answering 1: the bill to pay, as KeypayDVCQGUtils builds it."""

    transaction_id: Text
    client_id: Text
    MaTraCuuTT: Text


class LookupAnswer(BaseModel):
    error_code: Literal[-1, 0, 1]
    message: LookupBill | list[Any] = Field(default_factory=list)


def _hmac256(key: str, parts: list[str]) -> str:
    return hmac.new(key.encode(), "|".join(parts).encode(), hashlib.sha256).hexdigest()


def signed_fields(addition_fee: int | str, client_id: str, command: str, trans_amount: int | str,
                  transaction_id: str, version: str) -> list[str]:
    """The six fields both checksums of a transaction sign, in their order (M2, M13)."""
    return [str(addition_fee), client_id, command, str(trans_amount), transaction_id, version]


def transaction_checksum(key: str, addition_fee: int | str, client_id: str, command: str, trans_amount: int | str,
                         transaction_id: str, version: str) -> str:
    """HMAC-SHA256 hex over the six signed fields: with hash_key_1 for a create (M2), hash_key_2 for a callback
    (M13)."""
    return _hmac256(key, signed_fields(addition_fee, client_id, command, trans_amount, transaction_id, version))


def create_checksum(key: str, t: CreateTransaction) -> str:
    """``check_sum`` of a create-transaction request, with hash_key_1 (M2)."""
    return transaction_checksum(key, t.addition_fee, t.client_id, t.command, t.trans_amount, t.transaction_id,
                                t.version)


def callback_checksum(key: str, c: PlatformCallback) -> str:
    """``check_sum`` of a payment callback, with hash_key_2 over the six fields as it carries them (M13)."""
    return transaction_checksum(key, c.addition_fee, c.client_id, c.command, c.trans_amount, c.transaction_id,
                                c.version)


def detail_checksum(key: str, client_id: str, command: str, transaction_id: str) -> str:
    """``check_sum`` of a detail-transaction request, with hash_key_1 (M11)."""
    return _hmac256(key, [client_id, command, transaction_id])


def settlement_checksum(key: str, client_id: str, day: str) -> str:
    """``check_sum`` of a settlement-list request (assumed), with hash_key_1."""
    return _hmac256(key, [client_id, day])


def checksum_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, case-insensitive hex."""
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def platform_reply(recorded: bool, message: str) -> dict[str, Any]:
    """What the platform expects back from a callback (M14): 0 stops its retries, -1 refuses it."""
    return {"return_code": 0 if recorded else -1, "return_msg": message}


# ---- VNPAY-style gateways -------------------------------------------------------------

VNPAY_REPLIES: dict[str, str] = {
    "00": "Confirm Success",
    "01": "Order not found",
    "02": "Order already confirmed",
    "04": "Invalid amount",
    "97": "Invalid signature",
    "99": "Unknown error",
}
_VNPAY_UNSIGNED = frozenset({"vnp_SecureHash", "vnp_SecureHashType"})


@dataclass(frozen=True)
class VnpayEncoding:
    """How one of VNPAY's published samples URL-encodes the keys and values of the hash string.

    All three encode a space as ``+``, ``~`` as ``%7E`` and other bytes as upper-case ``%XX``; they differ on
    which of ``* ( ) !`` stay as they are, on text outside ASCII, and on whether an empty value is signed.
    Python's ``quote_plus`` is none of them: it leaves ``~`` as it is.
    """

    name: str
    keeps: str = ""  # what stays as it is besides letters, digits and "-_."
    ascii_only: bool = False  # text outside ASCII becomes "?" first (Java's URLEncoder with US_ASCII)
    signs_empty: bool = True  # an empty value is signed as "key="

    def encode(self, text: str) -> str:
        data = text.encode("ascii", "replace") if self.ascii_only else text.encode()
        return quote_plus(data, safe=self.keeps).replace("~", "%7E")


# vnpay_php (vnpay_ipn.php, vnpay_create_payment.php): PHP urlencode(), every vnp_ parameter signed
VNPAY_PHP = VnpayEncoding("php")
# vnpay_jsp (Config.hashAllFields over URLEncoder.encode(value, US_ASCII)): "*" stays, empty values are skipped
VNPAY_JAVA = VnpayEncoding("java", keeps="*", ascii_only=True, signs_empty=False)
# the .NET sample (VnPayLibrary over WebUtility.UrlEncode): "* ( ) !" stay, empty values are skipped
VNPAY_DOTNET = VnpayEncoding("dotnet", keeps="*()!", signs_empty=False)
VNPAY_ENCODINGS = (VNPAY_PHP, VNPAY_JAVA, VNPAY_DOTNET)


def vnpay_hash_data(params: Mapping[str, str], encoding: VnpayEncoding = VNPAY_PHP) -> str:
    """The string VNPAY signs: the ``vnp_*`` parameters but the hash fields, sorted by name, URL-encoded as
    ``encoding`` does, ``key=value`` joined with ``&``."""
    return "&".join(f"{encoding.encode(k)}={encoding.encode(str(v))}" for k, v in sorted(params.items())
                    if k.startswith("vnp_") and k not in _VNPAY_UNSIGNED and (v != "" or encoding.signs_empty))


def _hmac512(secret: str, data: str) -> str:
    return hmac.new(secret.encode(), data.encode(), hashlib.sha512).hexdigest()


def vnpay_signature(secret: str, params: Mapping[str, str]) -> str:
    """``vnp_SecureHash``: HMAC-SHA512 hex of :func:`vnpay_hash_data` as VNPAY's PHP sample encodes it."""
    return _hmac512(secret, vnpay_hash_data(params))


def vnpay_verify(secret: str, params: Mapping[str, str]) -> bool:
    """Whether ``vnp_SecureHash`` signs the other ``vnp_*`` parameters (constant time), encoded as any of VNPAY's
    published samples encodes them: they agree but on ``* ( ) !``, text outside ASCII and empty values, and which
    one the gateway's own side matches there is not published."""
    given = str(params.get("vnp_SecureHash", ""))
    strings = dict.fromkeys(vnpay_hash_data(params, encoding) for encoding in VNPAY_ENCODINGS)
    return bool(given) and any(checksum_matches(given, _hmac512(secret, data)) for data in strings)


def vnpay_reply(code: str) -> dict[str, str]:
    return {"RspCode": code, "Message": VNPAY_REPLIES[code]}


class VnpayIpn(Wire):
    """The IPN a VNPAY-style gateway sends (query parameters of a ``GET``): ``vnp_Amount`` is in hundredths
    of a đồng (VNPAY multiplies by 100), ``vnp_TxnRef`` is the merchant's order (our bill code), paid only when
    both ``vnp_ResponseCode`` and ``vnp_TransactionStatus`` are ``"00"`` (one missing is not paid: it is taken,
    and recorded as a payment that was not made); ``vnp_PayDate`` is Vietnam time."""

    vnp_TmnCode: str = Field(max_length=20)
    vnp_TxnRef: str = Field(min_length=1, max_length=60)  # our bill's code: VNPAY allows 100, the ledger keeps 60
    vnp_Amount: int = Field(ge=0, le=LONG_MAX)
    vnp_ResponseCode: str = Field(max_length=4)
    vnp_TransactionStatus: str = Field("", max_length=4)
    vnp_TransactionNo: str = Field("", max_length=30)
    vnp_PayDate: ProviderTime = ""
    vnp_SecureHash: str = Field(max_length=256)

    @property
    def paid(self) -> bool:
        return self.vnp_ResponseCode == "00" and self.vnp_TransactionStatus == "00"

    @property
    def amount(self) -> int:
        return self.vnp_Amount // 100
