"""The batch client on libcurl's multi interface (``connectors/curl.py``): its error table row by row, the
request as the subscriber gets it, the answer as read, and the read timeout, against real servers on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import os
import resource
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pycurl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from connectors.base import DeliveryError, Permanent, Retryable, map_transport_errors
from connectors.curl import Answer, CurlBatchClient, transport_error
from tests.harness import free_port


def app() -> FastAPI:
    served = FastAPI()
    served.state.peers = []

    @served.post("/echo")
    async def echo(request: Request) -> Response:  # what arrived: headers, body, and on which connection
        assert request.client is not None
        served.state.peers.append(request.client.port)
        body = await request.body()
        return JSONResponse({"headers": dict(request.headers), "size": len(body), "body": body.hex()[:64]})

    @served.post("/trickle")
    async def trickle(stall: bool = False) -> Response:  # a chunk every 0.2 s, or a first chunk and then nothing
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(6):
                yield b"x" * 10
                await asyncio.sleep(3 if stall else 0.2)

        return StreamingResponse(chunks(), media_type="text/plain")

    @served.post("/gzip")
    async def gzipped() -> Response:
        return Response(gzip.compress("đã tiếp nhận".encode()), media_type="text/plain; charset=utf-8",
                        headers={"Content-Encoding": "gzip"})

    return served


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FastAPI]]:
    from tests.servers import run_asgi

    served = app()
    with run_asgi(served) as url:
        yield url, served


@pytest.fixture
def base_url(server: tuple[str, FastAPI]) -> str:
    return server[0]


@pytest.fixture(scope="module")
def client() -> Iterator[CurlBatchClient]:
    batch = CurlBatchClient(4, connect=2.0, read=5.0)
    yield batch
    batch.close()


class _Canned:
    """A loopback server that answers every request with the same bytes and closes the connection."""

    def __init__(self, answer: bytes) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        self._answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                conn.sendall(self._answer)

    def close(self) -> None:
        self._listener.close()


def one(client: CurlBatchClient, url: str, body: bytes = b"{}", headers: dict[str, str] | None = None,
        deadline: float = 5.0) -> tuple[Answer | DeliveryError, float]:
    [ended] = client.post_many(url, [(body, {"Content-Type": "application/json"} if headers is None else headers)],
                               deadline)
    return ended


def answer(client: CurlBatchClient, url: str, **kwargs: object) -> Answer:
    got, _ = one(client, url, **kwargs)  # type: ignore[arg-type]
    assert isinstance(got, Answer), got
    return got


# --------------------------------------------------------------------------- the error table


@pytest.mark.parametrize(("code", "expected", "words"), [
    (pycurl.E_OPERATION_TIMEDOUT, Retryable, "timeout"),
    (pycurl.E_COULDNT_CONNECT, Retryable, "connection failed"),
    (pycurl.E_COULDNT_RESOLVE_HOST, Retryable, "connection failed"),
    (pycurl.E_COULDNT_RESOLVE_PROXY, Retryable, "connection failed"),
    (pycurl.E_SEND_ERROR, Retryable, "connection failed"),
    (pycurl.E_RECV_ERROR, Retryable, "connection failed"),
    (pycurl.E_GOT_NOTHING, Retryable, "connection failed"),
    (pycurl.E_PARTIAL_FILE, Retryable, "connection failed"),
    (pycurl.E_SSL_CONNECT_ERROR, Retryable, "connection failed"),
    (pycurl.E_PEER_FAILED_VERIFICATION, Retryable, "connection failed"),
    (8, Retryable, "connection failed"),  # CURLE_WEIRD_SERVER_REPLY
    (97, Retryable, "connection failed"),  # CURLE_PROXY
    (pycurl.E_URL_MALFORMAT, Permanent, "bad destination URL"),
    (pycurl.E_UNSUPPORTED_PROTOCOL, Permanent, "bad destination URL"),
    (61, Retryable, "HTTP transport error"),  # CURLE_BAD_CONTENT_ENCODING: httpx's DecodingError
    (pycurl.E_WRITE_ERROR, Retryable, "HTTP transport error"),
])
def test_curl_errors_map_to_the_classes_httpx_errors_get(code: int, expected: type[DeliveryError],
                                                         words: str) -> None:
    error = transport_error(code, "what libcurl said")

    assert type(error) is expected
    assert error.reason.startswith(words)
    assert f"curl error {code}: what libcurl said" in error.reason


def test_a_refused_connection_fails_to_connect(client: CurlBatchClient) -> None:
    error, _ = one(client, f"http://127.0.0.1:{free_port()}/hook")

    assert isinstance(error, Retryable)
    assert "connection failed" in error.reason


@pytest.mark.parametrize("url", ["http://[::1/hook", "nosuch://127.0.0.1/hook"])
def test_a_url_libcurl_cannot_use_is_permanent(client: CurlBatchClient, url: str) -> None:
    error, _ = one(client, url)

    assert isinstance(error, Permanent)
    assert "bad destination URL" in error.reason


@pytest.fixture(scope="module")
def untrusted_tls() -> Iterator[str]:
    """A TLS server on loopback whose certificate no bundle trusts (self-signed): handshakes, then closes."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory() as folder:
        pem = Path(folder) / "server.pem"
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):  # the client refused the certificate
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://localhost:{listener.getsockname()[1]}/hook"
    listener.close()


def test_a_certificate_the_bundle_does_not_trust_fails_to_connect_as_on_the_single_path(
    client: CurlBatchClient, untrusted_tls: str,
) -> None:
    # given the single path's verdict (httpx: a ConnectError in the handshake)
    with pytest.raises(DeliveryError) as single, map_transport_errors():
        httpx.post(untrusted_tls, content=b"{}", timeout=5)
    # when
    error, _ = one(client, untrusted_tls)
    # then the same class and words, from libcurl's certificate check
    assert isinstance(error, Retryable) and isinstance(single.value, Retryable)
    assert "connection failed" in error.reason and "connection failed" in single.value.reason
    assert f"curl error {pycurl.E_PEER_FAILED_VERIFICATION}" in error.reason


# --------------------------------------------------------------------------- the request


def test_the_request_carries_its_headers_and_body_and_none_of_libcurls_own(
    client: CurlBatchClient, base_url: str,
) -> None:
    # given a body past libcurl's 1 MiB Expect threshold, with a NUL in it, and no Content-Type
    body = b"\x00" + b"a" * (1 << 21)
    # when
    got = answer(client, f"{base_url}/echo", body=body, headers={"X-Motcua-Event-Type": "dossier.received",
                                                                "X-Empty": ""})
    # then
    seen = json.loads(got.body)
    assert seen["size"] == len(body)
    assert seen["body"].startswith("0061")
    headers = seen["headers"]
    assert headers["x-motcua-event-type"] == "dossier.received"
    assert headers["x-empty"] == ""
    assert headers["user-agent"] == "motcua-relay/0.1"
    assert "expect" not in headers  # no 100-continue wait
    assert "content-type" not in headers  # not libcurl's form type: httpx sends raw content without one


def test_a_header_with_a_line_break_is_refused_and_the_rest_of_the_batch_goes(
    client: CurlBatchClient, base_url: str,
) -> None:
    good = {"Content-Type": "application/json"}
    bad = {"Content-Type": "application/json", "X-Event": "a\r\nX-Injected: 1"}

    ended = client.post_many(f"{base_url}/echo", [(b"{}", bad), (b"{}", good)], deadline=5)

    refused, _ = ended[0]
    assert isinstance(refused, Permanent)
    assert "X-Event" in refused.reason
    delivered, _ = ended[1]
    assert isinstance(delivered, Answer) and delivered.status == 200


def test_more_calls_than_connections_wait_for_one(server: tuple[str, FastAPI]) -> None:
    # given a client of 2 connections
    url, served = server
    served.state.peers.clear()
    narrow = CurlBatchClient(2, connect=2.0, read=5.0)
    # when a batch of 6 goes
    try:
        ended = narrow.post_many(f"{url}/echo", [(b"{}", {})] * 6, deadline=5)
    finally:
        narrow.close()
    # then all are answered, on 2 connections
    assert [a.status for a, _ in ended if isinstance(a, Answer)] == [200] * 6
    assert len(served.state.peers) == 6
    assert len(set(served.state.peers)) == 2


# --------------------------------------------------------------------------- the answer


def test_the_answer_is_the_last_one_after_a_100_continue() -> None:
    server = _Canned(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                     b"HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\n"
                     b"X-Folded: one\r\n two\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    batch = CurlBatchClient(1, connect=2.0, read=5.0)
    try:
        got = answer(batch, server.url)
    finally:
        batch.close()
        server.close()
    assert got.status == 201
    assert got.body == b"{}"
    assert got.header("content-type") == "application/json; charset=utf-8"
    assert got.header("x-interim") is None
    assert [name for name, _ in got.headers] == ["Content-Type", "X-Folded", "Content-Length", "Connection"]
    assert dict(got.headers)["X-Folded"] == "one two"


def test_a_compressed_answer_is_read_decoded(client: CurlBatchClient, base_url: str) -> None:
    got = answer(client, f"{base_url}/gzip")

    assert got.header("content-encoding") == "gzip"
    assert got.body.decode() == "đã tiếp nhận"


# --------------------------------------------------------------------------- the read timeout


def test_an_answer_that_keeps_coming_is_not_cut_by_the_read_timeout(base_url: str) -> None:
    # given a read timeout of 0.5 s and an answer that takes 1.2 s, a chunk every 0.2 s
    batch = CurlBatchClient(1, connect=2.0, read=0.5)
    try:
        got = answer(batch, f"{base_url}/trickle")
    finally:
        batch.close()
    assert got.body == b"x" * 60


def test_an_answer_that_stops_coming_is_cut_by_the_read_timeout(base_url: str) -> None:
    # given a read timeout of 0.5 s and an answer whose first chunk comes, then nothing for 3 s
    batch = CurlBatchClient(1, connect=2.0, read=0.5)
    started = time.monotonic()
    try:
        error, _ = one(batch, f"{base_url}/trickle?stall=true", deadline=10)
    finally:
        batch.close()
    assert isinstance(error, Retryable)
    assert "timeout" in error.reason
    assert time.monotonic() - started < 1.5  # libcurl's own low-speed check would take 6 s


# --------------------------------------------------------------------------- batch after batch


def test_batches_after_batches_on_one_multi_whose_connections_the_server_closes(base_url: str) -> None:
    # given a client of one multi, and a server that closes each connection after its answer
    server = _Canned(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
    batch = CurlBatchClient(3, connect=2.0, read=5.0)
    try:
        for _ in range(4):
            started = time.monotonic()
            # when a batch goes after the last one's connections were closed (their descriptors reused), and one
            # to a server that keeps them
            closed = batch.post_many(server.url, [(b"{}", {})] * 5, deadline=5)
            kept = batch.post_many(f"{base_url}/echo", [(b"{}", {})] * 5, deadline=5)
            took = time.monotonic() - started
            # then each is answered at once: nothing of the sockets watched before is in the way
            assert [a.status for a, _ in closed if isinstance(a, Answer)] == [201] * 5
            assert [a.status for a, _ in kept if isinstance(a, Answer)] == [200] * 5
            assert took < 0.5, f"two batches of 5 on loopback took {took:.2f} s"
    finally:
        batch.close()
        server.close()


# --------------------------------------------------------------------------- many open files


@contextmanager
def descriptors_past_fd_setsize() -> Iterator[None]:
    """Every descriptor below 1100 taken (by ``/dev/null``) in the block, so that the sockets opened in it are
    numbered past ``FD_SETSIZE`` (1024), which ``select()`` cannot watch; the soft ``RLIMIT_NOFILE`` raised for it
    if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is under 1200: no descriptor past FD_SETSIZE to test with")
    raise_to = 2048 if hard == resource.RLIM_INFINITY else min(hard, 2048)
    raised = soft != resource.RLIM_INFINITY and soft < raise_to
    if raised:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raise_to, hard))
    dummies: list[int] = []
    try:
        while not dummies or dummies[-1] < 1100:
            dummies.append(os.open("/dev/null", os.O_RDONLY))
        yield
    finally:
        for fd in dummies:
            os.close(fd)
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_batch_on_sockets_past_fd_setsize_goes_at_once(base_url: str) -> None:
    # given a client with a connection of a low number in its cache, then over 1100 files open
    batch = CurlBatchClient(20, connect=2.0, read=5.0)
    try:
        answer(batch, f"{base_url}/echo")
        with descriptors_past_fd_setsize():
            started = time.monotonic()
            # when a batch of 20 goes, on that connection and 19 new ones numbered past 1024
            ended = batch.post_many(f"{base_url}/echo", [(b"{}", {"Content-Type": "application/json"})] * 20,
                                    deadline=10)
            took = time.monotonic() - started
    finally:
        batch.close()
    # then all are answered at once (a select() loop, blind to the new sockets, sleeps on the cached one until the
    # read-timeout watch wakes it, a second later)
    assert [a.status for a, _ in ended if isinstance(a, Answer)] == [200] * 20
    assert took < 0.5, f"20 POSTs on loopback took {took:.2f} s"


def test_a_batch_on_sockets_past_fd_setsize_waits_without_spinning(base_url: str) -> None:
    # given a client of its own (no connection in its cache) and over 1100 files open
    batch = CurlBatchClient(20, connect=2.0, read=5.0)
    try:
        with descriptors_past_fd_setsize():
            started, spent = time.monotonic(), time.thread_time()
            # when a batch of 20 goes, each answer taking 1.2 s (a chunk every 0.2 s)
            ended = batch.post_many(f"{base_url}/trickle", [(b"{}", {})] * 20, deadline=10)
            took, spent = time.monotonic() - started, time.thread_time() - spent
    finally:
        batch.close()
    # then the batch's thread slept while it waited (a select() loop given no socket it can watch returns at once:
    # it spins the whole 1.2 s)
    assert [a.body for a, _ in ended if isinstance(a, Answer)] == [b"x" * 60] * 20
    assert took >= 1.0
    assert spent < 0.3, f"the batch's thread spent {spent:.2f} s of CPU in {took:.2f} s"
