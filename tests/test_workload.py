"""The working-day generator and the sender that pushes it to an intake."""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from datetime import date, datetime, time
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from sandbox.workload import (
    AGRICULTURE_ENVIRONMENT,
    CONSTRUCTION_DEPT,
    NEIGHBOUR_WARD,
    PROCEDURES,
    add_working_days,
    generate_day,
    sample,
    send_events_sync,
    shuffle_per_dossier,
    workload_summary,
)
from schemas.events import event_json, parse_event
from schemas.webhook import SignatureError, verify
from tests.servers import run_asgi

DAY = date(2024, 3, 15)
SEEDS = range(6)
SECRET = "whsec_" + base64.b64encode(b"intake-secret-for-workload-tests").decode()


@pytest.fixture(scope="module")
def days() -> dict[int, list[dict[str, Any]]]:
    return {seed: generate_day(400, day=DAY, seed=seed) for seed in SEEDS}


def by_dossier(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        grouped[event["dossier_code"]].append(event)
    return grouped


def test_every_event_is_a_valid_canonical_event(days: dict[int, list[dict[str, Any]]]) -> None:
    for events in days.values():
        for event in events:
            assert event_json(parse_event(event)) == event


def test_every_event_survives_json(days: dict[int, list[dict[str, Any]]]) -> None:
    events = days[0]
    assert json.loads(json.dumps(events, ensure_ascii=False)) == events


def test_a_day_has_400_dossiers_of_4_to_10_events_with_contiguous_sequences(
    days: dict[int, list[dict[str, Any]]],
) -> None:
    for events in days.values():
        dossiers = by_dossier(events)
        assert len(dossiers) == 400
        for dossier_events in dossiers.values():
            assert 4 <= len(dossier_events) <= 10
            assert [e["sequence"] for e in dossier_events] == list(range(1, len(dossier_events) + 1))
            times = [datetime.fromisoformat(e["occurred_at"]) for e in dossier_events]
            assert times == sorted(times) and len(set(times)) == len(times)
            assert len({e["procedure_code"] for e in dossier_events}) == 1


def test_events_are_in_working_hours_of_the_day_sorted_and_unique(days: dict[int, list[dict[str, Any]]]) -> None:
    for events in days.values():
        times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
        assert times == sorted(times)
        for t in times:
            assert t.date() == DAY
            assert t.utcoffset() is not None and t.utcoffset().total_seconds() == 7 * 3600  # type: ignore[union-attr]
            assert time(7, 30) <= t.time() < time(17, 0)
            assert not time(11, 30) <= t.time() < time(13, 30)
        assert len({e["event_id"] for e in events}) == len(events)


def test_dossier_codes_carry_unit_and_date() -> None:
    events = generate_day(5, day=DAY, unit_code="000.00.07.H49", seed=1)
    codes = sorted({e["dossier_code"] for e in events})
    assert codes == [f"000.00.07.H49-240315-{n:04d}" for n in range(1, 6)]
    assert {e["unit_code"] for e in events} == {"000.00.07.H49"}


def test_the_mix_looks_like_a_ward_desk(days: dict[int, list[dict[str, Any]]]) -> None:
    summaries = [workload_summary(events) for events in days.values()]
    for s in summaries:
        assert 0.80 <= s["postal_share"] <= 0.90
        assert s["transfers"] >= 1
        assert s["pickup_by_post"] >= 5
        assert s["fees"]["paid"] > 0 and s["fees"]["unpaid"] > 0
        assert s["supplements"] > 0
        assert s["by_type"]["dossier.refused"] > 0
        assert s["applicants"]["business"] > 0
        assert s["applicants"]["zalo_consent"] < s["applicants"]["with_phone"] < 400
    mean_transfer_share = sum(s["transfers"] for s in summaries) / (400 * len(summaries))
    # the land and construction dossiers the province decides, and births registered outside the ward
    assert 0.06 <= mean_transfer_share <= 0.13
    certification_and_civil = {p.code for p in PROCEDURES if p.code.split(".")[1] in {"000815", "000884", "001193"}}
    top = Counter(e["procedure_code"] for e in days[0] if e["sequence"] == 1).most_common(3)
    assert {code for code, _ in top} <= certification_and_civil | {"2.000635.000.00.00.H49"}


def test_lifecycle_order_within_a_dossier(days: dict[int, list[dict[str, Any]]]) -> None:
    for dossier_events in by_dossier(days[0]).values():
        types = [e["type"] for e in dossier_events]
        if "postal.pickup_requested" in types:
            assert types.index("postal.pickup_requested") < types.index("dossier.received")
        if "postal.delivery_requested" in types:
            assert types.index("dossier.completed") < types.index("postal.delivery_requested")
        if "fee.paid" in types:
            assert types.index("fee.assessed") < types.index("fee.paid")
            paid = dossier_events[types.index("fee.paid")]["data"]
            assert paid["provider"] == "cash"
        if "dossier.supplement_requested" in types and "dossier.completed" in types:
            assert types[types.index("dossier.supplement_requested") + 1] == "dossier.processing"
        if "transfer.requested" in types:  # to the unit that decides it now: no district in between
            target = dossier_events[types.index("transfer.requested")]["data"]["target_unit"]
            assert target in (AGRICULTURE_ENVIRONMENT, CONSTRUCTION_DEPT, NEIGHBOUR_WARD)
            if target == NEIGHBOUR_WARD:  # the ward of residence takes it over
                assert types[-1] == "transfer.requested"
            else:  # the department decides, the result comes back and the desk returns it
                assert types.index("transfer.requested") < types.index("dossier.completed")
        terminal = types[-1]
        assert terminal in {"dossier.returned", "dossier.refused", "dossier.withdrawn", "transfer.requested"}


def test_applicants_look_vietnamese(days: dict[int, list[dict[str, Any]]]) -> None:
    applicants = [evs[0]["applicant"] for evs in by_dossier(days[0]).values()]
    citizens = [a for a in applicants if a["kind"] == "citizen"]
    assert all(len(a["id_number"]) == 12 and a["id_number"].isdigit() for a in citizens)
    assert any(not a["name"].isascii() for a in citizens)
    phones = [a["phone"] for a in citizens if "phone" in a]
    assert any(p.startswith("+84") for p in phones)
    assert any(" " in p for p in phones)
    assert any("." in p for p in phones)
    assert all(a["address"]["ward"] and a["address"]["province"] for a in applicants)


def test_due_dates_count_working_days() -> None:
    # given a Friday: 5 working days later is the next Friday, 1 is Monday
    assert add_working_days(date(2024, 3, 15), 1) == date(2024, 3, 18)
    assert add_working_days(date(2024, 3, 15), 5) == date(2024, 3, 22)
    # and 30 April and 1 May are holidays
    assert add_working_days(date(2024, 4, 29), 1) == date(2024, 5, 2)


def test_same_seed_same_day_other_seed_other_day() -> None:
    assert generate_day(30, day=DAY, seed=5) == generate_day(30, day=DAY, seed=5)
    assert generate_day(30, day=DAY, seed=5) != generate_day(30, day=DAY, seed=6)


def test_sample_has_the_asked_number_of_dossiers() -> None:
    assert workload_summary(sample(7, seed=2))["dossiers"] == 7


def test_shuffle_per_dossier_keeps_the_set_and_moves_only_within_dossiers(
    days: dict[int, list[dict[str, Any]]],
) -> None:
    # given
    events = days[1]
    # when
    shuffled = shuffle_per_dossier(events, seed=9)
    # then
    assert sorted(e["event_id"] for e in shuffled) == sorted(e["event_id"] for e in events)
    assert [e["dossier_code"] for e in shuffled] == [e["dossier_code"] for e in events]
    out_of_order = sum(
        1 for evs in by_dossier(shuffled).values() if [e["sequence"] for e in evs] != sorted(e["sequence"] for e in evs)
    )
    assert out_of_order > 300
    assert shuffle_per_dossier(events, seed=9) == shuffled


# ---- the sender, against a small intake that keeps the documented contract ----------------------------------------


def fake_intake(fail_first: int = 0, reject: bool = False) -> tuple[FastAPI, dict[str, Any]]:
    """An intake double: verifies the signature, deduplicates by event_id, can fail or reject."""
    seen: dict[str, Any] = {"ids": set(), "requests": 0, "msg_ids": []}
    app = FastAPI()

    @app.post("/v1/events")
    async def intake(request: Request) -> Response:
        seen["requests"] += 1
        body = await request.body()
        try:
            seen["msg_ids"].append(verify([SECRET], request.headers, body))
        except SignatureError:
            return Response(status_code=401)
        if seen["requests"] <= fail_first:
            return Response(status_code=503, headers={"Retry-After": "0"})
        if reject:
            return Response('{"error":"bad batch"}', status_code=422)
        accepted, duplicates = [], []
        for event in json.loads(body):
            (duplicates if event["event_id"] in seen["ids"] else accepted).append(event["event_id"])
            seen["ids"].add(event["event_id"])
        status = 202 if accepted else 200
        return Response(json.dumps({"accepted": accepted, "duplicates": duplicates}), status_code=status)

    return app, seen


def test_sender_posts_signed_batches_and_resending_gives_duplicates() -> None:
    # given
    events = generate_day(20, day=DAY, seed=3)
    app, seen = fake_intake()
    with run_asgi(app) as url:
        # when
        first = send_events_sync(f"{url}/v1/events", SECRET, events, batch_size=25, concurrency=3)
        again = send_events_sync(f"{url}/v1/events", SECRET, events[:30], batch_size=25)
    # then
    assert first.batches == -(-len(events) // 25)
    assert (first.accepted, first.duplicates, first.rejected, first.failed) == (len(events), 0, 0, 0)
    assert (again.accepted, again.duplicates) == (0, 30)
    assert again.statuses == {"200": 2}
    assert len(set(seen["msg_ids"])) == len(seen["msg_ids"])


def test_sender_retries_5xx_until_accepted() -> None:
    events = generate_day(5, day=DAY, seed=4)
    app, _ = fake_intake(fail_first=2)
    with run_asgi(app) as url:
        report = send_events_sync(f"{url}/v1/events", SECRET, events, batch_size=100, backoff=0.01)
    assert report.accepted == len(events)
    assert report.retries == 2
    assert report.statuses == {"503": 2, "202": 1}


def test_sender_does_not_retry_4xx_and_records_it() -> None:
    events = generate_day(5, day=DAY, seed=4)
    app, seen = fake_intake(reject=True)
    with run_asgi(app) as url:
        report = send_events_sync(f"{url}/v1/events", SECRET, events, batch_size=10, backoff=0.01)
    assert report.rejected == len(events)
    assert report.accepted == 0
    assert seen["requests"] == report.batches == report.requests
    assert report.errors and "422" in report.errors[0]


def test_sender_gives_up_on_an_intake_that_is_down() -> None:
    events = generate_day(2, day=DAY, seed=4)
    report = send_events_sync("http://127.0.0.1:9/v1/events", SECRET, events, max_attempts=2, backoff=0.01)
    assert report.failed == len(events)
    assert report.statuses == {"transport_error": 2}
