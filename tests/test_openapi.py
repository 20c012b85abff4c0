"""The OpenAPI document says exactly what the API takes: schemathesis, run against ``/openapi.json`` of the real app
(in-process ASGI, on a SQLite ledger), sends what the document describes — every event it makes as valid is taken
(2xx) — and what it does not (negative cases), and no request of any inbound route is answered 5xx.

The intake is signed as the one-stop software signs (Standard Webhooks, by a schemathesis auth provider that signs
the body as its transport sends it). The document cannot say that an event's id is used once, so the provider
also makes each case's ids unique: a reused id with other content is rightly a 409.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.auths import AuthContext
from schemathesis.generation.modes import GenerationMode

from schemas.events import MAX_BATCH
from schemas.webhook import sign
from tests.edges import Edges, edges_relay, ledger_url

EXAMPLES = 50  # per operation and mode: the intake's valid events are costly to make (about 60 ms each)


@pytest.fixture(scope="module")
def relay(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    workdir = tmp_path_factory.mktemp("openapi")
    with edges_relay(ledger_url("sqlite", request, workdir), redis_url, workdir) as running:
        yield running


class SignedIntake:
    """What the one-stop software does to a request: new event ids, and the Standard Webhooks headers over the body
    exactly as the transport serializes ``json=`` (``json.dumps(body, allow_nan=False)``, as requests does). The
    secret is the class's (schemathesis makes the provider itself)."""

    secret = ""

    def __init__(self) -> None:
        self.serial = itertools.count(1)

    def get(self, case: schemathesis.Case, ctx: AuthContext) -> str:
        return self.secret

    def set(self, case: schemathesis.Case, data: str, ctx: AuthContext) -> None:
        for item in case.body if isinstance(case.body, list) else [case.body]:
            if isinstance(item, dict) and isinstance(item.get("event_id"), str):
                item["event_id"] = f"{item['event_id'][:80]}.{next(self.serial)}"
        try:
            body = json.dumps(case.body, allow_nan=False).encode()
        except (TypeError, ValueError):  # not JSON (a negative case's NaN): sent unsigned, refused 401
            return
        case.headers = {**(case.headers or {}), **sign(data, f"msg_{next(self.serial)}", body).as_headers()}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_what_the_document_describes_is_taken_and_nothing_is_answered_5xx(relay: Edges, mode: GenerationMode) -> None:
    # given the document the real app serves, and the intake's sender
    schema = schemathesis.openapi.from_asgi("/openapi.json", relay.api.app)
    schema.auth().apply_to(path="/v1/events")(type("Signer", (SignedIntake,), {"secret": relay.intake_secret}))
    operations = [result.ok() for result in schema.include(path_regex=r"^/v1/").get_all_operations()]
    assert "/v1/events" in {operation.path for operation in operations}
    if mode is GenerationMode.NEGATIVE:  # a case against the document needs something the document describes
        operations = [operation for operation in operations if len(operation.body) > 0]
    answered: Counter[tuple[str, int]] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[
            HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
        def call(case: schemathesis.Case) -> None:
            # when schemathesis sends a case
            response = case.call()
            answered[(case.operation.label, response.status_code)] += 1
            # then no route answers 5xx, and the intake takes every event the document calls valid
            assert response.status_code < 500, response.text[:500]
            if case.operation.path == "/v1/events" and mode is GenerationMode.POSITIVE:
                assert response.status_code in (200, 202), (case.body, response.text[:2000])

        call()
    print(f"\n{mode}: {sorted(answered.items())}")
    intake = sum(n for (label, code), n in answered.items() if label == "POST /v1/events")
    assert intake >= EXAMPLES // 2, answered


def test_the_document_bounds_the_batch_and_names_the_codes_shapes(relay: Edges) -> None:
    from config.settings import get_settings

    document = relay.api.send([relay.api.build("GET", "/openapi.json")])[0].json()
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    [batch] = [form for form in body["oneOf"] if form.get("type") == "array"]
    assert (batch["minItems"], batch["maxItems"]) == (1, MAX_BATCH)
    patterns = get_settings().code_patterns
    received = document["components"]["schemas"]["DossierReceived"]["properties"]
    assert received["unit_code"]["pattern"] == patterns.unit_code.pattern
    assert received["dossier_code"]["pattern"] == patterns.dossier_code.pattern
    assert received["procedure_code"]["pattern"] == patterns.procedure_code.pattern
    assert received["occurred_at"]["pattern"].startswith("^(19[0-9]{2}|2[0-9]{3})-")
    assert document["components"]["schemas"]["Applicant"]["properties"]["name"]["pattern"].startswith("^[^\\x00]*")
