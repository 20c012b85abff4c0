"""Simulator of the postal service (VNPost public-administration post) as reached through the national gateway.

The contract is :mod:`schemas.postal`; this module adds what it leaves to the post, orders moving on by
themselves. JSON over HTTP:

- ``POST /oauth/token`` ``{"consumerKey", "consumerSecret"}`` → :class:`~schemas.postal.TokenAnswer`, a
  random token living ``token_ttl_seconds``. Other calls carry ``Authorization: Bearer <token>`` and answer
  ``{"code", "message", "data"}`` with the HTTP status of the code (:data:`HTTP_STATUS`).
- ``POST /api/v1/orders`` :class:`~schemas.postal.PostalOrder` → the order, status ``100``, ``itemCode`` an
  S10 number ``EB…VN``. First failing check wins: ``10`` the body (fields named, never their values: they
  are personal data), ``30`` the customer, ``20`` the number already used by this customer (``data``: that
  order; the number is the key, so a retry learns its order exists whatever else it says), ``11`` a
  province code not two digits or not in ``province_codes``, a district code neither empty nor three
  digits (the message names the sender's or the receiver's).
- ``GET /api/v1/orders/{orderNumber}?customerCode=`` → the order, or ``21``.
- ``POST /api/v1/orders/cancel`` :class:`~schemas.postal.CancelRequest`: ``100`` becomes ``700``, ``700``
  succeeds again without a new record, any other status answers ``22`` naming it.
- ``GET /api/v1/tracking?customerCode=&lastId=0&limit=100`` → the customer's records with ``id > lastId``
  ascending, at most ``limit`` (1..500); ``lastId`` is the last returned (or the one given), ``hasMore``.

Answer codes and HTTP statuses::

    00  200  success                          20  409  order number already used
    01  401  token missing, unknown, expired  21  404  order not found
    02  401  consumer key or secret refused   22  409  not cancellable in its status
    10  400  invalid data                     30  403  customer code not allowed
    11  400  address not served               96  503  busy (injected)

Lifecycle: every ``step_seconds`` (``<= 0``: never) each order under way moves one step with probability
0.7 (seeded), so orders drift apart, a new one once it is ``collect_after_seconds`` old:
``100 → 200 → 300 → 400 → 500``; at ``400`` it fails (``550``) with probability ``fail_rate``; after
``550`` it goes out again (``400``), or back to the sender (``600``) once it has failed ``max_failures``
times. ``500``, ``600``, ``700`` are final. Each change appends a :class:`~schemas.postal.TrackingRecord`:
``id`` the customer's next, ``location`` a post office,
``statusTime`` now in Vietnam to the second, and at least a second after the order's previous record: the
relay keys events on ``(orderNumber, statusCode, statusTime)`` (``550 → 400 → 550`` repeats codes) and
orders an order's statuses by their time.

With ``POST /_admin/push {"url", "secret": "whsec_..."}`` (``DELETE`` removes it) the records made by one
tick or one call are pushed in the background, one :class:`~schemas.postal.TrackingPush` per customer and
500 records, signed the Standard Webhooks way (``webhook-id: postal-push-<uuid>``). One try: each POST
counts ``sent`` (2xx) or ``failed``; ``pending`` pushes are still on their way.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays (both on the token too);
``busy_rate`` answers ``96`` before anything else; ``expire_rate`` drops the presented token and answers
``01``; ``timeout_rate`` applies a create or cancel, then hangs ``hang_seconds`` (the ambiguous case);
``push_loss_rate`` drops a push (``lost``), ``push_duplicate_rate`` sends one twice with the same
``webhook-id`` (``duplicated``), ``push_delay_ms`` holds each back.

Admin: ``GET /_admin/stats``, ``GET /_admin/orders[/{orderNumber}?customerCode=]`` (history, request,
``create_calls`` duplicates included, ``cancel_calls``), ``POST /_admin/advance {"steps": n}`` (every
order under way, now, without the 0.7) or ``{"orderNumber", "to", "customerCode"?}`` (one order into
status ``to``), ``POST /_admin/reset`` (orders, records, tokens, counters, faults and the push target; the
id and item number sequences go on, so a client's ``lastId`` stays behind every new record). State lives in
memory on the app's event loop. Nothing is logged per request, so no personal data can reach a log.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import itertools
import math
import random
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

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
HTTP_STATUS: dict[str, int] = {
    vnp.SUCCESS: 200, vnp.TOKEN_INVALID: 401, vnp.KEYS_REFUSED: 401, vnp.INVALID_DATA: 400,
    vnp.ADDRESS_NOT_SERVED: 400, vnp.ORDER_EXISTS: 409, vnp.ORDER_NOT_FOUND: 404, vnp.NOT_CANCELLABLE: 409,
    vnp.CUSTOMER_REFUSED: 403, vnp.BUSY: 503, vnp.SYSTEM_ERROR: 500,
}
_NEXT = {vnp.WAITING: vnp.COLLECTED, vnp.COLLECTED: vnp.IN_TRANSIT, vnp.IN_TRANSIT: vnp.OUT_FOR_DELIVERY}
_AT_RECEIVER = frozenset({vnp.OUT_FOR_DELIVERY, vnp.DELIVERED, vnp.DELIVERY_FAILED})
_PROVINCES = {"01": "Hà Nội", "22": "Quảng Ninh", "31": "Hải Phòng", "48": "Đà Nẵng", "79": "TP. Hồ Chí Minh"}
_PROVINCE = re.compile(r"^[0-9]{2}$")
_DISTRICT = re.compile(r"^(?:[0-9]{3})?$")
_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_S10_CHECK = {10: 0, 11: 5}


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
    """``{"steps": n}`` moves every order under way; ``{"orderNumber", "to"}`` puts one order in ``to``."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1, ge=1, le=1000)
    orderNumber: str | None = None
    customerCode: str | None = None
    to: str | None = None

    @model_validator(mode="after")
    def _one_order(self) -> AdvanceRequest:
        if (self.orderNumber is None) != (self.to is None):
            raise ValueError("orderNumber and to go together")
        if self.to is not None and self.to not in vnp.STATUS_MESSAGES:
            raise ValueError(f"to must be one of {', '.join(vnp.STATUS_MESSAGES)}")
        return self


class _TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    consumerKey: str
    consumerSecret: str


class _TrackingQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    customerCode: str = Field(min_length=1)
    lastId: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=500)


_ActiveFaults = ActiveFaults[FaultConfig]


@dataclass
class Order:
    """One order as the post holds it, with the request it came from (kept in memory only)."""

    customer_code: str
    request: vnp.PostalOrder
    item_code: str
    created_at: datetime
    status: str = vnp.WAITING
    failures: int = 0
    create_calls: int = 1
    cancel_calls: int = 0
    history: list[vnp.TrackingRecord] = field(default_factory=list)

    def view(self) -> vnp.OrderView:
        return vnp.OrderView(
            orderNumber=self.request.orderNumber, itemCode=self.item_code, purpose=self.request.purpose,
            statusCode=self.status, statusMessage=vnp.STATUS_MESSAGES[self.status],
            codAmount=self.request.codAmount, createdAt=self.created_at,
        )

    def admin_view(self) -> dict[str, Any]:
        return {
            "customerCode": self.customer_code, **self.view().model_dump(mode="json"),
            "failures": self.failures, "create_calls": self.create_calls, "cancel_calls": self.cancel_calls,
            "history": [r.model_dump(mode="json") for r in self.history],
            "order": self.request.model_dump(mode="json"),
        }


def item_code(serial: int) -> str:
    """The UPU S10 item number of ``serial`` (eight digits and their check digit): ``EB12345678xVN``."""
    digits = f"{serial % 100_000_000:08d}"
    check = 11 - sum(int(d) * w for d, w in zip(digits, _S10_WEIGHTS, strict=True)) % 11
    return f"EB{digits}{_S10_CHECK.get(check, check)}VN"


def _answer(code: str, message: str | None = None, data: Any = None) -> vnp.PostalAnswer:
    return vnp.PostalAnswer(code=code, message=vnp.ANSWER_CODES[code] if message is None else message, data=data)


def _invalid(exc: ValidationError) -> vnp.PostalAnswer:
    """``10`` naming the fields at fault, never their values (they hold personal data)."""
    missing: list[str] = []
    wrong: list[str] = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        name = ".".join(str(p) for p in err["loc"]) or "body"
        (missing if err["type"] == "missing" else wrong).append(name)
    parts = ["thiếu trường " + ", ".join(missing)] if missing else []
    parts += ["sai giá trị trường " + ", ".join(wrong)] if wrong else []
    return _answer(vnp.INVALID_DATA, "Dữ liệu không hợp lệ: " + "; ".join(parts))


def _place(province_code: str) -> str:
    return _PROVINCES.get(province_code, f"tỉnh mã {province_code}")


def _location(order: Order, status: str) -> str:
    if status == vnp.IN_TRANSIT:
        return f"Trung tâm khai thác chia chọn {_place(order.request.receiverProvinceCode)}"
    if status in _AT_RECEIVER:
        return f"Bưu cục phát {_place(order.request.receiverProvinceCode)}"
    return f"Bưu cục {_place(order.request.senderProvinceCode)}"


class PostalState:
    """Tokens, orders with their records, counters, faults and push target of one post account."""

    def __init__(
        self, *, consumer_key: str, consumer_secret: str, customer_codes: Collection[str], step_seconds: float,
        fail_rate: float, max_failures: int, province_codes: Collection[str] | None, token_ttl_seconds: float,
        seed: int | None, collect_after_seconds: float = 0.0,
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.customer_codes = frozenset(customer_codes)
        self.step_seconds = step_seconds
        self.collect_after = timedelta(seconds=collect_after_seconds)
        self.fail_rate = fail_rate
        self.max_failures = max_failures
        self.province_codes = None if province_codes is None else frozenset(province_codes)
        self.token_ttl = token_ttl_seconds
        self.rng = random.Random(seed)
        self._serials = itertools.count(10_000_001)
        self._last_ids: Counter[str] = Counter()
        self.generation = 0
        self.background = Background(PUSH_TIMEOUT)
        self.reset()

    def reset(self) -> None:
        """Forget everything but the id and item number sequences; pushes in flight no longer count."""
        self.generation += 1
        self.tokens: dict[str, float] = {}
        self.orders: dict[tuple[str, str], Order] = {}
        self.records: dict[str, list[vnp.TrackingRecord]] = {}
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
            "creates": {"accepted": c["creates_accepted"], "conflicts": c["create_conflicts"]},
            "cancels": {"accepted": c["cancels_accepted"], "repeated": c["cancels_repeated"],
                        "refused": c["cancels_refused"]},
            "tracking_calls": c["tracking_calls"],
            "pushes": {**{kind: c[f"push_{kind}"] for kind in ("sent", "lost", "duplicated", "failed")},
                       "pending": self.pushing},
            "faults": {kind: self.injected[kind] for kind in ("error", "busy", "timeout", "expire")},
            "answers": dict(self.answers),
            "statuses": dict(Counter(order.status for order in self.orders.values())),
        }

    def respond(self, answer: vnp.PostalAnswer) -> Response:
        self.answers[answer.code] += 1
        return JSONResponse(answer.model_dump(mode="json"), status_code=HTTP_STATUS[answer.code])

    def issue(self, body: Any) -> vnp.TokenAnswer | vnp.PostalAnswer:
        try:
            keys = _TokenRequest.model_validate(body)
        except ValidationError as exc:
            return _invalid(exc)
        if not (
            hmac.compare_digest(keys.consumerKey.encode(), self.consumer_key.encode())
            and hmac.compare_digest(keys.consumerSecret.encode(), self.consumer_secret.encode())
        ):
            self.counters["tokens_refused"] += 1
            return _answer(vnp.KEYS_REFUSED)
        now = time.monotonic()
        if len(self.tokens) > 10_000:
            self.tokens = {token: until for token, until in self.tokens.items() if until > now}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + self.token_ttl
        self.counters["tokens_issued"] += 1
        return vnp.TokenAnswer(access_token=token, expires_in=max(1, math.ceil(self.token_ttl)))

    def authorise(self, header: str | None, faults: _ActiveFaults | None) -> vnp.PostalAnswer | None:
        """``01`` unless ``header`` is ``Bearer`` and a live token (which ``expire_rate`` may drop)."""
        scheme, _, token = (header or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        until = self.tokens.get(token)
        if until is not None and until <= time.monotonic():
            del self.tokens[token]
            self.counters["tokens_expired"] += 1
            until = None
        if until is None:
            return _answer(vnp.TOKEN_INVALID)
        if faults is not None and faults.draw(faults.config.expire_rate):
            del self.tokens[token]
            self.injected["expire"] += 1
            return _answer(vnp.TOKEN_INVALID)
        return None

    def _refused(self, customer_code: str) -> vnp.PostalAnswer | None:
        return None if customer_code in self.customer_codes else _answer(vnp.CUSTOMER_REFUSED)

    def _not_served(self, order: vnp.PostalOrder) -> vnp.PostalAnswer | None:
        served = self.province_codes
        for side, prefix in (("người gửi", "sender"), ("người nhận", "receiver")):
            province, district = getattr(order, f"{prefix}ProvinceCode"), getattr(order, f"{prefix}DistrictCode")
            if not _PROVINCE.match(province) or (served is not None and province not in served):
                wrong = f"{prefix}ProvinceCode"
            elif not _DISTRICT.match(district):
                wrong = f"{prefix}DistrictCode"
            else:
                continue
            return _answer(vnp.ADDRESS_NOT_SERVED, f"Địa chỉ {side} không thuộc phạm vi phục vụ: sai {wrong}")
        return None

    def create(self, body: Any) -> vnp.PostalAnswer:
        try:
            request = vnp.PostalOrder.model_validate(body)
        except ValidationError as exc:
            return _invalid(exc)
        refused = self._refused(request.customerCode)
        if refused is not None:
            return refused
        existing = self.orders.get((request.customerCode, request.orderNumber))
        if existing is not None:
            existing.create_calls += 1
            self.counters["create_conflicts"] += 1
            return _answer(vnp.ORDER_EXISTS, data=existing.view().model_dump(mode="json"))
        not_served = self._not_served(request)
        if not_served is not None:
            return not_served
        order = Order(
            customer_code=request.customerCode, request=request, item_code=item_code(next(self._serials)),
            created_at=datetime.now(VN_TZ).replace(microsecond=0),
        )
        self.orders[(order.customer_code, request.orderNumber)] = order
        self.move(order, vnp.WAITING)
        self.counters["creates_accepted"] += 1
        return _answer(vnp.SUCCESS, data=order.view().model_dump(mode="json"))

    def lookup(self, order_number: str, customer_code: str | None) -> vnp.PostalAnswer:
        if not customer_code:
            return _answer(vnp.INVALID_DATA, "Dữ liệu không hợp lệ: thiếu trường customerCode")
        refused = self._refused(customer_code)
        if refused is not None:
            return refused
        order = self.orders.get((customer_code, order_number))
        if order is None:
            return _answer(vnp.ORDER_NOT_FOUND)
        return _answer(vnp.SUCCESS, data=order.view().model_dump(mode="json"))

    def cancel(self, body: Any) -> vnp.PostalAnswer:
        try:
            request = vnp.CancelRequest.model_validate(body)
        except ValidationError as exc:
            return _invalid(exc)
        refused = self._refused(request.customerCode)
        if refused is not None:
            return refused
        order = self.orders.get((request.customerCode, request.orderNumber))
        if order is None:
            return _answer(vnp.ORDER_NOT_FOUND)
        order.cancel_calls += 1
        if order.status not in vnp.CANCELLABLE_STATUSES:
            self.counters["cancels_refused"] += 1
            status = f"{order.status} ({vnp.STATUS_MESSAGES[order.status]})"
            return _answer(vnp.NOT_CANCELLABLE, f"Đơn hàng không thể hủy ở trạng thái {status}")
        if order.status == vnp.CANCELLED:
            self.counters["cancels_repeated"] += 1
        else:
            self.move(order, vnp.CANCELLED)
            self.counters["cancels_accepted"] += 1
        return _answer(vnp.SUCCESS, data=order.view().model_dump(mode="json"))

    def tracking(self, params: dict[str, str]) -> vnp.PostalAnswer:
        try:
            query = _TrackingQuery.model_validate(params)
        except ValidationError as exc:
            return _invalid(exc)
        refused = self._refused(query.customerCode)
        if refused is not None:
            return refused
        self.counters["tracking_calls"] += 1
        records = self.records.get(query.customerCode, [])
        start = bisect.bisect_right(records, query.lastId, key=lambda r: r.id)
        items = records[start:start + query.limit]
        page = vnp.TrackingPage(
            items=items, lastId=items[-1].id if items else query.lastId, hasMore=start + query.limit < len(records)
        )
        return _answer(vnp.SUCCESS, data=page.model_dump(mode="json"))

    def find(self, order_number: str, customer_code: str | None) -> Order | None:
        """The order with this number (the first created, unless ``customer_code`` says whose)."""
        return next(
            (o for (customer, number), o in self.orders.items()
             if number == order_number and customer_code in (None, customer)),
            None,
        )

    @staticmethod
    def _stamp(order: Order) -> datetime:
        """Now to the second, and at least a second after the order's last record: one item is in one
        place at a time, and the relay orders an order's statuses by their time."""
        at = datetime.now(VN_TZ).replace(microsecond=0)
        if order.history:
            at = max(at, order.history[-1].statusTime + timedelta(seconds=1))
        return at

    def move(self, order: Order, status: str) -> None:
        """Put ``order`` in ``status``: its record goes to the history, the tracking list and the outbox."""
        if status == vnp.DELIVERY_FAILED:
            order.failures += 1
        order.status = status
        self._last_ids[order.customer_code] += 1
        record = vnp.TrackingRecord(
            id=self._last_ids[order.customer_code], orderNumber=order.request.orderNumber, itemCode=order.item_code,
            statusCode=status, statusMessage=vnp.STATUS_MESSAGES[status], statusTime=self._stamp(order),
            location=_location(order, status),
        )
        order.history.append(record)
        self.records.setdefault(order.customer_code, []).append(record)
        self.outbox.append((order.customer_code, record))

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
            if order.status == vnp.WAITING and order.created_at > ready_before:
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

    def flush(self) -> None:
        """Push the records made since the last flush in the background, one push per customer and batch."""
        records, self.outbox = self.outbox, []
        target, faults = self.push, self.faults
        if target is None:
            return
        by_customer: dict[str, list[vnp.TrackingRecord]] = {}
        for customer, record in records:
            by_customer.setdefault(customer, []).append(record)
        for customer, rows in by_customer.items():
            for start in range(0, len(rows), PUSH_BATCH):
                push = vnp.TrackingPush(customerCode=customer, data=rows[start:start + PUSH_BATCH])
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
        body = push.model_dump_json().encode()
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
    province_codes: Collection[str] | None = None,
    token_ttl_seconds: float = 3600,
    seed: int | None = None,
    collect_after_seconds: float = 0.0,
) -> FastAPI:
    """Build the postal simulator for one consumer key and the customer codes it may use;
    ``province_codes`` None serves every two-digit province code, ``seed`` fixes the lifecycle's draws,
    a new order waits ``collect_after_seconds`` before the clock moves it (time to cancel it)."""
    state = PostalState(
        consumer_key=consumer_key, consumer_secret=consumer_secret, customer_codes=customer_codes,
        step_seconds=step_seconds, fail_rate=fail_rate, max_failures=max_failures, province_codes=province_codes,
        token_ttl_seconds=token_ttl_seconds, seed=seed, collect_after_seconds=collect_after_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: postal service", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.postal = state

    async def injected(faults: _ActiveFaults | None) -> Response | None:
        status = await latency_and_error(faults)
        if status is None:
            return None
        state.injected["error"] += 1
        return error_response(status, "injected fault")

    async def serve(request: Request, operation: Callable[[], vnp.PostalAnswer], *, may_hang: bool) -> Response:
        """Faults, the token, then ``operation``; a create or cancel ``may_hang`` after it is applied."""
        faults = state.faults
        failed = await injected(faults)
        if failed is not None:
            return failed
        if faults is not None and faults.draw(faults.config.busy_rate):
            state.injected["busy"] += 1
            return state.respond(_answer(vnp.BUSY))
        refused = state.authorise(request.headers.get("authorization"), faults)
        answer = operation() if refused is None else refused
        state.flush()
        if may_hang and faults is not None and faults.draw(faults.config.timeout_rate):
            state.injected["timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return state.respond(answer)

    @app.post(vnp.TOKEN_PATH)
    async def token(request: Request) -> Response:
        failed = await injected(state.faults)
        if failed is not None:
            return failed
        answer = state.issue(await json_body(request))
        if isinstance(answer, vnp.PostalAnswer):
            return state.respond(answer)
        return JSONResponse(answer.model_dump(mode="json"))

    @app.post(vnp.ORDERS_PATH)
    async def create(request: Request) -> Response:
        return await serve(request, partial(state.create, await json_body(request)), may_hang=True)

    @app.post(vnp.CANCEL_PATH)
    async def cancel(request: Request) -> Response:
        return await serve(request, partial(state.cancel, await json_body(request)), may_hang=True)

    @app.get(vnp.ORDERS_PATH + "/{order_number}")
    async def lookup(request: Request, order_number: str) -> Response:
        customer = request.query_params.get("customerCode")
        return await serve(request, partial(state.lookup, order_number, customer), may_hang=False)

    @app.get(vnp.TRACKING_PATH)
    async def tracking(request: Request) -> Response:
        return await serve(request, partial(state.tracking, dict(request.query_params)), may_hang=False)

    add_fault_routes(app, state, FaultConfig)

    @app.get("/_admin/orders")
    async def orders() -> list[dict[str, Any]]:
        return [order.admin_view() for order in state.orders.values()]

    @app.get("/_admin/orders/{order_number}")
    async def order(order_number: str, customer_code: str | None = Query(None, alias="customerCode")) -> Response:
        found = state.find(order_number, customer_code)
        if found is None:
            return error_response(404, f"unknown order {order_number!r}")
        return JSONResponse(found.admin_view())

    @app.post("/_admin/advance")
    async def advance(body: AdvanceRequest) -> Response:
        if body.orderNumber is None or body.to is None:
            made = state.advance(body.steps)
            state.flush()
            return JSONResponse({"records": made})
        found = state.find(body.orderNumber, body.customerCode)
        if found is None:
            return error_response(404, f"unknown order {body.orderNumber!r}")
        state.move(found, body.to)
        state.flush()
        return JSONResponse(found.admin_view())

    add_push_routes(app, state)

    add_state_routes(app, state)
    return app
