"""The webhook connector's answer table, row by row, against a real server on loopback; the requests are the
adapter's signed ones, as the webhook deliverer puts the two together."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.types import Receive, Scope, Send

from adapters.webhook import webhook_body, webhook_headers
from config.options import OptionsError, resolve
from config.routing import Destination
from config.settings import Settings
from connectors.base import ConnectorResult, DeliveryError, Permanent, Retryable, build_http_client
from connectors.webhook import WebhookConnector
from sandbox.workload import generate_day, sample
from schemas.events import canonical_json, parse_event
from services.webhook import WebhookDeliverer, WebhookOptions
from store import intake
from store.deliveries import Claimed, claim
from store.streams import DestinationRules
from store.tables import deliveries, events
from tests.harness import bare_context, free_port

SECRET = "whsec_" + base64.b64encode(b"subscriber-secret-of-32-bytes!!!").decode()
EVENT = sample(1, seed=5)[0]
MODEL = parse_event(EVENT)  # what a claim hands the deliverer
KEY = f"{EVENT['event_id']}:warehouse"


class _DropMidResponse(Response):
    """Promise a body, send part of it, then stop: the connection closes mid-response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"receipt_id": "rc', "more_body": True})


def subscriber_app() -> FastAPI:
    app = FastAPI()
    app.state.seen = []

    @app.post("/status/{code}")
    async def status(code: int, retry_after: str | None = None) -> Response:
        headers = {"Retry-After": retry_after} if retry_after else None
        if code == 204:
            return Response(status_code=204)
        if code < 300:
            return JSONResponse({"status": "accepted", "receipt_id": f"rcpt-{code}"}, status_code=code)
        return JSONResponse({"error": f"answer {code}"}, status_code=code, headers=headers)

    @app.post("/charset/{name}")
    async def charset(name: str) -> Response:  # a 2xx body in a named charset (or text, not JSON, with "text")
        if name == "text":
            return Response("nhận hồ sơ: đã tiếp nhận", media_type="text/plain")
        note = "đã tiếp nhận" if name.startswith("utf") else "reçu"  # what the charset can hold
        body = f'{{"receipt_id": "biên-nhận-1", "note": "{note}"}}'.encode(name, errors="replace")
        return Response(body, headers={"Content-Type": f"application/json; charset={name}"})

    @app.post("/gzip/{code}")
    async def gzipped(code: int) -> Response:  # an answer compressed whatever its status
        return Response(gzip.compress(json.dumps({"error": f"answer {code}"}).encode()), status_code=code,
                        media_type="application/json", headers={"Content-Encoding": "gzip"})

    @app.post("/slow")
    async def slow() -> Response:
        await asyncio.sleep(3)
        return JSONResponse({"receipt_id": "too-late"})

    @app.post("/drop")
    async def drop() -> Response:
        return _DropMidResponse()

    app.state.peers = []
    app.state.gate = {"expected": 0, "seen": 0, "open": None}

    @app.post("/peer")
    async def peer(request: Request) -> Response:  # which connection each request came on
        assert request.client is not None
        app.state.peers.append(request.client.port)
        return JSONResponse({"receipt_id": str(request.client.port)})

    @app.post("/together")
    async def together(request: Request) -> Response:
        # each request waits until "expected" are in at once: answered "together" only if the batches ran at once
        gate = app.state.gate
        gate["seen"] += 1
        if gate["seen"] >= gate["expected"]:
            gate["open"].set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate["open"].wait(), 3)
        return JSONResponse({"receipt_id": json.loads(await request.body())["n"], "together": gate["open"].is_set()})

    @app.post("/verify")
    async def verify(request: Request) -> Response:
        body = await request.body()
        try:
            Webhook(SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        app.state.seen.append({"headers": dict(request.headers), "body": json.loads(body), "raw": body})
        return JSONResponse({"id": "verified-1"})

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FastAPI]]:
    from tests.servers import run_asgi

    app = subscriber_app()
    with run_asgi(app) as url:
        yield url, app


@pytest.fixture
def base_url(server: tuple[str, FastAPI]) -> str:
    return server[0]


def connector(url: str, read: float = 5.0) -> WebhookConnector:
    return WebhookConnector(url, build_http_client(connect=2.0, read=read, max_connections=4))


def signed_post(c: WebhookConnector, secret: str = SECRET) -> ConnectorResult:
    """What the webhook deliverer does: the adapter's body and signed headers, posted by the connector."""
    body = webhook_body(MODEL)
    return c.post(body, webhook_headers(MODEL, KEY, secret, body))


def send(url: str, read: float = 5.0) -> ConnectorResult:
    c = connector(url, read)
    try:
        return signed_post(c)
    finally:
        c.close()


def failure(url: str, read: float = 5.0) -> DeliveryError:
    with pytest.raises(DeliveryError) as raised:
        send(url, read)
    return raised.value


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(("code", "ref"), [(200, "rcpt-200"), (201, "rcpt-201"), (204, None)])
def test_2xx_is_delivered_with_the_receipt_as_external_ref(base_url: str, code: int, ref: str | None) -> None:
    result = send(f"{base_url}/status/{code}")

    assert result.status_code == code
    assert result.external_ref == ref


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504])
def test_busy_or_failing_subscriber_is_retryable(base_url: str, code: int) -> None:
    error = failure(f"{base_url}/status/{code}")

    assert isinstance(error, Retryable)
    assert error.status_code == code
    assert f"answer {code}" in (error.excerpt or "")
    assert error.retry_after is None


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 409, 410, 422])
def test_rejections_are_permanent(base_url: str, code: int) -> None:
    error = failure(f"{base_url}/status/{code}")

    assert isinstance(error, Permanent)
    assert error.status_code == code
    assert str(code) in error.reason


def test_retry_after_in_delta_seconds(base_url: str) -> None:
    error = failure(f"{base_url}/status/429?retry_after=120")

    assert isinstance(error, Retryable)
    assert error.retry_after == 120.0


def test_retry_after_as_an_http_date(base_url: str) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)

    error = failure(f"{base_url}/status/503?retry_after={when}")

    assert isinstance(error, Retryable)
    assert error.retry_after is not None
    assert 295 <= error.retry_after <= 300


def test_retry_after_in_the_past_or_garbage_is_no_wait(base_url: str) -> None:
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)

    assert failure(f"{base_url}/status/503?retry_after={past}").retry_after == 0.0
    assert failure(f"{base_url}/status/503?retry_after=soon").retry_after is None


# --------------------------------------------------------------------------- transport weather


def test_read_timeout_is_retryable(base_url: str) -> None:
    started = time.monotonic()

    error = failure(f"{base_url}/slow", read=0.3)

    assert isinstance(error, Retryable)
    assert "timeout" in error.reason
    assert time.monotonic() - started < 2.5


def test_connection_refused_is_retryable() -> None:
    error = failure(f"http://127.0.0.1:{free_port()}/events")

    assert isinstance(error, Retryable)
    assert "connection failed" in error.reason


def test_connection_dropped_mid_response_is_retryable(base_url: str) -> None:
    error = failure(f"{base_url}/drop")

    assert isinstance(error, Retryable)
    assert isinstance(error.__cause__, httpx.HTTPError)


# --------------------------------------------------------------------------- the request itself


def test_request_is_signed_the_standard_webhooks_way_with_the_idempotency_key(
    server: tuple[str, FastAPI],
) -> None:
    # given
    url, app = server
    app.state.seen.clear()
    # when
    result = send(f"{url}/verify")
    # then: the reference package verified it on the server
    assert result.external_ref == "verified-1"
    [request] = app.state.seen
    assert request["headers"]["idempotency-key"] == KEY
    assert request["headers"]["webhook-id"] == KEY
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-motcua-event-type"] == EVENT["type"]
    assert abs(int(request["headers"]["webhook-timestamp"]) - time.time()) < 10
    assert request["body"] == EVENT


def test_a_subscriber_holding_another_secret_refuses_the_request(base_url: str) -> None:
    other = WebhookConnector(f"{base_url}/verify", build_http_client(2.0, 5.0))
    try:
        with pytest.raises(Permanent) as raised:
            signed_post(other, "whsec_" + base64.b64encode(b"x" * 32).decode())
    finally:
        other.close()
    assert raised.value.status_code == 401


@pytest.mark.parametrize("url", ["ftp://example.org/events", "127.0.0.1:8000/events", "file:///etc/passwd", ""])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookConnector(url, build_http_client(1.0, 1.0))


# --------------------------------------------------------------------------- the deliverer that composes them


def subscriber(url: str) -> Destination:
    return Destination(name="warehouse", kind="webhook", options={"url": url, "secret_env": "MOTCUA_T_WEBHOOK_SECRET"})


def test_the_deliverer_signs_with_the_subscribers_secret_and_posts(
    server: tuple[str, FastAPI], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given
    url, app = server
    app.state.seen.clear()
    monkeypatch.setenv("MOTCUA_T_WEBHOOK_SECRET", SECRET)
    dest = subscriber(f"{url}/verify")
    context = bare_context(dest, settings=Settings(worker_concurrency=2))
    deliverer = WebhookDeliverer(dest, resolve(dest, WebhookOptions), context)
    # when
    try:
        result = deliverer.deliver(MODEL, KEY)
    finally:
        deliverer.close()
    # then: the reference package verified it on the server
    assert result.external_ref == "verified-1"
    assert [request["body"] for request in app.state.seen] == [EVENT]
    assert [request["raw"] for request in app.state.seen] == [canonical_json(EVENT).encode("utf-8")]


def test_the_body_is_the_text_the_ledger_stores_byte_for_byte(engine: Engine) -> None:
    # given: a day of events stored by the intake (Vietnamese names, amounts, times), routed to a subscriber
    day = generate_day(40, day=date(2026, 11, 20), seed=9)
    rules = {"warehouse": DestinationRules("warehouse", ordered=False, deadline_seconds=3600, max_attempts=5)}
    now = datetime.now(UTC)
    intake.ingest_and_route(engine, day, now, lambda payload: ["warehouse"], rules)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, events.c.payload)
                            .join(events, events.c.id == deliveries.c.event_pk)).all()
    assert len(rows) == len(day)
    for delivery_id, text in rows:
        # when: the engine claims the delivery and the adapter builds the body from the model it got
        claimed = claim(engine, delivery_id, rules["warehouse"], now, 60.0, 60.0)
        assert isinstance(claimed, Claimed) and claimed.event is not None
        # then: the subscriber receives exactly what the ledger holds
        assert webhook_body(claimed.event) == text.encode("utf-8"), claimed.event.type


def test_a_missing_secret_is_refused_with_the_options_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # a worker refuses to start on it (cli: _refuse_unusable_destinations), instead of dead letters later
    monkeypatch.delenv("MOTCUA_T_WEBHOOK_SECRET", raising=False)

    with pytest.raises(OptionsError, match="destination warehouse: set MOTCUA_T_WEBHOOK_SECRET"):
        resolve(subscriber("https://example.org/events"), WebhookOptions)


# --------------------------------------------------------------------------- narrow mapping (respx)


@pytest.mark.parametrize(("raised", "expected", "words"), [
    (httpx.ConnectTimeout("connect"), Retryable, "timeout"),
    (httpx.WriteTimeout("write"), Retryable, "timeout"),
    (httpx.PoolTimeout("pool"), Retryable, "timeout"),
    (httpx.ReadError("reset by peer"), Retryable, "connection failed"),
    (httpx.RemoteProtocolError("server disconnected"), Retryable, "connection failed"),
    (httpx.UnsupportedProtocol("no such scheme"), Permanent, "bad destination URL"),
    (httpx.DecodingError("bad gzip"), Retryable, "transport error"),
])
@respx.mock
def test_transport_errors_map_to_our_classes(raised: Exception, expected: type[DeliveryError], words: str) -> None:
    respx.post("https://subscriber.example/events").mock(side_effect=raised)

    error = failure("https://subscriber.example/events")

    assert type(error) is expected
    assert words in error.reason
    assert error.__cause__ is raised


@pytest.mark.parametrize(("response", "ref"), [
    (httpx.Response(200, json={"id": 42}), "42"),
    (httpx.Response(200, json={"receipt_id": "r-1", "id": "other"}), "r-1"),
    (httpx.Response(200, json=["not", "an", "object"]), None),
    (httpx.Response(200, text="OK"), None),
    (httpx.Response(200, content=b"{broken", headers={"content-type": "application/json"}), None),
    (httpx.Response(200, json={"receipt_id": "x" * 500}), "x" * 200),
])
@respx.mock
def test_external_ref_is_read_from_a_json_body_only(response: httpx.Response, ref: str | None) -> None:
    respx.post("https://subscriber.example/events").mock(return_value=response)

    assert send("https://subscriber.example/events").external_ref == ref


@respx.mock
def test_unlisted_statuses_follow_the_generic_table() -> None:
    route = respx.post("https://subscriber.example/events")
    expectations: dict[int, Any] = {418: Permanent, 451: Permanent, 507: Retryable, 599: Retryable}
    for code, expected in expectations.items():
        route.mock(return_value=httpx.Response(code, text="x" * 5000))
        error = failure("https://subscriber.example/events")
        assert type(error) is expected, code
        assert error.excerpt is not None
        assert len(error.excerpt) <= 1001


# --------------------------------------------------------------------------- the batch path


BATCH_ROWS = ["/status/200", "/status/204", "/status/429?retry_after=120", "/status/503", "/status/401",
              "/status/404", "/status/422", "/drop", "/slow", "/charset/utf-8", "/charset/utf-16",
              "/charset/iso-8859-1", "/charset/text"]


def _summary(answer: ConnectorResult | DeliveryError) -> tuple[Any, ...]:
    if isinstance(answer, DeliveryError):
        return (type(answer).__name__, answer.status_code, answer.retry_after, "timeout" in answer.reason)
    return ("delivered", answer.status_code, answer.external_ref, answer.excerpt)


def test_the_batch_path_answers_every_row_as_one_post_does(base_url: str) -> None:
    # given the table's rows, each once through post() (httpx) ...
    singles = []
    for path in BATCH_ROWS:
        try:
            singles.append(_summary(send(f"{base_url}{path}", read=0.5)))
        except DeliveryError as exc:
            singles.append(_summary(exc))
    # ... and all at once through post_many() (the engine's batch path, libcurl's multi interface)
    body = webhook_body(MODEL)
    batched = []
    for path in BATCH_ROWS:
        c = WebhookConnector(f"{base_url}{path}", build_http_client(connect=2.0, read=0.5, max_connections=4))
        try:
            [(answer, took)] = c.post_many([(body, webhook_headers(MODEL, KEY, SECRET, body))], deadline=10)
        finally:
            c.close()
        assert took >= 0
        batched.append(_summary(answer))
    # then each row is classified alike: class, status, Retry-After, timeout; a delivery's reference and excerpt
    assert batched == singles
    assert batched[-4:] == [
        ("delivered", 200, "biên-nhận-1", '{"receipt_id": "biên-nhận-1", "note": "đã tiếp nhận"}'),
        ("delivered", 200, "biên-nhận-1", '{"receipt_id": "biên-nhận-1", "note": "đã tiếp nhận"}'),
        # JSON is Unicode (RFC 8259): a Latin-1 body has no reference, on both paths, and its excerpt is as sent
        ("delivered", 200, None, '{"receipt_id": "biên-nh?n-1", "note": "reçu"}'),
        ("delivered", 200, None, "nhận hồ sơ: đã tiếp nhận"),
    ]


def test_the_batch_path_sends_many_at_once_each_signed(server: tuple[str, FastAPI]) -> None:
    url, app = server
    app.state.seen.clear()
    models = [parse_event(e) for e in sample(20, seed=9)[:20]]
    c = WebhookConnector(f"{url}/verify", build_http_client(connect=2.0, read=5.0, max_connections=8), pool=8)
    try:
        requests = []
        for model in models:
            body = webhook_body(model)
            requests.append((body, webhook_headers(model, f"{model.event_id}:warehouse", SECRET, body)))
        answers = c.post_many(requests, deadline=10)
    finally:
        c.close()
    assert [type(a).__name__ for a, _ in answers] == ["ConnectorResult"] * 20
    assert sorted(s["body"]["event_id"] for s in app.state.seen) == sorted(m.event_id for m in models)


def test_the_batch_path_refused_connection_is_retryable() -> None:
    c = WebhookConnector(f"http://127.0.0.1:{free_port()}/events", build_http_client(2.0, 1.0, 2))
    try:
        [(answer, _)] = c.post_many([(b"{}", {"Content-Type": "application/json"})], deadline=5)
    finally:
        c.close()
    assert isinstance(answer, Retryable)
    assert "connection failed" in answer.reason


def test_the_batch_path_reads_the_proxy_variables_as_the_single_path_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.webhook import env_proxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("http://10.0.0.5/hook") is None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "lgsp.local,127.0.0.2")
    assert env_proxy("http://10.0.0.5/hook") == "http://127.0.0.1:3128"
    assert env_proxy("https://10.0.0.5/hook") is None  # no HTTPS_PROXY
    assert env_proxy("http://api.lgsp.local/hook") is None
    assert env_proxy("http://127.0.0.2:8000/hook") is None
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:3129")
    assert env_proxy("https://10.0.0.5/hook") == "http://127.0.0.1:3129"


class _ProxyStub:
    """An HTTP proxy on loopback that forwards nothing: it records each request line it gets (a proxy's is in
    absolute form, ``POST http://host/path HTTP/1.1``) and answers 200 with a receipt of its own."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True, name="proxy-stub").start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith(
                    "content-length:")), 0)
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
                self.lines.append(lines[0])
                answer = b'{"receipt_id": "via-proxy"}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def proxy_stub() -> Iterator[_ProxyStub]:
    stub = _ProxyStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def silent_url() -> Iterator[str]:
    """A server that never answers: its socket listens (the kernel completes the handshake) and never accepts."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/events"


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _signed_requests(count: int) -> list[tuple[bytes, dict[str, str]]]:
    body = webhook_body(MODEL)
    return [(body, webhook_headers(MODEL, KEY, SECRET, body))] * count


@pytest.mark.parametrize("code", [200, 503])
def test_a_compressed_answer_reads_alike_on_both_paths(base_url: str, code: int) -> None:
    # given an answer gzip-compressed, read once by post() (httpx decodes it) ...
    try:
        single: ConnectorResult | DeliveryError = send(f"{base_url}/gzip/{code}")
    except DeliveryError as exc:
        single = exc
    # ... and once by post_many() (libcurl decodes it; the table must not decode it again)
    c = connector(f"{base_url}/gzip/{code}")
    try:
        [(batched, _)] = c.post_many(_signed_requests(1), deadline=5)
    finally:
        c.close()
    # then
    assert _summary(batched) == _summary(single)
    assert batched.excerpt == f'{{"error": "answer {code}"}}'


def test_the_batch_deadline_cuts_a_call_that_never_answers(silent_url: str) -> None:
    # given a subscriber that takes the connection and never answers, and a read timeout longer than the deadline
    c = connector(silent_url, read=30.0)
    started = time.monotonic()
    # when
    try:
        [(answer, took)] = c.post_many(_signed_requests(1), deadline=0.5)
    finally:
        c.close()
    # then the deadline ended it, as a timeout
    assert isinstance(answer, Retryable)
    assert "timeout" in answer.reason
    assert 450 <= took < 1500
    assert time.monotonic() - started < 2.0


def test_the_batch_path_reuses_its_connections_from_one_batch_to_the_next(server: tuple[str, FastAPI]) -> None:
    # given
    url, app = server
    app.state.peers.clear()
    c = connector(f"{url}/peer")
    # when two batches of 5 go one after the other
    try:
        first = c.post_many(_signed_requests(5), deadline=10)
        second = c.post_many(_signed_requests(5), deadline=10)
    finally:
        c.close()
    # then the second came on the first's connections: no new one opened
    assert [type(a) for a, _ in first + second] == [ConnectorResult] * 10
    assert len(app.state.peers) == 10
    assert set(app.state.peers[5:]) <= set(app.state.peers[:5])


def test_two_threads_posting_batches_at_once_each_get_their_own_answers(server: tuple[str, FastAPI]) -> None:
    # given one connector, two threads, 8 calls each, whose answers echo what each call sent
    url, app = server
    app.state.gate = {"expected": 16, "seen": 0, "open": asyncio.Event()}
    c = WebhookConnector(f"{url}/together", build_http_client(connect=2.0, read=5.0, max_connections=8), pool=8)
    answers: dict[str, list[tuple[ConnectorResult | DeliveryError, float]]] = {}
    reported: dict[str, list[tuple[int, Any, int]]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def batch(name: str) -> None:
        requests = [(json.dumps({"n": f"{name}-{i}"}).encode(), {"Content-Type": "application/json"})
                    for i in range(8)]
        start.wait()
        answers[name] = c.post_many(requests, deadline=10, on_end=lambda i, outcome, _ms: reported[name].append(
            (i, outcome, threading.get_ident())))

    threads = [threading.Thread(target=batch, args=(name,)) for name in ("a", "b")]
    # when
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    finally:
        c.close()
    # then each thread got its own answers, in its order, and the 16 calls were at the server at once
    for name, thread in zip(("a", "b"), threads, strict=True):
        assert [a.external_ref for a, _ in answers[name]] == [f"{name}-{i}" for i in range(8)]  # type: ignore[union-attr]
        assert all('"together":true' in (a.excerpt or "") for a, _ in answers[name])
        # ... and each end was reported once, in the thread that posted, with what the list returned
        assert sorted(i for i, _, _ in reported[name]) == list(range(8))
        assert {ident for _, _, ident in reported[name]} == {thread.ident}
        assert all(outcome is answers[name][i][0] for i, outcome, _ in reported[name])


def test_the_batch_path_goes_through_the_proxy_the_environment_names(
    proxy_stub: _ProxyStub, no_proxy_variables: pytest.MonkeyPatch,
) -> None:
    # given HTTP_PROXY naming the stub, and a subscriber address nobody listens on (the proxy answers for it)
    no_proxy_variables.setenv("HTTP_PROXY", proxy_stub.url)
    proxy_stub.lines.clear()
    target = f"http://127.0.0.1:{free_port()}/hook"
    c = connector(target)
    # when
    try:
        [(answer, _)] = c.post_many(_signed_requests(1), deadline=5)
    finally:
        c.close()
    # then the request went to the proxy, in absolute form
    assert isinstance(answer, ConnectorResult)
    assert answer.external_ref == "via-proxy"
    assert proxy_stub.lines == [f"POST {target} HTTP/1.1"]


def test_the_batch_path_goes_direct_when_no_proxy_applies_whatever_libcurl_would_read(
    server: tuple[str, FastAPI], proxy_stub: _ProxyStub, no_proxy_variables: pytest.MonkeyPatch,
) -> None:
    # given the proxy variables libcurl reads by itself (http_proxy, lower case) naming the stub, and NO_PROXY
    # keeping the subscriber out of it, as env_proxy reads them
    url, _ = server
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        no_proxy_variables.setenv(name, proxy_stub.url)
    no_proxy_variables.setenv("NO_PROXY", "127.0.0.1")
    proxy_stub.lines.clear()
    c = connector(f"{url}/status/200")
    # when
    try:
        [(answer, _)] = c.post_many(_signed_requests(1), deadline=5)
    finally:
        c.close()
    # then the subscriber answered, and the proxy saw nothing
    assert isinstance(answer, ConnectorResult)
    assert answer.external_ref == "rcpt-200"
    assert proxy_stub.lines == []


def test_a_batch_after_close_runs_on_connections_of_its_own(server: tuple[str, FastAPI]) -> None:
    # given a connector that has posted a batch, then was closed
    url, app = server
    app.state.peers.clear()
    c = connector(f"{url}/peer")
    c.post_many(_signed_requests(1), deadline=5)
    c.close()
    # when two more batches go (a deliverer's last drain, still running as the routing reloads)
    try:
        after = [c.post_many(_signed_requests(1), deadline=5) for _ in range(2)]
    finally:
        c.close()
    # then each is answered, on a new connection closed as it ended: nothing is kept past close()
    assert [type(a) for [(a, _)] in after] == [ConnectorResult, ConnectorResult]
    assert len(app.state.peers) == 3
    assert len(set(app.state.peers)) == 3
