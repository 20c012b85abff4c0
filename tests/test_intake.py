"""The signed intake over real HTTP, on both ledger engines, with a client signing by the reference package."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine, select
from standardwebhooks import Webhook

from sandbox.workload import generate_day, sample
from schemas.events import DEFAULT_CODE_PATTERNS, CodePatterns, event_json, parse_event, parse_stored
from store.tables import deliveries
from store.tables import events as events_table
from tests.conftest import RelayConfig
from tests.edges import paths
from tests.harness import new_secret, wait_for
from tests.servers import run_asgi

DAY = generate_day(90, day=date(2024, 3, 15), seed=11)
DELIVER_QUEUE = "deliver.warehouse"


@dataclass
class Intake:
    client: httpx.Client
    secret: str
    engine: Engine

    def post(self, body: Any, *, secret: str | None = None, at: datetime | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        raw = body if isinstance(body, str | bytes) else json.dumps(body, ensure_ascii=False)
        signed = sign(raw, secret or self.secret, at=at)
        return self.client.post("/v1/events", content=raw.encode() if isinstance(raw, str) else raw,
                                headers={**signed, **(headers or {})})

    def stored(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The ledger's payload of each of these event ids that is stored."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events_table.c.event_id, events_table.c.payload)
                .where(events_table.c.event_id.in_(event_ids))
            ).all()
        return {row.event_id: json.loads(row.payload) for row in rows}

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(events_table.c.id)).all())


def sign(body: str | bytes, secret: str, *, at: datetime | None = None, msg_id: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers: by the reference package for text, by hand for bytes that are not UTF-8."""
    at = at or datetime.now(UTC)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            key = base64.b64decode(secret.removeprefix("whsec_"))
            to_sign = f"{msg_id}.{int(at.timestamp())}.".encode() + body
            signature = "v1," + base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
            return _headers(msg_id, at, signature)
    return _headers(msg_id, at, Webhook(secret).sign(msg_id, at, body))


def _headers(msg_id: str, at: datetime, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@contextmanager
def serve(config: RelayConfig) -> Iterator[Intake]:
    """The relay's ASGI app under uvicorn, built from the environment as it is now."""
    from api.app import create_app
    from tasks.runtime import get_runtime

    with run_asgi(create_app()) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Intake(client, config.intake_secret, get_runtime().engine)


@pytest.fixture
def intake(relay_config: RelayConfig) -> Iterator[Intake]:
    with serve(relay_config) as running:
        yield running


def fresh(event: dict[str, Any]) -> dict[str, Any]:
    """The event under a new id (tests share the workload's events)."""
    return {**copy.deepcopy(event), "event_id": f"ev-{uuid.uuid4().hex}"}


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in events]


# --------------------------------------------------------------------------- answers


def test_accepted_events_are_in_the_ledger_before_the_answer(intake: Intake) -> None:
    # given
    batch = [fresh(e) for e in DAY[:3]]
    # when
    response = intake.post(batch)
    # then
    assert response.status_code == 202
    answer = response.json()
    assert answer["status"] == "accepted"
    assert answer["duplicates"] == []
    assert sorted(a["event_id"] for a in answer["accepted"]) == sorted(ids(batch))
    assert all(isinstance(a["id"], int) for a in answer["accepted"])
    stored = intake.stored(ids(batch))
    assert stored == {e["event_id"]: event_json(parse_event(e)) for e in batch}
    with intake.engine.connect() as conn:
        pks = dict(conn.execute(select(events_table.c.event_id, events_table.c.id)).all())
    assert {a["event_id"]: a["id"] for a in answer["accepted"]} == pks


def test_a_single_event_object_is_accepted(intake: Intake) -> None:
    event = fresh(sample(1, seed=3)[0])

    response = intake.post(event)

    assert response.status_code == 202
    assert [a["event_id"] for a in response.json()["accepted"]] == [event["event_id"]]
    assert set(intake.stored([event["event_id"]])) == {event["event_id"]}


def test_deliveries_are_created_with_the_event_and_one_doorbell_rings(intake: Intake, redis_url: str) -> None:
    # given four events of the working day (a dossier may have several of them)
    broker = redis.Redis.from_url(redis_url)
    before = broker.llen(DELIVER_QUEUE)
    batch = [fresh(e) for e in DAY[:4]]
    # when
    response = intake.post(batch)
    # then every event has its warehouse delivery in the same commit ...
    assert response.status_code == 202
    with intake.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.destination, events_table.c.event_id)
            .join(events_table, events_table.c.id == deliveries.c.event_pk)
            .where(events_table.c.event_id.in_([e["event_id"] for e in batch]))
        ).all()
    assert sorted(r.event_id for r in rows) == sorted(e["event_id"] for e in batch)
    assert {r.destination for r in rows} == {"warehouse"}
    # ... and the warehouse's doorbell rings once: one message for the destination, not one per delivery
    wait_for(lambda: broker.llen(DELIVER_QUEUE) >= before + 1, 10, 0.05, "a doorbell in Redis")
    message = json.loads(broker.lindex(DELIVER_QUEUE, 0) or b"{}")
    assert (message["headers"]["task"], message["headers"]["argsrepr"]) == ("relay.drain", "('warehouse',)")
    # a second batch while no worker has answered rings no more
    assert intake.post([fresh(e) for e in DAY[4:8]]).status_code == 202
    time.sleep(0.5)
    assert broker.llen(DELIVER_QUEUE) == before + 1


def test_batch_of_500_is_accepted_and_501_is_too_large(intake: Intake) -> None:
    events = [fresh(e) for e in DAY[:501]]
    assert len(events) == 501

    too_many = intake.post(events)
    assert too_many.status_code == 413
    assert intake.count() == 0

    accepted = intake.post(events[:500])
    assert accepted.status_code == 202
    assert len(accepted.json()["accepted"]) == 500
    assert intake.count() == 500


def test_repeated_event_with_same_content_is_a_duplicate(intake: Intake) -> None:
    # given
    event = fresh(DAY[0])
    first = intake.post([event])
    assert first.status_code == 202
    # when
    again = intake.post([event])
    # then
    assert again.status_code == 200
    answer = again.json()
    assert answer["status"] == "duplicate"
    assert answer["accepted"] == []
    assert answer["duplicates"] == first.json()["accepted"]
    assert intake.count() == 1


def test_reused_event_id_with_other_content_is_refused_and_nothing_of_the_batch_stored(intake: Intake) -> None:
    # given
    event = fresh(DAY[0])
    assert intake.post([event]).status_code == 202
    changed = {**event, "sequence": event["sequence"] + 1}
    newcomer = fresh(DAY[1])
    # when
    response = intake.post([newcomer, changed])
    # then
    assert response.status_code == 409
    assert response.json()["event_ids"] == [event["event_id"]]
    assert intake.stored([newcomer["event_id"]]) == {}
    assert intake.stored([event["event_id"]]) == {event["event_id"]: event_json(parse_event(event))}


@pytest.mark.parametrize("body", [b'{"event_id": "x", ', b"\xff\xfe not json", b"42", b'"a string"', b"null"])
def test_malformed_json_or_wrong_shape_is_400(intake: Intake, body: bytes) -> None:
    response = intake.post(body)

    assert response.status_code == 400
    assert intake.count() == 0


def test_deeply_nested_json_is_400_not_500(intake: Intake) -> None:
    response = intake.post("[" * 100_000 + "]" * 100_000)

    assert response.status_code == 400


def test_validation_lists_every_error_of_every_event_without_personal_values(intake: Intake) -> None:
    # given: two broken events around a valid one
    first = fresh(DAY[0])
    del first["applicant"]["name"]
    first["sequence"] = "third"
    valid = fresh(DAY[1])
    third = fresh(DAY[2])
    phone = "0912 345 678 0912 345 678"
    third["applicant"] = {**third["applicant"], "phone": phone, "email": "x" * 250 + "@example.vn"}
    third["unit_code"] = "not a unit"
    # when
    response = intake.post([first, valid, third])
    # then
    assert response.status_code == 422
    errors = response.json()["errors"]
    located = {(e["index"], tuple(e["loc"][1:])) for e in errors}
    assert located == {
        (0, ("applicant", "name")),
        (0, ("sequence",)),
        (2, ("applicant", "phone")),
        (2, ("applicant", "email")),
        (2, ("unit_code",)),
    }
    assert all(e["msg"] and e["type"] for e in errors)
    text = response.text
    assert phone not in text
    assert "0912" not in text
    assert third["applicant"]["name"] not in text
    assert intake.stored(ids([first, valid, third])) == {}


def test_empty_batch_is_422(intake: Intake) -> None:
    assert intake.post([]).status_code == 422


# --------------------------------------------------------------------------- signatures


def test_bad_signature_is_401(intake: Intake) -> None:
    event = fresh(DAY[0])
    body = json.dumps([event])
    headers = sign(json.dumps([fresh(DAY[0])]), intake.secret)

    response = intake.client.post("/v1/events", content=body, headers=headers)

    assert response.status_code == 401
    assert intake.count() == 0


def test_stale_timestamp_is_401(intake: Intake) -> None:
    response = intake.post([fresh(DAY[0])], at=datetime.now(UTC) - timedelta(minutes=5, seconds=30))

    assert response.status_code == 401
    assert "old" in response.json()["detail"]
    assert intake.count() == 0


def test_timestamp_within_tolerance_is_accepted(intake: Intake) -> None:
    response = intake.post([fresh(DAY[0])], at=datetime.now(UTC) - timedelta(minutes=4))

    assert response.status_code == 202


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_signature_header_is_401(intake: Intake, missing: str) -> None:
    body = json.dumps([fresh(DAY[0])])
    headers = {k: v for k, v in sign(body, intake.secret).items() if k != missing}

    response = intake.client.post("/v1/events", content=body, headers=headers)

    assert response.status_code == 401
    assert intake.count() == 0


def test_wrong_secret_is_401(intake: Intake) -> None:
    response = intake.post([fresh(DAY[0])], secret=new_secret())

    assert response.status_code == 401
    assert intake.count() == 0


def test_both_secrets_are_accepted_during_key_rotation(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given
    from tasks.runtime import reset_runtime

    old, new = relay_config.intake_secret, new_secret()
    monkeypatch.setenv("MOTCUA_INTAKE_SECRET", f"{old} {new}")
    reset_runtime()
    with serve(relay_config) as intake:
        # when
        by_old = intake.post([fresh(DAY[0])], secret=old)
        by_new = intake.post([fresh(DAY[1])], secret=new)
        by_other = intake.post([fresh(DAY[2])], secret=new_secret())
    # then
    assert (by_old.status_code, by_new.status_code, by_other.status_code) == (202, 202, 401)


def test_body_over_the_limit_is_413(relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    from tasks.runtime import reset_runtime

    monkeypatch.setenv("MOTCUA_INTAKE_MAX_BODY_BYTES", "4000")
    reset_runtime()
    small, large = [fresh(DAY[0])], [fresh(e) for e in DAY[:6]]
    assert len(json.dumps(small, ensure_ascii=False).encode()) < 4000 < len(json.dumps(large).encode())
    with serve(relay_config) as intake:
        # when
        too_large = intake.post(large)
        fits = intake.post(small)
        # then
        assert too_large.status_code == 413
        assert fits.status_code == 202
        assert intake.stored(ids(large)) == {}
        assert set(intake.stored(ids(small))) == set(ids(small))


def test_openapi_publishes_the_event_schema(intake: Intake) -> None:
    schema = intake.client.get("/openapi.json").json()

    event = schema["components"]["schemas"]["Event"]
    assert event["discriminator"]["propertyName"] == "type"
    mapping = event["discriminator"]["mapping"]
    assert {"dossier.submitted", "fee.paid", "postal.status", "transfer.result"} <= set(mapping)
    for ref in mapping.values():
        assert ref.removeprefix("#/components/schemas/") in schema["components"]["schemas"]
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/Event"} in body["oneOf"]


# --------------------------------------------------------------------------- property: never 500, never half-written

_POOL = DAY[:40]
_FIELDS = ["event_id", "type", "unit_code", "dossier_code", "procedure_code", "sequence", "occurred_at",
           "applicant", "origin", "data"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _mutated_event(draw: st.DrawFn) -> dict[str, Any]:
    event = copy.deepcopy(draw(st.sampled_from(_POOL)))
    if draw(st.booleans()):
        event["event_id"] = draw(st.sampled_from(["ev-", "ev2-"])) + draw(st.text("abc0123", min_size=1, max_size=4))
    kind = draw(st.sampled_from(["none", "remove", "wrong_type", "bad_code", "huge", "text"]))
    places = paths(event)
    if kind == "remove":
        path = draw(st.sampled_from(places))
        _parent(event, path).pop(path[-1])
    elif kind == "wrong_type":
        path = draw(st.sampled_from(places))
        _parent(event, path)[path[-1]] = draw(_json_values)
    elif kind == "bad_code":
        field = draw(st.sampled_from(["unit_code", "dossier_code", "procedure_code", "type", "event_id"]))
        event[field] = draw(st.text(max_size=20))
    elif kind == "huge":
        field = draw(st.sampled_from(["origin", "event_id", "unit_code"]))
        event[field] = "x" * draw(st.integers(30, 200_000))
    elif kind == "text":
        field = draw(st.sampled_from(["origin", "event_id", "dossier_code"]))
        event[field] = draw(st.text(min_size=1, max_size=40))
    return event


def _parent(event: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = event
    for part in path[:-1]:
        node = node[part]
    return node


_bodies = st.one_of(
    st.lists(_mutated_event(), min_size=1, max_size=4).map(lambda evs: json.dumps(evs, ensure_ascii=False)),
    _mutated_event().map(json.dumps),
    _json_values.map(json.dumps),
    st.binary(max_size=200),
)


def _batch_ids(body: str | bytes) -> list[str]:
    try:
        data = json.loads(body)
    except ValueError:
        return []
    items = data if isinstance(data, list) else [data]
    # an id with a NUL cannot be stored (the schema refuses it), and PostgreSQL refuses it even in a query
    return [i["event_id"] for i in items
            if isinstance(i, dict) and isinstance(i.get("event_id"), str) and "\x00" not in i["event_id"]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.large_base_example])
@given(body=_bodies)
def test_malformed_events_never_crash_the_intake_nor_half_write_the_ledger(intake: Intake, body: str | bytes) -> None:
    batch_ids = _batch_ids(body)
    already = set(intake.stored(batch_ids))

    response = intake.post(body)

    assert response.status_code in (200, 202, 400, 409, 413, 422), response.text[:500]
    stored = intake.stored(batch_ids)
    if response.status_code in (200, 202):
        items = json.loads(body)
        for item in items if isinstance(items, list) else [items]:
            assert stored[item["event_id"]] == event_json(parse_event(item))
    else:
        assert set(stored) <= already




@pytest.mark.parametrize("origin", ["one\x00stop", "one stop", "ổn"])
def test_origin_must_be_an_identifier(intake: Intake, origin: str) -> None:
    """A NUL byte in a plain column used to crash PostgreSQL's insert with a 500."""
    event = {**fresh(DAY[0]), "origin": origin}

    response = intake.post([event])

    assert response.status_code == 422
    assert [tuple(e["loc"][1:]) for e in response.json()["errors"]] == [("origin",)]
    assert intake.count() == 0


# --------------------------------------------------------------------------- a province's own code shapes

PROVINCE_DOSSIER = r"^HS-\d{4}-\d{1,7}$"


def test_the_intake_checks_codes_against_the_provinces_own_patterns(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a province whose dossier codes are HS-<year>-<number>
    from tasks.runtime import reset_runtime

    monkeypatch.setenv("MOTCUA_DOSSIER_CODE_PATTERN", PROVINCE_DOSSIER)
    reset_runtime()
    theirs = {**fresh(DAY[0]), "dossier_code": "HS-2024-0042"}
    national = fresh(DAY[1])
    with serve(relay_config) as intake:
        # when
        accepted = intake.post([theirs])
        refused = intake.post([national])
        # then
        assert accepted.status_code == 202, accepted.text
        assert refused.status_code == 422
        assert [tuple(e["loc"][1:]) for e in refused.json()["errors"]] == [("dossier_code",)]
        assert set(intake.stored(ids([theirs, national]))) == {theirs["event_id"]}
    # and nothing global changed: the national shape still holds where no patterns are given
    with pytest.raises(ValidationError, match="dossier_code"):
        parse_event(theirs)


def test_code_patterns_replace_only_the_shapes_given() -> None:
    province = CodePatterns.of(dossier=PROVINCE_DOSSIER)
    event = {**fresh(DAY[0]), "dossier_code": "HS-2024-0042"}

    assert parse_event(event, province).dossier_code == "HS-2024-0042"
    assert province.unit_code == DEFAULT_CODE_PATTERNS.unit_code
    assert province.procedure_code == DEFAULT_CODE_PATTERNS.procedure_code
    with pytest.raises(ValidationError, match="unit_code"):
        parse_event({**event, "unit_code": "not a unit"}, province)


def test_settings_give_their_code_patterns_and_refuse_a_broken_one() -> None:
    from config.settings import Settings

    assert Settings(dossier_code_pattern=PROVINCE_DOSSIER).code_patterns == CodePatterns.of(dossier=PROVINCE_DOSSIER)
    assert Settings().code_patterns == DEFAULT_CODE_PATTERNS
    with pytest.raises(ValidationError, match="regular expression"):
        Settings(unit_code_pattern="([A-Z")


def test_an_event_read_back_from_the_ledger_is_not_held_to_todays_code_shapes() -> None:
    # given: an event stored under a province's patterns
    stored = event_json(parse_event({**fresh(DAY[0]), "dossier_code": "HS-2024-0042"},
                                    CodePatterns.of(dossier=PROVINCE_DOSSIER)))
    # when / then: read back, only the codes' shapes are not checked again
    assert event_json(parse_stored(stored)) == stored
    with pytest.raises(ValidationError, match="sequence"):
        parse_stored({**stored, "sequence": 0})


# --------------------------------------------------------------------------- closed unit codes


def test_an_event_naming_a_closed_code_is_delivered_under_its_successor_and_the_trace_shows_both(
    intake: Intake, relay_config: RelayConfig,
) -> None:
    import subprocess
    import sys

    from tests.harness import drain

    # given an event from a one-stop system that still sends phường Hồng Gai's code of before 1 July 2025
    event = {**fresh(DAY[0]), "unit_code": "000.31.12.H22"}
    # when it comes in
    response = intake.post([event])
    # then it is stored under the ward's code now, the code it came with kept beside it
    assert response.status_code == 202, response.text
    stored = intake.stored([event["event_id"]])[event["event_id"]]
    assert (stored["unit_code"], stored["unit_code_sent"]) == ("000.21.00.H49", "000.31.12.H22")
    # and its subscribers receive it under the successor
    drain()
    rows = httpx.get(f"{relay_config.sandbox.url}/_admin/received", params={"subscriber": "warehouse", "full": True},
                     timeout=10).json()
    [got] = [r["event"] for r in rows if r["event"]["event_id"] == event["event_id"]]
    assert got["unit_code"] == "000.21.00.H49" and got["unit_code_sent"] == "000.31.12.H22"
    # and `motcua-relay trace` shows both
    shown = subprocess.run([sys.executable, "-m", "cli.main", "trace", event["dossier_code"]], capture_output=True,
                           text=True, env={**relay_config.env, "COLUMNS": "250"}, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "unit 000.21.00.H49, sent as the closed code 000.31.12.H22" in shown.stdout


def test_an_event_naming_a_code_closed_with_no_successor_is_refused_422_naming_it(intake: Intake) -> None:
    # the former city of Hạ Long: the district level was abolished, nothing answers for its code
    district = {**fresh(DAY[0]), "unit_code": "000.00.12.H22"}
    transfer = next(e for e in generate_day(400, day=date(2024, 3, 15), seed=11) if e["type"] == "transfer.requested")
    closed_target = {**fresh(transfer), "data": {**transfer["data"], "target_unit": "000.00.12.H22"}}
    response = intake.post([fresh(DAY[1]), district, closed_target])
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["index"], e["loc"], e["type"]) for e in errors] == [
        (1, ["unit_code"], "closed_unit_code"), (2, ["data", "target_unit"], "closed_unit_code")]
    assert all("000.00.12.H22" in e["msg"] and "no successor" in e["msg"] for e in errors)
    assert intake.count() == 0


def test_an_api_with_a_unit_directory_it_cannot_read_does_not_start(tmp_path: Any) -> None:
    from api.app import create_app
    from config.settings import Settings
    from config.units import DirectoryError

    with pytest.raises(DirectoryError, match=r"units\.csv"):
        create_app(Settings(units_file=tmp_path / "units.csv"))
