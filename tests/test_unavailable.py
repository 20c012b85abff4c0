"""Every inbound route while the ledger or Redis does not answer: 503 with ``Retry-After``, nothing stored, and
the same request taken once it is back.

The ledger is PostgreSQL behind a loopback TCP proxy the test cuts (every connection closed, new ones refused)
and restores; Redis is a private ``redis-server`` the test stops. Nothing is faked: the errors are the drivers'.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from tests.conftest import _fresh_pg
from tests.edges import Edges, body_of, edges_relay, ledger_url
from tests.harness import RedisServer, captured_logs
from tests.proxy import TcpProxy


@pytest.fixture(scope="module")
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", 5432)) as running:
        yield running


@pytest.fixture(scope="module")
def cut_ledger(pg_url: str, redis_url: str, proxy: TcpProxy,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    """The relay on a PostgreSQL ledger reached through ``proxy``."""
    url = _fresh_pg(pg_url).replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    with edges_relay(url, redis_url, tmp_path_factory.mktemp("cut"), log_level="WARNING") as edges:
        yield edges


def answers(edges: Edges, requests: dict[str, httpx.Request]) -> dict[str, httpx.Response]:
    return {route: edges.api.send([request])[0] for route, request in requests.items()}


def names_in(request: httpx.Request) -> list[str]:
    """The applicants' names an intake request carries."""
    data = json.loads(request.content)
    return [event["applicant"]["name"] for event in (data if isinstance(data, list) else [data])]


def test_while_the_ledger_is_cut_every_route_answers_503_and_stores_nothing(cut_ledger: Edges,
                                                                            proxy: TcpProxy) -> None:
    # given a relay that takes requests, and one valid signed request for each of its routes
    edges = cut_ledger
    edges.empty()
    before = edges.counts()
    requests = edges.valid_requests()
    names = names_in(requests["intake"])
    # when the ledger's network fails under it
    proxy.cut()
    try:
        with captured_logs() as logs:
            refused = answers(edges, requests)
    finally:
        proxy.restore()
    # then every route answers 503 with Retry-After in the app's error shape, and nothing was stored
    assert {route: r.status_code for route, r in refused.items()} == dict.fromkeys(requests, 503)
    for answer in refused.values():
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["error"] == "service unavailable" and "ledger" in answer.json()["detail"]
    assert edges.counts() == before
    warnings = [e for e in logs if e["event"] == "api.unavailable"]
    assert len(warnings) == len(requests) and {e["log_level"] for e in warnings} == {"warning"}
    assert not any(name in str(logs) for name in names)


def test_once_the_ledger_is_back_the_same_requests_are_taken(cut_ledger: Edges, proxy: TcpProxy) -> None:
    # given requests refused while the ledger was cut
    edges = cut_ledger
    edges.empty()
    before = edges.counts()
    requests = edges.valid_requests()
    proxy.cut()
    try:
        assert {r.status_code for r in answers(edges, requests).values()} == {503}
    finally:
        proxy.restore()
    # when the same requests are sent again (the senders retry)
    taken = answers(edges, requests)
    # then each is taken, as it would have been
    codes = {route: r.status_code for route, r in taken.items()}
    assert codes == {"intake": 202, "portal": 200, "postal": 200, "platform": 200, "vnpay": 200, "lookup": 200,
                     "zalo": 200}
    assert taken["portal"].json()["accepted"] == 1 and taken["postal"].json()["stored"] == 1
    assert taken["platform"].json()["return_code"] == 0 and taken["zalo"].json()["status"] == "recorded"
    assert taken["vnpay"].json()["RspCode"] == "02"  # the platform's callback paid the bill first
    after = edges.counts()
    assert after["events"] == before["events"] + 2 + 1 + 1 + 1  # the batch, the dossier, the status, fee.paid
    assert after["payment_callbacks"] == 2 and after["receipts"] == 1


def test_a_batch_cut_off_in_the_middle_of_its_insert_leaves_no_row_of_it(cut_ledger: Edges,
                                                                          proxy: TcpProxy) -> None:
    # given a batch of 500 events (its INSERT is some 700 kB on the wire)
    edges = cut_ledger
    edges.empty()
    before = edges.counts()
    batch = [edges.event(i) for i in range(500)]
    request = edges.signed("/v1/events", body_of(batch))
    # when the ledger's line goes after 200 kB of it: past the look-up of the ids, inside the INSERT
    proxy.cut_after(200_000)
    try:
        [refused] = edges.api.send([request])
    finally:
        proxy.restore()
    # then 503, and not one event (nor delivery) of the batch is in the ledger
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert edges.counts() == before
    # and sent again, the whole batch is taken
    [taken] = edges.api.send([request])
    assert taken.status_code == 202 and len(taken.json()["accepted"]) == 500
    assert edges.count("events") == before["events"] + 500


# --------------------------------------------------------------------------- Redis stopped


@pytest.fixture(scope="module")
def redis_down(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Edges, RedisServer]]:
    """The relay on SQLite with Redis (broker and state) a private server the test stops."""
    workdir = tmp_path_factory.mktemp("redis-down")
    server = RedisServer(workdir)
    server.start()
    try:
        with edges_relay(ledger_url("sqlite", request, workdir), server.url, workdir) as edges:
            yield edges, server
    finally:
        server.stop()


def test_with_redis_stopped_the_intake_still_takes_events_and_a_route_needing_redis_answers_503(
    redis_down: tuple[Edges, RedisServer], tmp_path: Path,
) -> None:
    from tasks.runtime import get_runtime

    edges, server = redis_down
    router = APIRouter()

    @router.get("/_test/redis")
    def needs_redis() -> dict[str, bool]:  # what any route reading Redis state meets
        client = get_runtime().redis
        assert client is not None
        return {"ping": bool(client.ping())}

    edges.api.app.include_router(router)
    # given Redis stopped
    server.stop()
    try:
        # when events come in and a route needs Redis
        event = edges.event()
        intake = edges.api.send([edges.signed("/v1/events", body_of(event))])[0]
        redis_route = edges.api.send([edges.api.build("GET", "/_test/redis")])[0]
    finally:
        server.start()
    # then the ledger, not Redis, takes events: 202 and stored (the sweeper rings the doorbells later)
    assert intake.status_code == 202, intake.text
    assert event["event_id"] in edges.column("events", "event_id")
    # and the route that needs Redis answers 503 with Retry-After, not 500
    assert redis_route.status_code == 503 and redis_route.headers["retry-after"] == "5"
    assert "Redis" in redis_route.json()["detail"]
    assert edges.api.send([edges.api.build("GET", "/_test/redis")])[0].json() == {"ping": True}
