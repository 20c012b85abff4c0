"""Simulator of the provincial LGSP's inter-level exchange, with the one-stop systems of the units behind it.

The contract is :mod:`schemas.transfer`; this module adds what it leaves to the units. SOAP 1.1 at
``/soap/lienthong`` (WSDL at ``?wsdl``, its address set to the URL asked), documents by HTTP at
``/documents/{transferId}/{index}`` (streamed to disk and hashed as they come; never held in memory).

The units (``units``: code → :class:`UnitConfig`; by default :data:`DEFAULT_UNITS`: two wards, two departments,
an office under one of them and a ministry)
answer on their own: a dossier sent to a unit is accepted after ``accept_seconds`` or refused (at
``refuse_rate``, seeded, with a reason); a unit that is the chain's end (``finalUnit``) then decides after
``process_seconds`` (``rejected`` at ``reject_rate``) and the result carries one result document; an
intermediate unit accepts and waits for the result to come back from above (``ReturnResult``). A unit
that is down (``POST /_admin/units/{code}/down {"seconds"}``) makes ``SendDossier`` to it the fault
``UNIT_UNAVAILABLE`` and answers nothing until it is up again.

In front of it, when the app is made with a ``consumer_key``, the LGSP's API gateway (:class:`Gateway`,
``schemas/transfer.py`` has its contract): ``POST /token`` gives an OAuth2 client-credentials token for the
key and secret (in the form, or as HTTP Basic) living ``token_ttl`` seconds, and every other call but
``/_admin`` must carry a live one as ``Authorization: Bearer`` or is answered 401 before the exchange sees it;
the gateway then calls the exchange with the account's Basic. Without a ``consumer_key`` the exchange is
reached directly, as before there was a gateway.

Faults (``GET|POST|DELETE /_admin/faults``, seeded): ``error_rate`` answers HTTP ``error_status`` before
anything, ``latency_ms`` delays; ``busy_rate`` answers ``SYSTEM_BUSY``; ``timeout_rate`` applies a
``SendDossier`` and then hangs ``hang_seconds``; ``expire_rate`` makes the gateway drop the token of a call and
refuse it. Admin: ``GET /_admin/transfers``, ``GET /_admin/stats``, ``POST /_admin/reset``. State lives in
memory on the app's event loop (documents in a temporary folder).

The origin's documents: :func:`document_app` serves ``GET /files/{name}?size=N`` — N bytes made from the
name, always the same (:func:`document_sha256` gives their digest without serving them), streamed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import os
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox import soap
from sandbox.faults import (
    ActiveFaults,
    BaseFaults,
    add_fault_routes,
    add_state_routes,
    error_response,
    latency_and_error,
)
from sandbox.soap import SoapFault
from schemas import transfer as tx
from schemas.vietnam import VN_TZ

MAX_BODY = 2_000_000
NSMAP = {"soap": soap.SOAP_ENV_NS, "lt": tx.NAMESPACE}
_LT = f"{{{tx.NAMESPACE}}}"
_LISTS = frozenset({"Document", "Update"})
BLOCK = 1 << 20

# Units of the bundled directory (config/units.csv) the tests, the demo and the bench use: a ward's desk and a
# neighbouring ward, the department of agriculture and environment and its land registration office (two hops
# from a ward), the department of justice and its ministry.
COMMUNE, NEIGHBOUR = "000.21.00.H49", "000.17.00.H49"  # UBND phường Hồng Gai, UBND phường Bãi Cháy
DEPARTMENT, OFFICE = "000.00.07.H49", "000.01.07.H49"  # Sở Nông nghiệp và Môi trường, Văn phòng Đăng ký đất đai
JUSTICE, MINISTRY = "000.00.04.H49", "000.00.00.G02"  # Sở Tư pháp, Bộ Tư pháp


class UnitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    accept_seconds: float = Field(1.0, ge=0)
    process_seconds: float = Field(2.0, ge=0)
    refuse_rate: float = Field(0.0, ge=0, le=1)
    reject_rate: float = Field(0.0, ge=0, le=1)


DEFAULT_UNITS = {
    COMMUNE: UnitConfig(name="UBND phường Hồng Gai"),
    NEIGHBOUR: UnitConfig(name="UBND phường Bãi Cháy"),
    DEPARTMENT: UnitConfig(name="Sở Nông nghiệp và Môi trường tỉnh Quảng Ninh"),
    OFFICE: UnitConfig(name="Văn phòng Đăng ký đất đai tỉnh Quảng Ninh"),
    JUSTICE: UnitConfig(name="Sở Tư pháp tỉnh Quảng Ninh"),
    MINISTRY: UnitConfig(name="Bộ Tư pháp"),
}


class FaultConfig(BaseFaults):
    busy_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(5.0, ge=0, le=600)
    expire_rate: float = Field(0.0, ge=0, le=1)


class DownRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=86_400)


@dataclass
class Transfer:
    request: tx.TransferRequest
    created: float
    status: str = tx.SENT
    reason: str | None = None
    outcome: str | None = None
    result_documents: list[tx.DocumentRef] = field(default_factory=list)
    send_calls: int = 1
    decided: float | None = None
    history: list[tuple[str, str]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {**self.request.model_dump(mode="json"), "status": self.status, "reason": self.reason,
                "outcome": self.outcome, "send_calls": self.send_calls, "history": self.history}


# ---- the origin's documents ------------------------------------------------------------------


def document_blocks(name: str, size: int) -> Iterator[bytes]:
    """The document's bytes, a MiB at a time, always the same for a name and size."""
    for index in range(0, size, BLOCK):
        yield random.Random(f"{name}:{index}").randbytes(min(BLOCK, size - index))


def document_sha256(name: str, size: int) -> str:
    digest = hashlib.sha256()
    for block in document_blocks(name, size):
        digest.update(block)
    return digest.hexdigest()


def document_app() -> FastAPI:
    """The origin one-stop software's file store: ``GET /files/{name}?size=N`` (``N`` bytes, streamed);
    ``GET /_admin/stats`` counts the files and bytes asked for."""
    app = FastAPI(title="motcua-relay sandbox: one-stop documents", docs_url=None, redoc_url=None)
    asked: Counter[str] = Counter()

    @app.get("/files/{name}")
    async def serve(name: str, size: int) -> StreamingResponse:
        asked["files"] += 1
        asked["bytes"] += size
        return StreamingResponse(document_blocks(name, size), media_type="application/pdf",
                                 headers={"Content-Length": str(size)})

    @app.get("/_admin/stats")
    async def stats() -> dict[str, int]:
        return dict(asked)

    return app


# ---- SOAP --------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _add(parent: etree._Element, name: str, value: object) -> None:
    """``value`` under ``parent`` as ``name``: a list of dicts becomes an array of ``Document``/``Update``."""
    if value is None:
        return
    node = etree.SubElement(parent, _LT + name)
    if isinstance(value, list):
        item = "Update" if name == "updates" else "Document"
        for entry in value:
            _add_all(etree.SubElement(node, _LT + item), entry)
    elif isinstance(value, dict):
        _add_all(node, value)
    else:
        node.text = _text(value)


def _add_all(parent: etree._Element, values: dict[str, Any]) -> None:
    for key, value in values.items():
        _add(parent, key, value)


def _read(node: etree._Element) -> Any:
    """An element as text, or as a dict of its children (``Document``/``Update`` children as lists)."""
    children = [c for c in node if isinstance(c.tag, str)]
    if not children:
        return node.text or ""
    out: dict[str, Any] = {}
    for child in children:
        name = etree.QName(child).localname
        if name in _LISTS:
            out.setdefault(name, []).append(_read(child))
        elif name in out:
            raise SoapFault(tx.INVALID_REQUEST, f"Yêu cầu không hợp lệ: phần tử {name} lặp lại")
        else:
            out[name] = _read(child)
    return out


def _answer(operation: str, code: str, **fields: Any) -> Response:
    response = etree.Element(_LT + operation + "Response", nsmap=NSMAP)
    result = etree.SubElement(response, _LT + operation + "Result")
    _add_all(result, {"resultCode": code, "resultMessage": tx.RESULT_CODES[code], **fields})
    return Response(soap.envelope_bytes(response, NSMAP), media_type=soap.XML_TYPE)


def _documents(value: Any) -> list[dict[str, Any]]:
    return list((value or {}).get("Document") or []) if isinstance(value, dict) else []


def _invalid(exc: ValidationError) -> SoapFault:
    names = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)})
    return SoapFault(tx.INVALID_REQUEST, "Yêu cầu không hợp lệ: sai phần tử " + ", ".join(names))


# ---- the exchange ------------------------------------------------------------------------------


class ExchangeState:
    def __init__(self, *, username: str, password: str, units: dict[str, UnitConfig], seed: int | None) -> None:
        self.username, self.password = username, password
        self.units = units
        self.rng = random.Random(seed)
        self.folder = Path(tempfile.mkdtemp(prefix="motcua-lgsp-"))
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.transfers: dict[str, Transfer] = {}
        self.updates: list[tx.Update] = []
        self.down_until: dict[str, float] = {}
        self.faults: ActiveFaults[FaultConfig] | None = None
        self.counters: Counter[str] = Counter()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def stats(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "transfers": dict(Counter(t.status for t in self.transfers.values())),
                "updates": len(self.updates), "down": sorted(u for u in self.down_until if self.is_down(u))}

    def is_down(self, unit: str) -> bool:
        return self.down_until.get(unit, 0.0) > time.monotonic()

    # -- documents

    def path(self, transfer_id: str, index: int) -> Path:
        safe = base64.urlsafe_b64encode(transfer_id.encode()).decode()
        return self.folder / safe / str(index)

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return soap.same(user, self.username) and soap.same(password, self.password)

    # -- SOAP

    def authenticate(self, envelope: etree._Element) -> None:
        token = soap.username_token(envelope)
        if token is None or not (soap.same(token[0], self.username) and soap.same(token[1].text or "", self.password)):
            raise SoapFault(tx.AUTH_FAILED, "Xác thực không thành công")

    def handle(self, body: bytes) -> tuple[str, Response]:
        envelope = soap.read_envelope(body, MAX_BODY, tx.INVALID_REQUEST)
        element = soap.operation_element(envelope, tx.NAMESPACE, tx.OPERATIONS, tx.INVALID_REQUEST)
        operation = etree.QName(element).localname
        self.counters[operation] += 1
        if self.faults is not None and self.faults.draw(self.faults.config.busy_rate):
            self.counters["fault_busy"] += 1
            raise SoapFault(tx.SYSTEM_BUSY, "Hệ thống bận, thử lại sau")
        self.authenticate(envelope)
        fields = _read(element)
        fields = fields if isinstance(fields, dict) else {}
        if operation == tx.SEND_DOSSIER:
            return operation, self.send(fields)
        if operation == tx.GET_TRANSFER:
            return operation, self.get(str(fields.get("transferId", "")))
        if operation == tx.LIST_UPDATES:
            return operation, self.list_updates(fields)
        return operation, self.return_result(fields)

    def send(self, fields: dict[str, Any]) -> Response:
        try:
            request = tx.TransferRequest.model_validate({**fields, "documents": _documents(fields.get("documents"))})
        except ValidationError as exc:
            raise _invalid(exc) from None
        for unit in (request.fromUnit, request.toUnit, request.finalUnit):
            if unit not in self.units:
                raise SoapFault(tx.UNIT_UNKNOWN, f"Đơn vị {unit} không kết nối trục liên thông")
        known = self.transfers.get(request.transferId)
        if known is not None:
            if known.request != request:
                raise SoapFault(tx.TRANSFER_CONFLICT, "Mã chuyển đã dùng với nội dung khác")
            known.send_calls += 1
            return _answer(tx.SEND_DOSSIER, tx.EXISTS, transferId=request.transferId, status=known.status)
        if self.is_down(request.toUnit):
            self.counters["unit_unavailable"] += 1
            raise SoapFault(tx.UNIT_UNAVAILABLE, f"Hệ thống một cửa của đơn vị {request.toUnit} đang gián đoạn")
        for index, document in enumerate(request.documents):
            stored = self.path(request.transferId, index)
            if not stored.exists() and request.previousTransferId:  # already on the exchange from the hop before
                earlier = self.path(request.previousTransferId, index)
                if earlier.exists():
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    os.link(earlier, stored)
            if not stored.exists() or _sha256_file(stored) != document.sha256:
                raise SoapFault(tx.DOCUMENT_INVALID, f"Tài liệu {index} ({document.name}) chưa được tải lên "
                                                         "hoặc sai mã băm SHA-256")
        transfer = Transfer(request, time.monotonic())
        transfer.history.append((tx.SENT, datetime.now(VN_TZ).isoformat()))
        self.transfers[request.transferId] = transfer
        return _answer(tx.SEND_DOSSIER, tx.SUCCESS, transferId=request.transferId, status=tx.SENT)

    def get(self, transfer_id: str) -> Response:
        t = self.transfers.get(transfer_id)
        if t is None:
            return _answer(tx.GET_TRANSFER, tx.NOT_FOUND)
        return _answer(tx.GET_TRANSFER, tx.SUCCESS, transferId=transfer_id, status=t.status,
                       fromUnit=t.request.fromUnit, toUnit=t.request.toUnit, reason=t.reason, outcome=t.outcome)

    def list_updates(self, fields: dict[str, Any]) -> Response:
        try:
            after, most = int(fields.get("afterId", 0)), max(1, min(500, int(fields.get("maxItems", 100))))
        except ValueError:
            raise SoapFault(tx.INVALID_REQUEST, "Yêu cầu không hợp lệ: afterId, maxItems") from None
        page = [u for u in self.updates if u.id > after][:most]
        last = page[-1].id if page else after
        rows = [u.model_dump(mode="json", exclude_none=True) for u in page]
        return _answer(tx.LIST_UPDATES, tx.SUCCESS, lastId=last, hasMore=any(u.id > last for u in self.updates),
                       updates=rows)

    def return_result(self, fields: dict[str, Any]) -> Response:
        transfer_id = str(fields.get("transferId", ""))
        t = self.transfers.get(transfer_id)
        if t is None:
            return _answer(tx.RETURN_RESULT, tx.NOT_FOUND)
        if t.status == tx.RESULT:
            return _answer(tx.RETURN_RESULT, tx.EXISTS, transferId=transfer_id)
        outcome = str(fields.get("outcome", ""))
        if outcome not in ("approved", "rejected") or t.status != tx.ACCEPTED:
            raise SoapFault(tx.INVALID_REQUEST, "Yêu cầu không hợp lệ: outcome, hoặc hồ sơ chưa được tiếp nhận")
        try:
            documents = [tx.DocumentRef.model_validate(d) for d in _documents(fields.get("documents"))]
        except ValidationError as exc:
            raise _invalid(exc) from None
        self._record(t, tx.RESULT, outcome=outcome, documents=documents)
        return _answer(tx.RETURN_RESULT, tx.SUCCESS, transferId=transfer_id)

    # -- the units' own work

    def _record(self, t: Transfer, status: str, *, reason: str | None = None, outcome: str | None = None,
                documents: list[tx.DocumentRef] | None = None) -> None:
        t.status, t.reason, t.outcome = status, reason or t.reason, outcome
        t.result_documents = documents or []
        t.decided = time.monotonic()
        at = datetime.now(VN_TZ).replace(microsecond=0)
        t.history.append((status, at.isoformat()))
        self.updates.append(tx.Update(
            id=next(self._ids), transferId=t.request.transferId, status=status,
            fromUnit=t.request.fromUnit, toUnit=t.request.toUnit, dossierCode=t.request.dossierCode,
            reason=reason, outcome=outcome, at=at, documents=documents or []))

    def tick(self) -> None:
        """The units answer what is due: accept or refuse, then (at the chain's end) decide."""
        now = time.monotonic()
        for t in list(self.transfers.values()):
            unit = self.units[t.request.toUnit]
            if self.is_down(t.request.toUnit):
                continue
            if t.status == tx.SENT and now - t.created >= unit.accept_seconds:
                if self.rng.random() < unit.refuse_rate:
                    self._record(t, tx.REFUSED, reason="Hồ sơ chưa đủ thành phần theo quy định")
                else:
                    self._record(t, tx.ACCEPTED)
            elif (t.status == tx.ACCEPTED and t.request.toUnit == t.request.finalUnit and t.decided is not None
                  and now - t.decided >= unit.process_seconds):
                outcome = "rejected" if self.rng.random() < unit.reject_rate else "approved"
                name = f"ket-qua-{t.request.dossierCode}.pdf"
                size = 50_000 + self.rng.randrange(200_000)
                self._record(t, tx.RESULT, outcome=outcome, documents=[
                    tx.DocumentRef(name=name, sha256=document_sha256(name, size), size=size)])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ---- the gateway in front ---------------------------------------------------------------------

MAX_TOKEN_BODY = 10_000
MISSING_CREDENTIALS = {"fault": {"code": 900902, "message": "Missing Credentials",
                                 "description": "Make sure your API invocation call has a header: "
                                                "'Authorization: Bearer ACCESS_TOKEN'"}}
INVALID_CREDENTIALS = {"fault": {"code": 900901, "message": "Invalid Credentials",
                                 "description": "Invalid Credentials. Make sure you have provided the correct "
                                                "security credentials"}}


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return user, password


class Gateway:
    """The API manager in front of the exchange: OAuth2 client-credentials tokens for one consumer key, and the
    check every call passes (its counters are the exchange's: ``tokens_issued``, ``tokens_refused``,
    ``tokens_expired``, ``gateway_refused``, ``fault_expire``)."""

    def __init__(self, state: ExchangeState, *, consumer_key: str, consumer_secret: str, token_ttl: float) -> None:
        self.state = state
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}  # token → when it dies (monotonic)
        self.backend = "Basic " + base64.b64encode(f"{state.username}:{state.password}".encode()).decode()

    def issue(self, authorization: str | None, content_type: str, body: bytes) -> Response:
        """``POST /token`` (RFC 6749 §4.4): the client authenticated by Basic or by the form, not both."""
        media = content_type.split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            return oauth_error(400, "invalid_request", "the token request is a form (application/x-www-form-"
                                                       f"urlencoded), not {media or 'an empty body'}")
        if len(body) > MAX_TOKEN_BODY:
            return oauth_error(400, "invalid_request", "the body is too large for a token request")
        try:
            form = parse_qs(body.decode("ascii"), strict_parsing=bool(body), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return oauth_error(400, "invalid_request", "the body is not a form")
        if any(len(values) > 1 for values in form.values()):
            return oauth_error(400, "invalid_request", "a parameter is repeated")
        field = {name: values[0] for name, values in form.items()}
        grant = field.get("grant_type", "")
        if grant != "client_credentials":
            return oauth_error(400, "unsupported_grant_type" if grant else "invalid_request",
                               f"grant_type {grant} is not supported" if grant else "grant_type is missing")
        in_header = _basic_credentials(authorization)
        if in_header is not None and "client_secret" in field:
            return oauth_error(400, "invalid_request", "more than one client authentication method")
        key, secret = in_header or (field.get("client_id", ""), field.get("client_secret", ""))
        if not (soap.same(key, self.consumer_key) and soap.same(secret, self.consumer_secret)):
            self.state.counters["tokens_refused"] += 1
            challenge = {"WWW-Authenticate": 'Basic realm="LGSP"'} if in_header is not None else None
            return oauth_error(401, "invalid_client", "Client Authentication failed.", challenge)
        now = time.monotonic()
        if len(self.tokens) > 10_000:
            self.tokens = {token: until for token, until in self.tokens.items() if until > now}
        token = secrets.token_hex(16)
        self.tokens[token] = now + self.token_ttl
        self.state.counters["tokens_issued"] += 1
        return JSONResponse({"access_token": token, "scope": "default", "token_type": "Bearer",
                             "expires_in": max(1, round(self.token_ttl))},
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def refusal(self, header: str | None) -> Response | None:
        """HTTP 401 unless ``header`` is ``Bearer`` and a live token (which ``expire_rate`` may drop)."""
        scheme, _, token = (header or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            return self._refuse(MISSING_CREDENTIALS, 'Bearer realm="LGSP"')
        until = self.tokens.get(token)
        if until is not None and until <= time.monotonic():
            del self.tokens[token]
            self.state.counters["tokens_expired"] += 1
            until = None
        faults = self.state.faults
        if until is not None and faults is not None and faults.draw(faults.config.expire_rate):
            del self.tokens[token]
            self.state.counters["fault_expire"] += 1
            until = None
        if until is None:
            return self._refuse(INVALID_CREDENTIALS, 'Bearer realm="LGSP", error="invalid_token"')
        return None

    def _refuse(self, fault: dict[str, Any], challenge: str) -> Response:
        self.state.counters["gateway_refused"] += 1
        return JSONResponse(fault, status_code=401, headers={"WWW-Authenticate": challenge})


class GatewayMiddleware:
    """Every request but ``/token`` and ``/_admin`` passes :meth:`Gateway.refusal`; a refused one's body is read
    and dropped (as a proxy does, so the client reads the 401 rather than a reset mid-upload), a passed one goes
    on with the account's Basic in place of the token."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == tx.TOKEN_PATH or path.startswith("/_admin/"):
            await self.app(scope, receive, send)
            return
        refused = self.gateway.refusal(Headers(scope=scope).get("authorization"))
        if refused is not None:
            while (message := await receive())["type"] == "http.request" and message.get("more_body"):
                pass
            await refused(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        headers.append((b"authorization", self.gateway.backend.encode()))
        await self.app({**scope, "headers": headers}, receive, send)


def create_app(*, username: str, password: str, units: dict[str, UnitConfig] | None = None,
               seed: int | None = None, tick_seconds: float = 0.1, consumer_key: str | None = None,
               consumer_secret: str | None = None, token_ttl: float = 3600.0) -> FastAPI:
    """The exchange for one integration account, with the units behind it (default :data:`DEFAULT_UNITS`), and
    the gateway in front of it for ``consumer_key`` and ``consumer_secret`` when they are given."""
    if (consumer_key is None) != (consumer_secret is None):
        raise ValueError("the gateway needs both a consumer_key and a consumer_secret (or neither)")
    state = ExchangeState(username=username, password=password,
                          units=dict(DEFAULT_UNITS if units is None else units), seed=seed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def run() -> None:
            while True:
                state.tick()
                await asyncio.sleep(tick_seconds)

        task = asyncio.get_running_loop().create_task(run())
        yield
        task.cancel()
        shutil.rmtree(state.folder, ignore_errors=True)

    app = FastAPI(title="motcua-relay sandbox: LGSP inter-level exchange", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.exchange = state
    soap.add_wsdl_route(app, tx.ENDPOINT_PATH, tx.WSDL)

    @app.post(tx.ENDPOINT_PATH)
    async def operation(request: Request) -> Response:
        faults = state.faults
        status = await latency_and_error(faults)
        if status is not None:
            state.counters["fault_error"] += 1
            return error_response(status, "injected fault")
        try:
            operation, answer = state.handle(await request.body())
        except SoapFault as fault:
            state.counters[f"fault_{fault.code}"] += 1
            return soap.fault_response(fault, detail=_LT + "ExchangeFault", server_codes=tx.SERVER_FAULTS,
                                       nsmap=NSMAP)
        if operation == tx.SEND_DOSSIER and faults is not None and faults.draw(faults.config.timeout_rate):
            state.counters["fault_timeout"] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return answer

    @app.head(f"{tx.DOCUMENTS_PATH}/{{transfer_id}}/{{index}}")
    async def has_document(transfer_id: str, index: int, request: Request) -> Response:
        if not state.authorised(request.headers.get("authorization")):
            return Response(status_code=401)
        stored = state.path(transfer_id, index)
        if not stored.exists():
            return Response(status_code=404)
        return Response(status_code=200, headers={tx.SHA256_HEADER: _sha256_file(stored),
                                                  "Content-Length": str(stored.stat().st_size)})

    @app.put(f"{tx.DOCUMENTS_PATH}/{{transfer_id}}/{{index}}")
    async def put_document(transfer_id: str, index: int, request: Request) -> Response:
        if not state.authorised(request.headers.get("authorization")):
            return JSONResponse({"code": tx.AUTH_FAILED}, status_code=401)
        status = await latency_and_error(state.faults)
        if status is not None:
            state.counters["fault_error"] += 1
            return error_response(status, "injected fault")
        expected = request.headers.get(tx.SHA256_HEADER, "").lower()
        stored = state.path(transfer_id, index)
        stored.parent.mkdir(parents=True, exist_ok=True)
        partial = stored.with_suffix(".part")
        digest, size = hashlib.sha256(), 0
        with partial.open("wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if not hmac.compare_digest(digest.hexdigest(), expected):
            partial.unlink(missing_ok=True)
            state.counters["documents_refused"] += 1
            return JSONResponse({"code": tx.DOCUMENT_INVALID, "message": "SHA-256 không khớp",
                                 "sha256": digest.hexdigest()}, status_code=422)
        partial.replace(stored)
        state.counters["documents_stored"] += 1
        state.counters["document_bytes"] += size
        return JSONResponse({"code": "00", "sha256": expected, "size": size}, status_code=201)

    @app.post("/_admin/units/{code}/down")
    async def down(code: str, body: DownRequest) -> dict[str, Any]:
        state.down_until[code] = time.monotonic() + body.seconds
        return {"unit": code, "down_for": body.seconds}

    @app.post("/_admin/units/{code}/up")
    async def up(code: str) -> dict[str, Any]:
        state.down_until.pop(code, None)
        return {"unit": code}

    @app.get("/_admin/transfers")
    async def transfers() -> list[dict[str, Any]]:
        return [t.view() for t in state.transfers.values()]



    if consumer_key is not None and consumer_secret is not None:
        gateway = Gateway(state, consumer_key=consumer_key, consumer_secret=consumer_secret, token_ttl=token_ttl)
        app.state.gateway = gateway

        @app.post(tx.TOKEN_PATH)
        async def token(request: Request) -> Response:
            return gateway.issue(request.headers.get("authorization"), request.headers.get("content-type", ""),
                                 await request.body())

        app.add_middleware(GatewayMiddleware, gateway=gateway)

    add_fault_routes(app, state, FaultConfig)
    add_state_routes(app, state)
    return app




def transfer_day(transfers: int, documents_url: str, *, two_hop_share: float = 0.2, seed: int = 0,
                 max_document: int = 4_000_000) -> list[dict[str, Any]]:
    """``transfers`` ``transfer.requested`` events of generated dossiers on the two-level tree: a ``two_hop_share``
    ward → land registration office (through its department), the rest in turn ward → department, department →
    ministry and ward → ward; one to three scanned documents each (50 KB to ``max_document``), served by
    :func:`document_app` at ``documents_url``."""
    from sandbox.workload import generate_day

    rng = random.Random(seed)
    sample = next(e for e in generate_day(40, seed=seed) if e["type"] == "dossier.received")
    two_hops = round(transfers * two_hop_share)
    plan = ([(COMMUNE, OFFICE)] * two_hops
            + [(COMMUNE, DEPARTMENT), (JUSTICE, MINISTRY), (COMMUNE, NEIGHBOUR)] * transfers)
    out = []
    for n, (origin, target) in enumerate(plan[:transfers]):
        documents = []
        for k in range(rng.randint(1, 3)):
            name, size = f"ho-so-{seed}-{n:04d}-{k}.pdf", rng.randint(50_000, max_document)
            documents.append({"name": name, "url": f"{documents_url}/files/{name}?size={size}",
                              "sha256": document_sha256(name, size), "size": size})
        code = f"{origin}-261120-{n:04d}"
        data = {"target_unit": target, "reason": "Thủ tục liên thông", "documents": documents}
        out.append({**sample, "event_id": f"transfer-{seed}-{n:04d}", "type": "transfer.requested",
                    "unit_code": origin, "dossier_code": code, "sequence": 1, "data": data})
    rng.shuffle(out)
    return out
