"""What the edge tests share: this process as a relay whose API takes every inbound route — the intake and the
callbacks of the portal, the post, the payment platform, a VNPAY-style gateway, the portal's payment look-up and
Zalo — called in-process over ASGI (no socket: thousands of requests a second), with a valid payload for each
route and each request signed the way its sender signs it, so that a fuzzer reaches past the signature check.

Real everything behind the app: the ledger (SQLite or PostgreSQL), Redis and the Celery broker the doorbells ring.
No destination is called: the deliveries the routes create wait in the ledger.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from sqlalchemy import Engine, delete, func, select

from sandbox.portal import online_dossiers
from sandbox.workload import generate_day
from schemas import payment as pay
from schemas.webhook import sign
from schemas.zalo import zevent_signature
from store import payments
from store.intake import ingest_and_route
from store.tables import metadata
from tests.harness import become_relay, new_secret, relay_env

DAY = date(2026, 11, 20)
EVENTS = generate_day(60, day=DAY, seed=19)
UNIT = "000.21.00.H49"
DOSSIERS = online_dossiers(50, unit_code=UNIT, day=DAY, seed=19)
CUSTOMER = "HCC-QNI-HALONG"
CLIENT, CALLBACK_KEY, TMN, VNPAY_SECRET = "UBND-HALONG", "khoa-goi-lai-edges", "HALONG01", "vnpay-bi-mat-edges"
LOOKUP_USER, LOOKUP_PASSWORD = "dvcqg", "mat-khau-tra-cuu-edges"
APP_ID, OA_KEY = "zalo-app-edges", "zalo-oa-khoa-edges"
NOWHERE = "http://127.0.0.1:9"  # nothing is delivered: the port answers nothing
AGENCY = ('{ name = "Bộ phận một cửa phường Hồng Gai", phone = "02033835588", address = "Số 1 đường 25/4",'
          ' province = "Quảng Ninh" }')

ROUTING = f"""
[destinations.warehouse]
kind = "webhook"
url = "{NOWHERE}/subscribers/warehouse/events"
secret_env = "MOTCUA_WAREHOUSE_WEBHOOK_SECRET"

[destinations.onestop]
kind = "webhook"
url = "{NOWHERE}/subscribers/onestop/events"
secret_env = "MOTCUA_ONESTOP_WEBHOOK_SECRET"

[destinations.portal]
kind = "portal"
url = "{NOWHERE}"

[destinations.postal]
kind = "postal"
url = "{NOWHERE}"
customer_code = "{CUSTOMER}"
agency = {AGENCY}

[destinations.payment]
kind = "payment"
provider = "platform"
url = "{NOWHERE}"
client_id = "{CLIENT}"
vnpay_tmn_code = "{TMN}"
lookup_username = "{LOOKUP_USER}"
return_url = "https://dichvucong.quangninh.gov.vn/thanh-toan/ket-qua"
beneficiary_account = "3511.0.1054321.00000"
beneficiary_name = "Ủy ban nhân dân phường Hồng Gai"
beneficiary_bank = "KBNN"

[destinations.zalo]
kind = "zalo"
url = "{NOWHERE}"
quiet_hours = "none"

[[routes]]
events = ["*"]
origins = ["onestop"]
destination = "warehouse"

[[routes]]
events = ["*"]
exclude_origins = ["onestop"]
destination = "onestop"
"""


class AsgiClient:
    """HTTP requests to an ASGI app in this process, on an event loop of its own, through nothing but the ASGI calls
    (httpx's transport costs more than most of the answers it carries): each :meth:`send` sends its requests one
    after another and returns their answers once the app is done with each (its background tasks included). An
    error the app does not handle is answered 500, as a server would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    def send(self, requests: Sequence[httpx.Request]) -> list[httpx.Response]:
        async def each() -> list[httpx.Response]:
            return [await self._call(r) for r in requests]

        return self.loop.run_until_complete(each())

    @staticmethod
    def build(method: str, path: str, **kwargs: Any) -> httpx.Request:
        return httpx.Request(method, f"http://relay{path}", **kwargs)

    async def _call(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
                 "scheme": "http", "path": request.url.path, "raw_path": request.url.raw_path.split(b"?")[0],
                 "query_string": request.url.query, "root_path": "",
                 "headers": [(name.lower(), value) for name, value in request.headers.raw],
                 "client": ("127.0.0.1", 40000), "server": ("relay", 80)}
        started: dict[str, Any] = {}
        chunks: list[bytes] = []
        done = asyncio.Event()
        unread = True

        async def receive() -> dict[str, Any]:
            nonlocal unread
            if unread:
                unread = False
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # the client hangs up only once it has the whole answer
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            if not started:  # no answer went out: a server answers 500
                started.update(status=500, headers=[])
                chunks[:] = [b"Internal Server Error"]
        return httpx.Response(started["status"], headers=started.get("headers", []), content=b"".join(chunks),
                              request=request)

    def close(self) -> None:
        self.loop.close()


@dataclass
class Edges:
    """The relay's API in-process, a valid payload for each of its routes, and how each route's sender signs."""

    api: AsgiClient
    engine: Engine
    env: dict[str, str]
    intake_secret: str
    portal_secret: str
    postal_secret: str
    seeded: dict[str, str] = field(default_factory=dict)
    _serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # ----------------------------------------------------------------- valid payloads, new each time

    def event(self, index: int = 0) -> dict[str, Any]:
        """One of the workload's events under a new id."""
        return {**copy.deepcopy(EVENTS[index % len(EVENTS)]), "event_id": f"ev-{uuid.uuid4().hex}"}

    def dossier(self) -> dict[str, Any]:
        """An online dossier the portal pushes, with a new code and position."""
        n = next(self._serial)
        return {**copy.deepcopy(DOSSIERS[n % len(DOSSIERS)]), "MaHoSo": f"{UNIT}-{DAY:%y%m%d}-{n:05d}", "ThuTu": n}

    def record(self) -> dict[str, Any]:
        """A new status (delivered) of the seeded order, as the post's tracking list holds it."""
        n = next(self._serial)
        return {"_id": {"$oid": f"{n:024x}"}, "CustomerCode": CUSTOMER, "OrderNumber": self.seeded["order"],
                "EventTime": 1763607600000 + n * 1000, "POSID": "200000", "ItemCode": "EB1VN", "StatusCode": 4,
                "StatusMessage": "Phát thành công", "Notes": None}

    def payment(self) -> dict[str, Any]:
        """The platform's callback paying the seeded bill (before its check_sum: :meth:`platform`)."""
        return {"client_id": CLIENT, "transaction_id": self.seeded["bill"],
                "transaction_code": f"KP{next(self._serial)}",
                "trans_amount": self.seeded["amount"], "command": "PAY", "addition_fee": 0, "version": "3.0",
                "status": 0}

    def ipn(self) -> dict[str, str]:
        """A VNPAY-style IPN paying the seeded bill (before its hash: :meth:`vnpay`)."""
        return {"vnp_TmnCode": TMN, "vnp_TxnRef": self.seeded["bill"],
                "vnp_Amount": str(int(self.seeded["amount"]) * 100), "vnp_ResponseCode": "00",
                "vnp_TransactionStatus": "00", "vnp_TransactionNo": str(14_000_000 + next(self._serial)),
                "vnp_PayDate": "20261120103000", "vnp_OrderInfo": "Thanh toan le phi ho so"}

    def receipt(self) -> dict[str, Any]:
        """Zalo's word that a message (a new tracking id) was received."""
        return {"app_id": APP_ID, "event_name": "user_received_message", "timestamp": "1763625600000",
                "message": {"msg_id": f"m-{next(self._serial)}", "tracking_id": f"t-{uuid.uuid4().hex}"}}

    # ----------------------------------------------------------------- requests, signed as each sender does

    def signed(self, path: str, body: bytes, secret: str | None = None, **headers: str) -> httpx.Request:
        """A Standard-Webhooks-signed POST (the intake's, and the portal's and the post's pushes)."""
        key = secret or {"/v1/events": self.intake_secret, "/v1/callbacks/portal": self.portal_secret,
                         "/v1/callbacks/postal": self.postal_secret}[path]
        signature = sign(key, f"msg_{uuid.uuid4().hex}", body).as_headers()
        return self.api.build("POST", path, content=body,
                              headers={"content-type": "application/json", **signature, **headers})

    @staticmethod
    def platform(fields: dict[str, Any], key: str = CALLBACK_KEY) -> dict[str, Any]:
        """The platform's callback with its check_sum (M13) over the six fields as they are sent."""
        parts = [str(fields.get(name, "")) for name in
                 ("addition_fee", "client_id", "command", "trans_amount", "transaction_id", "version")]
        signed = "|".join(parts).encode("utf-8", "surrogatepass")  # a fuzzer's lone surrogate signed as sent
        return {**fields, "check_sum": hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()}

    @staticmethod
    def vnpay(params: dict[str, str], secret: str = VNPAY_SECRET) -> dict[str, str]:
        """An IPN's parameters with their ``vnp_SecureHash``, as VNPAY's PHP sample signs them."""
        return {**params, "vnp_SecureHash": pay.vnpay_signature(secret, params)}

    @staticmethod
    def zalo(body: bytes, timestamp: str, key: str = OA_KEY) -> dict[str, str]:
        return {"X-ZEvent-Signature": zevent_signature(APP_ID, body, timestamp, key),
                "content-type": "application/json"}

    @staticmethod
    def basic(user: str = LOOKUP_USER, password: str = LOOKUP_PASSWORD) -> dict[str, str]:
        return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    def valid_requests(self) -> dict[str, httpx.Request]:
        """One valid, signed request for each route, with new ids."""
        receipt = body_of(self.receipt())
        return {
            "intake": self.signed("/v1/events", body_of([self.event(0), self.event(1)])),
            "portal": self.signed("/v1/callbacks/portal", body_of({"madonvi": UNIT, "data": [self.dossier()]})),
            "postal": self.signed("/v1/callbacks/postal", body_of({"CustomerCode": CUSTOMER, "data": [self.record()]})),
            "platform": self.api.build("POST", "/v1/callbacks/payment/platform", json=self.platform(self.payment())),
            "vnpay": self.api.build("GET", "/v1/callbacks/payment/vnpay", params=self.vnpay(self.ipn())),
            "lookup": self.api.build("POST", "/v1/callbacks/payment/dptracuuthanhtoanhs", headers=self.basic(),
                                     json={"MaHoSo": self.seeded["dossier"]}),
            "zalo": self.api.build("POST", "/v1/callbacks/zalo", content=receipt,
                                   headers=self.zalo(receipt, "1763625600000")),
        }

    # ----------------------------------------------------------------- the ledger

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())

    def counts(self) -> dict[str, int]:
        """How many rows each table holds."""
        return {table.name: self.count(table.name) for table in metadata.sorted_tables}

    def column(self, table: str, name: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(metadata.tables[table].c[name])).scalars())

    def empty(self) -> None:
        """Every row gone, then :func:`seed` again."""
        with self.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))
        seed(self)


def seed(edges: Edges) -> None:
    """What lets a callback reach past "not ours": a postal delivery request (its order is ours) and a fee assessed
    with its bill issued at the platform (its callbacks pay it); their codes in ``edges.seeded``."""
    post = next(e for e in EVENTS if e["type"] == "postal.delivery_requested")
    fee = next(e for e in EVENTS if e["type"] == "fee.assessed")
    now = datetime.now(UTC)
    ingest_and_route(edges.engine, [post, fee], now)
    code = f"EDGES{uuid.uuid4().hex[:10].upper()}"
    amount = int(fee["data"]["amount"])
    payments.record_bill(edges.engine, payments.NewBill(
        bill_code=code, destination="payment", provider="platform", dossier_code=fee["dossier_code"],
        fee_id=fee["data"]["fee_id"], amount=amount, assessed_event_id=fee["event_id"], payment_url=None,
        external_ref=None), now)
    edges.seeded.update(order=f"{post['dossier_code']}-KQ", bill=code, amount=str(amount),
                        dossier=fee["dossier_code"])


@contextmanager
def edges_relay(db_url: str, redis_url: str, workdir: Path, log_level: str = "ERROR") -> Iterator[Edges]:
    """This process as a relay on ``db_url`` whose routing takes every callback, its API in-process (logging
    ``log_level`` and above: a fuzzer's thousands of refusals are not worth a line each)."""
    from api.app import create_app
    from tasks.runtime import get_runtime, reset_runtime

    routing = workdir / "edges-routing.toml"
    routing.write_text(ROUTING, encoding="utf-8")
    intake, portal, postal = new_secret(), new_secret(), new_secret()
    prefix = f"edges{uuid.uuid4().hex[:6]}"
    env = relay_env(
        db_url, redis_url, intake, {"onestop": new_secret(), "warehouse": new_secret()}, routing,
        MOTCUA_REDIS_PREFIX=prefix, MOTCUA_LOG_LEVEL=log_level, MOTCUA_PORTAL_USERNAME="relay",
        MOTCUA_PORTAL_PASSWORD="mat-khau", MOTCUA_PORTAL_CALLBACK_SECRET=portal, MOTCUA_POSTAL_CONSUMER_KEY="khoa",
        MOTCUA_POSTAL_CONSUMER_SECRET="bi-mat", MOTCUA_POSTAL_CALLBACK_SECRET=postal,
        MOTCUA_PAYMENT_REQUEST_KEY="khoa-yeu-cau", MOTCUA_PAYMENT_CALLBACK_KEY=CALLBACK_KEY,
        MOTCUA_PAYMENT_LOOKUP_PASSWORD=LOOKUP_PASSWORD, MOTCUA_PAYMENT_VNPAY_SECRET=VNPAY_SECRET,
        MOTCUA_ZALO_APP_ID=APP_ID, MOTCUA_ZALO_APP_SECRET="zalo-bi-mat", MOTCUA_ZALO_OA_SECRET_KEY=OA_KEY)
    with pytest.MonkeyPatch.context() as monkeypatch:
        become_relay(monkeypatch, env)
        api = AsgiClient(create_app())
        edges = Edges(api, get_runtime().engine, env, intake, portal, postal)
        try:
            edges.empty()
            yield edges
        finally:
            api.close()
            reset_runtime()
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in JSON data, as the keys and indexes that lead to it (for a fuzzer to change one)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            out += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += paths(inner, (*prefix, index))
    return out


def ledger_url(kind: str, request: pytest.FixtureRequest, workdir: Path) -> str:
    """A migrated, empty ledger for a module's relay: a SQLite file in ``workdir``, or the session's PostgreSQL
    database emptied."""
    from store.db import upgrade
    from tests.conftest import _fresh_pg

    if kind == "postgresql":
        return _fresh_pg(request.getfixturevalue("pg_url"))
    url = f"sqlite:///{workdir}/relay.db"
    upgrade(url)
    return url


def form(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


def body_of(data: Any) -> bytes:
    """JSON as senders write it: UTF-8, escaping only what UTF-8 cannot carry (a lone surrogate)."""
    try:
        return json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(data).encode()
