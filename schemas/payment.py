"""Payloads and signatures of the payment providers: the national payment platform and VNPAY-style gateways.

**The national payment platform** (Cổng DVC quốc gia's, as OpenCPS integrates it through KeyPay;
DOMAIN.md "Fee collection"). JSON over HTTPS. Where OpenCPS leaves the details open (which fields
the checksums join, the query and settlement commands, the error codes) the simulator in
``sandbox/payment.py`` defines them and this module documents them:

- ``POST {base}/api/v1/transactions`` :class:`PlatformTransaction` with ``command`` ``"pay"``:
  ``check_sum`` = HMAC-SHA256 hex, with the partner's *request key*, over
  ``client_id|transaction_id|command|version|trans_amount|addition_fee|return_url``
  (:func:`request_checksum`). The answer :class:`PlatformAnswer` carries ``payment_url``.
  ``command`` ``"query"`` (amounts 0) answers the transaction's ``status``; a ``transaction_id``
  already used with the same amount answers the same ``payment_url`` again (code ``"00"``).
- ``POST {base}/api/v1/settlements`` ``{"client_id", "date": "yyyyMMdd", "check_sum"}`` (checksum over
  ``client_id|date``) → the transactions settled that day.
- The payment callback (``POST`` to the partner's URL) :class:`PlatformCallback`: ``check_sum`` =
  HMAC-SHA256 hex with the partner's *callback key* over
  ``client_id|transaction_id|trans_amount|status|payment_time|gateway_trans_id``
  (:func:`callback_checksum`); ``status`` 0 is paid. The reply the platform expects is
  ``{"return_code": 0 | -1, "return_msg": ...}`` (:func:`platform_reply`): 0 once recorded, also for
  a repeated callback; -1 makes the platform send it again later.

Answer codes of the platform (``code``)::

    00  success                      04  transaction not found
    01  checksum invalid             05  transaction id used with another amount
    02  client refused               96  busy, try again later
    03  invalid data (fields named)  99  system error

**VNPAY-style gateways**: the return and IPN requests carry ``vnp_*`` query parameters signed with
HMAC-SHA512 over the parameters sorted by name, URL-encoded, ``&``-joined, without
``vnp_SecureHash`` and ``vnp_SecureHashType`` (:func:`vnpay_signature`, :func:`vnpay_verify`). The IPN
reply is ``{"RspCode", "Message"}`` with the codes of :data:`VNPAY_REPLIES`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote_plus

from pydantic import Field

from schemas.privacy import PersonalStr
from schemas.vietnam import VN_TZ
from schemas.wire import Wire

# ---- the national payment platform -------------------------------------------------

# Where each call of the platform is, under its base URL.
TRANSACTIONS_PATH = "/api/v1/transactions"
SETTLEMENTS_PATH = "/api/v1/settlements"

SUCCESS = "00"
CHECKSUM_INVALID = "01"
CLIENT_REFUSED = "02"
INVALID_DATA = "03"
NOT_FOUND = "04"
AMOUNT_CONFLICT = "05"
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
PAID = 0
UNPAID = 1
FAILED = 2
PLATFORM_STATUSES: dict[int, str] = {PAID: "paid", UNPAID: "unpaid", FAILED: "failed"}
Command = Literal["pay", "query"]
VERSION = "1.0"
TIME_FORMAT = "%Y%m%d%H%M%S"  # payment_time, settlement and VNPAY's vnp_PayDate: Vietnam time, to the second


def parse_time(text: str) -> datetime:
    """A ``yyyyMMddHHmmss`` time of the platform or a VNPAY-style gateway (Vietnam time)."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=VN_TZ)


class FeeItem(Wire):
    code: str = Field(max_length=50)
    name: str = Field(max_length=300)
    amount: int = Field(ge=0)


class BillInfo(Wire):
    """What the citizen pays for and to whom (shown on the platform's payment page)."""

    procedure_code: str = Field(max_length=60)
    procedure_name: str = Field("", max_length=500)
    unit_code: str = Field(max_length=60)
    dossier_code: str = Field(max_length=80)
    fee_lines: list[FeeItem] = Field(default_factory=list, max_length=50)
    payer_name: PersonalStr = Field(max_length=200)
    beneficiary_account: str = Field(max_length=40)
    beneficiary_name: str = Field(max_length=300)
    beneficiary_bank: str = Field(max_length=20)


class PlatformTransaction(Wire):
    client_id: str = Field(min_length=1, max_length=40)
    transaction_id: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9._\-]+$")
    command: Command = "pay"
    version: str = VERSION
    trans_amount: int = Field(ge=0, le=100_000_000_000)
    addition_fee: int = Field(0, ge=0)
    return_url: str = Field("", max_length=500)
    bill_info: BillInfo | None = None
    check_sum: str = Field("", max_length=128)


class PlatformAnswer(Wire):
    code: str
    message: str = ""
    transaction_id: str | None = None
    payment_url: str | None = None
    status: int | None = None
    trans_amount: int | None = None
    gateway_trans_id: str | None = None
    payment_time: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS


class PlatformCallback(Wire):
    client_id: str = Field(max_length=40)
    transaction_id: str = Field(max_length=60)
    trans_amount: int = Field(ge=0)
    status: int
    payment_time: str = Field(pattern=r"^\d{14}$", description="yyyyMMddHHmmss, Vietnam time")
    gateway_trans_id: str = Field(max_length=60)
    check_sum: str = Field(max_length=128)


class SettledItem(Wire):
    transaction_id: str
    gateway_trans_id: str
    trans_amount: int
    payment_time: str


def _hmac256(key: str, parts: list[str]) -> str:
    return hmac.new(key.encode(), "|".join(parts).encode(), hashlib.sha256).hexdigest()


def request_checksum(key: str, t: PlatformTransaction) -> str:
    """``check_sum`` of a transaction request, with the partner's request key."""
    return _hmac256(key, [t.client_id, t.transaction_id, t.command, t.version, str(t.trans_amount),
                          str(t.addition_fee), t.return_url])


def callback_checksum(key: str, c: PlatformCallback) -> str:
    """``check_sum`` of a payment callback, with the partner's callback key."""
    return _hmac256(key, [c.client_id, c.transaction_id, str(c.trans_amount), str(c.status), c.payment_time,
                          c.gateway_trans_id])


def settlement_checksum(key: str, client_id: str, day: str) -> str:
    return _hmac256(key, [client_id, day])


def checksum_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, case-insensitive hex."""
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def platform_reply(recorded: bool, message: str) -> dict[str, Any]:
    """What the platform expects back from a callback: 0 stops its retries, -1 asks for another try."""
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


def vnpay_signature(secret: str, params: Mapping[str, str]) -> str:
    """HMAC-SHA512 hex over the ``vnp_*`` parameters sorted by name, URL-encoded and ``&``-joined."""
    query = "&".join(f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in sorted(params.items())
                     if k.startswith("vnp_") and k not in _VNPAY_UNSIGNED and v != "")
    return hmac.new(secret.encode(), query.encode(), hashlib.sha512).hexdigest()


def vnpay_verify(secret: str, params: Mapping[str, str]) -> bool:
    """Whether ``vnp_SecureHash`` signs the other ``vnp_*`` parameters (constant time)."""
    given = str(params.get("vnp_SecureHash", ""))
    return bool(given) and checksum_matches(given, vnpay_signature(secret, params))


def vnpay_reply(code: str) -> dict[str, str]:
    return {"RspCode": code, "Message": VNPAY_REPLIES[code]}


class VnpayIpn(Wire):
    """The IPN a VNPAY-style gateway sends (query parameters of a ``GET``): ``vnp_Amount`` is in hundredths
    of a đồng (VNPAY multiplies by 100), ``vnp_TxnRef`` is the merchant's order (our bill code), paid when
    both ``vnp_ResponseCode`` and ``vnp_TransactionStatus`` are ``"00"``; ``vnp_PayDate`` is Vietnam time."""

    vnp_TmnCode: str = Field(max_length=20)
    vnp_TxnRef: str = Field(min_length=1, max_length=100)
    vnp_Amount: int = Field(ge=0)
    vnp_ResponseCode: str = Field(max_length=4)
    vnp_TransactionStatus: str = Field("", max_length=4)
    vnp_TransactionNo: str = Field("", max_length=30)
    vnp_PayDate: str = Field("", pattern=r"^(\d{14})?$")
    vnp_SecureHash: str = Field(max_length=256)

    @property
    def paid(self) -> bool:
        return self.vnp_ResponseCode == "00" and self.vnp_TransactionStatus in ("00", "")

    @property
    def amount(self) -> int:
        return self.vnp_Amount // 100
