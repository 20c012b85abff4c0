"""Fuzzing every inbound route over HTTP (in-process ASGI), on both ledgers: no answer is a 5xx, and afterwards the
ledger holds exactly what the 2xx answers said they took.

Each route's requests are made from a valid payload changed at random (a value swapped for one of the inputs that
used to break something — NUL bytes, lone surrogates, Arabic-Indic digits, dates out of range or malformed, huge
numbers, wrong JSON types — a field removed or added, the body replaced, the content type changed), signed as the
route's sender signs them (so they reach past the signature) or not signed, or signed wrongly. Most are refused
cheaply; some are taken and written. :data:`PER_ENGINE` requests per route and engine (each hypothesis example is
a batch of :data:`BATCH`), so at least ``2 × PER_ENGINE`` per route.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from schemas.vietnam import LAST_EPOCH_MS
from schemas.zalo import event_timestamp
from services.zalo import callbacks as zalo_callbacks
from store.tables import events
from tests.edges import CALLBACK_KEY, CUSTOMER, OA_KEY, UNIT, Edges, body_of, edges_relay, form, ledger_url, paths

BATCH = 25
PER_ENGINE = 2500
EXAMPLES = PER_ENGINE // BATCH
CHOICES = 48  # the bytes each request of a batch is made from
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

# values that broke a route once, or sit on a contract's edge
EDGE_VALUES: list[Any] = [
    "\x00", "Nguyễn\x00An", "\ud800", "x\udfff", "²", "٢٠٢٦", "", " ", "\u3000", "null", "💥", "a" * 61, "b" * 101,
    "c" * 5000, 0, -1, 2**31, 2**63, -(2**63) - 1, 10**30, 1e300, -0.0, 1.5, float("inf"), float("nan"), None, True,
    [], {}, [1], {"a": "\x00"}, "20261399999999", "00010101000000", "99991231235959", "18991231235959",
    "20261120103000".translate(ARABIC), "0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-07:00",
    "2026-02-30T00:00:00Z", "1899-12-31T23:59:59Z", "3000-01-01T00:00:00Z", str(LAST_EPOCH_MS + 1), "9" * 30,
    10**20, LAST_EPOCH_MS + 1, 32503680000000,
]
# the characters a drawn text is made of: ASCII, Vietnamese, digits of other scripts, NUL, whitespace, surrogates
ALPHABET = "aZ09 .-_:/\"\\" + "ăâđêôơưạếữỹ" + "٠٥٩۳१²" + "\x00\t\n\u3000\ufeff" + "\ud800\udfff" + "💥"
CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "", "application/xml",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1"]
BODIES = [b"", b"[]", b"{}", b"null", b"\"x\"", b"7", b"[{}]", b'{"data": []}', b"\xff\xfe{}",
          b"[" * 50_000 + b"]" * 50_000]
OPS = ("set", "set", "set", "set", "nul", "nul", "arabic", "remove", "add")


class Choices:
    """Bytes hypothesis drew, read as a fuzzer's choices, each read taking the next ones (zeros past the end, so
    that hypothesis shrinks a request toward the valid, signed one). Far cheaper to draw than composite strategies:
    the fuzzer's time goes to requests."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1] if self.at <= len(self.data) else 0

    def below(self, n: int) -> int:
        return (self.byte() << 8 | self.byte()) % n

    def pick(self, items: Any) -> Any:
        return items[self.below(len(items))]

    def value(self) -> Any:
        kind = self.byte()
        if kind < 176:
            return EDGE_VALUES[kind % len(EDGE_VALUES)]
        if kind < 216:
            return int.from_bytes(bytes(self.byte() for _ in range(1 + kind % 8)), "big", signed=True)
        return "".join(self.pick(ALPHABET) for _ in range(kind % 13))


@dataclass(frozen=True)
class Change:
    """One change to a payload: ``op`` at the path ``pick`` selects among its paths."""

    op: str
    pick: int
    value: Any = None


@dataclass(frozen=True)
class Spec:
    """How one request is made: ``changes`` to the valid payload (none: it is valid), or a ``body`` instead of it,
    signed as the sender does (``signed``) or in one of the ways that are not, with a content type."""

    changes: tuple[Change, ...]
    body: bytes | None
    signed: str
    content_type: str

    @classmethod
    def of(cls, choices: Choices) -> Spec:
        """One in 64 left valid (taken, and written: a write costs what twenty refusals do), the others changed
        two to four times; one in eight with another body; one in three not signed, or signed wrongly; one in five
        of another content type."""
        first = choices.byte()
        changes = () if first < 4 else tuple(Change(choices.pick(OPS), choices.below(10_000), choices.value())
                                              for _ in range(2 + first % 3))
        drawn = choices.byte()
        body = None if drawn >= 32 else BODIES[drawn] if drawn < len(BODIES) else bytes(
            choices.byte() for _ in range(drawn))
        signed = ("yes", "yes", "yes", "yes", "no", "wrong")[choices.byte() % 6]
        content_type = "application/json" if choices.byte() < 204 else choices.pick(CONTENT_TYPES)
        return cls(changes, body, signed, content_type)


batches = st.binary(min_size=BATCH * CHOICES, max_size=BATCH * CHOICES).map(
    lambda data: [Spec.of(Choices(data[i * CHOICES:(i + 1) * CHOICES])) for i in range(BATCH)])


def changed(data: Any, spec: Spec) -> Any:
    """A new payload ``data`` with ``spec``'s changes made in it (a change that finds no place is skipped)."""
    for change in spec.changes:
        places = paths(data)
        if not places:
            break
        path = places[change.pick % len(places)]
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        key, current = path[-1], parent[path[-1]]
        if change.op == "set":
            parent[key] = copy.deepcopy(change.value)  # EDGE_VALUES' lists and dicts are shared
        elif change.op == "remove":
            del parent[key]
        elif change.op == "arabic" and isinstance(current, str) and current != current.translate(ARABIC):
            parent[key] = current.translate(ARABIC)
        elif change.op in ("nul", "arabic") and isinstance(current, str):  # a text without digits gets a NUL
            at = change.pick % (len(current) + 1)
            parent[key] = current[:at] + "\x00" + current[at:]
        elif change.op == "add" and isinstance(parent, dict):
            parent[str(change.value) if not isinstance(change.value, str) else change.value or "extra"] = change.pick
    return data


# ----------------------------------------------------------------------------- the routes, as their senders call them


def standard(edges: Edges, path: str, payload: Any, spec: Spec) -> httpx.Request:
    """A Standard-Webhooks POST (the intake, the portal's and the post's pushes)."""
    body = spec.body if spec.body is not None else body_of(changed(payload, spec))
    if spec.signed == "yes":
        request = edges.signed(path, body)
    elif spec.signed == "wrong":
        request = edges.signed(path, body, secret="whsec_" + "QUJD" * 8)
    else:
        request = edges.api.build("POST", path, content=body)
    request.headers["content-type"] = spec.content_type
    return request


def intake(edges: Edges, spec: Spec) -> httpx.Request:
    """One event, or a batch of two (changed anywhere in the batch), of the workload's kinds."""
    kind = spec.changes[0].pick if spec.changes else 0
    payload = edges.event(kind) if len(spec.changes) % 2 == 0 else [edges.event(kind), edges.event(kind + 1)]
    return standard(edges, "/v1/events", payload, spec)


def portal(edges: Edges, spec: Spec) -> httpx.Request:
    return standard(edges, "/v1/callbacks/portal", {"madonvi": UNIT, "data": [edges.dossier()]}, spec)


def postal(edges: Edges, spec: Spec) -> httpx.Request:
    return standard(edges, "/v1/callbacks/postal", {"CustomerCode": CUSTOMER, "data": [edges.record()]}, spec)


def platform(edges: Edges, spec: Spec) -> httpx.Request:
    fields = changed(edges.payment(), spec)
    if spec.body is not None:
        body = spec.body
    elif spec.signed == "no":
        body = body_of(fields)
    else:
        body = body_of(edges.platform(fields, key=CALLBACK_KEY if spec.signed == "yes" else "another-key"))
    return edges.api.build("POST", "/v1/callbacks/payment/platform", content=body,
                           headers={"content-type": spec.content_type})


def text(value: Any) -> str:
    """A parameter as a query string can carry it: a lone surrogate has no UTF-8, so it arrives replaced."""
    return str(value).encode("utf-8", "replace").decode()


def vnpay(edges: Edges, spec: Spec) -> httpx.Request:
    params = {text(k): text(v) for k, v in changed(edges.ipn(), spec).items()}
    if spec.signed == "yes":
        params = edges.vnpay(params)
    elif spec.signed == "wrong":
        params = edges.vnpay(params, secret="another-secret")
    if spec.changes and spec.changes[0].pick % 2:  # half of them a POSTed form, its body maybe replaced
        body = spec.body if spec.body is not None else form(params)
        return edges.api.build("POST", "/v1/callbacks/payment/vnpay", content=body,
                               headers={"content-type": spec.content_type})
    return edges.api.build("GET", "/v1/callbacks/payment/vnpay", params=params)


def lookup(edges: Edges, spec: Spec) -> httpx.Request:
    body = spec.body if spec.body is not None else body_of(changed({"MaHoSo": edges.seeded["dossier"]}, spec))
    auth = {"yes": edges.basic(), "wrong": edges.basic(password="sai-mat-khau"), "no": {}}[spec.signed]
    return edges.api.build("POST", "/v1/callbacks/payment/dptracuuthanhtoanhs", content=body,
                           headers={**auth, "content-type": spec.content_type})


def zalo(edges: Edges, spec: Spec) -> httpx.Request:
    data = changed(edges.receipt(), spec)
    body = spec.body if spec.body is not None else body_of(data)
    stamp = event_timestamp(data) if spec.body is None else ""  # what Zalo signs: the body's own timestamp
    headers = edges.zalo(body, stamp, key=OA_KEY if spec.signed == "yes" else "another-key")
    if spec.signed == "no":
        del headers["X-ZEvent-Signature"]
    return edges.api.build("POST", "/v1/callbacks/zalo", content=body,
                           headers={**headers, "content-type": spec.content_type})


# ----------------------------------------------------------------------------- what each route's answers say it took


@dataclass
class Taken:
    """What the 2xx answers of one route said they took: rows of the route's table, event ids."""

    rows: int = 0
    event_ids: set[str] = field(default_factory=set)
    tracking: set[str] = field(default_factory=set)


def took_events(request: httpx.Request, answer: httpx.Response, taken: Taken) -> None:
    if answer.status_code in (200, 202):
        body = answer.json()
        taken.event_ids |= {e["event_id"] for e in body["accepted"] + body["duplicates"]}
        taken.rows += len(body["accepted"])


def took_count(key: str) -> Callable[[httpx.Request, httpx.Response, Taken], None]:
    def took(request: httpx.Request, answer: httpx.Response, taken: Taken) -> None:
        if answer.status_code == 200:
            taken.rows += answer.json()[key]
    return took


def took_payment(request: httpx.Request, answer: httpx.Response, taken: Taken) -> None:
    body = answer.json()  # HTTP 200 whatever the verdict: a recorded callback is one row
    taken.rows += body.get("return_code") == 0 or body.get("RspCode") in ("00", "01", "02", "04")


def took_receipt(request: httpx.Request, answer: httpx.Response, taken: Taken) -> None:
    if answer.status_code == 200 and answer.json()["status"] == "recorded":
        taken.tracking.add(json.loads(request.content)["message"]["tracking_id"])  # received, or seen after it
        taken.rows = len(taken.tracking)


def took_nothing(request: httpx.Request, answer: httpx.Response, taken: Taken) -> None:
    assert answer.json()["error_code"] in (-1, 0, 1), answer.text


@dataclass(frozen=True)
class Route:
    """A route: its requests, the answers it may give, what an answer says it took, and the ledger's count of it."""

    name: str
    request: Callable[[Edges, Spec], httpx.Request]
    answers: frozenset[int]
    took: Callable[[httpx.Request, httpx.Response, Taken], None]
    stored: Callable[[Edges], int]


def events_where(*conditions: Any) -> Callable[[Edges], int]:
    def count(edges: Edges) -> int:
        with edges.engine.connect() as conn:
            return len(conn.execute(select(events.c.id).where(*conditions)).all())
    return count


def rows_of(table: str) -> Callable[[Edges], int]:
    return lambda edges: edges.count(table)


ROUTES = [
    Route("intake", intake, frozenset({200, 202, 400, 401, 409, 413, 422}), took_events, events_where()),
    Route("portal", portal, frozenset({200, 400, 401}), took_count("accepted"),
          events_where(events.c.origin == "portal")),
    Route("postal", postal, frozenset({200, 400, 401, 403}), took_count("stored"),
          events_where(events.c.type == "postal.status")),
    Route("platform", platform, frozenset({200}), took_payment, rows_of("payment_callbacks")),
    Route("vnpay", vnpay, frozenset({200, 413}), took_payment, rows_of("payment_callbacks")),
    Route("lookup", lookup, frozenset({200, 401}), took_nothing, rows_of("events")),  # and nothing else: below
    Route("zalo", zalo, frozenset({200, 400, 401}), took_receipt, rows_of("receipts")),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def edges(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with edges_relay(ledger_url(request.param, request, workdir), redis_url, workdir) as running, \
            pytest.MonkeyPatch.context() as patch:
        # the input is on trial, not the machine's speed: a Zalo receipt waits for its write however busy the
        # suite makes the ledger (its 503 in time is tests/test_zalo_flow.py's)
        patch.setattr(zalo_callbacks, "ANSWER_WITHIN", 60.0)
        running.seeded["engine"] = request.param
        yield running


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_no_input_gets_a_5xx_and_the_ledger_holds_what_the_answers_took(edges: Edges, route: Route) -> None:
    # given the seeded ledger
    edges.empty()
    engine, seeded, before = edges.seeded["engine"], set(edges.column("events", "event_id")), edges.counts()
    baseline = route.stored(edges)
    taken, answered = Taken(), Counter[int]()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(batch=batches)
    def fuzz(batch: list[Spec]) -> None:
        requests = [route.request(edges, spec) for spec in batch]
        answers = edges.api.send(requests)
        for spec, request, answer in zip(batch, requests, answers, strict=True):
            answered[answer.status_code] += 1
            assert answer.status_code in route.answers, (spec, answer.status_code, answer.text[:300])
            route.took(request, answer, taken)
        assert route.stored(edges) - baseline == taken.rows  # after each batch: nothing half-written

    # when the fuzzer sends its batches
    fuzz()
    # then it sent them all, some were taken, and the ledger holds exactly what the answers took
    print(f"\n{route.name}[{engine}]: {answered.total()} requests, answered {dict(sorted(answered.items()))}")
    assert answered.total() >= PER_ENGINE
    assert route.name == "lookup" or taken.rows > 0, answered
    assert route.stored(edges) - baseline == taken.rows
    if route.name == "lookup":
        assert edges.counts() == before
    if route.name == "intake":
        assert set(edges.column("events", "event_id")) - seeded == taken.event_ids
        assert edges.count("deliveries") == taken.rows  # each event with its one delivery, in its transaction
