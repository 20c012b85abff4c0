"""Simulator of the national payment platform (as OpenCPS reaches it through KeyPay), with citizens who pay.

The contract is :mod:`schemas.payment`. JSON over HTTP:

- ``POST /api/v1/transactions`` :class:`~schemas.payment.PlatformTransaction`. ``command`` ``"pay"``
  registers the transaction and answers its ``payment_url``; the same ``transaction_id`` and amount
  again answers the same URL (``00``), another amount ``05``. ``command`` ``"query"`` answers
  ``status`` (0 paid, 1 unpaid), ``trans_amount`` paid, ``gateway_trans_id`` and ``payment_time``, or
  ``04``. First failing check wins: ``03`` the body (fields named, never values), ``02`` the client,
  ``01`` the checksum.
- ``POST /api/v1/settlements`` ``{"client_id", "date": "yyyyMMdd", "check_sum"}`` → ``data``: the
  payments settled that day (Vietnam time), :class:`~schemas.payment.SettledItem`.

Citizens pay with ``POST /_admin/pay`` :class:`PayRequest`: the transaction becomes paid (and settled)
and the callback goes to the URL set with ``POST /_admin/callback {"url"}``, signed with the callback
key, unless it is ``lost``; ``copies`` sends it more than once, ``delay_ms`` holds it back, ``amount``
pays (and reports) another amount than the bill's. A callback answered other than ``return_code`` 0
is sent again up to ``CALLBACK_TRIES`` times, a second apart. ``POST /_admin/settle-extra`` settles a
payment for a transaction the platform never registered (an unknown transaction in the settlement
list), and with ``"callback": true`` calls the partner back about it too.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` and ``latency_ms`` delays (before anything); ``busy_rate`` answers ``96``;
``timeout_rate`` registers a ``pay`` and then hangs ``hang_seconds``.

Admin: ``GET /_admin/stats``, ``GET /_admin/transactions``, ``POST /_admin/reset``. :func:`citizens_pay`
drives a day of citizens paying through ``/_admin/pay`` (loss, duplication, delay, wrong amounts,
strangers). State lives in memory on the app's event loop; nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.faults import (
    ActiveFaults,
    Background,
    BaseFaults,
    add_fault_routes,
    add_state_routes,
    error_response,
    json_body,
    latency_and_error,
    locations,
)
from schemas import payment as wire
from schemas.privacy import error_fields
from schemas.vietnam import VN_TZ

CALLBACK_TRIES = 3
CALLBACK_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=30.0)


class FaultConfig(BaseFaults):
    busy_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(5.0, ge=0, le=600)


class PayRequest(BaseModel):
    """A citizen paying one transaction, and what becomes of the callback."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: str
    amount: int | None = Field(None, ge=0, description="paid amount; default the transaction's")
    lost: bool = False
    copies: int = Field(1, ge=1, le=10)
    delay_ms: float = Field(0.0, ge=0, le=600_000)
    paid_at: datetime | None = None


class ExtraSettlement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_id: str
    amount: int = Field(ge=0)
    paid_at: datetime | None = None
    callback: bool = Field(False, description="also send the partner a signed callback for it")


class CallbackTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+")


class _SettlementQuery(BaseModel):
    model_config = ConfigDict(extra="allow")

    client_id: str
    date: str = Field(pattern=r"^\d{8}$")
    check_sum: str


_ActiveFaults = ActiveFaults[FaultConfig]


@dataclass
class Transaction:
    request: wire.PlatformTransaction
    created_at: datetime
    paid_amount: int | None = None
    paid_at: datetime | None = None
    gateway_trans_id: str | None = None
    pay_calls: int = 1
    callbacks: list[int] = field(default_factory=list)  # the return_code of each callback sent


class PlatformState:
    """Registered transactions, settled payments, counters, faults and the callback target."""

    def __init__(self, *, client_id: str, request_key: str, callback_key: str, payment_base_url: str) -> None:
        self.client_id = client_id
        self.request_key = request_key
        self.callback_key = callback_key
        self.payment_base_url = payment_base_url.rstrip("/")
        self.background = Background(CALLBACK_TIMEOUT)
        self._gateway_ids = itertools.count(100_000_001)
        self.reset()

    def reset(self) -> None:
        self.transactions: dict[str, Transaction] = {}
        self.extra: list[wire.SettledItem] = []
        self.faults: _ActiveFaults | None = None
        self.callback_url: str | None = None
        self.counters: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "transactions": len(self.transactions),
                "paid": sum(1 for t in self.transactions.values() if t.paid_at is not None)}

    def answer(self, code: str, message: str | None = None, http_status: int = 200, **extra: Any) -> Response:
        self.counters[f"answer_{code}"] += 1
        body = {"code": code, "message": wire.ANSWER_CODES[code] if message is None else message, **extra}
        return JSONResponse(body, status_code=http_status)

    def invalid(self, exc: ValidationError) -> Response:
        """``03`` naming the fields at fault, never their values."""
        return self.answer(wire.INVALID_DATA, "Dữ liệu không hợp lệ: " + ", ".join(error_fields(exc, root="body")),
                           http_status=400)

    def transaction(self, body: Any) -> tuple[Response, bool]:
        """The answer to a transaction request, and whether a new ``pay`` was registered (it may hang)."""
        try:
            request = wire.PlatformTransaction.model_validate(body)
        except ValidationError as exc:
            return self.invalid(exc), False
        if request.client_id != self.client_id:
            return self.answer(wire.CLIENT_REFUSED, http_status=403), False
        if not wire.checksum_matches(request.check_sum, wire.request_checksum(self.request_key, request)):
            return self.answer(wire.CHECKSUM_INVALID, http_status=400), False
        known = self.transactions.get(request.transaction_id)
        if request.command == "query":
            if known is None:
                return self.answer(wire.NOT_FOUND, http_status=404), False
            return self.answer(wire.SUCCESS, **_view(known)), False
        if known is not None:
            known.pay_calls += 1
            if known.request.trans_amount != request.trans_amount:
                return self.answer(wire.AMOUNT_CONFLICT, http_status=409), False
            return self.answer(wire.SUCCESS, transaction_id=request.transaction_id, payment_url=self._url(known)), False
        self.transactions[request.transaction_id] = made = Transaction(request, datetime.now(VN_TZ))
        return self.answer(wire.SUCCESS, transaction_id=request.transaction_id, payment_url=self._url(made)), True

    def _url(self, t: Transaction) -> str:
        return f"{self.payment_base_url}?txn={t.request.transaction_id}"

    def settlements(self, body: Any) -> Response:
        try:
            query = _SettlementQuery.model_validate(body)
        except ValidationError as exc:
            return self.invalid(exc)
        if query.client_id != self.client_id:
            return self.answer(wire.CLIENT_REFUSED, http_status=403)
        if not wire.checksum_matches(query.check_sum, wire.settlement_checksum(self.request_key, query.client_id,
                                                                            query.date)):
            return self.answer(wire.CHECKSUM_INVALID, http_status=400)
        items = [wire.SettledItem(transaction_id=tid, gateway_trans_id=t.gateway_trans_id or "",
                                 trans_amount=t.paid_amount or 0, payment_time=t.paid_at.strftime(wire.TIME_FORMAT))
                 for tid, t in self.transactions.items() if t.paid_at is not None]
        items += self.extra
        day = [i.model_dump() for i in items if i.payment_time.startswith(query.date)]
        return self.answer(wire.SUCCESS, data=day)

    def pay(self, request: PayRequest) -> Response:
        t = self.transactions.get(request.transaction_id)
        if t is None:
            return error_response(404, f"unknown transaction {request.transaction_id!r}")
        if t.paid_at is not None:
            return error_response(409, "already paid")
        t.paid_amount = t.request.trans_amount if request.amount is None else request.amount
        t.paid_at = (request.paid_at or datetime.now(VN_TZ)).astimezone(VN_TZ).replace(microsecond=0)
        t.gateway_trans_id = f"KP{next(self._gateway_ids)}"
        self.counters["paid"] += 1
        if request.lost or self.callback_url is None:
            self.counters["callbacks_lost"] += 1
        else:
            callback = self._callback(wire.SettledItem(
                transaction_id=request.transaction_id, gateway_trans_id=t.gateway_trans_id,
                trans_amount=t.paid_amount, payment_time=t.paid_at.strftime(wire.TIME_FORMAT)))
            for _ in range(request.copies):
                self.background.spawn(self._call_back(self.callback_url, t, callback, request.delay_ms / 1000))
        return JSONResponse(_view(t))

    async def _call_back(self, url: str, t: Transaction, callback: wire.PlatformCallback, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        body = callback.model_dump_json().encode()
        for attempt in range(CALLBACK_TRIES):
            code = await self._post_callback(url, body)
            t.callbacks.append(code)
            self.counters["callbacks_sent"] += 1
            if code == 0:
                return
            if attempt + 1 < CALLBACK_TRIES:
                await asyncio.sleep(1.0)
        self.counters["callbacks_given_up"] += 1

    async def _post_callback(self, url: str, body: bytes) -> int:
        """The partner's ``return_code`` (-1 for anything but a 2xx JSON reply that has one)."""
        answer = await self.background.post_for_json(url, body, {"content-type": "application/json"})
        code = answer.get("return_code") if isinstance(answer, dict) else None
        return code if isinstance(code, int) else -1

    def settle_extra(self, extra: ExtraSettlement) -> Response:
        at = (extra.paid_at or datetime.now(VN_TZ)).astimezone(VN_TZ)
        item = wire.SettledItem(transaction_id=extra.transaction_id, gateway_trans_id=f"KP{next(self._gateway_ids)}",
                               trans_amount=extra.amount, payment_time=at.strftime(wire.TIME_FORMAT))
        self.extra.append(item)
        if extra.callback and self.callback_url is not None:
            stray = Transaction(wire.PlatformTransaction(client_id=self.client_id, transaction_id=extra.transaction_id,
                                                         trans_amount=extra.amount), at)
            self.background.spawn(self._call_back(self.callback_url, stray, self._callback(item), 0.0))
        return JSONResponse(item.model_dump())

    def _callback(self, item: wire.SettledItem) -> wire.PlatformCallback:
        callback = wire.PlatformCallback(
            client_id=self.client_id, transaction_id=item.transaction_id, trans_amount=item.trans_amount,
            status=wire.PAID, payment_time=item.payment_time, gateway_trans_id=item.gateway_trans_id, check_sum="")
        callback.check_sum = wire.callback_checksum(self.callback_key, callback)
        return callback


def _view(t: Transaction) -> dict[str, Any]:
    return {"transaction_id": t.request.transaction_id, "status": wire.PAID if t.paid_at else wire.UNPAID,
            "trans_amount": t.paid_amount if t.paid_at else t.request.trans_amount,
            "gateway_trans_id": t.gateway_trans_id, "payment_time": t.paid_at.strftime(wire.TIME_FORMAT) if t.paid_at
            else None}


def create_app(*, client_id: str, request_key: str, callback_key: str,
               payment_base_url: str = "https://thanhtoan.dichvucong.gov.vn/pay") -> FastAPI:
    """The platform for one partner: its ``client_id`` and its request and callback keys."""
    state = PlatformState(client_id=client_id, request_key=request_key, callback_key=callback_key,
                          payment_base_url=payment_base_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: national payment platform", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.platform = state

    async def faulted() -> Response | None:
        status = await latency_and_error(state.faults)
        if status is not None:
            state.counters["fault_error"] += 1
            return error_response(status, "injected fault")
        if state.faults is not None and state.faults.draw(state.faults.config.busy_rate):
            state.counters["fault_busy"] += 1
            return state.answer(wire.BUSY, http_status=503)
        return None

    @app.post(wire.TRANSACTIONS_PATH)
    async def transactions(request: Request) -> Response:
        failed = await faulted()
        if failed is not None:
            return failed
        answer, registered = state.transaction(await json_body(request))
        faults = state.faults
        if registered and faults is not None and faults.draw(faults.config.timeout_rate):
            state.counters["fault_timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return answer

    @app.post(wire.SETTLEMENTS_PATH)
    async def settlements(request: Request) -> Response:
        failed = await faulted()
        return failed if failed is not None else state.settlements(await json_body(request))

    @app.post("/_admin/pay")
    async def citizen_pays(request: PayRequest) -> Response:
        return state.pay(request)

    @app.post("/_admin/settle-extra")
    async def settle_extra(extra: ExtraSettlement) -> Response:
        return state.settle_extra(extra)

    @app.post("/_admin/callback")
    async def set_callback(request: Request) -> Response:
        try:
            state.callback_url = CallbackTarget.model_validate(await json_body(request)).url
        except ValidationError as exc:
            return error_response(422, "invalid callback target: " + locations(exc))
        return JSONResponse({"url": state.callback_url})

    @app.get("/_admin/transactions")
    async def list_transactions() -> list[dict[str, Any]]:
        return [{**_view(t), "bill_amount": t.request.trans_amount, "pay_calls": t.pay_calls,
                 "callbacks": t.callbacks} for t in state.transactions.values()]



    add_fault_routes(app, state, FaultConfig)
    add_state_routes(app, state)
    return app


# --------------------------------------------------------------------------- citizens paying


@dataclass
class PayingDay:
    """What :func:`citizens_pay` did: the bills paid, and which payments it made anomalous."""

    paid: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    repeated: set[str] = field(default_factory=set)
    mismatched: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)

    @property
    def anomalies(self) -> dict[str, set[str]]:
        """What a reconciliation should report, by outcome (a repeated callback is no anomaly)."""
        return {"recovered": self.lost - self.mismatched, "amount_mismatch": set(self.mismatched),
                "unknown": set(self.unknown)}


def citizens_pay(platform_url: str, bills: list[tuple[str, int]], *, lost_rate: float = 0.0,
                 duplicate_rate: float = 0.0, mismatches: int = 0, unknown: int = 0, delay_ms: float = 0.0,
                 paid_at: datetime | None = None, seed: int = 0, client: httpx.Client | None = None) -> PayingDay:
    """Citizens pay ``bills`` (transaction id, amount) at the platform: a share of the callbacks lost
    (``lost_rate``), a share sent twice (``duplicate_rate``, never one lost), ``mismatches`` bills paid
    1,000 đ short (their callbacks arrive), and ``unknown`` payments for transactions nobody registered
    (settled, with a callback); each callback held back up to ``delay_ms``; every payment made at ``paid_at``
    (default: as it is made). Seeded: the same day each time."""
    rng = random.Random(seed)
    day = PayingDay()
    order = list(bills)
    rng.shuffle(order)
    short = {code for code, _ in order[:mismatches]}
    own = client is None
    http = client or httpx.Client(timeout=10, trust_env=False)
    try:
        for code, amount in order:
            lost = code not in short and rng.random() < lost_rate
            copies = 2 if not lost and rng.random() < duplicate_rate else 1
            body = {"transaction_id": code, "lost": lost, "copies": copies,
                    "delay_ms": rng.uniform(0, delay_ms) if delay_ms else 0.0,
                    "amount": amount - 1000 if code in short else amount,
                    **({"paid_at": paid_at.isoformat()} if paid_at else {})}
            http.post(f"{platform_url}/_admin/pay", json=body).raise_for_status()
            day.paid.append(code)
            if lost:
                day.lost.add(code)
            if copies > 1:
                day.repeated.add(code)
            if code in short:
                day.mismatched.add(code)
        for _ in range(unknown):
            stray = f"KHONG-RO-{rng.randrange(10**8):08d}"
            http.post(f"{platform_url}/_admin/settle-extra",
                      json={"transaction_id": stray, "amount": rng.choice((20000, 50000, 100000)), "callback": True,
                            **({"paid_at": paid_at.isoformat()} if paid_at else {})}).raise_for_status()
            day.unknown.add(stray)
    finally:
        if own:
            http.close()
    return day
