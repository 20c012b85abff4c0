"""Payloads of the postal service (VNPost public-administration post, "Bưu chính công ích"), as reached through
MITC's NGSP gateway with the SDK OpenCPS ships (docs/contracts.md V1–V12; the SDK's classes are MToken, MOrder,
MResult, MStatus, MRhDoc, MOId). Every endpoint is a full URL in the destination's options (OpenCPS's
``apiGetToken``, ``apiPostOrder``, ``apiCancelOrder``, ``apiGetOrderTracking``); the paths below are the
defaults under ``url``, the first two as OpenCPS's comments give them (``https://api.mitc.vn/token``,
``…/apiVNPostNGSP/p1.0/order/post``), the other two assumed alongside.

- Token (V1, V2): ``POST {token_url}`` with ``Authorization: Basic base64(key ":" secret)`` and the form
  ``grant_type=client_credentials`` → :class:`TokenAnswer` ``{access_token, token_type, expires_in}``. An OAuth2
  gateway refuses a bad client with 401 ``{"error": "invalid_client"}`` and another grant or a JSON body with
  400 ``{"error": "unsupported_grant_type"}`` (:class:`schemas.wire.OAuthError`). Later calls carry
  ``Authorization: <token_type> <access_token>``; a token the gateway no longer takes is HTTP 401.
- Order (V3–V6): ``POST {order_url}`` JSON :class:`PostalOrder` (exactly MOrder's 17 PascalCase fields, every
  one present as Gson's ``serializeNulls`` writes them, provinces and districts integers, ``CODAmount`` a
  number) → HTTP 200 :class:`PostalResult` ``{Status, Message}``, ``Status`` 200 when done.
- Cancel (V7): ``GET {cancel_url}?CustomerCode=&OrderNumber=`` → :class:`PostalResult`.
- Tracking (V9, V10): ``GET {tracking_url}?pagesize=&lastId=`` (``lastId`` a 24-hex ObjectId, from
  :data:`FIRST_ID`) → :class:`TrackingPage`, RESTHeart-shaped: the account's status records after ``lastId``
  in ``_id`` order; an empty page has no ``_embedded``. There is no look-up of an order by number (V8).
- Pushed statuses (not in the SDK: where a province's post pushes, ours is assumed): ``POST <our callback>``
  :class:`TrackingPush` ``{CustomerCode, data: [records]}``, signed the Standard Webhooks way with the secret
  agreed with the post. A push may be lost or repeated: the tracking list is the fallback.

The gateway's ``Status`` values other than 200 are not public: :data:`DEFAULT_ANSWERS` is what the simulator
answers and a destination's ``answers`` option overrides it (``connectors/postal.py`` classifies by meaning).
Status codes of the tracking records are small integers (V12); OpenCPS tests only ``4`` (delivered).
VNPost's table is not public either: :data:`DEFAULT_STATUS_MAP` is the default, ``status_map`` overrides it::

    1  order accepted, waiting for the postman   (no event: the order itself says so)
    2  collected from the sender                 collected
    3  in transit between post offices           in_transit
    8  out for delivery                          in_transit
    4  delivered to the receiver                 delivered
    5  delivery failed (receiver absent, ...)    failed_delivery
    6  returned to the sender                    returned_to_sender
    7  cancelled                                 cancelled
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from schemas.privacy import PersonalStr
from schemas.vietnam import LAST_EPOCH_MS
from schemas.wire import Wire

# Where each call is by default, under the destination's url.
TOKEN_PATH = "/token"  # noqa: S105 (a path)
ORDER_PATH = "/apiVNPostNGSP/p1.0/order/post"
CANCEL_PATH = "/apiVNPostNGSP/p1.0/order/cancel"
TRACKING_PATH = "/apiVNPostNGSP/p1.0/order/tracking"

FIRST_ID = "0" * 24  # where OpenCPS starts reading the tracking list
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")

# MResult.Status: 200 is done (V6); the rest is the simulator's table, a destination's ``answers`` overrides it.
DONE = 200
Meaning = Literal["done", "duplicate", "invalid", "customer_refused", "not_found", "not_cancellable", "busy",
                  "error"]
DEFAULT_ANSWERS: dict[int, Meaning] = {
    200: "done",
    400: "invalid",  # the message names the fields, never their values
    403: "customer_refused",  # the CustomerCode is not this account's
    404: "not_found",  # cancel: no order by that number
    409: "duplicate",  # create: the OrderNumber is this customer's already
    422: "not_cancellable",  # cancel: the postman has it
    500: "error",
    503: "busy",
}
MESSAGES: dict[Meaning, str] = {
    "done": "Thành công",
    "duplicate": "Số đơn hàng đã tồn tại",
    "invalid": "Dữ liệu không hợp lệ",
    "customer_refused": "Mã khách hàng không hợp lệ",
    "not_found": "Không tìm thấy đơn hàng",
    "not_cancellable": "Đơn hàng không thể hủy ở trạng thái hiện tại",
    "busy": "Hệ thống bận, thử lại sau",
    "error": "Lỗi hệ thống",
}

# Tracking status codes (the default table above).
ACCEPTED, COLLECTED, IN_TRANSIT, DELIVERED = 1, 2, 3, 4
DELIVERY_FAILED, RETURNED, CANCELLED, OUT_FOR_DELIVERY = 5, 6, 7, 8
STATUS_MESSAGES: dict[int, str] = {
    ACCEPTED: "Đã tiếp nhận đơn hàng, chờ bưu tá đến lấy",
    COLLECTED: "Đã nhận hàng từ người gửi",
    IN_TRANSIT: "Đang vận chuyển",
    OUT_FOR_DELIVERY: "Đang phát",
    DELIVERED: "Phát thành công",
    DELIVERY_FAILED: "Phát không thành công",
    RETURNED: "Đã chuyển hoàn cho người gửi",
    CANCELLED: "Đã hủy",
}
FINAL_STATUSES = frozenset({DELIVERED, RETURNED, CANCELLED})
CANCELLABLE_STATUSES = frozenset({ACCEPTED, CANCELLED})

CanonicalStatus = Literal["collected", "in_transit", "delivered", "failed_delivery", "returned_to_sender", "cancelled"]
DEFAULT_STATUS_MAP: dict[int, CanonicalStatus | None] = {
    ACCEPTED: None,
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
Text = Annotated[str | None, Field(max_length=500)]
Personal = Annotated[PersonalStr | None, Field(max_length=500)]
Province = Annotated[StrictInt, Field(ge=1, le=99)]
District = Annotated[StrictInt | None, Field(ge=1, le=999)]


class PostalOrder(BaseModel):
    """``POST {order_url}``: MOrder, exactly (V3). Every field is sent, ``null`` where empty (Gson's
    ``serializeNulls``); an unknown field, a province written as a string or an amount as text is refused.
    V4's fields are required; V5 puts the citizen on the receiving side of a delivery and the sending side of a
    pickup. Since 1 July 2025 an address has two levels: the commune is in the address line, the district
    (``*District``, a former district's code) is optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    CustomerCode: str = Field(min_length=1, max_length=40)
    OrderNumber: OrderNumber
    CODAmount: StrictFloat | StrictInt | None = Field(None, ge=0, le=1_000_000_000)
    SenderProvince: Province
    SenderDistrict: District = None
    SenderAddress: PersonalStr = Field(min_length=1, max_length=500)
    SenderName: PersonalStr = Field(min_length=1, max_length=200)
    SenderEmail: Personal = None
    SenderTel: PersonalStr = Field(min_length=8, max_length=20)
    SenderDesc: Text = None
    Description: Text = None
    ReceiverName: PersonalStr = Field(min_length=1, max_length=200)
    ReceiverAddress: PersonalStr = Field(min_length=1, max_length=500)
    ReceiverTel: PersonalStr = Field(min_length=8, max_length=20)
    ReceiverProvince: Province
    ReceiverDistrict: District = None
    ReceiverEmail: Personal = None

    def wire(self) -> dict[str, Any]:
        """The JSON object as the SDK writes it: every field, ``null`` included, in MOrder's order."""
        return self.model_dump(mode="json")


class PostalResult(Wire):
    """MResult: the answer of an order and a cancel (V6)."""

    Status: int
    Message: str | None = ""

    @field_validator("Status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v


class TokenAnswer(Wire):
    """MToken (V2)."""

    access_token: str = Field(min_length=1)
    token_type: str = Field("Bearer", min_length=1)
    expires_in: int = Field(3600, ge=1)

    @property
    def authorization(self) -> str:
        return f"{self.token_type} {self.access_token}"


class ObjectIdRef(Wire):
    oid: str = Field(alias="$oid", pattern=OBJECT_ID.pattern)


class TrackingRecord(Wire):
    """MRhDoc: one status of one order. ``EventTime`` is milliseconds since the epoch (a Java Long, read up to the
    last year a time may have, :data:`schemas.vietnam.LAST_YEAR`); ``StatusCode`` a Java Integer."""

    id: ObjectIdRef = Field(alias="_id")
    CustomerCode: str | None = Field(None, max_length=40)
    OrderNumber: str = Field(max_length=60)
    EventTime: int = Field(ge=0, le=LAST_EPOCH_MS)
    POSID: str | None = Field(None, max_length=20)
    ItemCode: str | None = Field(None, max_length=40)
    StatusCode: int = Field(ge=-(2**31), le=2**31 - 1)
    StatusMessage: str | None = Field(None, max_length=500)
    Notes: str | None = Field(None, max_length=500)

    @property
    def oid(self) -> str:
        return self.id.oid

    @property
    def at(self) -> datetime:
        """``EventTime`` to the second."""
        return datetime.fromtimestamp(self.EventTime // 1000, UTC)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Embedded(Wire):
    docs: list[TrackingRecord] = Field(default_factory=list, alias="rh:doc")


class TrackingPage(Wire):
    """MStatus: a RESTHeart page (V10); an empty page has no ``_embedded``."""

    size: int | None = Field(None, alias="_size")
    total_pages: int | None = Field(None, alias="_total_pages")
    returned: int | None = Field(None, alias="_returned")
    embedded: Embedded | None = Field(None, alias="_embedded")

    @property
    def records(self) -> list[TrackingRecord]:
        return self.embedded.docs if self.embedded is not None else []


class TrackingPush(Wire):
    """What the post pushes to the customer's callback URL (assumed: the SDK has no push)."""

    CustomerCode: str = Field(min_length=1, max_length=40)
    data: list[TrackingRecord] = Field(min_length=1, max_length=500)


def money(amount: Decimal | int) -> float:
    """Đồng are whole numbers; MOrder's ``CODAmount`` is a Double."""
    return float(int(Decimal(amount)))
