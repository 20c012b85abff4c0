"""Simulator of a bank's bill-collection SOAP service ("thu hộ phí, lệ phí") for one partner.

The contract is :mod:`schemas.bank`; this module adds what it leaves to the bank, citizens paying. SOAP 1.1
over HTTP:

- ``GET /soap/billcollection?wsdl`` → :data:`~schemas.bank.WSDL` with ``soap:address`` set to the URL it was
  asked on, so it works on any port (never subject to faults).
- ``POST /soap/billcollection``: one envelope, dispatched on the element in its body (``SOAPAction`` is not
  read). Read by lxml without entities, network, DTD loading or huge trees, and refused (``INVALID_REQUEST``)
  when larger than :data:`MAX_BODY`, not well-formed, carrying a DOCTYPE, not a SOAP 1.1 envelope or not one
  of the three operations. Then, first failing check wins: ``AUTH_FAILED`` (the WS-Security
  ``UsernameToken``, ``PasswordText``, compared in constant time), ``INVALID_REQUEST`` (an element missing,
  repeated, unknown or wrong: named, never its value), ``PARTNER_UNKNOWN``, then the operation.
- ``CreateBill``: ``00`` with a new ``bankReference`` (``BC<yymmdd><serial>``) and a ``paymentUrl`` under
  ``payment_base_url`` (a string in the answer, never fetched); the same code and amount again: ``01`` and
  the first answer's reference; another amount: ``BILL_CONFLICT``.
- ``QueryTransaction``: ``00`` with the bill's status and, once paid, its transaction; ``04`` for a code
  the bank never issued.
- ``ListSettledTransactions``: the transactions paid on ``settlementDate`` in Vietnam time, in the order
  they were paid (a payment is settled the day it is made).

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` (a JSON body, as a gateway would) before anything, ``latency_ms`` (+ ``latency_jitter_ms``)
delays; ``busy_rate`` answers the fault ``SYSTEM_BUSY`` once the envelope is read; ``timeout_rate``
applies a ``CreateBill``, then hangs ``hang_seconds`` before answering (the ambiguous case). ``SYSTEM_ERROR``
is in the contract but never sent.

Admin: ``POST /_admin/pay {"billCode", "amount"?, "paidAt"?, "channel"?, "notify"?, "copies"?, "order_info"?,
"transaction_status"?}`` (a citizen pays an unpaid bill: ``amount`` defaults to the bill's and may differ from
it, ``paidAt`` to now, a time without offset is Vietnam's; the bank's QR gateway then sends the VNPAY-style IPN
``copies`` times unless ``notify`` is false, with ``vnp_OrderInfo`` ``order_info`` and ``vnp_TransactionStatus``
``transaction_status``, ``"00"`` unless set, left out when null), ``POST /_admin/notify {"url", "tmn_code",
"secret"}`` (where the IPN goes: a ``GET`` with the ``vnp_*`` parameters signed HMAC-SHA512 with ``secret``
over the hash string VNPAY's PHP sample builds, :func:`schemas.payment.vnpay_signature`),
``POST /_admin/settle-extra {"billCode", "amount", "paidAt"?, "channel"?, "transactionId"?}``
(a settled transaction no bill here accounts for: a bill the bank never issued to this partner, or with an
issued bill's code a second payment), ``POST /_admin/cancel {"billCode"}`` (the bank cancels an unpaid
bill), ``GET /_admin/bills``, ``GET /_admin/stats`` (calls per operation, faults injected, answers by code),
``POST /_admin/reset`` (bills, transactions, counters and faults; the serial goes on, so references stay
unique). Identifiers come from a stream seeded by ``seed``. State lives in memory on the app's event loop
(the module's lxml parser is used by that one thread only). Nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox import soap
from sandbox.faults import (
    ActiveFaults,
    Background,
    BaseFaults,
    add_fault_routes,
    add_state_routes,
    error_response,
    latency_and_error,
)
from schemas import bank as bc
from schemas.payment import TIME_FORMAT, vnpay_signature
from schemas.vietnam import VN_TZ

MAX_BODY = 1_000_000
IPN_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=30.0)
NSMAP = {"soap": bc.SOAP_ENV_NS, "bc": bc.NAMESPACE}
_BC = f"{{{bc.NAMESPACE}}}"


class FaultConfig(BaseFaults):
    """Faults injected into the bank's answers."""

    busy_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(30.0, ge=0, le=3600)


class SoapFault(soap.SoapFault):
    """A fault to answer, by default with the contract's message; ``message`` never echoes a value from the
    request."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code, message or bc.FAULT_CODES[code])


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _CreateBill(bc.BillRequest):
    model_config = ConfigDict(extra="forbid")

    partnerCode: bc.PartnerCode


class _QueryTransaction(_Request):
    partnerCode: bc.PartnerCode
    billCode: bc.BillCode


class _ListSettled(_Request):
    partnerCode: bc.PartnerCode
    settlementDate: date


class PayRequest(BaseModel):
    """``POST /_admin/pay``: a citizen pays ``billCode``."""

    model_config = ConfigDict(extra="forbid")

    billCode: str
    amount: int | None = Field(None, gt=0)
    paidAt: datetime | None = None
    channel: str = Field("MOBILE_BANKING", min_length=1, max_length=40)
    notify: bool = Field(True, description="send the IPN (false: it is lost)")
    copies: int = Field(1, ge=1, le=10)
    order_info: str | None = Field(None, min_length=1, max_length=255,
                                   description="the IPN's vnp_OrderInfo (default: Thanh toan hoa don <billCode>)")
    transaction_status: str | None = Field("00", pattern=r"^[0-9]{2}$",
                                           description="the IPN's vnp_TransactionStatus (null: left out)")


class NotifyTarget(BaseModel):
    """``POST /_admin/notify``: where the bank's QR gateway sends its VNPAY-style IPN, signed how."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+")
    tmn_code: str = Field(min_length=1, max_length=20)
    secret: str = Field(min_length=8)


class SettleExtraRequest(BaseModel):
    """``POST /_admin/settle-extra``: a settled transaction no bill here accounts for."""

    model_config = ConfigDict(extra="forbid")

    billCode: bc.BillCode
    amount: int = Field(gt=0)
    paidAt: datetime | None = None
    channel: str = Field("COUNTER", min_length=1, max_length=40)
    transactionId: str | None = Field(None, min_length=1, max_length=60)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    billCode: str


_ActiveFaults = ActiveFaults[FaultConfig]
_Model = TypeVar("_Model", bound=BaseModel)


@dataclass
class Bill:
    """One bill as the bank holds it (in memory only)."""

    request: bc.BillRequest
    bank_reference: str
    payment_url: str
    created_at: datetime
    status: str = bc.UNPAID
    create_calls: int = 1
    payment: bc.SettledTransaction | None = None

    def admin_view(self) -> dict[str, Any]:
        return {
            **self.request.model_dump(mode="json"), "bankReference": self.bank_reference,
            "paymentUrl": self.payment_url, "createdAt": self.created_at.isoformat(), "status": self.status,
            "create_calls": self.create_calls,
            "payment": None if self.payment is None else self.payment.model_dump(mode="json"),
        }


def _now() -> datetime:
    return datetime.now(VN_TZ).replace(microsecond=0)


def _local(moment: datetime | None) -> datetime:
    """``moment`` in Vietnam time (it is already when it has no offset) or now, to the second."""
    if moment is None:
        return _now()
    return (moment if moment.tzinfo else moment.replace(tzinfo=VN_TZ)).astimezone(VN_TZ).replace(microsecond=0)


def _invalid(exc: ValidationError) -> SoapFault:
    """``INVALID_REQUEST`` naming the elements at fault, never their values (they may be personal)."""
    parts: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        name = ".".join(str(p) for p in err["loc"]) or "body"
        kind = {"missing": "thiếu phần tử", "extra_forbidden": "phần tử không được phép"}.get(err["type"])
        parts.setdefault(kind or "sai giá trị phần tử", []).append(name)
    return SoapFault(bc.INVALID_REQUEST, "Yêu cầu không hợp lệ: " + "; ".join(
        f"{kind} {', '.join(names)}" for kind, names in parts.items()))


def _validated(model: type[_Model], fields: dict[str, str]) -> _Model:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc) from None


def operation_of(envelope: etree._Element) -> tuple[str, dict[str, str]]:
    """The operation named by the body's element, and its child elements' texts by name."""
    element = soap.operation_element(envelope, bc.NAMESPACE, bc.OPERATIONS, bc.INVALID_REQUEST)
    name = etree.QName(element)
    fields: dict[str, str] = {}
    for child in element:
        if not isinstance(child.tag, str):
            raise SoapFault(bc.INVALID_REQUEST, f"Yêu cầu không hợp lệ: nội dung lạ trong {name.localname}")
        field = etree.QName(child)
        if field.namespace != bc.NAMESPACE or len(child) or field.localname in fields:
            raise SoapFault(bc.INVALID_REQUEST, f"Yêu cầu không hợp lệ: sai phần tử {field.localname}")
        fields[field.localname] = child.text or ""
    return name.localname, fields


def _add(parent: etree._Element, name: str, value: object | None) -> None:
    if value is not None:
        etree.SubElement(parent, _BC + name).text = value.isoformat() if isinstance(value, date) else str(value)


def _result(operation: str, code: str, **fields: object | None) -> tuple[etree._Element, etree._Element]:
    """``<operation>Response/<operation>Result`` with the result code and message, then ``fields`` in order."""
    response = etree.Element(_BC + operation + "Response", nsmap=NSMAP)
    result = etree.SubElement(response, _BC + operation + "Result")
    _add(result, "resultCode", code)
    _add(result, "resultMessage", bc.RESULT_CODES[code])
    for name, value in fields.items():
        _add(result, name, value)
    return response, result


class BankState:
    """The partner's credentials, bills, settled transactions, counters and faults."""

    def __init__(self, *, partner_code: str, username: str, password: str, payment_base_url: str,
                 seed: int | None) -> None:
        self.partner_code = partner_code
        self.username = username
        self.password = password
        self.payment_base_url = payment_base_url
        self.background = Background(IPN_TIMEOUT)
        self._serials = itertools.count(random.Random(seed).randrange(1_000_000, 9_000_000))
        self.reset()

    def reset(self) -> None:
        """Forget everything but the serial."""
        self.bills: dict[str, Bill] = {}
        self.transactions: list[bc.SettledTransaction] = []
        self.faults: _ActiveFaults | None = None
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.notify: NotifyTarget | None = None
        self.ipn_replies: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "calls": {operation: self.calls[operation] for operation in bc.OPERATIONS},
            "faults": {kind: self.injected[kind] for kind in ("error", "busy", "timeout")},
            "answers": dict(self.answers),
            "bills": dict(Counter(bill.status for bill in self.bills.values())),
            "transactions": len(self.transactions),
            "ipn_replies": dict(self.ipn_replies),
        }

    def respond(self, content: etree._Element, code: str) -> Response:
        self.answers[code] += 1
        return Response(soap.envelope_bytes(content, NSMAP), media_type=soap.XML_TYPE)

    def fault(self, fault: soap.SoapFault) -> Response:
        self.answers[fault.code] += 1
        return soap.fault_response(fault, detail=_BC + "BillCollectionFault", server_codes=bc.SERVER_FAULTS,
                                   nsmap=NSMAP)

    def authenticate(self, envelope: etree._Element) -> None:
        """``AUTH_FAILED`` unless the header's UsernameToken carries this partner's username and password."""
        token = soap.username_token(envelope)
        if token is None:
            raise SoapFault(bc.AUTH_FAILED, "Xác thực không thành công: thiếu WS-Security UsernameToken")
        username, password = token
        if not password.get("Type", bc.PASSWORD_TEXT).endswith("#PasswordText"):
            raise SoapFault(bc.AUTH_FAILED, "Xác thực không thành công: chỉ chấp nhận PasswordText")
        user_ok = soap.same(username, self.username)
        password_ok = soap.same(password.text or "", self.password)
        if not (user_ok and password_ok):
            raise SoapFault(bc.AUTH_FAILED, "Xác thực không thành công: sai tên đăng nhập hoặc mật khẩu")

    def handle(self, body: bytes, faults: _ActiveFaults | None) -> tuple[str, etree._Element, str]:
        """The operation, its answer and the answer's code; a :class:`SoapFault` for a refusal."""
        envelope = soap.read_envelope(body, MAX_BODY, bc.INVALID_REQUEST)
        operation, fields = operation_of(envelope)
        self.calls[operation] += 1
        if faults is not None and faults.draw(faults.config.busy_rate):
            self.injected["busy"] += 1
            raise SoapFault(bc.SYSTEM_BUSY)
        self.authenticate(envelope)
        if operation == bc.CREATE_BILL:
            content, code = self.create_bill(_validated(_CreateBill, fields))
        elif operation == bc.QUERY_TRANSACTION:
            content, code = self.query(_validated(_QueryTransaction, fields))
        else:
            content, code = self.list_settled(_validated(_ListSettled, fields))
        return operation, content, code

    def _check_partner(self, partner_code: str) -> None:
        if partner_code != self.partner_code:
            raise SoapFault(bc.PARTNER_UNKNOWN, "Mã đối tác không hợp lệ cho người dùng này")

    def create_bill(self, request: _CreateBill) -> tuple[etree._Element, str]:
        self._check_partner(request.partnerCode)
        bill = self.bills.get(request.billCode)
        if bill is None:
            now = _now()
            reference = f"BC{now:%y%m%d}{next(self._serials)}"
            url = f"{self.payment_base_url}?{urlencode({'billCode': request.billCode, 'ref': reference})}"
            bill = Bill(request=bc.BillRequest.model_validate(request.model_dump(exclude={"partnerCode"})),
                        bank_reference=reference, payment_url=url, created_at=now)
            self.bills[request.billCode] = bill
            code = bc.SUCCESS
        elif bill.request.amount != request.amount:
            raise SoapFault(bc.BILL_CONFLICT, "Mã hóa đơn đã tồn tại với số tiền khác")
        else:
            bill.create_calls += 1
            code = bc.BILL_EXISTS
        response, _ = _result(bc.CREATE_BILL, code, billCode=request.billCode, bankReference=bill.bank_reference,
                              paymentUrl=bill.payment_url)
        return response, code

    def query(self, request: _QueryTransaction) -> tuple[etree._Element, str]:
        self._check_partner(request.partnerCode)
        bill = self.bills.get(request.billCode)
        if bill is None:
            return _result(bc.QUERY_TRANSACTION, bc.BILL_NOT_FOUND, billCode=request.billCode)[0], bc.BILL_NOT_FOUND
        paid = {} if bill.payment is None else {"paidAmount": bill.payment.amount} | bill.payment.model_dump(
            include={"transactionId", "paidAt", "channel"})
        response, _ = _result(bc.QUERY_TRANSACTION, bc.SUCCESS, billCode=request.billCode, status=bill.status,
                              amount=bill.request.amount, **paid)
        return response, bc.SUCCESS

    def list_settled(self, request: _ListSettled) -> tuple[etree._Element, str]:
        self._check_partner(request.partnerCode)
        response, result = _result(bc.LIST_SETTLED, bc.SUCCESS, settlementDate=request.settlementDate)
        rows = etree.SubElement(result, _BC + "transactions")
        for settled in sorted(self.transactions, key=lambda t: t.paidAt):
            if settled.settlementDate == request.settlementDate:
                row = etree.SubElement(rows, _BC + "Transaction")
                for name in ("transactionId", "billCode", "amount", "paidAt", "channel", "settlementDate"):
                    _add(row, name, getattr(settled, name))
        return response, bc.SUCCESS

    def settle(self, bill_code: str, amount: int, paid_at: datetime | None, channel: str,
               transaction_id: str | None = None) -> bc.SettledTransaction:
        """Record a payment as settled on its Vietnam date."""
        moment = _local(paid_at)
        settled = bc.SettledTransaction(
            transactionId=transaction_id or f"FT{moment:%y%j}{next(self._serials)}", billCode=bill_code,
            amount=amount, paidAt=moment, channel=channel, settlementDate=moment.date(),
        )
        self.transactions.append(settled)
        return settled

    def pay(self, request: PayRequest) -> Response:
        bill = self.bills.get(request.billCode)
        if bill is None:
            return error_response(404, "unknown bill")
        if bill.status != bc.UNPAID:
            return error_response(409, f"the bill is {bill.status}")
        bill.payment = self.settle(bill.request.billCode, request.amount or bill.request.amount, request.paidAt,
                                   request.channel)
        bill.status = bc.PAID
        if request.notify and self.notify is not None:
            for _ in range(request.copies):
                self.background.spawn(self._send_ipn(self.notify, bill.payment, request))
        return JSONResponse(bill.admin_view())

    async def _send_ipn(self, target: NotifyTarget, paid: bc.SettledTransaction, how: PayRequest) -> None:
        params = {"vnp_TmnCode": target.tmn_code, "vnp_TxnRef": paid.billCode, "vnp_Amount": str(paid.amount * 100),
                  "vnp_ResponseCode": "00", "vnp_TransactionNo": paid.transactionId,
                  "vnp_PayDate": _local(paid.paidAt).strftime(TIME_FORMAT), "vnp_BankCode": "VNPAYQR",
                  "vnp_OrderInfo": how.order_info or f"Thanh toan hoa don {paid.billCode}"}
        if how.transaction_status is not None:
            params["vnp_TransactionStatus"] = how.transaction_status
        params["vnp_SecureHash"] = vnpay_signature(target.secret, params)  # as VNPAY's PHP sample hashes
        answer = await self.background.get_for_json(target.url, params)
        self.ipn_replies[str(answer.get("RspCode")) if isinstance(answer, dict) else "no answer"] += 1


def create_app(
    *,
    partner_code: str,
    username: str,
    password: str,
    payment_base_url: str = "https://pay.bank.example/bill",
    seed: int | None = None,
) -> FastAPI:
    """Build the bank simulator for one partner and its WS-Security username and password;
    ``seed`` fixes the identifiers it hands out."""
    state = BankState(partner_code=partner_code, username=username, password=password,
                      payment_base_url=payment_base_url, seed=seed)
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: bank bill collection", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.bank = state

    soap.add_wsdl_route(app, bc.ENDPOINT_PATH, bc.WSDL)

    @app.post(bc.ENDPOINT_PATH)
    async def operation(request: Request) -> Response:
        faults = state.faults
        status = await latency_and_error(faults)
        if status is not None:
            state.injected["error"] += 1
            return error_response(status, "injected fault")
        try:
            operation, content, code = state.handle(await request.body(), faults)
        except soap.SoapFault as fault:
            return state.fault(fault)
        if operation == bc.CREATE_BILL and faults is not None and faults.draw(faults.config.timeout_rate):
            state.injected["timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return state.respond(content, code)

    add_fault_routes(app, state, FaultConfig)

    @app.post("/_admin/pay")
    async def pay(body: PayRequest) -> Response:
        return state.pay(body)

    @app.post("/_admin/notify")
    async def set_notify(body: NotifyTarget) -> dict[str, str]:
        state.notify = body
        return {"url": body.url, "tmn_code": body.tmn_code}

    @app.post("/_admin/settle-extra")
    async def settle_extra(body: SettleExtraRequest) -> dict[str, Any]:
        settled = state.settle(body.billCode, body.amount, body.paidAt, body.channel, body.transactionId)
        return settled.model_dump(mode="json")

    @app.post("/_admin/cancel")
    async def cancel(body: CancelRequest) -> Response:
        bill = state.bills.get(body.billCode)
        if bill is None:
            return error_response(404, "unknown bill")
        if bill.status != bc.UNPAID:
            return error_response(409, f"the bill is {bill.status}")
        bill.status = bc.CANCELLED
        return JSONResponse(bill.admin_view())

    @app.get("/_admin/bills")
    async def bills() -> list[dict[str, Any]]:
        return [bill.admin_view() for bill in state.bills.values()]

    add_state_routes(app, state)
    return app
