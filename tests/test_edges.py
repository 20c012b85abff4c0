"""Every input an inbound route could not take, one row each, on both ledgers: a 4xx (or the service's own refusal)
that names the field, never echoes what was sent, and leaves the ledger as it was.

The rows are the causes of the 5xx answers a fuzzing pass found (and their neighbours): times whose conversion
leaves Python's calendar, dates and timestamps that are malformed, out of range or in Arabic-Indic digits (which
``int()`` and ``strptime`` accept), NUL bytes and lone surrogates (which PostgreSQL and UTF-8 refuse), numbers over
the ledger's BIGINT and texts over its column widths. Each callback's format is docs/contracts.md's: the portal's and
VNPAY's dates ``yyyyMMddHHmmss`` in ASCII digits, the post's ``EventTime`` a Long of milliseconds and
``StatusCode`` an Integer, the platform's amounts longs, Zalo's ``timestamp`` milliseconds in digits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Form

from schemas.vietnam import LAST_EPOCH_MS
from tests.edges import CUSTOMER, UNIT, Edges, body_of, edges_relay, form, ledger_url

ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def edges(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    workdir = tmp_path_factory.mktemp(f"edges-{request.param}")
    with edges_relay(ledger_url(request.param, request, workdir), redis_url, workdir) as running:
        yield running


@dataclass(frozen=True)
class Row:
    """A request one route cannot take, the answer's status and the field it must name ("" for a route whose
    answer names none: the portal's look-up only says -1)."""

    route: str
    what: str
    request: Callable[[Edges], httpx.Request]
    status: int
    named: str

    def __str__(self) -> str:
        return f"{self.route}: {self.what}"


def intake(change: Callable[[dict[str, Any]], Any]) -> Callable[[Edges], httpx.Request]:
    """A signed intake of one valid event changed by ``change`` (which edits it, or returns the body to send)."""
    def build(edges: Edges) -> httpx.Request:
        event = edges.event(1)  # a dossier.received: its data has a due date
        body = change(event)
        return edges.signed("/v1/events", body if isinstance(body, bytes) else body_of(event))
    return build


def portal(**dossier: Any) -> Callable[[Edges], httpx.Request]:
    def build(edges: Edges) -> httpx.Request:
        pushed = {"madonvi": UNIT, "data": [{**edges.dossier(), **dossier}]}
        return edges.signed("/v1/callbacks/portal", body_of(pushed))
    return build


def postal(**record: Any) -> Callable[[Edges], httpx.Request]:
    def build(edges: Edges) -> httpx.Request:
        return edges.signed("/v1/callbacks/postal", body_of({"CustomerCode": CUSTOMER,
                                                             "data": [{**edges.record(), **record}]}))
    return build


def platform(**fields: Any) -> Callable[[Edges], httpx.Request]:
    def build(edges: Edges) -> httpx.Request:
        return edges.api.build("POST", "/v1/callbacks/payment/platform",
                               content=body_of(edges.platform({**edges.payment(), **fields})),
                               headers={"content-type": "application/json"})
    return build


def vnpay(method: str, **params: str) -> Callable[[Edges], httpx.Request]:
    def build(edges: Edges) -> httpx.Request:
        signed = edges.vnpay({**edges.ipn(), **params})
        if method == "GET":
            return edges.api.build("GET", "/v1/callbacks/payment/vnpay", params=signed)
        return edges.api.build("POST", "/v1/callbacks/payment/vnpay", content=form(signed),
                               headers={"content-type": "application/x-www-form-urlencoded"})
    return build


def lookup(body: bytes) -> Callable[[Edges], httpx.Request]:
    def build(edges: Edges) -> httpx.Request:
        return edges.api.build("POST", "/v1/callbacks/payment/dptracuuthanhtoanhs", content=body,
                               headers={**edges.basic(), "content-type": "application/json"})
    return build


def zalo(change: Callable[[dict[str, Any]], Any]) -> Callable[[Edges], httpx.Request]:
    """A Zalo receipt changed by ``change``, signed over the timestamp as sent (a body not JSON: over "")."""
    def build(edges: Edges) -> httpx.Request:
        event = edges.receipt()
        body = change(event)
        raw = body if isinstance(body, bytes) else body_of(event)
        stamp = event["timestamp"] if not isinstance(body, bytes) else ""
        return edges.api.build("POST", "/v1/callbacks/zalo", content=raw, headers=edges.zalo(raw, str(stamp)))
    return build


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set the dotted ``path`` of a JSON object to ``value``."""
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return change


ROWS = [
    # the intake: 422, every field error with its loc
    Row("intake", "occurred_at 0001-01-01 at +07:00 (year 0 in UTC)",
        intake(put("occurred_at", "0001-01-01T00:00:00+07:00")), 422, "occurred_at"),
    Row("intake", "occurred_at 9999-12-31 at -07:00 (year 10000 in UTC)",
        intake(put("occurred_at", "9999-12-31T23:59:59-07:00")), 422, "occurred_at"),
    Row("intake", "a due date before 1900", intake(put("data.due_at", "1899-12-31T23:59:59Z")), 422, "data.due_at"),
    Row("intake", "occurred_at in Unix milliseconds of year 3000", intake(put("occurred_at", 32503680000000)), 422,
        "occurred_at"),
    Row("intake", "occurred_at in Unix seconds of year 1800", intake(put("occurred_at", -5364662400)), 422,
        "occurred_at"),
    Row("intake", "a NUL in the applicant's name", intake(put("applicant.name", "Nguyễn\x00Văn An")), 422,
        "applicant.name"),
    Row("intake", "a lone surrogate in the applicant's name", intake(put("applicant.name", "Nguyễn \ud800")), 422,
        "applicant.name"),
    Row("intake", "a key that is a lone surrogate", intake(put("applicant.\udfff", "x")), 422, "applicant"),
    Row("intake", "a NUL in the origin", intake(put("origin", "one\x00stop")), 422, "origin"),
    Row("intake", "a dossier code in Arabic-Indic digits",
        intake(lambda e: put("dossier_code", e["dossier_code"].translate(ARABIC))(e)), 422, "dossier_code"),
    Row("intake", "a sequence of 31 digits", intake(put("sequence", 10**30)), 422, "sequence"),
    Row("intake", "a sequence as a string", intake(put("sequence", "١")), 422, "sequence"),
    Row("intake", "a number of 5,000 digits (more than Python's int() reads)",
        intake(lambda e: body_of({**e, "sequence": 0}).replace(b'"sequence": 0', b'"sequence": ' + b"9" * 5000)),
        400, ""),
    Row("intake", "applicant a number", intake(put("applicant", 7)), 422, "applicant"),
    Row("intake", "a body that is not JSON", intake(lambda e: b"{\"event_id\": "), 400, ""),
    Row("intake", "a body that is not UTF-8", intake(lambda e: b"\xff\xfe{}"), 400, ""),
    Row("intake", "a JSON string", intake(lambda e: b"\"dossier\""), 400, ""),
    Row("intake", "JSON nested 100,000 deep", intake(lambda e: b"[" * 100_000 + b"]" * 100_000), 400, ""),
    Row("intake", "an empty batch", intake(lambda e: b"[]"), 422, ""),
    # the portal's push of online dossiers: 400, error_code "03", the fields
    Row("portal", "NgayNopHoSo month 13", portal(NgayNopHoSo="20261399999999"), 400, "data.0.NgayNopHoSo"),
    Row("portal", "NgayNopHoSo in Arabic-Indic digits", portal(NgayNopHoSo="20261120103000".translate(ARABIC)), 400,
        "data.0.NgayNopHoSo"),
    Row("portal", "a NUL in MaHoSo", portal(MaHoSo="000.21.00.H49-261120-\x001"), 400, "data.0.MaHoSo"),
    Row("portal", "a NUL in ChuHoSo", portal(ChuHoSo="Trần\x00Thị Bình"), 400, "data.0.ChuHoSo"),
    Row("portal", "ThuTu over a long", portal(ThuTu=2**63), 400, "data.0.ThuTu"),
    # the post's push of statuses: 400, the fields
    Row("postal", "EventTime of 21 digits", postal(EventTime=10**20), 400, "data.0.EventTime"),
    Row("postal", "EventTime after the year 2999", postal(EventTime=LAST_EPOCH_MS + 1), 400, "data.0.EventTime"),
    Row("postal", "a NUL in OrderNumber", postal(OrderNumber="000.21.00.H49-261120-\x00-KQ"), 400,
        "data.0.OrderNumber"),
    Row("postal", "a NUL in StatusMessage", postal(StatusMessage="Phát\x00"), 400, "data.0.StatusMessage"),
    Row("postal", "StatusCode over an Integer", postal(StatusCode=2**31), 400, "data.0.StatusCode"),
    # the platform's callback: HTTP 200 always (M14), return_code -1 naming the fields
    Row("platform", "transaction_id over the ledger's 60", platform(transaction_id="T" * 61), 200, "transaction_id"),
    Row("platform", "transaction_code over the ledger's 60", platform(transaction_code="K" * 61), 200,
        "transaction_code"),
    Row("platform", "a NUL in transaction_id", platform(transaction_id="EDGES\x00"), 200, "transaction_id"),
    Row("platform", "a NUL in transaction_code", platform(transaction_code="KP\x00"), 200, "transaction_code"),
    Row("platform", "trans_amount over a long", platform(trans_amount=2**63), 200, "trans_amount"),
    Row("platform", "trans_amount in Arabic-Indic digits", platform(trans_amount="٥٠٠٠٠"), 200, "trans_amount"),
    Row("platform", "trans_amount 1e300", platform(trans_amount=1e300), 200, "trans_amount"),
    # the VNPAY-style IPN: HTTP 200, RspCode 99 naming the fields, by GET and by a POSTed form
    *(row for method in ("GET", "POST") for row in (
        Row("vnpay", f"{method}: vnp_PayDate month 13", vnpay(method, vnp_PayDate="20261399999999"), 200,
            "vnp_PayDate"),
        Row("vnpay", f"{method}: vnp_PayDate in Arabic-Indic digits",
            vnpay(method, vnp_PayDate="20261120103000".translate(ARABIC)), 200, "vnp_PayDate"),
        Row("vnpay", f"{method}: vnp_PayDate of year 1", vnpay(method, vnp_PayDate="00010101000000"), 200,
            "vnp_PayDate"),
        Row("vnpay", f"{method}: vnp_Amount of 30 digits", vnpay(method, vnp_Amount="9" * 30), 200, "vnp_Amount"),
        Row("vnpay", f"{method}: vnp_TxnRef over the ledger's 60", vnpay(method, vnp_TxnRef="R" * 61), 200,
            "vnp_TxnRef"),
        Row("vnpay", f"{method}: a NUL in vnp_TxnRef", vnpay(method, vnp_TxnRef="EDGES\x00"), 200, "vnp_TxnRef"),
    )),
    # the portal's look-up: HTTP 200, error_code -1 (its answer names no field)
    Row("lookup", "a NUL in MaHoSo", lookup(body_of({"MaHoSo": "000.21.00.H49-261120-\x00"})), 200, ""),
    Row("lookup", "a lone surrogate in MaHoSo", lookup(b'{"MaHoSo": "\\ud800"}'), 200, ""),
    Row("lookup", "a body that is not JSON", lookup(b"MaHoSo=1"), 200, ""),
    # Zalo's webhook: 400 naming the fields, once the signature is right
    Row("zalo", "a timestamp in superscript digits", zalo(put("timestamp", "²")), 400, "timestamp"),
    Row("zalo", "a timestamp in Arabic-Indic digits", zalo(put("timestamp", "1763625600000".translate(ARABIC))), 400,
        "timestamp"),
    Row("zalo", "a timestamp of 30 digits", zalo(put("timestamp", "9" * 30)), 400, "timestamp"),
    Row("zalo", "a timestamp after the year 2999", zalo(put("timestamp", str(LAST_EPOCH_MS + 1))), 400, "timestamp"),
    Row("zalo", "a tracking_id over the ledger's 64", zalo(put("message.tracking_id", "t" * 65)), 400,
        "message.tracking_id"),
    Row("zalo", "a NUL in the tracking_id", zalo(put("message.tracking_id", "t-\x00")), 400, "message.tracking_id"),
    Row("zalo", "a msg_id over the ledger's 100", zalo(put("message.msg_id", "m" * 101)), 400, "message.msg_id"),
    Row("zalo", "a signed body that is not JSON", zalo(lambda e: b"user_received_message"), 400, "body"),
]


def named(route: str, answer: httpx.Response) -> set[str]:
    """The fields an answer names, in its route's language."""
    body = answer.json()
    if route == "intake":
        return {".".join(str(p) for p in e["loc"][1:] if p) for e in body.get("errors", [])} | {
            ".".join(str(p) for p in e["loc"]) for e in body.get("errors", [])}
    if route == "platform":
        assert body["return_code"] == -1, body
        return set(body["return_msg"].removeprefix("not a payment callback: ").split(", "))
    if route == "vnpay":
        assert body["RspCode"] == "99", body
    if route == "lookup":
        assert body == {"error_code": -1, "message": []}, body
    return set(body.get("fields", []))


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_an_input_the_route_cannot_take_is_refused_naming_the_field_and_changes_nothing(edges: Edges,
                                                                                       row: Row) -> None:
    # given
    before = edges.counts()
    request = row.request(edges)
    # when
    [answer] = edges.api.send([request])
    # then
    assert answer.status_code == row.status, answer.text
    if row.named:
        assert row.named in named(row.route, answer), answer.text
    else:
        named(row.route, answer)
    assert edges.counts() == before


def test_what_is_refused_is_never_echoed(edges: Edges) -> None:
    """A citizen's name, number and phone sent with a field the route refuses are not in its answer."""
    event = edges.event(1)
    event["occurred_at"] = "0001-01-01T00:00:00+07:00"
    event["applicant"]["name"] = "Nguyễn\x00Văn Bí Mật"
    event["applicant"].update(id_number="\x00022190001234", phone="0912\x00345678")
    dossier = {**edges.dossier(), "ChuHoSo": "Trần\x00Thị Kín", "SoDienThoai": "0987\x00654321",
               "NgayNopHoSo": "20261399999999"}
    answers = edges.api.send([
        edges.signed("/v1/events", body_of(event)),
        edges.signed("/v1/callbacks/portal", body_of({"madonvi": UNIT, "data": [dossier]})),
    ])
    assert [a.status_code for a in answers] == [422, 400]
    for answer in answers:
        for secret in ("Văn Bí Mật", "022190001234", "345678", "Thị Kín", "654321"):
            assert secret not in json.dumps(answer.json(), ensure_ascii=False)


def test_fastapis_own_422_does_not_echo_what_was_sent(edges: Edges) -> None:
    """FastAPI answers parameters it cannot read with their ``input`` (a form's: the whole form, a password
    included); the app's answer names the fields only. A route with typed parameters, as any route may declare."""
    router = APIRouter()

    @router.post("/_test/typed")
    def typed(day: date, name: Annotated[str, Form()], phone: Annotated[int, Form()]) -> dict[str, str]:
        return {"day": str(day)}

    edges.api.app.include_router(router)
    sent = {"name": "Nguyễn Văn Bí Mật", "phone": "0912-345-678"}
    [answer] = edges.api.send([edges.api.build("POST", "/_test/typed", params={"day": "0912345678"}, data=sent)])
    assert answer.status_code == 422
    for value in ("Bí Mật", "0912345678", "0912-345-678"):
        assert value not in answer.text
    assert answer.json()["error"] == "validation failed"
    assert sorted(tuple(e["loc"]) for e in answer.json()["detail"]) == [("body", "phone"), ("query", "day")]


def test_the_limits_themselves_are_taken(edges: Edges) -> None:
    """The last values each contract allows: a time in 2999, the post's last millisecond, a long amount's digits."""
    event = edges.event(1)
    event["occurred_at"] = "2999-12-31T23:59:59-07:00"  # year 3000 in UTC, still inside the calendar
    event["data"]["due_at"] = "1900-01-01T00:00:00+07:00"
    record = {**edges.record(), "EventTime": LAST_EPOCH_MS}
    receipt = edges.receipt()
    receipt["timestamp"] = str(LAST_EPOCH_MS)
    raw = body_of(receipt)
    answers = edges.api.send([
        edges.signed("/v1/events", body_of(event)),
        edges.signed("/v1/callbacks/postal", body_of({"CustomerCode": CUSTOMER, "data": [record]})),
        edges.api.build("POST", "/v1/callbacks/zalo", content=raw, headers=edges.zalo(raw, receipt["timestamp"])),
    ])
    assert [a.status_code for a in answers] == [202, 200, 200], [a.text for a in answers]
    assert answers[1].json()["stored"] == 1 and answers[2].json()["status"] == "recorded"


def test_every_answer_carries_the_request_id_a_refusal_too(edges: Edges) -> None:
    given = edges.api.build("GET", "/healthz", headers={"x-request-id": "req-edges-1"})
    refused = edges.signed("/v1/events", b"[]")
    ok, empty = edges.api.send([given, refused])
    assert ok.headers["x-request-id"] == "req-edges-1"
    assert empty.status_code == 422 and len(empty.headers["x-request-id"]) == 16


def test_a_content_length_in_other_digits_is_no_declared_length(edges: Edges) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` fails: the body's limit is then counted as it streams."""
    body = body_of(edges.event(0))
    signed = edges.signed("/v1/events", body)
    headers = [(k, v) for k, v in signed.headers.raw if k.lower() != b"content-length"] + [(b"content-length", b"\xb2")]
    [answer] = edges.api.send([httpx.Request("POST", signed.url, headers=headers, content=body)])
    assert answer.status_code == 202, answer.text
