"""The LGSP exchange connector against the exchange simulator over real HTTP: zeep from its WSDL, the fault
table row by row, documents streamed and checked, the simulator's own refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import Permanent, Retryable, build_http_client
from connectors.transfer import ExchangeConnector
from sandbox.lgsp import COMMUNE, DEPARTMENT, OFFICE, UnitConfig, document_app, document_sha256
from sandbox.lgsp import create_app as exchange_app
from schemas import transfer as tx
from tests.servers import run_asgi

USER, PASSWORD = "lienthong-test", "mat-khau-truc-test"
UNITS = {code: UnitConfig(name=code, accept_seconds=0.1, process_seconds=0.1) for code in (COMMUNE, DEPARTMENT, OFFICE)}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    with run_asgi(exchange_app(username=USER, password=PASSWORD, units=UNITS, seed=1, tick_seconds=0.05)) as url, \
            run_asgi(document_app()) as documents:
        yield {"exchange": url, "documents": documents}


@pytest.fixture
def exchange(servers: dict[str, str]) -> Iterator[str]:
    httpx.post(f"{servers['exchange']}/_admin/reset", timeout=5).raise_for_status()
    yield servers["exchange"]


def connector(url: str, password: str = PASSWORD) -> ExchangeConnector:
    return ExchangeConnector(base_url=url, username=USER, password=SecretStr(password),
                             client=build_http_client(2, 5), connect_timeout=2, read_timeout=5)


def hop(code: str = "HS-1", to: str = DEPARTMENT, documents: list[tx.DocumentRef] | None = None,
        **extra: Any) -> tx.TransferRequest:
    return tx.TransferRequest(transferId=tx.transfer_id(code, COMMUNE, to), fromUnit=COMMUNE, toUnit=to,
                              finalUnit=to, dossierCode=code, procedureCode="1.000894", documents=documents or [],
                              **extra)


def ref(name: str, size: int) -> tx.DocumentRef:
    return tx.DocumentRef(name=name, sha256=document_sha256(name, size), size=size)


def test_a_hop_with_its_document_is_sent_once_answered_and_listed_in_order(
    exchange: str, servers: dict[str, str],
) -> None:
    c = connector(exchange)
    document = ref("giay-to.pdf", 3_000_000)
    request = hop(documents=[document])
    assert not c.has_document(request.transferId, 0, document.sha256)
    assert c.upload(request.transferId, 0, document, f"{servers['documents']}/files/giay-to.pdf?size=3000000") \
        == 3_000_000
    assert c.has_document(request.transferId, 0, document.sha256)
    assert c.send(request) is True
    assert c.send(request) is False  # a repeat is harmless
    held = c.get(request.transferId)
    assert held is not None and (held.transferId, held.fromUnit, held.toUnit) == (request.transferId, COMMUNE,
                                                                                    DEPARTMENT)
    assert held.status in ("SENT", "ACCEPTED", "RESULT")
    assert c.get("HS-404:a:b") is None
    deadline = time.monotonic() + 5
    while len(c.updates(0, 10).updates) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = c.updates(0, 1)
    assert first.hasMore and [u.status for u in first.updates] == ["ACCEPTED"]
    rest = c.updates(first.lastId, 10)
    assert not rest.hasMore and [(u.status, u.outcome) for u in rest.updates] == [("RESULT", "approved")]
    assert rest.updates[0].documents[0].name == "ket-qua-HS-1.pdf"
    c.close()


@pytest.mark.parametrize(("setup", "call", "error", "words"), [
    ("", "wrong password", Permanent, "fault AUTH_FAILED — Xác thực không thành công (check the transfer "
                                      "destination's username and password)"),
    ("", "unknown unit", Permanent, "fault UNIT_UNKNOWN"),
    ("", "conflict", Permanent, "fault TRANSFER_CONFLICT"),
    ("", "no document", Permanent, "fault DOCUMENT_INVALID"),
    ("down", "send", Retryable, "fault UNIT_UNAVAILABLE"),
    ("busy", "send", Retryable, "fault SYSTEM_BUSY"),
    ("503", "send", Retryable, "HTTP 503"),
    ("", "return unknown", Permanent, "no transfer HS-9:x:y to return the result down"),
])
def test_each_answer_of_the_exchange_maps_to_its_class(
    exchange: str, setup: str, call: str, error: type[Exception], words: str,
) -> None:
    if setup == "down":
        httpx.post(f"{exchange}/_admin/units/{DEPARTMENT}/down", json={"seconds": 30}, timeout=5)
    elif setup == "busy":
        httpx.post(f"{exchange}/_admin/faults", json={"busy_rate": 1}, timeout=5)
    elif setup == "503":
        httpx.post(f"{exchange}/_admin/faults", json={"error_rate": 1}, timeout=5)
    c = connector(exchange, "not-the-password" if call == "wrong password" else PASSWORD)
    with pytest.raises(error) as caught:
        if call == "unknown unit":
            c.send(hop(to="000.99.99.H49").model_copy(update={"finalUnit": "000.99.99.H49"}))
        elif call == "conflict":
            c.send(hop())
            c.send(hop(reason="khác"))
        elif call == "no document":
            c.send(hop(documents=[ref("chua-tai.pdf", 10)]))
        elif call == "return unknown":
            c.return_result("HS-9:x:y", "approved", [])
        else:
            c.send(hop())
    assert words in str(caught.value)
    httpx.delete(f"{exchange}/_admin/faults", timeout=5)
    c.close()


def test_a_document_whose_bytes_differ_is_refused_by_both_sides_and_nothing_is_kept(
    exchange: str, servers: dict[str, str],
) -> None:
    c = connector(exchange)
    wrong = tx.DocumentRef(name="scan.pdf", sha256="f" * 64, size=100_000)
    with pytest.raises(Permanent, match="checksum mismatch, the origin served 100000 bytes"):
        c.upload("HS-2:a:b", 0, wrong, f"{servers['documents']}/files/scan.pdf?size=100000")
    assert not c.has_document("HS-2:a:b", 0, wrong.sha256)
    stats = httpx.get(f"{exchange}/_admin/stats", timeout=5).json()["counters"]
    assert stats["documents_refused"] == 1 and "documents_stored" not in stats
    with pytest.raises(Permanent, match="the origin's file could not be read: HTTP 404"):
        c.upload("HS-2:a:b", 0, wrong, f"{servers['documents']}/nothing-here")
    refused = httpx.Response(422, json={"code": "DOCUMENT_INVALID"})
    with pytest.raises(Permanent, match="checksum mismatch, the exchange refused it"):
        ExchangeConnector._raise_for(refused, "document 0")
    with pytest.raises(Retryable, match="HTTP 503"):
        ExchangeConnector._raise_for(httpx.Response(503), "document 0")
    c.close()


def test_the_simulator_refuses_what_no_exchange_would_take(exchange: str) -> None:
    wsdl = httpx.get(f"{exchange}{tx.ENDPOINT_PATH}?wsdl", timeout=5)
    assert f'location="{exchange}{tx.ENDPOINT_PATH}"' in wsdl.text
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>'
    answer = httpx.post(f"{exchange}{tx.ENDPOINT_PATH}", content=doctype, headers={"content-type": "text/xml"})
    assert answer.status_code == 500 and "INVALID_REQUEST" in answer.text
    assert httpx.head(f"{exchange}/documents/x/0", timeout=5).status_code == 401
    unsigned = httpx.put(f"{exchange}/documents/x/0", content=b"abc", timeout=5)
    assert unsigned.status_code == 401


def test_as_many_uploads_at_once_as_the_exchanges_pool_has_connections_all_go_through(
    exchange: str, servers: dict[str, str],
) -> None:
    # given an exchange client of two connections, and four documents to stream from the one-stop software at once
    # (each upload holds its source's connection while its PUT to the exchange waits for one: with one pool for
    # both, every PUT waited for a connection no upload gave back, PoolTimeout for ever)
    c = ExchangeConnector(base_url=exchange, username=USER, password=SecretStr(PASSWORD),
                          client=build_http_client(2, 3, max_connections=2), connect_timeout=2, read_timeout=3)
    documents = [ref(f"giay-to-{i}.pdf", 2_000_000) for i in range(4)]
    request = hop(code="HS-POOL", documents=documents)

    def upload(i: int) -> int:
        return c.upload(request.transferId, i, documents[i],
                        f"{servers['documents']}/files/giay-to-{i}.pdf?size=2000000")

    # when they are uploaded on four threads, then each arrives whole
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(upload, range(4))) == [2_000_000] * 4
    assert all(c.has_document(request.transferId, i, documents[i].sha256) for i in range(4))
    c.close()
