"""The LGSP's gateway in front of the exchange: the OAuth2 client-credentials token as OpenCPS's ``LGSPRestClient``
asks for it, the Bearer on every call, its renewal, its refusals. The connector against the simulator over real
HTTP (with what it sent recorded before the gateway), the token's answer table row by row (respx), the simulator's
own OAuth2 refusals, and the destination's options and start-up warning."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import redis
import respx
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.options import OptionsError, resolve
from config.routing import Destination
from connectors.base import AuthExpired, DeliveryError, Permanent, Retryable, build_http_client
from connectors.credentials import TokenCache
from connectors.transfer import ExchangeConnector, GatewayToken
from sandbox.lgsp import UnitConfig, document_app, document_sha256
from sandbox.lgsp import create_app as exchange_app
from schemas import transfer as tx
from services.transfer.deliver import TransferOptions
from tests.harness import ROOT, captured_logs
from tests.servers import run_asgi

USER, PASSWORD = "lienthong-test", "mat-khau-truc-test"
KEY, SECRET = "relay-halong-app", "bi-mat-cong-lgsp-0042"
ORIGIN, TARGET = "000.21.00.H49", "000.00.07.H49"  # the units do not matter here: any two the exchange serves
UNITS = {code: UnitConfig(name=code, accept_seconds=0.1, process_seconds=0.1) for code in (ORIGIN, TARGET)}


class Recorder:
    """What reached the app, before its gateway: method, path, ``Authorization``, ``Content-Type``, and the body
    of token requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        entry = {"method": scope["method"], "path": scope["path"], "authorization": headers.get("authorization"),
                 "content_type": headers.get("content-type"), "body": b""}
        self.seen.append(entry)

        async def recording() -> Message:
            message = await receive()
            if scope["path"] == tx.TOKEN_PATH:
                entry["body"] += message.get("body", b"")
            return message

        await self.app(scope, recording, send)

    def calls(self) -> list[dict[str, Any]]:
        return [e for e in self.seen if not e["path"].startswith("/_admin/")]


@pytest.fixture(scope="module")
def documents() -> Iterator[str]:
    with run_asgi(document_app()) as url:
        yield url


@contextmanager
def serve(token_ttl: float = 3600.0) -> Iterator[tuple[str, Recorder]]:
    """The exchange behind its gateway, and what reached it."""
    recorder = Recorder(exchange_app(username=USER, password=PASSWORD, units=UNITS, seed=1, tick_seconds=0.05,
                                     consumer_key=KEY, consumer_secret=SECRET, token_ttl=token_ttl))
    with run_asgi(recorder) as url:
        yield url, recorder


@pytest.fixture
def gateway() -> Iterator[tuple[str, Recorder]]:
    with serve() as served:
        yield served


def stats(url: str) -> dict[str, int]:
    counters: dict[str, int] = httpx.get(f"{url}/_admin/stats", timeout=5).json()["counters"]
    return counters


def token_of(url: str, secret: str = SECRET, tokens: TokenCache | None = None, name: str | None = None,
             **extra: Any) -> GatewayToken:
    return GatewayToken(token_url=f"{url}{tx.TOKEN_PATH}", consumer_key=KEY, consumer_secret=SecretStr(secret),
                        client=build_http_client(2, 5), tokens=tokens or TokenCache(None, "t"),
                        credential_name=name or f"transfer:{uuid.uuid4().hex[:8]}", **extra)


def connector(url: str, gateway: GatewayToken | None) -> ExchangeConnector:
    return ExchangeConnector(base_url=url, username=USER, password=SecretStr(PASSWORD),
                             client=build_http_client(2, 5), connect_timeout=2, read_timeout=5, gateway=gateway)


def ref(name: str, size: int) -> tx.DocumentRef:
    return tx.DocumentRef(name=name, sha256=document_sha256(name, size), size=size)


def hop(code: str, documents: list[tx.DocumentRef]) -> tx.TransferRequest:
    return tx.TransferRequest(transferId=tx.transfer_id(code, ORIGIN, TARGET), fromUnit=ORIGIN, toUnit=TARGET,
                              finalUnit=TARGET, dossierCode=code, procedureCode="1.000894", documents=documents)


# ------------------------------------------------------------------------------------ against the simulator


def test_the_token_is_asked_for_as_lgsp_rest_client_does_and_every_call_carries_it(
    gateway: tuple[str, Recorder], documents: str,
) -> None:
    url, recorder = gateway
    # given a connector with the gateway's consumer key
    c = connector(url, token_of(url))
    document = ref("to-khai.pdf", 300_000)
    request = hop("HS-G1", [document])
    # when it makes every kind of call the relay makes: WSDL, HEAD and PUT of a document, and each SOAP operation
    assert not c.has_document(request.transferId, 0, document.sha256)
    assert c.upload(request.transferId, 0, document, f"{documents}/files/to-khai.pdf?size=300000") == 300_000
    assert c.send(request) is True
    assert c.get(request.transferId) is not None
    c.updates(0, 10)
    c.close()
    # then the token was asked for once, at /token, as a form with the grant and the key and secret in it
    calls = recorder.calls()
    [asked] = [e for e in calls if e["path"] == tx.TOKEN_PATH]
    assert asked["method"] == "POST" and asked["authorization"] is None
    assert asked["content_type"] == "application/x-www-form-urlencoded"
    assert parse_qs(asked["body"].decode()) == {"grant_type": ["client_credentials"], "client_id": [KEY],
                                                "client_secret": [SECRET]}
    # and every other call carried it as a Bearer: the WSDL's, the document's and each envelope's
    rest = [e for e in calls if e["path"] != tx.TOKEN_PATH]
    assert [(e["method"], e["path"]) for e in rest] == [
        ("HEAD", f"{tx.DOCUMENTS_PATH}/HS-G1:{ORIGIN}:{TARGET}/0"),
        ("PUT", f"{tx.DOCUMENTS_PATH}/HS-G1:{ORIGIN}:{TARGET}/0"),
        ("GET", tx.ENDPOINT_PATH), ("POST", tx.ENDPOINT_PATH), ("POST", tx.ENDPOINT_PATH),
        ("POST", tx.ENDPOINT_PATH)]
    bearers = {e["authorization"] for e in rest}
    assert len(bearers) == 1 and bearers.pop().startswith("Bearer ")
    counters = stats(url)
    assert counters["tokens_issued"] == 1 and counters["documents_stored"] == 1 and "gateway_refused" not in counters


def test_a_call_without_the_token_the_old_dialect_is_refused_401_before_the_exchange(
    gateway: tuple[str, Recorder],
) -> None:
    url, _ = gateway
    # given a destination with no consumer key (a table written before the gateway)
    c = connector(url, None)
    # when it calls, then the gateway refuses it, and the reason says what to set
    with pytest.raises(Permanent) as soap_call:
        c.get("HS-1:a:b")
    assert "HTTP 401" in soap_call.value.reason
    assert "set the transfer destination's consumer_key and consumer_secret" in soap_call.value.reason
    with pytest.raises(Permanent) as document_call:
        c.has_document("HS-1:a:b", 0, "0" * 64)
    assert "the exchange refused the username and password, or the LGSP's gateway" in document_call.value.reason
    c.close()
    # and it answers as an API manager: 900902 without credentials, 900901 with a token it did not give
    missing = httpx.post(f"{url}{tx.ENDPOINT_PATH}", content=b"<x/>", headers={"content-type": "text/xml"})
    assert missing.status_code == 401 and missing.json()["fault"]["code"] == 900902
    assert missing.headers["www-authenticate"] == 'Bearer realm="LGSP"'
    made_up = httpx.get(f"{url}{tx.ENDPOINT_PATH}?wsdl", headers={"authorization": "Bearer 0123"})
    assert made_up.status_code == 401 and made_up.json()["fault"]["code"] == 900901
    assert 'error="invalid_token"' in made_up.headers["www-authenticate"]
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert httpx.put(f"{url}/documents/x/0", content=b"abc", headers={"authorization": basic}).status_code == 401
    counters = stats(url)
    assert counters["gateway_refused"] == 5 and "GetTransfer" not in counters  # the exchange saw none of them


def test_a_token_expiring_mid_run_is_renewed_once_and_the_call_repeated(documents: str) -> None:
    # given a gateway whose tokens die after 0.5 s, though it says they live a second
    with serve(token_ttl=0.5) as (url, recorder):
        c = connector(url, token_of(url))
        assert c.get("HS-2:a:b") is None
        # when the token dies between two calls (the relay still holds it) and a document is uploaded
        time.sleep(0.7)
        document = ref("ban-quet.pdf", 200_000)
        sent = c.upload("HS-2:a:b", 0, document, f"{documents}/files/ban-quet.pdf?size=200000")
        c.close()
        counters = stats(url)
    # then the upload was refused once, the token renewed, the document read again and stored once
    assert sent == 200_000
    assert counters["tokens_expired"] == 1 and counters["gateway_refused"] == 1 and counters["tokens_issued"] == 2
    assert counters["documents_stored"] == 1
    puts = [e["authorization"] for e in recorder.calls() if e["method"] == "PUT"]
    assert len(puts) == 2 and puts[0] != puts[1]


def test_a_token_refused_twice_in_a_row_is_auth_expired(gateway: tuple[str, Recorder]) -> None:
    url, _ = gateway
    httpx.post(f"{url}/_admin/faults", json={"expire_rate": 1}, timeout=5).raise_for_status()
    c = connector(url, token_of(url))
    with captured_logs() as logs, pytest.raises(AuthExpired) as caught:
        c.send(hop("HS-3", []))
    c.close()
    assert caught.value.status_code == 401 and "refused its token right after renewing it" in caught.value.reason
    counters = stats(url)
    assert counters["tokens_issued"] == 2 and counters["fault_expire"] == 2 and "SendDossier" not in counters
    assert [e["event"] for e in logs if e["event"] == "transfer.token_refused"] == ["transfer.token_refused"]


def test_a_bad_secret_is_permanent_with_the_reason_and_the_secret_shown_nowhere(gateway: tuple[str, Recorder]) -> None:
    url, _ = gateway
    wrong = "not-the-secret-" + uuid.uuid4().hex
    c = connector(url, token_of(url, secret=wrong))
    with captured_logs() as logs, pytest.raises(Permanent) as caught:
        c.get("HS-4:a:b")
    c.close()
    error = caught.value
    assert error.status_code == 401
    assert error.reason == ("LGSP gateway token: refused (invalid_client: Client Authentication failed.); check the "
                            "transfer destination's consumer_key and consumer_secret")
    assert wrong not in f"{error.reason} {error.excerpt} {logs}"
    assert stats(url)["tokens_refused"] == 1


def test_the_workers_share_one_token_through_redis(gateway: tuple[str, Recorder], redis_url: str) -> None:
    url, _ = gateway
    prefix, name = f"gw{uuid.uuid4().hex[:6]}", "transfer:lgsp"
    client = redis.Redis.from_url(redis_url)
    try:
        # given eight workers (a TokenCache each, one Redis) that all need the token at once
        workers = [token_of(url, tokens=TokenCache(client, prefix), name=name) for _ in range(8)]
        got: list[str] = []
        start = threading.Barrier(len(workers))

        def work(worker: GatewayToken) -> None:
            start.wait()
            got.append(worker.current())

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        # then the gateway gave one token, and every worker holds it
        assert len(got) == 8 and len(set(got)) == 1
        assert stats(url)["tokens_issued"] == 1
        assert client.pttl(f"{prefix}:cred:{name}") > 3000_000  # 90 % of the hour the gateway said
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


# ------------------------------------------------------------------------------------ the simulator's refusals

FORM = "application/x-www-form-urlencoded"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("headers", "body", "status", "error"), [
    ({"content-type": "application/json"},
     json.dumps({"grant_type": "client_credentials", "client_id": KEY, "client_secret": SECRET}).encode(),
     400, "invalid_request"),
    ({"content-type": FORM}, f"grant_type=password&client_id={KEY}&client_secret={SECRET}".encode(), 400,
     "unsupported_grant_type"),
    ({"content-type": FORM}, f"client_id={KEY}&client_secret={SECRET}".encode(), 400, "invalid_request"),
    ({"content-type": FORM}, b"grant_type=client_credentials&grant_type=client_credentials", 400, "invalid_request"),
    ({"content-type": FORM, "authorization": basic(KEY, SECRET)},
     f"grant_type=client_credentials&client_secret={SECRET}".encode(), 400, "invalid_request"),
    ({"content-type": FORM}, f"grant_type=client_credentials&client_id={KEY}&client_secret=wrong".encode(), 401,
     "invalid_client"),
    ({"content-type": FORM, "authorization": basic(KEY, "wrong")}, b"grant_type=client_credentials", 401,
     "invalid_client"),
    ({"content-type": FORM}, b"grant_type=client_credentials", 401, "invalid_client"),
    ({"content-type": FORM, "authorization": basic(KEY, SECRET)}, b"grant_type=client_credentials", 200, None),
    ({"content-type": FORM}, f"grant_type=client_credentials&client_id={KEY}&client_secret={SECRET}".encode(), 200,
     None),
], ids=["json-body", "other-grant", "no-grant", "repeated", "two-methods", "wrong-secret", "wrong-basic",
        "no-client", "basic", "form"])
def test_the_token_endpoint_answers_as_an_oauth2_server(
    gateway: tuple[str, Recorder], headers: dict[str, str], body: bytes, status: int, error: str | None,
) -> None:
    url, _ = gateway
    answer = httpx.post(f"{url}{tx.TOKEN_PATH}", content=body, headers=headers, timeout=5)
    assert answer.status_code == status, answer.text
    if error is not None:
        assert answer.json()["error"] == error and answer.json()["error_description"]
        assert ("www-authenticate" in answer.headers) == ("authorization" in headers and status == 401)
        return
    token = answer.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600 and len(token["access_token"]) == 32
    assert answer.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------ the token's answer table

TOKEN_URL = "http://lgsp.test/token"


def token_answer(**fields: Any) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "T1", "token_type": "Bearer", "expires_in": 1800, **fields})


@pytest.mark.parametrize(("answer", "expected", "words"), [
    (token_answer(), ("Bearer T1", 1800.0), None),
    (token_answer(token_type="bearer", scope="default"), ("Bearer T1", 1800.0), None),
    (httpx.Response(200, json={"access_token": "T2"}), ("Bearer T2", float(tx.TOKEN_SECONDS)), None),
    (httpx.Response(200, json={"token_type": "Bearer"}), Retryable, "no token in the answer"),
    (httpx.Response(200, text="<html>cổng</html>"), Retryable, "no token in the answer"),
    (httpx.Response(401, json={"error": "invalid_client", "error_description": "Client Authentication failed."}),
     Permanent, "refused (invalid_client: Client Authentication failed.); check the transfer destination's "
                "consumer_key and consumer_secret"),
    (httpx.Response(400, json={"error": "unsupported_grant_type"}), Permanent,
     "refused (unsupported_grant_type); its application at the LGSP must allow the client-credentials grant"),
    (httpx.Response(400, json={"error": "invalid_request", "error_description": "x"}), Permanent, "invalid_request"),
    (httpx.Response(401, text="Unauthorized"), Permanent, "refused (HTTP 401)"),
    (httpx.Response(403, text="blocked"), Permanent, "LGSP gateway token: HTTP 403 rejected"),
    (httpx.Response(503), Retryable, "LGSP gateway token: HTTP 503"),
    (httpx.Response(429, headers={"Retry-After": "7"}), Retryable, "HTTP 429"),
    (httpx.ConnectError("refused"), Retryable, "LGSP gateway token: connection failed"),
    (httpx.ReadTimeout("slow"), Retryable, "LGSP gateway token: timeout"),
], ids=["bearer", "lowercase-type", "no-lifetime", "no-token", "html", "invalid-client", "grant-refused",
        "invalid-request", "401-not-json", "403", "503", "429", "connect", "timeout"])
@respx.mock
def test_token_answer_row(answer: httpx.Response | Exception, expected: Any, words: str | None) -> None:
    route = respx.post(TOKEN_URL)
    route.mock(side_effect=answer) if isinstance(answer, Exception) else route.mock(return_value=answer)
    gateway = GatewayToken(token_url=TOKEN_URL, consumer_key=KEY, consumer_secret=SecretStr(SECRET),
                           client=build_http_client(1, 2), tokens=TokenCache(None, "t"), credential_name="x")
    if isinstance(expected, tuple):
        assert gateway.obtain() == expected
        return
    with pytest.raises(expected) as caught:
        gateway.obtain()
    assert words is not None and words in caught.value.reason and SECRET not in caught.value.reason
    if isinstance(answer, httpx.Response) and answer.status_code == 429:
        assert caught.value.retry_after == 7


@respx.mock
def test_a_gateway_that_echoes_the_secret_does_not_get_it_into_the_attempt() -> None:
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(400, json={
        "error": "invalid_request", "error_description": "bad request", "echo": f"client_secret={SECRET}"}))
    gateway = GatewayToken(token_url=TOKEN_URL, consumer_key=KEY, consumer_secret=SecretStr(SECRET),
                           client=build_http_client(1, 2), tokens=TokenCache(None, "t"), credential_name="x")
    with pytest.raises(DeliveryError) as caught:
        gateway.obtain()
    assert SECRET not in (caught.value.excerpt or "") and "client_secret=***" in (caught.value.excerpt or "")


@respx.mock
def test_with_client_secret_basic_the_key_and_secret_go_as_http_basic() -> None:
    route = respx.post(TOKEN_URL).mock(return_value=token_answer())
    GatewayToken(token_url=TOKEN_URL, consumer_key=KEY, consumer_secret=SecretStr(SECRET),
                 client=build_http_client(1, 2), tokens=TokenCache(None, "t"), credential_name="x",
                 auth="client_secret_basic").obtain()
    sent = route.calls.last.request
    assert sent.headers["authorization"] == basic(KEY, SECRET) and sent.content == b"grant_type=client_credentials"
    assert sent.headers["content-type"] == FORM and sent.headers["accept"] == "application/json"


@respx.mock
def test_an_origin_that_answers_401_is_not_taken_for_the_gateway_refusing_the_token() -> None:
    tokens = respx.post(TOKEN_URL).mock(return_value=token_answer())
    respx.get("http://onestop.test/files/a.pdf").mock(return_value=httpx.Response(401))
    gateway = GatewayToken(token_url=TOKEN_URL, consumer_key=KEY, consumer_secret=SecretStr(SECRET),
                           client=build_http_client(1, 2), tokens=TokenCache(None, "t"), credential_name="x")
    c = ExchangeConnector(base_url="http://lgsp.test", username=USER, password=SecretStr(PASSWORD),
                          client=build_http_client(1, 2), connect_timeout=1, read_timeout=2, gateway=gateway)
    with pytest.raises(Permanent, match="the origin's file could not be read: HTTP 401 rejected") as caught:
        c.upload("HS-5:a:b", 0, ref("a.pdf", 10), "http://onestop.test/files/a.pdf")
    assert tokens.call_count == 1 and caught.value.status_code is None


# ------------------------------------------------------------------------------------ options and start-up


def lgsp(**options: Any) -> Destination:
    return Destination(name="lgsp", kind="transfer", options={"url": "https://lgsp.quangninh.gov.vn",
                                                              "username": USER, **options})


def test_a_consumer_key_needs_its_secret_and_without_one_the_workers_are_warned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOTCUA_TRANSFER_PASSWORD", PASSWORD)
    monkeypatch.delenv("MOTCUA_TRANSFER_CONSUMER_SECRET", raising=False)
    # a table written before the gateway loads as it is, and the workers will be warned
    before = resolve(lgsp(), TransferOptions)
    assert before.consumer_key is None and before.consumer_secret is None
    assert before.notices() == ["no consumer_key: calls go to the exchange without the OAuth2 token a province's "
                                "LGSP gateway requires, and it refuses them (HTTP 401) until consumer_key and "
                                "consumer_secret are set"]
    # a key without its secret is refused, naming the variable
    with pytest.raises(OptionsError, match=r"^destination lgsp: set MOTCUA_TRANSFER_CONSUMER_SECRET "
                                           r"\(consumer_secret\)$"):
        resolve(lgsp(consumer_key=KEY), TransferOptions)
    # and a secret without its key is unused, and said so
    monkeypatch.setenv("MOTCUA_TRANSFER_CONSUMER_SECRET", SECRET)
    assert resolve(lgsp(), TransferOptions).notices()[0].startswith(
        "no consumer_key (its consumer_secret is set, but unused without the key): calls go to the exchange without")
    both = resolve(lgsp(consumer_key=KEY), TransferOptions)
    assert both.notices() == [] and both.endpoint() == "https://lgsp.quangninh.gov.vn/token"
    assert SECRET not in repr(both)
    elsewhere = resolve(lgsp(consumer_key=KEY, token_url="https://api.lgsp.quangninh.gov.vn/oauth2/token"),
                        TransferOptions)
    assert elsewhere.endpoint() == "https://api.lgsp.quangninh.gov.vn/oauth2/token"


def test_a_worker_warns_at_start_of_a_transfer_destination_without_a_consumer_key(
    tmp_path: Path, redis_url: str,
) -> None:
    # given a routing file whose exchange has no consumer key, beside a destination that cannot start
    routing = tmp_path / "routing.toml"
    routing.write_text('[destinations.lgsp]\nkind = "transfer"\nurl = "http://127.0.0.1:9"\nusername = "u"\n\n'
                       '[destinations.hook]\nkind = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
                       'secret_env = "MOTCUA_T_NOT_SET"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="300", MOTCUA_ROUTING_FILE=str(routing),
               MOTCUA_DATABASE_URL=f"sqlite:///{tmp_path}/relay.db", MOTCUA_TRANSFER_PASSWORD="p",
               MOTCUA_BROKER_URL=redis_url, MOTCUA_REDIS_URL=redis_url, MOTCUA_LOG_FORMAT="json")
    # when a worker starts, then it says what the LGSP will refuse, and refuses to start for the other one
    done = subprocess.run([sys.executable, "-m", "cli.main", "worker"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    said = " ".join(done.stdout.split())
    assert done.returncode == 2, said + done.stderr
    assert ("warning: destination lgsp: no consumer_key: calls go to the exchange without the OAuth2 token a "
            "province's LGSP gateway requires") in said
    assert "destination hook: set MOTCUA_T_NOT_SET" in said
