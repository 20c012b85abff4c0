"""Simulator of the national payment platform (KeyPay for DVCQG, as OpenCPS reaches it), with citizens who pay.

The contract is :mod:`schemas.payment` (docs/contracts.md M1–M15); the simulator refuses what the platform would.
JSON over HTTP, every answer HTTP 200 with its verdict in ``error`` (M10); the first failing check wins:

- ``POST /dvcqg/create_transaction`` :class:`~schemas.payment.CreateTransaction`: ``"3"`` for a body that is
  not a JSON object (a form, a list, another envelope), a missing or unknown field at any depth (today's
  snake_case ``bill_info``, ``fee_lines``), a wrong JSON type (an amount as a number, ``SoTien`` of
  ``PhiLePhi`` as digits), a currency other than VND, an environment other than ``"1"``/``"2"``, or a
  ``DSKhoanNop`` that does not add up to ``trans_amount`` — naming the fields, never their values; ``"2"``
  another ``client_id``; ``"3"`` a ``command``/``version`` other than the partner's (``"PAY"``, ``"3.0"``);
  ``"1"`` a checksum that is not HMAC-SHA256(hash_key_1) over the six fields in their order. A
  ``transaction_id`` over 20 characters is cut to 20, as the platform may do (M15): the transaction, its
  detail and its callback then carry the cut id. The same id and amount again answers the same
  ``payment_url``; another amount ``"5"``.
- ``POST /dvcqg/detail_transaction`` :class:`~schemas.payment.DetailRequest` (M11), its own checksum:
  :class:`~schemas.payment.DetailAnswer` (``status`` 0 paid, 1 unpaid), or ``"4"``.
- ``POST /dvcqg/settlement_list`` :class:`~schemas.payment.SettlementRequest` (assumed): ``data``, the
  payments settled that day (Vietnam time).
- A request whose ``Content-Type`` is not JSON is answered HTTP 415.

Citizens pay with ``POST /_admin/pay`` :class:`PayRequest`: the transaction becomes paid (and settled) and the
callback (M12–M13: the fields kpCallBack reads, amounts as digits, ``status`` 0, no payment time, signed with
hash_key_2 over the six fields as it carries them) goes to the URL set with ``POST /_admin/callback {"url"}``,
unless it is ``lost``; ``copies`` sends it more than once, ``delay_ms`` holds it back, ``amount`` pays (and
reports) another amount than the bill's. A callback answered other than ``return_code`` 0 is sent again up
to ``CALLBACK_TRIES`` times, a second apart. ``POST /_admin/settle-extra`` settles a payment for a
transaction the platform never registered (an unknown transaction in the settlement list), and with
``"callback": true`` calls the partner back about it too.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` and ``latency_ms`` delays (before anything); ``busy_rate`` answers ``"96"``;
``timeout_rate`` registers a create and then hangs ``hang_seconds``.

Admin: ``GET /_admin/stats``, ``GET /_admin/transactions`` (with each one's ``bill_info`` and when it was paid),
``POST /_admin/reset``. :func:`citizens_pay` drives a day of citizens paying through ``/_admin/pay`` (loss,
duplication, delay, wrong amounts, strangers). State lives in memory on the app's event loop; nothing is logged
per request.
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
from schemas.vietnam import VN_TZ

CALLBACK_TRIES = 3
CALLBACK_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=30.0)
# what a callback repeats of the transaction's registration (M12), besides the id, the amount and the status
REPEATED = ("client_id", "command", "version", "description", "locale", "country_code", "currency_code",
            "environment", "addition_fee")
_WHY = {"missing": "missing", "extra_forbidden": "unknown field", "literal_error": "not an accepted value",
        "string_pattern_mismatch": "not the expected form", "string_too_short": "empty"}


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


_ActiveFaults = ActiveFaults[FaultConfig]


def reasons(exc: ValidationError) -> str:
    """Each field at fault and why, never its value (it may be personal)."""
    seen: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        kind = str(error["type"])
        if kind == "value_error":  # the contract's own rules, whose messages name fields only
            why = str(error["msg"]).removeprefix("Value error, ")
        else:
            why = _WHY.get(kind, "wrong type" if kind.endswith("_type") else "invalid")
        seen.setdefault(where, why)
    return ", ".join(f"{where} ({why})" for where, why in sorted(seen.items()))


@dataclass
class Transaction:
    request: wire.CreateTransaction
    created_at: datetime
    paid_amount: int | None = None
    paid_at: datetime | None = None
    transaction_code: str | None = None
    pay_calls: int = 1
    callbacks: list[int] = field(default_factory=list)  # the return_code of each callback sent

    @property
    def transaction_id(self) -> str:
        return self.request.transaction_id[:wire.TRANSACTION_ID_MAX]

    @property
    def amount(self) -> int:
        return int(self.request.trans_amount)


class PlatformState:
    """Registered transactions, settled payments, counters, faults and the callback target."""

    def __init__(self, *, client_id: str, request_key: str, callback_key: str, payment_base_url: str,
                 command: str = wire.COMMAND, version: str = wire.VERSION) -> None:
        self.client_id = client_id
        self.request_key = request_key
        self.callback_key = callback_key
        self.command, self.version = command, version
        self.payment_base_url = payment_base_url.rstrip("/")
        self.background = Background(CALLBACK_TIMEOUT)
        self._codes = itertools.count(100_000_001)
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

    def answer(self, code: str, message: str | None = None, **extra: Any) -> Response:
        self.counters[f"answer_{code}"] += 1
        return JSONResponse({"error": code, "msg": wire.ANSWER_CODES[code] if message is None else message, **extra})

    def invalid(self, why: str) -> Response:
        return self.answer(wire.INVALID_DATA, f"Dữ liệu không hợp lệ: {why}")

    def _parse(self, model: type[wire.Strict], body: Any) -> wire.Strict | Response:
        """The body as ``model``, or the refusal naming what is wrong."""
        if not isinstance(body, dict):
            return self.invalid("the body is not a JSON object")
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            return self.invalid(reasons(exc))

    def _partner(self, client_id: str, command: str) -> Response | None:
        if client_id != self.client_id:
            return self.answer(wire.CLIENT_REFUSED)
        if command != self.command:
            return self.invalid(f"command (the partner's is {self.command})")
        return None

    def create(self, body: Any) -> tuple[Response, bool]:
        """The answer to a create-transaction, and whether a new transaction was registered (it may hang)."""
        parsed = self._parse(wire.CreateTransaction, body)
        if isinstance(parsed, Response):
            return parsed, False
        assert isinstance(parsed, wire.CreateTransaction)
        refused = self._partner(parsed.client_id, parsed.command)
        if refused is None and parsed.version != self.version:
            refused = self.invalid(f"version (the partner's is {self.version})")
        if refused is not None:
            return refused, False
        if not wire.checksum_matches(parsed.check_sum, wire.create_checksum(self.request_key, parsed)):
            return self.answer(wire.CHECKSUM_INVALID), False
        made = Transaction(parsed, datetime.now(VN_TZ))
        if len(parsed.transaction_id) > wire.TRANSACTION_ID_MAX:
            self.counters["ids_cut"] += 1
        known = self.transactions.get(made.transaction_id)
        if known is not None:
            known.pay_calls += 1
            if known.amount != made.amount:
                return self.answer(wire.AMOUNT_CONFLICT), False
            return self.answer(wire.SUCCESS, payment_url=self._url(known)), False
        self.transactions[made.transaction_id] = made
        return self.answer(wire.SUCCESS, payment_url=self._url(made)), True

    def _url(self, t: Transaction) -> str:
        return f"{self.payment_base_url}?txn={t.transaction_id}"

    def detail(self, body: Any) -> Response:
        parsed = self._parse(wire.DetailRequest, body)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, wire.DetailRequest)
        refused = self._partner(parsed.client_id, parsed.command)
        if refused is not None:
            return refused
        expected = wire.detail_checksum(self.request_key, parsed.client_id, parsed.command, parsed.transaction_id)
        if not wire.checksum_matches(parsed.check_sum, expected):
            return self.answer(wire.CHECKSUM_INVALID)
        known = self.transactions.get(parsed.transaction_id)
        if known is None:
            return self.answer(wire.NOT_FOUND)
        return self.answer(wire.SUCCESS, **_view(known))

    def settlements(self, body: Any) -> Response:
        parsed = self._parse(wire.SettlementRequest, body)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, wire.SettlementRequest)
        if parsed.client_id != self.client_id:
            return self.answer(wire.CLIENT_REFUSED)
        expected = wire.settlement_checksum(self.request_key, parsed.client_id, parsed.date)
        if not wire.checksum_matches(parsed.check_sum, expected):
            return self.answer(wire.CHECKSUM_INVALID)
        items = [_settled(t) for t in self.transactions.values() if t.paid_at is not None] + self.extra
        day = [i.model_dump(mode="json") for i in items if i.payment_time.startswith(parsed.date)]
        return self.answer(wire.SUCCESS, data=day)

    def pay(self, request: PayRequest) -> Response:
        t = self.transactions.get(request.transaction_id)
        if t is None:
            return error_response(404, f"unknown transaction {request.transaction_id!r}")
        if t.paid_at is not None:
            return error_response(409, "already paid")
        t.paid_amount = t.amount if request.amount is None else request.amount
        t.paid_at = (request.paid_at or datetime.now(VN_TZ)).astimezone(VN_TZ).replace(microsecond=0)
        t.transaction_code = f"KP{next(self._codes)}"
        self.counters["paid"] += 1
        if request.lost or self.callback_url is None:
            self.counters["callbacks_lost"] += 1
        else:
            callback = self._callback(t.request.model_dump(include=set(REPEATED)), t.transaction_id,
                                      t.transaction_code, t.paid_amount)
            for _ in range(request.copies):
                self.background.spawn(self._call_back(self.callback_url, t.callbacks, callback,
                                                      request.delay_ms / 1000))
        return JSONResponse(_view(t))

    async def _call_back(self, url: str, answers: list[int], callback: wire.PlatformCallback, delay: float) -> None:
        """Send ``callback`` until the partner answers 0 (at most ``CALLBACK_TRIES`` times), each answer kept in
        ``answers``."""
        if delay:
            await asyncio.sleep(delay)
        body = callback.model_dump_json(exclude_none=True).encode()
        for attempt in range(CALLBACK_TRIES):
            code = await self._post_callback(url, body)
            answers.append(code)
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
        item = wire.SettledItem(transaction_id=extra.transaction_id, transaction_code=f"KP{next(self._codes)}",
                                trans_amount=extra.amount, payment_time=at.strftime(wire.TIME_FORMAT))
        self.extra.append(item)
        if extra.callback and self.callback_url is not None:
            callback = self._callback(self._stray(), extra.transaction_id, item.transaction_code, extra.amount)
            self.background.spawn(self._call_back(self.callback_url, [], callback, 0.0))
        return JSONResponse(item.model_dump(mode="json"))

    def _stray(self) -> dict[str, Any]:
        """What the callback of a transaction another partner registered repeats of its registration."""
        return {"client_id": self.client_id, "command": self.command, "version": self.version, "description": "",
                "locale": "vn", "country_code": "vi", "currency_code": wire.CURRENCY, "environment": "1",
                "addition_fee": "0"}

    def _callback(self, registered: dict[str, Any], transaction_id: str, code: str,
                  amount: int) -> wire.PlatformCallback:
        """The callback of a payment (M12): the registration's fields, the paid amount, signed (M13)."""
        callback = wire.PlatformCallback.model_validate({
            **registered, "transaction_id": transaction_id, "transaction_code": code, "trans_amount": amount,
            "payment_fee": 0, "status": wire.PAID, "check_sum": ""})
        return callback.model_copy(update={"check_sum": wire.callback_checksum(self.callback_key, callback)})


def _view(t: Transaction) -> dict[str, Any]:
    """A transaction as the detail answer tells it (the assumed fields, :class:`~schemas.payment.DetailAnswer`)."""
    paid = t.paid_at is not None
    return {"transaction_id": t.transaction_id, "transaction_code": t.transaction_code or "",
            "trans_amount": str(t.paid_amount if paid else t.amount), "payment_fee": "0",
            "status": wire.PAID if paid else wire.UNPAID}


def _settled(t: Transaction) -> wire.SettledItem:
    assert t.paid_at is not None
    return wire.SettledItem(transaction_id=t.transaction_id, transaction_code=t.transaction_code or "",
                            trans_amount=t.paid_amount or 0, payment_time=t.paid_at.strftime(wire.TIME_FORMAT))


def create_app(*, client_id: str, request_key: str, callback_key: str,
               payment_base_url: str = "https://thanhtoan.dichvucong.gov.vn/pay", command: str = wire.COMMAND,
               version: str = wire.VERSION) -> FastAPI:
    """The platform for one partner: its ``client_id``, hash_key_1 (``request_key``), hash_key_2
    (``callback_key``) and the ``command`` and ``version`` of its registration."""
    state = PlatformState(client_id=client_id, request_key=request_key, callback_key=callback_key,
                          payment_base_url=payment_base_url, command=command, version=version)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: national payment platform", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.platform = state

    async def refused(request: Request) -> Response | None:
        """The faults first (weather), then a body that is not declared JSON."""
        status = await latency_and_error(state.faults)
        if status is not None:
            state.counters["fault_error"] += 1
            return error_response(status, "injected fault")
        if state.faults is not None and state.faults.draw(state.faults.config.busy_rate):
            state.counters["fault_busy"] += 1
            return state.answer(wire.BUSY)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            state.counters["not_json"] += 1
            return JSONResponse({"error": wire.INVALID_DATA, "msg": "Content-Type must be application/json"},
                                status_code=415)
        return None

    @app.post(wire.CREATE_PATH)
    async def create_transaction(request: Request) -> Response:
        failed = await refused(request)
        if failed is not None:
            return failed
        answer, registered = state.create(await json_body(request))
        faults = state.faults
        if registered and faults is not None and faults.draw(faults.config.timeout_rate):
            state.counters["fault_timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return answer

    @app.post(wire.DETAIL_PATH)
    async def detail_transaction(request: Request) -> Response:
        failed = await refused(request)
        return failed if failed is not None else state.detail(await json_body(request))

    @app.post(wire.SETTLEMENT_PATH)
    async def settlement_list(request: Request) -> Response:
        failed = await refused(request)
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
        return [{**_view(t), "bill_amount": t.amount, "sent_transaction_id": t.request.transaction_id,
                 "paid_at": t.paid_at.isoformat() if t.paid_at else None,
                 "pay_calls": t.pay_calls, "callbacks": t.callbacks,
                 "bill_info": t.request.bill_info.model_dump(mode="json", exclude_none=True),
                 "description": t.request.description, "return_url": t.request.return_url}
                for t in state.transactions.values()]

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
