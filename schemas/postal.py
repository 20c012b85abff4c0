"""Payloads of the postal service (VNPost public-administration post, "Bưu chính công ích").

As OpenCPS integrates it through the national gateway (DOMAIN.md): a token from the consumer
key and secret, ``order/post`` to create, ``cancel`` to cancel, ``tracking`` pages of status
records. VNPost does not publish the rest, so the simulator in ``sandbox/postal.py`` defines it
and this module documents it; a province's real contract changes this module, the connector
and the simulator, nothing else. JSON over HTTP(S):

- ``POST /oauth/token`` ``{"consumerKey", "consumerSecret"}`` → ``{"access_token", "token_type":
  "Bearer", "expires_in"}``; refused keys: HTTP 401 ``{"code": "02"}``.
- Every other call carries ``Authorization: Bearer <token>`` and answers the envelope
  :class:`PostalAnswer` ``{"code", "message", "data"}``:

  ``POST /api/v1/orders`` :class:`PostalOrder` → ``data``: :class:`OrderView`;
  ``GET /api/v1/orders/{orderNumber}?customerCode=`` → ``data``: :class:`OrderView` (code ``21`` if none);
  ``POST /api/v1/orders/cancel`` :class:`CancelRequest` → ``data``: :class:`OrderView`
  (cancelling a cancelled order succeeds again; one already collected cannot be: ``22``);
  ``GET /api/v1/tracking?customerCode=&lastId=&limit=`` → ``data``: :class:`TrackingPage`, the
  customer's status records with ``id > lastId`` in ``id`` order (``limit`` 1..500).

- Pushed statuses (where the contract has them): ``POST <the customer's callback URL>``
  :class:`TrackingPush`, signed the Standard Webhooks way with the secret agreed with the post
  (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``). A push may be lost or repeated:
  the tracking list is the fallback and the record ``id`` identifies a status either way.

Answer codes (:data:`ANSWER_CODES`) and the HTTP status the simulator sends with each::

    00  success (200)                          20  order number already used (409)
    01  token missing, invalid or expired (401) 21  order not found (404)
    02  consumer key or secret refused (401)   22  order cannot be cancelled in its status (409)
    10  invalid data; the message names the   30  customer code not allowed (403)
        fields, never their values (400)       96  busy, try again later (503)
    11  address not served: province or        99  system error (500)
        district code unknown (400)

Status codes (``statusCode`` of a tracking record) and the canonical postal status each means
(:data:`DEFAULT_STATUS_MAP`, overridable per destination)::

    100  order received, waiting for the postman   (no event: the order itself says so)
    200  collected from the sender                 collected
    300  in transit between post offices           in_transit
    400  out for delivery                          in_transit
    500  delivered to the receiver                 delivered
    550  delivery failed (receiver absent, ...)    failed_delivery
    600  returned to the sender                    returned_to_sender
    700  cancelled                                 cancelled
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, field_validator

from schemas.privacy import PersonalStr
from schemas.wire import Wire

# Where each call of the API is, under its base URL.
TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path)
ORDERS_PATH = "/api/v1/orders"
CANCEL_PATH = "/api/v1/orders/cancel"
TRACKING_PATH = "/api/v1/tracking"

SUCCESS = "00"
TOKEN_INVALID = "01"  # noqa: S105 (an answer code, not a secret)
KEYS_REFUSED = "02"
INVALID_DATA = "10"
ADDRESS_NOT_SERVED = "11"
ORDER_EXISTS = "20"
ORDER_NOT_FOUND = "21"
NOT_CANCELLABLE = "22"
CUSTOMER_REFUSED = "30"
BUSY = "96"
SYSTEM_ERROR = "99"
ANSWER_CODES: dict[str, str] = {
    SUCCESS: "thành công",
    TOKEN_INVALID: "token không hợp lệ hoặc đã hết hạn",
    KEYS_REFUSED: "consumer key hoặc secret không đúng",
    INVALID_DATA: "dữ liệu không hợp lệ",
    ADDRESS_NOT_SERVED: "địa chỉ không thuộc phạm vi phục vụ (mã tỉnh, mã huyện không đúng)",
    ORDER_EXISTS: "số đơn hàng đã tồn tại",
    ORDER_NOT_FOUND: "không tìm thấy đơn hàng",
    NOT_CANCELLABLE: "đơn hàng không thể hủy ở trạng thái hiện tại",
    CUSTOMER_REFUSED: "mã khách hàng không được phép",
    BUSY: "hệ thống bận, thử lại sau",
    SYSTEM_ERROR: "lỗi hệ thống",
}

# Tracking status codes.
WAITING = "100"
COLLECTED = "200"
IN_TRANSIT = "300"
OUT_FOR_DELIVERY = "400"
DELIVERED = "500"
DELIVERY_FAILED = "550"
RETURNED = "600"
CANCELLED = "700"
STATUS_MESSAGES: dict[str, str] = {
    WAITING: "Chờ bưu tá đến lấy",
    COLLECTED: "Đã nhận hàng từ người gửi",
    IN_TRANSIT: "Đang vận chuyển",
    OUT_FOR_DELIVERY: "Đang phát",
    DELIVERED: "Phát thành công",
    DELIVERY_FAILED: "Phát không thành công",
    RETURNED: "Đã chuyển hoàn cho người gửi",
    CANCELLED: "Đã hủy",
}
# Statuses after which nothing more happens to an order.
FINAL_STATUSES = frozenset({DELIVERED, RETURNED, CANCELLED})
# Statuses in which an order may still be cancelled (the postman has not taken it yet).
CANCELLABLE_STATUSES = frozenset({WAITING, CANCELLED})

CanonicalStatus = Literal["collected", "in_transit", "delivered", "failed_delivery", "returned_to_sender", "cancelled"]
DEFAULT_STATUS_MAP: dict[str, CanonicalStatus | None] = {
    WAITING: None,
    COLLECTED: "collected",
    IN_TRANSIT: "in_transit",
    OUT_FOR_DELIVERY: "in_transit",
    DELIVERED: "delivered",
    DELIVERY_FAILED: "failed_delivery",
    RETURNED: "returned_to_sender",
    CANCELLED: "cancelled",
}

Purpose = Literal["pickup", "delivery"]
OrderNumber = Annotated[str, Field(min_length=3, max_length=60, pattern=r"^[A-Za-z0-9._\-]+$")]


class PostalOrder(Wire):
    """``POST /api/v1/orders``: one order, a pickup from a citizen or a delivery of a result."""

    customerCode: str = Field(min_length=1, max_length=40)
    orderNumber: OrderNumber
    purpose: Purpose
    serviceCode: str = Field("HCC", max_length=20, description="the post's service: public administration")
    senderName: PersonalStr = Field(min_length=1, max_length=200)
    senderAddress: PersonalStr = Field(min_length=1, max_length=500)
    senderProvinceCode: str = Field(min_length=2, max_length=10)
    senderDistrictCode: str = Field("", max_length=10)
    senderTel: PersonalStr = Field(min_length=8, max_length=20)
    senderEmail: PersonalStr | None = Field(None, max_length=200)
    receiverName: PersonalStr = Field(min_length=1, max_length=200)
    receiverAddress: PersonalStr = Field(min_length=1, max_length=500)
    receiverProvinceCode: str = Field(min_length=2, max_length=10)
    receiverDistrictCode: str = Field("", max_length=10)
    receiverTel: PersonalStr = Field(min_length=8, max_length=20)
    receiverEmail: PersonalStr | None = Field(None, max_length=200)
    codAmount: int = Field(0, ge=0, le=1_000_000_000)
    description: str = Field("", max_length=500)
    weight: int = Field(200, ge=1, le=30_000, description="grams")


class CancelRequest(Wire):
    customerCode: str = Field(min_length=1, max_length=40)
    orderNumber: OrderNumber
    reason: str = Field("", max_length=500)


class OrderView(Wire):
    """An order as the post holds it."""

    orderNumber: str
    itemCode: str = Field(description="the post's item number, printed on the label (EB123456789VN)")
    purpose: Purpose | None = None
    statusCode: str
    statusMessage: str = ""
    codAmount: int = 0
    createdAt: AwareDatetime | None = None


class TrackingRecord(Wire):
    """One status of one order; ``id`` grows across all of a customer's records."""

    id: int = Field(ge=1)
    orderNumber: str = Field(max_length=60)
    itemCode: str = ""
    statusCode: str = Field(min_length=1, max_length=10)
    statusMessage: str = Field("", max_length=500)
    statusTime: AwareDatetime
    location: str | None = Field(None, max_length=200)

    @field_validator("statusTime")
    @classmethod
    def _whole_seconds(cls, v: datetime) -> datetime:
        return v.replace(microsecond=0)


class TrackingPage(Wire):
    items: list[TrackingRecord] = Field(default_factory=list)
    lastId: int = Field(0, ge=0)
    hasMore: bool = False


class TrackingPush(Wire):
    """What the post pushes to the customer's callback URL."""

    customerCode: str = Field(min_length=1, max_length=40)
    data: list[TrackingRecord] = Field(min_length=1, max_length=500)


class PostalAnswer(Wire):
    """The envelope of every answer except the token's."""

    code: str = Field(max_length=10)
    message: str = ""
    data: Any = None

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any) -> str:
        text = str(v).strip() if v is not None else ""
        return f"{int(text):02d}" if text.isdigit() and len(text) < 2 else text

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS


class TokenAnswer(Wire):
    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"  # noqa: S105
    expires_in: int = Field(3600, ge=1)


def money(amount: Decimal | int) -> int:
    """Đồng are whole numbers; the API wants an integer."""
    return int(Decimal(amount))
