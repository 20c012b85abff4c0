"""Routing rules: which events go to which destination, and how a routing file is read."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.routing import Route, RoutingConfig, load_routing, parse_duration
from config.settings import DEFAULT_ROUTING_FILE
from sandbox.workload import generate_day
from schemas.events import event_json, parse_event

DAY = generate_day(20, day=date(2024, 3, 15), seed=3)


def event(type_: str = "dossier.received", **overrides: Any) -> dict[str, Any]:
    base = copy.deepcopy(next(e for e in DAY if e["type"] == "dossier.received"))
    base.update(type=type_, **overrides)
    return base


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text(text, encoding="utf-8")
    return path


WEBHOOK = 'kind = "webhook"\nurl = "http://127.0.0.1:1/x"\n'


@pytest.mark.parametrize(("value", "seconds"), [
    ("5s", 5), ("2m", 120), ("1h", 3600), ("72h", 259200), ("3d", 259200), ("250ms", 0.25), ("1.5m", 90),
    (" 10 s ", 10), ("30", 30), (45, 45), (0.5, 0.5),
])
def test_durations(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 minutes", "-5s", "1w", "s"])
def test_bad_durations_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(("patterns", "type_", "matches"), [
    (["dossier.*"], "dossier.received", True),
    (["dossier.*"], "fee.paid", False),
    (["*"], "transfer.result", True),
    (["fee.paid", "fee.refunded"], "fee.refunded", True),
    (["fee.paid"], "fee.paid_late", False),
    (["dossier.?ompleted"], "dossier.completed", True),
    (["Dossier.*"], "dossier.received", False),
])
def test_event_type_patterns(patterns: list[str], type_: str, matches: bool) -> None:
    assert Route(events=patterns, destination="d").matches(event(type_)) is matches


def test_require_needs_every_path_present_and_truthy() -> None:
    route = Route(events=["*"], destination="zalo", require=["applicant.phone", "applicant.zalo_consent"])
    with_phone = event(applicant={"name": "A", "phone": "0912345678", "zalo_consent": True})
    no_consent = event(applicant={"name": "A", "phone": "0912345678", "zalo_consent": False})
    no_phone = event(applicant={"name": "A", "zalo_consent": True})

    assert route.matches(with_phone)
    assert not route.matches(no_consent)
    assert not route.matches(no_phone)
    assert not Route(events=["*"], destination="d", require=["applicant.phone.number"]).matches(with_phone)


def test_origins_and_exclude_origins() -> None:
    only_payment = Route(events=["*"], destination="d", origins=["payment", "vnpost"])
    not_onestop = Route(events=["*"], destination="d", exclude_origins=["onestop"])

    assert only_payment.matches(event(origin="payment"))
    assert not only_payment.matches(event(origin="onestop"))
    assert not only_payment.matches({k: v for k, v in event().items() if k != "origin"})
    assert not_onestop.matches(event(origin="portal"))
    assert not not_onestop.matches(event(origin="onestop"))
    assert not not_onestop.matches({k: v for k, v in event().items() if k != "origin"})


def test_units() -> None:
    route = Route(events=["*"], destination="d", units=["000.21.00.H49"])

    assert route.matches(event(unit_code="000.21.00.H49"))
    assert not route.matches(event(unit_code="000.00.13.H49"))


def test_destinations_for_lists_each_destination_once_in_config_order(tmp_path: Path) -> None:
    routing = load_routing(write(tmp_path, f"""
[destinations.b]
{WEBHOOK}
[destinations.a]
{WEBHOOK}
[[routes]]
events = ["dossier.*"]
destination = "b"
[[routes]]
events = ["*"]
destination = "a"
[[routes]]
events = ["dossier.received"]
destination = "b"
"""))

    assert routing.destinations_for(event("dossier.received")) == ["b", "a"]
    assert routing.destinations_for(event("fee.paid")) == ["a"]


def test_file_shorthand_options_and_defaults(tmp_path: Path) -> None:
    routing = load_routing(write(tmp_path, """
[destinations.portal]
kind = "webhook"
url = "http://127.0.0.1:1/portal"
secret_env = "PORTAL_SECRET"
events = ["dossier.*"]
ordering = "none"
retry = { schedule = ["5s", "2m", "1h"], repeat_every = "6h", deadline = "3d", max_attempts = 12 }
breaker = { failure_threshold = 3, open_for = "250ms" }
rate_limit = { per_second = 10, burst = 20 }
timeouts = { connect = 1, read = 7.5 }

[destinations.other]
kind = "webhook"
url = "http://127.0.0.1:1/other"
queue = "slow"
"""))

    portal = routing.destinations["portal"]
    assert portal.queue == "deliver.portal"
    assert portal.ordering == "none"
    assert portal.options == {"url": "http://127.0.0.1:1/portal", "secret_env": "PORTAL_SECRET"}
    assert portal.retry.schedule == [5, 120, 3600]
    assert (portal.retry.repeat_every, portal.retry.deadline, portal.retry.max_attempts) == (21600, 259200, 12)
    assert (portal.breaker.failure_threshold, portal.breaker.open_for) == (3, 0.25)
    assert (portal.rate_limit.per_second, portal.rate_limit.burst) == (10, 20)
    assert (portal.timeouts.connect, portal.timeouts.read) == (1, 7.5)
    assert routing.destinations_for(event("dossier.completed")) == ["portal"]
    assert routing.destinations_for(event("fee.paid")) == []
    other = routing.destinations["other"]
    assert (other.queue, other.ordering, other.breaker.failure_threshold) == ("slow", "sequence", 20)
    assert routing.queues == ["deliver.portal", "slow"]


def test_unknown_destination_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f'[destinations.a]\n{WEBHOOK}\n[[routes]]\nevents = ["*"]\ndestination = "nowhere"\n')

    with pytest.raises(ValidationError, match="nowhere"):
        load_routing(path)


@pytest.mark.parametrize("table", [
    'kind = "webhook"\nordering = "sometimes"',
    'kind = "webhook"\nretry = { schedule = ["5 minutes"] }',
    'kind = "webhook"\nretry = { backoff = "5s" }',
    'kind = "webhook"\nbreaker = { open_for = "soon" }',
    'url = "http://x"',
])
def test_bad_destination_tables_are_refused(tmp_path: Path, table: str) -> None:
    with pytest.raises(ValidationError):
        load_routing(write(tmp_path, f"[destinations.a]\n{table}\n"))


# --------------------------------------------------------------------------- the shipped relay.toml


@pytest.fixture(scope="module")
def default_routing() -> RoutingConfig:
    return load_routing(DEFAULT_ROUTING_FILE)


def test_default_file_loads(default_routing: RoutingConfig) -> None:
    kinds = {name: d.kind for name, d in default_routing.destinations.items()}
    assert kinds == {"onestop": "webhook", "warehouse": "webhook", "portal": "portal", "zalo": "zalo", "sms": "sms",
                     "postal": "postal", "payment": "payment", "lgsp": "transfer"}
    # (each destination's options, read by its service: tests/test_options.py)


def test_default_file_sends_lifecycle_events_to_the_portal_zalo_with_consent_everything_to_the_warehouse(
    default_routing: RoutingConfig,
) -> None:
    notify = {"dossier.received", "dossier.supplement_requested", "dossier.fee_requested", "dossier.completed",
              "dossier.refused", "dossier.returned"}
    # requests to the post, and what may cancel them
    postal = {"postal.pickup_requested", "postal.delivery_requested", "dossier.withdrawn", "dossier.returned"}
    for e in DAY:
        consented = bool(e["applicant"].get("zalo_consent") and e["applicant"].get("phone"))
        expected = (["lgsp"] if e["type"] == "transfer.requested" else []) + (
            ["payment"] if e["type"] == "fee.assessed" else []) + (
            ["zalo"] if e["type"] in notify and consented else []) + (
            ["portal"] if e["type"].startswith("dossier.") else []) + (
            ["postal"] if e["type"] in postal else []) + ["warehouse"]
        assert default_routing.destinations_for(e) == expected, e["type"]


def test_default_file_sends_the_payment_link_to_zalo_with_consent_and_payments_back_to_the_onestop(
    default_routing: RoutingConfig,
) -> None:
    from adapters.payment import PaymentMapping, bill_created_event, paid_event

    options = default_routing.destinations["payment"].options
    mapping = PaymentMapping.from_options({k: v for k, v in options.items() if not k.endswith("_env")})
    fees = [e for e in DAY if e["type"] == "fee.assessed"]
    consenting = next(e for e in fees if e["applicant"].get("zalo_consent") and e["applicant"].get("phone"))
    silent = next(e for e in fees if not e["applicant"].get("zalo_consent"))
    now = datetime.now(UTC)
    for fee, expected in ((consenting, ["zalo", "onestop", "warehouse"]), (silent, ["onestop", "warehouse"])):
        assessed = parse_event(fee)
        link = event_json(bill_created_event(assessed, mapping, "B-1", "https://pay.example/B-1", now))
        assert default_routing.destinations_for(link) == expected
        paid = event_json(paid_event(assessed, mapping, "B-1", "KP1", now))
        assert default_routing.destinations_for(paid) == ["onestop", "warehouse"]


def test_default_file_sends_online_dossiers_from_the_portal_to_the_onestop_not_back(
    default_routing: RoutingConfig,
) -> None:
    submitted = next(e for e in DAY if e["type"] == "dossier.submitted")
    assert default_routing.destinations_for({**submitted, "origin": "portal"}) == ["onestop", "warehouse"]


def test_default_file_sends_a_payment_callback_to_the_onestop_and_the_warehouse(
    default_routing: RoutingConfig,
) -> None:
    paid = next(e for e in DAY if e["type"] == "fee.paid")

    assert default_routing.destinations_for({**paid, "origin": "payment"}) == ["onestop", "warehouse"]


def test_default_file_sends_each_hop_to_the_exchange_and_results_back_down_only_when_they_must(
    default_routing: RoutingConfig,
) -> None:
    request = {**DAY[0], "type": "transfer.requested", "data": {"target_unit": "000.00.00.H49"}}
    assert default_routing.destinations_for(request) == ["lgsp", "warehouse"]
    answer = {**request, "origin": "transfer", "type": "transfer.result",
              "data": {"target_unit": "000.00.00.H49", "outcome": "approved", "transfer_id": "x:a:b"}}
    assert default_routing.destinations_for(answer) == ["onestop", "warehouse"]
    back = {**answer, "data": {**answer["data"], "return_to": "x:c:a"}}
    assert default_routing.destinations_for(back) == ["lgsp", "onestop", "warehouse"]
    onward = {**request, "origin": "transfer", "data": {**request["data"], "previous_transfer_id": "x:c:a"}}
    assert default_routing.destinations_for(onward) == ["lgsp", "onestop", "warehouse"]
