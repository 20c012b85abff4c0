"""The one-stop simulator as a webhook subscriber, served by a real uvicorn on loopback."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from sandbox.onestop import create_app
from sandbox.workload import generate_day
from tests.servers import run_asgi

SECRET = "whsec_" + base64.b64encode(b"one-stop-sandbox-test-secret-32b").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-different-secret-of-32-bytes!!").decode()
EVENTS = generate_day(3, day=date(2024, 3, 15), seed=7)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(create_app({"igate": SECRET, "portal": OTHER_SECRET})) as url:
        yield url


def signed(
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    at: datetime | None = None,
    idempotency_key: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Sign like any Standard Webhooks sender would, with the reference package."""
    body = json.dumps(event, ensure_ascii=False)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return body.encode(), headers


def post(client: httpx.Client, event: dict[str, Any], subscriber: str = "igate", **kw: Any) -> httpx.Response:
    body, headers = signed(event, **kw)
    return client.post(f"/subscribers/{subscriber}/events", content=body, headers=headers)


def stats(client: httpx.Client, subscriber: str = "igate") -> dict[str, Any]:
    return client.get("/_admin/stats").json()[subscriber]


def test_valid_signature_is_accepted_and_recorded(client: httpx.Client) -> None:
    # given
    event = EVENTS[0]
    # when
    response = post(client, event)
    # then
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "accepted"
    assert answer["event_id"] == event["event_id"]
    assert "idempotent-replayed" not in response.headers
    received = client.get("/_admin/received", params={"subscriber": "igate"}).json()
    assert [r["receipt_id"] for r in received] == [answer["receipt_id"]]
    assert received[0]["dossier_code"] == event["dossier_code"]
    assert received[0]["sequence"] == event["sequence"]
    assert received[0]["type"] == event["type"]
    assert stats(client) == {
        "receipts": 1, "distinct": 1, "duplicates": 0, "rejected_signature": 0, "invalid": 0,
        "faults": {"error": 0, "timeout": 0, "reset": 0},
    }


@pytest.mark.parametrize(
    "case",
    ["wrong_secret", "stale", "future", "missing", "tampered_body", "other_subscribers_secret"],
)
def test_bad_signatures_are_401_and_counted(client: httpx.Client, case: str) -> None:
    event = EVENTS[0]
    body, headers = signed(event)
    if case == "wrong_secret":
        body, headers = signed(event, secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    elif case == "stale":
        body, headers = signed(event, at=datetime.now(UTC) - timedelta(minutes=10))
    elif case == "future":
        body, headers = signed(event, at=datetime.now(UTC) + timedelta(minutes=10))
    elif case == "missing":
        del headers["webhook-signature"]
    elif case == "tampered_body":
        body = body.replace(b'"sequence": ', b'"sequence": 1')
    elif case == "other_subscribers_secret":
        body, headers = signed(event, secret=OTHER_SECRET)

    response = client.post("/subscribers/igate/events", content=body, headers=headers)

    assert response.status_code == 401
    assert "error" in response.json()
    assert stats(client)["rejected_signature"] == 1
    assert stats(client)["receipts"] == 0
    assert client.get("/_admin/received", params={"subscriber": "igate"}).json() == []


def test_unknown_subscriber_is_404(client: httpx.Client) -> None:
    assert post(client, EVENTS[0], subscriber="nobody").status_code == 404


def test_invalid_event_is_422_counted_and_does_not_echo_personal_data(client: httpx.Client) -> None:
    # given an event whose sequence is invalid, carrying a citizen's ID number
    event = dict(EVENTS[0], sequence=0)
    # when
    response = post(client, event)
    # then
    assert response.status_code == 422
    assert "sequence" in response.json()["error"]
    assert event["applicant"]["id_number"] not in response.text
    assert stats(client)["invalid"] == 1
    assert stats(client)["receipts"] == 0


def test_repeated_idempotency_key_is_replayed_not_applied_again(client: httpx.Client) -> None:
    # given one event delivered three times under the same key (new webhook-id each time), and another event
    first = post(client, EVENTS[0], idempotency_key="delivery-1")
    # when
    second = post(client, EVENTS[0], idempotency_key="delivery-1")
    third = post(client, EVENTS[0], idempotency_key="delivery-1")
    other = post(client, EVENTS[1], idempotency_key="delivery-2")
    # then
    assert [r.status_code for r in (first, second, third, other)] == [200, 200, 200, 200]
    assert second.json()["receipt_id"] == first.json()["receipt_id"] == third.json()["receipt_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert other.json()["receipt_id"] != first.json()["receipt_id"]
    counters = stats(client)
    assert (counters["receipts"], counters["distinct"], counters["duplicates"]) == (4, 2, 2)
    received = client.get("/_admin/received", params={"subscriber": "igate"}).json()
    assert [r["idempotency_key"] for r in received] == ["delivery-1", "delivery-2"]


def test_webhook_id_is_the_key_when_no_idempotency_header(client: httpx.Client) -> None:
    # given
    post(client, EVENTS[0], msg_id="msg_same")
    # when
    replay = post(client, EVENTS[0], msg_id="msg_same")
    # then
    assert replay.headers["idempotent-replayed"] == "true"
    assert (stats(client)["distinct"], stats(client)["duplicates"]) == (1, 1)


def test_subscribers_are_counted_apart(client: httpx.Client) -> None:
    post(client, EVENTS[0])
    post(client, EVENTS[0], subscriber="portal", secret=OTHER_SECRET)
    assert stats(client)["distinct"] == 1
    assert stats(client, "portal")["distinct"] == 1


def test_error_rate_one_answers_5xx_and_stores_nothing(client: httpx.Client) -> None:
    # given
    client.post("/_admin/faults", json={"subscriber": "igate", "error_rate": 1, "error_status": 502, "retry_after": 7})
    # when
    responses = [post(client, event) for event in EVENTS[:3]]
    # then
    assert {r.status_code for r in responses} == {502}
    assert responses[0].headers["retry-after"] == "7"
    counters = stats(client)
    assert counters["faults"]["error"] == 3
    assert counters["receipts"] == 0
    assert client.get("/_admin/received", params={"subscriber": "igate"}).json() == []
    # the other subscriber is untouched by igate's faults
    assert post(client, EVENTS[0], subscriber="portal", secret=OTHER_SECRET).status_code == 200


def test_global_faults_apply_to_every_subscriber_and_can_be_cleared(client: httpx.Client) -> None:
    # given
    client.post("/_admin/faults", json={"subscriber": None, "error_rate": 1})
    assert client.get("/_admin/faults").json()["global"]["error_rate"] == 1
    # when / then
    assert post(client, EVENTS[0]).status_code == 503
    assert post(client, EVENTS[0], subscriber="portal", secret=OTHER_SECRET).status_code == 503
    client.delete("/_admin/faults")
    assert client.get("/_admin/faults").json() == {"global": None, "subscribers": {}}
    assert post(client, EVENTS[0]).status_code == 200


def test_timeout_rate_one_stores_the_effect_then_hangs(client: httpx.Client) -> None:
    # given
    client.post("/_admin/faults", json={"subscriber": "igate", "timeout_rate": 1, "hang_seconds": 1.0})
    body, headers = signed(EVENTS[0], idempotency_key="ambiguous")
    # when the client gives up before the answer
    with pytest.raises(httpx.ReadTimeout):
        client.post("/subscribers/igate/events", content=body, headers=headers, timeout=0.3)
    # then the work was done all the same
    received = client.get("/_admin/received", params={"subscriber": "igate"}).json()
    assert [r["idempotency_key"] for r in received] == ["ambiguous"]
    assert stats(client)["faults"]["timeout"] == 1
    # and a patient client gets the answer after the hang
    started = time.perf_counter()
    retry = client.post("/subscribers/igate/events", content=body, headers=headers, timeout=5)
    assert time.perf_counter() - started >= 0.9
    assert retry.headers["idempotent-replayed"] == "true"


def test_reset_rate_one_breaks_the_connection_mid_response(client: httpx.Client) -> None:
    # given
    client.post("/_admin/faults", json={"subscriber": "igate", "reset_rate": 1})
    # when / then: the body stops short; whether the client sees the close or the reset first is timing
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(client, EVENTS[0])
    counters = stats(client)
    assert counters["faults"]["reset"] == 1
    assert counters["receipts"] == 0


def test_reset_after_store_applies_the_effect_before_breaking(client: httpx.Client) -> None:
    client.post("/_admin/faults", json={"subscriber": "igate", "reset_rate": 1, "reset_after_store": True})
    with pytest.raises(httpx.TransportError):
        post(client, EVENTS[0])
    assert stats(client)["distinct"] == 1


def test_latency_is_added_to_each_request(client: httpx.Client) -> None:
    # given
    client.post("/_admin/faults", json={"subscriber": "igate", "latency_ms": 250, "latency_jitter_ms": 50, "seed": 3})
    # when
    started = time.perf_counter()
    response = post(client, EVENTS[0])
    elapsed = time.perf_counter() - started
    # then
    assert response.status_code == 200
    assert 0.25 <= elapsed < 2.0


def test_seeded_error_rate_is_reproducible(client: httpx.Client) -> None:
    def run() -> list[int]:
        client.post("/_admin/faults", json={"subscriber": "igate", "error_rate": 0.5, "seed": 42})
        return [post(client, EVENTS[0], idempotency_key=f"k{i}").status_code for i in range(20)]

    first, second = run(), run()
    assert first == second
    assert {200, 503} == set(first)


def test_faults_for_unknown_subscriber_are_refused(client: httpx.Client) -> None:
    assert client.post("/_admin/faults", json={"subscriber": "nobody", "error_rate": 1}).status_code == 404
    assert client.post("/_admin/faults", json={"error_rate": 2}).status_code == 422


def test_received_filters_by_dossier_and_reset_clears_everything(client: httpx.Client) -> None:
    # given events of several dossiers, in arrival order
    for event in EVENTS:
        assert post(client, event).status_code == 200
    dossier = EVENTS[0]["dossier_code"]
    expected = [e["event_id"] for e in EVENTS if e["dossier_code"] == dossier]
    client.post("/_admin/faults", json={"subscriber": "igate", "error_rate": 1})
    # when
    rows = client.get("/_admin/received", params={"subscriber": "igate", "dossier_code": dossier}).json()
    full = client.get("/_admin/received", params={"subscriber": "igate", "full": True}).json()
    # then
    assert [r["event_id"] for r in rows] == expected
    assert set(rows[0]) == {
        "receipt_id", "idempotency_key", "event_id", "type", "dossier_code", "sequence", "received_at"
    }
    assert full[0]["event"] == EVENTS[0]
    assert datetime.fromisoformat(rows[0]["received_at"]).tzinfo is not None
    # when
    client.post("/_admin/reset")
    # then
    assert client.get("/_admin/received", params={"subscriber": "igate"}).json() == []
    assert stats(client)["receipts"] == 0
    assert client.get("/_admin/faults").json()["subscribers"] == {}


def test_without_validation_only_json_objects_with_an_event_id_pass() -> None:
    with run_asgi(create_app({"igate": SECRET}, validate=False)) as url, httpx.Client(base_url=url) as c:
        assert post(c, dict(EVENTS[0], sequence=0)).status_code == 200
        assert post(c, {"no": "id"}).status_code == 422  # type: ignore[arg-type]


def test_secrets_must_be_whsec_base64() -> None:
    with pytest.raises(ValueError, match="igate"):
        create_app({"igate": "whsec_not base64!"})
