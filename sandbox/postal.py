"""Simulator of the postal service (VNPost public-administration post) behind MITC's NGSP gateway.

The contract is :mod:`schemas.postal` (docs/contracts.md V1–V12, the SDK OpenCPS ships); this module adds what it
leaves to the post, orders moving on by themselves, and refuses what the real gateway would:

- ``POST /token``: HTTP Basic ``consumer_key:consumer_secret`` and the form ``grant_type=client_credentials``
  → ``{access_token, scope, token_type: "Bearer", expires_in}``. Another client: 401 ``invalid_client``; no form
  (a JSON body) or another grant: 400 ``unsupported_grant_type`` / ``invalid_request`` (RFC 6749 §5.2).
- Other calls carry ``Authorization: Bearer <token>``; a missing, unknown or expired one is HTTP 401 with the
  API manager's fault (``{"fault": {"code": 900901, "message": "Invalid Credentials", …}}``).
- ``POST /apiVNPostNGSP/p1.0/order/post`` MOrder as JSON → HTTP 200 MResult ``{Status, Message}``. First
  failing check wins: Status ``400`` the body (an unknown field, a missing one, a wrong type — a province as
  ``"22"`` —, named in the message, never their values: they are personal data), ``403`` a customer code not the
  account's, ``409`` an OrderNumber the customer used already (nothing is created: the number is the key; with
``repeats="create"`` a second order is taken instead, as a gateway without that check would), ``400``
  a province not in ``province_codes`` (naming the side). Created: ``200``, status ``1``, an S10 item number.
- ``GET /apiVNPostNGSP/p1.0/order/cancel?CustomerCode=&OrderNumber=`` (exactly those): ``1`` becomes ``7``,
  ``7`` succeeds again without a new record, another status answers ``422`` naming it, an unknown number ``404``.
  A POST there is 405. There is no look-up of an order by number: ``GET …/order/{number}`` is 404 (V8).
- ``GET /apiVNPostNGSP/p1.0/order/tracking?pagesize=&lastId=`` (exactly those; ``lastId`` a 24-hex ObjectId,
  ``pagesize`` 1..1000): the account's records after ``lastId`` in ``_id`` order, RESTHeart-shaped; an empty
  page has no ``_embedded``. Another parameter (``limit``, ``customerCode``) or an integer ``lastId`` is HTTP 400
  in RESTHeart's words. Records of every customer code of the account are listed (the relay keeps its own).

Lifecycle: every ``step_seconds`` (``<= 0``: never) each order under way moves one step with probability 0.7
(seeded), a new one once it is ``collect_after_seconds`` old: ``1 → 2 → 3 → 8 → 4``; at ``8`` it fails (``5``)
with probability ``fail_rate``; after ``5`` it goes out again (``8``), or back to the sender (``6``) once it has
failed ``max_failures`` times. ``4``, ``6``, ``7`` are final. Each change appends a record: ``_id`` the next
ObjectId (its time, then a counter: ids sort as they were made), ``EventTime`` now in milliseconds and at least a
second after the order's previous record (the relay keys events on order, status and second), ``POSID`` a post
office. ``POST /_admin/foreign {"OrderNumber", "CustomerCode"?, "StatusCode"?}`` appends a record of an order
that is not the relay's (another desk on the account), which the relay must ignore.

With ``POST /_admin/push {"url", "secret": "whsec_..."}`` (``DELETE`` removes it) the records made by one tick or
one call are pushed in the background as ``{CustomerCode, data}`` (the SDK has no push: the shape is assumed),
500 records at most, signed the Standard Webhooks way (``webhook-id: postal-push-<uuid>``). One try: each POST
counts ``sent`` (2xx) or ``failed``; ``pending`` pushes are still on their way.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays (both on the token too);
``busy_rate`` answers Status ``503`` before anything else; ``expire_rate`` drops the presented token and answers
401; ``timeout_rate`` applies a create or cancel, then hangs ``hang_seconds`` (the ambiguous case);
``push_loss_rate`` drops a push (``lost``), ``push_duplicate_rate`` sends one twice with the same ``webhook-id``
(``duplicated``), ``push_delay_ms`` holds each back.

Admin: ``GET /_admin/stats``, ``GET /_admin/orders[/{OrderNumber}?CustomerCode=]`` (history, request,
``create_calls`` repeats included, ``cancel_calls``), ``POST /_admin/advance {"steps": n}`` (every order under way,
now, without the 0.7) or ``{"OrderNumber", "to", "CustomerCode"?}`` (one order into status ``to``),
``POST /_admin/reset`` (orders, records, tokens, counters, faults and the push target; the id and item number
sequences go on, so a client's ``lastId`` stays behind every new record). State lives in memory on the app's
event loop. Nothing is logged per request, so no personal data can reach a log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hmac
import itertools
import json
import math
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sandbox.faults import (
    ActiveFaults,
    Background,
    BaseFaults,
    PushConfig,
    add_fault_routes,
    add_push_routes,
    add_state_routes,
    error_response,
    json_body,
    latency_and_error,
)
from schemas import postal as vnp
from schemas.vietnam import VN_TZ
from schemas.webhook import sign

MOVE_PROBABILITY = 0.7
PUSH_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=30.0)
PUSH_BATCH = 500  # TrackingPush's limit
MAX_PAGE = 1000  # RESTHeart's largest pagesize
_NEXT = {vnp.ACCEPTED: vnp.COLLECTED, vnp.COLLECTED: vnp.IN_TRANSIT, vnp.IN_TRANSIT: vnp.OUT_FOR_DELIVERY}
_AT_RECEIVER = frozenset({vnp.OUT_FOR_DELIVERY, vnp.DELIVERED, vnp.DELIVERY_FAILED})
_POS = {1: "100000", 22: "200000", 31: "180000", 48: "550000", 79: "700000"}  # a post office per province
_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_S10_CHECK = {10: 0, 11: 5}
INVALID_TOKEN = {"fault": {"code": 900901, "message": "Invalid Credentials",
                           "description": "Invalid Credentials. Make sure you have provided the correct security "
                                          "credentials"}}


class FaultConfig(BaseFaults):
    """Faults injected into the post's answers and pushes."""

    busy_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(30.0, ge=0, le=3600)
    expire_rate: float = Field(0.0, ge=0, le=1)
    push_loss_rate: float = Field(0.0, ge=0, le=1)
    push_duplicate_rate: float = Field(0.0, ge=0, le=1)
    push_delay_ms: float = Field(0.0, ge=0, le=600_000)


class AdvanceRequest(BaseModel):
    """``{"steps": n}`` moves every order under way; ``{"OrderNumber", "to"}`` puts one order in ``to``."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1, ge=1, le=1000)
    OrderNumber: str | None = None
    CustomerCode: str | None = None
    to: int | None = None

    @model_validator(mode="after")
    def _one_order(self) -> AdvanceRequest:
        if (self.OrderNumber is None) != (self.to is None):
            raise ValueError("OrderNumber and to go together")
        if self.to is not None and self.to not in vnp.STATUS_MESSAGES:
            raise ValueError(f"to must be one of {', '.join(map(str, vnp.STATUS_MESSAGES))}")
        return self


class ForeignRecord(BaseModel):
    """A record of an order that is not the relay's: another desk's on the same gateway account."""

    model_config = ConfigDict(extra="forbid")

    OrderNumber: str = Field(min_length=1, max_length=60)
    CustomerCode: str = "OTHER-DESK"
    StatusCode: int = vnp.DELIVERED


_ActiveFaults = ActiveFaults[FaultConfig]


@dataclass
class Order:
    """One order as the post holds it, with the request it came from (kept in memory only)."""

    customer_code: str
    request: vnp.PostalOrder
    item_code: str
    created_at: datetime
    status: int = vnp.ACCEPTED
    failures: int = 0
    create_calls: int = 1
    cancel_calls: int = 0
    history: list[vnp.TrackingRecord] = field(default_factory=list)

    def admin_view(self) -> dict[str, Any]:
        return {
            "CustomerCode": self.customer_code, "OrderNumber": self.request.OrderNumber, "ItemCode": self.item_code,
            "StatusCode": self.status, "StatusMessage": vnp.STATUS_MESSAGES[self.status],
            "CODAmount": self.request.CODAmount, "createdAt": self.created_at.isoformat(),
            "failures": self.failures, "create_calls": self.create_calls, "cancel_calls": self.cancel_calls,
            "history": [r.wire() for r in self.history],
            "order": self.request.wire(),
        }


def item_code(serial: int) -> str:
    """The UPU S10 item number of ``serial`` (eight digits and their check digit): ``EB12345678xVN``."""
    digits = f"{serial % 100_000_000:08d}"
    check = 11 - sum(int(d) * w for d, w in zip(digits, _S10_WEIGHTS, strict=True)) % 11
    return f"EB{digits}{_S10_CHECK.get(check, check)}VN"


def result(meaning: vnp.Meaning, message: str | None = None) -> Response:
    """MResult with HTTP 200: the gateway answers refusals in ``Status`` (V6)."""
    status = next(code for code, m in vnp.DEFAULT_ANSWERS.items() if m == meaning)
    return JSONResponse({"Status": status, "Message": message or vnp.MESSAGES[meaning]})


def invalid(exc: ValidationError) -> Response:
    """Status 400 naming the fields at fault, never their values (they hold personal data)."""
    missing: list[str] = []
    unknown: list[str] = []
    wrong: list[str] = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        name = ".".join(str(p) for p in err["loc"]) or "body"
        {"missing": missing, "extra_forbidden": unknown}.get(err["type"], wrong).append(name)
    parts = ["thiếu trường " + ", ".join(missing)] if missing else []
    parts += ["trường không được hỗ trợ " + ", ".join(unknown)] if unknown else []
    parts += ["sai kiểu hoặc giá trị trường " + ", ".join(wrong)] if wrong else []
    return result("invalid", "Dữ liệu không hợp lệ: " + "; ".join(parts))


def oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def restheart_error(message: str) -> Response:
    return JSONResponse({"http status code": 400, "http status description": "Bad Request", "message": message},
                        status_code=400)


def exactly(params: dict[str, list[str]], names: tuple[str, ...]) -> str | None:
    """What is wrong with a query that must hold exactly ``names``, once each, or ``None``."""
    extra = sorted(set(params) - set(names))
    missing = [n for n in names if not params.get(n) or not params[n][0]]
    if extra:
        return f"unknown query parameter(s) {', '.join(extra)}: the call takes {', '.join(names)}"
    if missing:
        return f"missing query parameter(s) {', '.join(missing)}"
    repeated = [n for n in names if len(params[n]) > 1]
    return f"repeated query parameter(s) {', '.join(repeated)}" if repeated else None


def _pos(order: Order, status: int) -> str:
    side = order.request.ReceiverProvince if status in _AT_RECEIVER or status == vnp.IN_TRANSIT \
        else order.request.SenderProvince
    return _POS.get(side, f"{side:02d}0000")


class PostalState:
    """Tokens, orders with their records, counters, faults and push target of one gateway account."""

    def __init__(
        self, *, consumer_key: str, consumer_secret: str, customer_codes: Collection[str], step_seconds: float,
        fail_rate: float, max_failures: int, province_codes: Collection[int] | None, token_ttl_seconds: float,
        seed: int | None, collect_after_seconds: float = 0.0, repeats: Literal["refuse", "create"] = "refuse",
    ) -> None:
        self.repeats = repeats
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.customer_codes = frozenset(customer_codes)
        self.step_seconds = step_seconds
        self.collect_after = timedelta(seconds=collect_after_seconds)
        self.fail_rate = fail_rate
        self.max_failures = max_failures
        self.province_codes = None if province_codes is None else frozenset(int(p) for p in province_codes)
        self.token_ttl = token_ttl_seconds
        self.rng = random.Random(seed)
        self._serials = itertools.count(10_000_001)
        self._ids = itertools.count(1)
        self._id_time = 0
        self._machine = secrets.randbits(40)
        self.generation = 0
        self.background = Background(PUSH_TIMEOUT)
        self.reset()

    def reset(self) -> None:
        """Forget everything but the id and item number sequences; pushes in flight no longer count."""
        self.generation += 1
        self.tokens: dict[str, float] = {}
        self.orders: dict[tuple[str, str], Order] = {}
        self.second_orders: list[Order] = []
        self.records: list[vnp.TrackingRecord] = []
        self.outbox: list[tuple[str, vnp.TrackingRecord]] = []
        self.faults: _ActiveFaults | None = None
        self.push: PushConfig | None = None
        self.counters: Counter[str] = Counter()
        self.pushing = 0
        self.answers: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "tokens": {"issued": c["tokens_issued"], "refused": c["tokens_refused"], "expired": c["tokens_expired"]},
            "creates": {"accepted": c["creates_accepted"], "duplicates": c["create_duplicates"],
                        "refused": c["creates_refused"], "second_orders": len(self.second_orders)},
            "cancels": {"accepted": c["cancels_accepted"], "repeated": c["cancels_repeated"],
                        "refused": c["cancels_refused"]},
            "tracking_calls": c["tracking_calls"],
            "pushes": {**{kind: c[f"push_{kind}"] for kind in ("sent", "lost", "duplicated", "failed")},
                       "pending": self.pushing},
            "faults": {kind: self.injected[kind] for kind in ("error", "busy", "timeout", "expire")},
            "answers": dict(self.answers),
            "statuses": {str(k): v for k, v in Counter(order.status for order in self.orders.values()).items()},
        }

    # ------------------------------------------------------------------ token (V1, V2)

    def issue(self, authorization: str | None, content_type: str, body: bytes) -> Response:
        if content_type.split(";")[0].strip().lower() not in ("", "application/x-www-form-urlencoded"):
            return oauth_error(400, "invalid_request", "the token request is a form (application/x-www-form-"
                                                       "urlencoded), not " + content_type.split(";")[0])
        try:
            form = parse_qs(body.decode("ascii"), strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            return oauth_error(400, "invalid_request", "the body is not a form")
        grant = form.get("grant_type", [""])[0]
        if grant != "client_credentials":
            return oauth_error(400, "unsupported_grant_type",
                               "grant_type must be client_credentials" if grant else "grant_type is missing")
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            key, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            key = secret = ""
        if scheme.lower() != "basic" or not (
            hmac.compare_digest(key.encode(), self.consumer_key.encode())
            and hmac.compare_digest(secret.encode(), self.consumer_secret.encode())
        ):
            self.counters["tokens_refused"] += 1
            return oauth_error(401, "invalid_client", "Client Authentication failed.")
        now = time.monotonic()
        if len(self.tokens) > 10_000:
            self.tokens = {token: until for token, until in self.tokens.items() if until > now}
        token = secrets.token_hex(16)
        self.tokens[token] = now + self.token_ttl
        self.counters["tokens_issued"] += 1
        return JSONResponse({"access_token": token, "scope": "default", "token_type": "Bearer",
                             "expires_in": max(1, math.ceil(self.token_ttl))})

    def authorise(self, header: str | None, faults: _ActiveFaults | None) -> Response | None:
        """HTTP 401 unless ``header`` is ``Bearer`` and a live token (which ``expire_rate`` may drop)."""
        scheme, _, token = (header or "").partition(" ")
        token = token.strip() if scheme == "Bearer" else ""
        until = self.tokens.get(token)
        if until is not None and until <= time.monotonic():
            del self.tokens[token]
            self.counters["tokens_expired"] += 1
            until = None
        if until is None:
            return JSONResponse(INVALID_TOKEN, status_code=401)
        if faults is not None and faults.draw(faults.config.expire_rate):
            del self.tokens[token]
            self.injected["expire"] += 1
            return JSONResponse(INVALID_TOKEN, status_code=401)
        return None

    # ------------------------------------------------------------------ orders (V3-V8)

    def _not_served(self, order: vnp.PostalOrder) -> Response | None:
        if self.province_codes is None:
            return None
        for side, name in (("người gửi", "SenderProvince"), ("người nhận", "ReceiverProvince")):
            if getattr(order, name) not in self.province_codes:
                return result("invalid", f"Địa chỉ {side} không thuộc phạm vi phục vụ: sai {name}")
        return None

    def create(self, content_type: str, body: Any) -> Response:
        if content_type.split(";")[0].strip().lower() != "application/json":
            self.counters["creates_refused"] += 1
            return result("invalid", "Dữ liệu không hợp lệ: Content-Type phải là application/json")
        if not isinstance(body, dict):
            self.counters["creates_refused"] += 1
            return result("invalid", "Dữ liệu không hợp lệ: body không phải đối tượng JSON")
        try:
            request = vnp.PostalOrder.model_validate(body, strict=True)
        except ValidationError as exc:
            self.counters["creates_refused"] += 1
            return invalid(exc)
        if request.CustomerCode not in self.customer_codes:
            self.counters["creates_refused"] += 1
            return result("customer_refused")
        existing = self.orders.get((request.CustomerCode, request.OrderNumber))
        if existing is not None:
            existing.create_calls += 1
            if self.repeats == "refuse":
                self.counters["create_duplicates"] += 1
                return result("duplicate", f"Số đơn hàng {request.OrderNumber} đã tồn tại")
        not_served = self._not_served(request)
        if not_served is not None:
            self.counters["creates_refused"] += 1
            return not_served
        order = Order(
            customer_code=request.CustomerCode, request=request, item_code=item_code(next(self._serials)),
            created_at=datetime.now(VN_TZ).replace(microsecond=0),
        )
        if existing is None:
            self.orders[(order.customer_code, request.OrderNumber)] = order
        else:  # repeats = "create": a second parcel under the same number, as a gateway without the check would
            self.second_orders.append(order)
        self.move(order, vnp.ACCEPTED)
        self.counters["creates_accepted"] += 1
        return result("done")

    def cancel(self, params: dict[str, list[str]]) -> Response:
        wrong = exactly(params, ("CustomerCode", "OrderNumber"))
        if wrong is not None:
            return result("invalid", f"Dữ liệu không hợp lệ: {wrong}")
        customer, number = params["CustomerCode"][0], params["OrderNumber"][0]
        if customer not in self.customer_codes:
            return result("customer_refused")
        order = self.orders.get((customer, number))
        if order is None:
            return result("not_found")
        order.cancel_calls += 1
        if order.status not in vnp.CANCELLABLE_STATUSES:
            self.counters["cancels_refused"] += 1
            return result("not_cancellable", f"Đơn hàng không thể hủy ở trạng thái {order.status} "
                                             f"({vnp.STATUS_MESSAGES[order.status]})")
        if order.status == vnp.CANCELLED:
            self.counters["cancels_repeated"] += 1
        else:
            self.move(order, vnp.CANCELLED)
            self.counters["cancels_accepted"] += 1
        return result("done")

    def tracking(self, params: dict[str, list[str]]) -> Response:
        wrong = exactly(params, ("pagesize", "lastId"))
        if wrong is not None:
            return restheart_error(wrong)
        size, last_id = params["pagesize"][0], params["lastId"][0]
        if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE:
            return restheart_error(f"illegal pagesize parameter, it must be between 1 and {MAX_PAGE}")
        if not vnp.OBJECT_ID.match(last_id):
            return restheart_error(f"invalid lastId {last_id[:30]!r}: an ObjectId is 24 hexadecimal digits")
        self.counters["tracking_calls"] += 1
        start = bisect.bisect_right(self.records, last_id, key=lambda r: r.oid)
        page = self.records[start:start + int(size)]
        body: dict[str, Any] = {"_size": len(self.records),
                                "_total_pages": math.ceil(len(self.records) / int(size)),
                                "_returned": len(page)}
        if page:
            body["_embedded"] = {"rh:doc": [r.wire() for r in page]}
        return JSONResponse(body)

    # ------------------------------------------------------------------ lifecycle

    def find(self, order_number: str, customer_code: str | None) -> Order | None:
        """The order with this number (the first created, unless ``customer_code`` says whose)."""
        return next(
            (o for (customer, number), o in self.orders.items()
             if number == order_number and customer_code in (None, customer)),
            None,
        )

    def next_id(self) -> str:
        """An ObjectId: seconds, this simulator's 5 bytes, a counter; later ids sort after earlier ones."""
        self._id_time = max(self._id_time, int(time.time()))
        return f"{self._id_time:08x}{self._machine:010x}{next(self._ids) % 0x1000000:06x}"

    @staticmethod
    def _stamp(order: Order) -> int:
        """Now in milliseconds, and at least a second after the order's last record: one item is in one place at
        a time, and the relay orders an order's statuses by their time."""
        at = int(time.time()) * 1000
        if order.history:
            at = max(at, (order.history[-1].EventTime // 1000 + 1) * 1000)
        return at

    def record(self, customer: str, number: str, item: str | None, status: int, event_time: int,
               pos: str) -> vnp.TrackingRecord:
        row = vnp.TrackingRecord.model_validate({
            "_id": {"$oid": self.next_id()}, "CustomerCode": customer, "OrderNumber": number,
            "EventTime": event_time, "POSID": pos, "ItemCode": item, "StatusCode": status,
            "StatusMessage": vnp.STATUS_MESSAGES.get(status, ""), "Notes": None,
        })
        self.records.append(row)
        self.outbox.append((customer, row))
        return row

    def move(self, order: Order, status: int) -> None:
        """Put ``order`` in ``status``: its record goes to the history, the tracking list and the outbox."""
        if status == vnp.DELIVERY_FAILED:
            order.failures += 1
        order.status = status
        order.history.append(self.record(order.customer_code, order.request.OrderNumber, order.item_code, status,
                                         self._stamp(order), _pos(order, status)))

    def foreign(self, given: ForeignRecord) -> vnp.TrackingRecord:
        return self.record(given.CustomerCode, given.OrderNumber, None, given.StatusCode, int(time.time()) * 1000,
                           "100000")

    def _step(self, order: Order) -> None:
        if order.status == vnp.OUT_FOR_DELIVERY:
            failed = self.rng.random() < self.fail_rate
            self.move(order, vnp.DELIVERY_FAILED if failed else vnp.DELIVERED)
        elif order.status == vnp.DELIVERY_FAILED:
            self.move(order, vnp.RETURNED if order.failures >= self.max_failures else vnp.OUT_FOR_DELIVERY)
        else:
            self.move(order, _NEXT[order.status])

    def under_way(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status not in vnp.FINAL_STATUSES]

    def advance(self, steps: int) -> int:
        """Move every order under way ``steps`` steps; the number of records made."""
        made = 0
        for _ in range(steps):
            for order in self.under_way():
                self._step(order)
                made += 1
        return made

    def tick(self) -> None:
        """One tick of the clock: each order under way moves one step with :data:`MOVE_PROBABILITY`;
        a new one waits ``collect_after_seconds`` for the postman first."""
        ready_before = datetime.now(VN_TZ) - self.collect_after
        for order in self.under_way():
            if order.status == vnp.ACCEPTED and order.created_at > ready_before:
                continue
            if self.rng.random() < MOVE_PROBABILITY:
                self._step(order)

    def start(self) -> None:
        """Start the clock, unless ``step_seconds`` stops it."""
        if self.step_seconds > 0:
            self.background.spawn(self._run_ticker())

    async def _run_ticker(self) -> None:
        while True:
            await asyncio.sleep(self.step_seconds)
            self.tick()
            self.flush()

    # ------------------------------------------------------------------ pushes

    def flush(self) -> None:
        """Push the records made since the last flush in the background, one push per customer and batch."""
        records, self.outbox = self.outbox, []
        target, faults = self.push, self.faults
        if target is None:
            return
        by_customer: dict[str, list[vnp.TrackingRecord]] = {}
        for customer, row in records:
            by_customer.setdefault(customer, []).append(row)
        for customer, rows in by_customer.items():
            for start in range(0, len(rows), PUSH_BATCH):
                push = vnp.TrackingPush(CustomerCode=customer, data=rows[start:start + PUSH_BATCH])
                if faults is not None and faults.draw(faults.config.push_loss_rate):
                    self.counters["push_lost"] += 1
                    continue
                copies = 2 if faults is not None and faults.draw(faults.config.push_duplicate_rate) else 1
                self.counters["push_duplicated"] += copies - 1
                delay = faults.config.push_delay_ms / 1000 if faults is not None else 0.0
                self.pushing += 1
                self.background.spawn(self._push(target, push, copies, delay, self.generation))

    async def _push(
        self, target: PushConfig, push: vnp.TrackingPush, copies: int, delay: float, generation: int
    ) -> None:
        try:
            await self._send_push(target, push, copies, delay, generation)
        finally:
            if generation == self.generation:
                self.pushing -= 1

    async def _send_push(
        self, target: PushConfig, push: vnp.TrackingPush, copies: int, delay: float, generation: int
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        body = push.model_dump_json(by_alias=True).encode()
        headers = sign(target.secret, f"postal-push-{uuid.uuid4()}", body).as_headers()
        headers["content-type"] = "application/json"
        for _ in range(copies):
            ok = await self.background.post(target.url, body, headers)
            if generation == self.generation:
                self.counters["push_sent" if ok else "push_failed"] += 1


def create_app(
    *,
    consumer_key: str,
    consumer_secret: str,
    customer_codes: Collection[str],
    step_seconds: float = 2.0,
    fail_rate: float = 0.0,
    max_failures: int = 2,
    province_codes: Collection[int] | None = None,
    token_ttl_seconds: float = 3600,
    seed: int | None = None,
    collect_after_seconds: float = 0.0,
    repeats: Literal["refuse", "create"] = "refuse",
) -> FastAPI:
    """Build the postal simulator for one consumer key and the customer codes it may use;
    ``province_codes`` None serves every province code, ``seed`` fixes the lifecycle's draws,
    a new order waits ``collect_after_seconds`` before the clock moves it (time to cancel it); ``repeats`` "create"
    plays a gateway that does not refuse a repeated OrderNumber (it takes a second order)."""
    state = PostalState(
        consumer_key=consumer_key, consumer_secret=consumer_secret, customer_codes=customer_codes,
        step_seconds=step_seconds, fail_rate=fail_rate, max_failures=max_failures, province_codes=province_codes,
        token_ttl_seconds=token_ttl_seconds, seed=seed, collect_after_seconds=collect_after_seconds,
        repeats=repeats,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: postal service (NGSP)", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.postal = state

    async def injected(faults: _ActiveFaults | None) -> Response | None:
        status = await latency_and_error(faults)
        if status is None:
            return None
        state.injected["error"] += 1
        return error_response(status, "injected fault")

    async def serve(request: Request, operation: Callable[[], Response], *, may_hang: bool) -> Response:
        """Faults, the token, then ``operation``; a create or cancel ``may_hang`` after it is applied."""
        faults = state.faults
        failed = await injected(faults)
        if failed is not None:
            return failed
        if faults is not None and faults.draw(faults.config.busy_rate):
            state.injected["busy"] += 1
            return result("busy")
        refused = state.authorise(request.headers.get("authorization"), faults)
        answer = operation() if refused is None else refused
        state.flush()
        if may_hang and faults is not None and faults.draw(faults.config.timeout_rate):
            state.injected["timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        state.answers[str(answer.status_code) if answer.status_code != 200 else _status_of(answer)] += 1
        return answer

    @app.post(vnp.TOKEN_PATH)
    async def token(request: Request) -> Response:
        failed = await injected(state.faults)
        if failed is not None:
            return failed
        return state.issue(request.headers.get("authorization"), request.headers.get("content-type", ""),
                           await request.body())

    @app.post(vnp.ORDER_PATH)
    async def create(request: Request) -> Response:
        body = await json_body(request)
        return await serve(request, partial(state.create, request.headers.get("content-type", ""), body),
                           may_hang=True)

    @app.get(vnp.CANCEL_PATH)
    async def cancel(request: Request) -> Response:
        params = parse_qs(request.url.query, keep_blank_values=True)
        return await serve(request, partial(state.cancel, params), may_hang=True)

    @app.get(vnp.TRACKING_PATH)
    async def tracking(request: Request) -> Response:
        params = parse_qs(request.url.query, keep_blank_values=True)
        return await serve(request, partial(state.tracking, params), may_hang=False)

    add_fault_routes(app, state, FaultConfig)

    @app.get("/_admin/orders")
    async def orders() -> list[dict[str, Any]]:
        return [order.admin_view() for order in state.orders.values()]

    @app.get("/_admin/orders/{order_number}")
    async def order(order_number: str, customer_code: str | None = Query(None, alias="CustomerCode")) -> Response:
        found = state.find(order_number, customer_code)
        if found is None:
            return error_response(404, f"unknown order {order_number!r}")
        return JSONResponse(found.admin_view())

    @app.post("/_admin/advance")
    async def advance(body: AdvanceRequest) -> Response:
        if body.OrderNumber is None or body.to is None:
            made = state.advance(body.steps)
            state.flush()
            return JSONResponse({"records": made})
        found = state.find(body.OrderNumber, body.CustomerCode)
        if found is None:
            return error_response(404, f"unknown order {body.OrderNumber!r}")
        state.move(found, body.to)
        state.flush()
        return JSONResponse(found.admin_view())

    @app.post("/_admin/foreign")
    async def foreign(body: ForeignRecord) -> Response:
        row = state.foreign(body)
        state.flush()
        return JSONResponse(row.wire())

    add_push_routes(app, state)

    add_state_routes(app, state)
    return app


def _status_of(answer: Response) -> str:
    """The ``Status`` an answered MResult carries (for the stats), or the HTTP status."""
    try:
        return str(json.loads(bytes(answer.body)).get("Status", 200))
    except (ValueError, AttributeError):
        return "200"
