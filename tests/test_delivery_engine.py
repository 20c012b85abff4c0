"""One delivery attempt at a time, in-process on a controlled clock, against the real one-stop sandbox."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from connectors.base import AuthExpired, ConnectorResult, Paused
from sandbox.workload import generate_day
from schemas.events import Event, parse_event
from services.base import Deliverer
from store import intake
from store.deadletters import DeadLetterFilter, dead_letters
from store.tables import attempts, deliveries, events
from tasks.delivery import attempt_with_auth_refresh, run_delivery
from tasks.runtime import Runtime, get_runtime, reset_runtime
from tests.conftest import RelayConfig
from tests.harness import new_secret, write_routing

T0 = datetime.now(UTC).replace(microsecond=0)
DAY = generate_day(30, day=date(2024, 3, 15), seed=21)
WAREHOUSE = "warehouse"


def clock_at(moment: datetime) -> Any:
    return lambda: moment


def new_delivery(rt: Runtime, *, index: int = 0, event_id: str | None = None, now: datetime = T0) -> int:
    """Ingest and route one workload event (origin onestop: to the warehouse only); its delivery id."""
    event = {**DAY[index], "event_id": event_id or f"ev-{uuid.uuid4().hex}"}
    [stored] = intake.ingest(rt.engine, [event], now)
    intake.route_event(rt.engine, stored.pk, rt.routing.destinations_for, rt.rules, now)
    with rt.engine.connect() as conn:
        [did] = conn.execute(select(deliveries.c.id).where(deliveries.c.event_pk == stored.pk)).scalars().all()
    return int(did)


def first_of_each_dossier(count: int) -> list[int]:
    """Indexes of events of distinct dossiers (no ordering wait between them)."""
    seen: dict[str, int] = {}
    for index, event in enumerate(DAY):
        if event["sequence"] == 1:
            seen.setdefault(event["dossier_code"], index)
    return list(seen.values())[:count]


def row(rt: Runtime, delivery_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()


def attempt_rows(rt: Runtime, delivery_id: int) -> list[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(
            select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.number)
        ).all()


def sandbox_stats(config: RelayConfig) -> dict[str, Any]:
    return httpx.get(f"{config.sandbox.url}/_admin/stats", timeout=5).json()[WAREHOUSE]


def set_faults(config: RelayConfig, **faults: Any) -> None:
    httpx.post(f"{config.sandbox.url}/_admin/faults", json=faults, timeout=5).raise_for_status()


def clear_faults(config: RelayConfig) -> None:
    httpx.delete(f"{config.sandbox.url}/_admin/faults", timeout=5).raise_for_status()


def reconfigure(monkeypatch: pytest.MonkeyPatch, config: RelayConfig, tmp_path: Path, **routing: str) -> Runtime:
    path = write_routing(tmp_path / f"routing-{uuid.uuid4().hex[:6]}.toml", config.sandbox.url, **routing)
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(path))
    reset_runtime()
    return get_runtime()


def first_index_of_sequence_one() -> int:
    return first_of_each_dossier(1)[0]


# --------------------------------------------------------------------------- outcomes


def test_delivery_to_a_healthy_subscriber(relay_config: RelayConfig) -> None:
    # given: an event whose id holds a phone-like number, which the subscriber echoes back
    rt = get_runtime()
    event_id = f"ev-{uuid.uuid4().hex[:8]}-0912345678"
    did = new_delivery(rt, index=first_index_of_sequence_one(), event_id=event_id)
    # when
    status = run_delivery(did, WAREHOUSE, clock=clock_at(T0))
    # then
    assert status == "delivered"
    d = row(rt, did)
    assert (d.status, d.attempts, d.delivered_at, d.last_status_code) == ("delivered", 1, T0, 200)
    [attempt] = attempt_rows(rt, did)
    assert attempt.outcome == "delivered"
    assert attempt.status_code == 200
    assert attempt.duration_ms is not None and attempt.duration_ms > 0
    assert attempt.external_ref == d.external_ref
    assert attempt.external_ref.startswith("rcpt-")
    assert attempt.external_ref in attempt.response_excerpt
    assert event_id in attempt.response_excerpt  # an identifier, kept whole: masking never cuts into one
    assert sandbox_stats(relay_config)["distinct"] == 1


def test_running_a_delivered_delivery_again_sends_nothing(relay_config: RelayConfig) -> None:
    rt = get_runtime()
    did = new_delivery(rt, index=first_index_of_sequence_one())
    run_delivery(did, WAREHOUSE, clock=clock_at(T0))

    assert run_delivery(did, WAREHOUSE, clock=clock_at(T0 + timedelta(seconds=1))) == "skip"

    assert sandbox_stats(relay_config)["receipts"] == 1
    assert len(attempt_rows(rt, did)) == 1


def test_failing_subscriber_is_retried_later_then_delivered_once(relay_config: RelayConfig) -> None:
    # given: the subscriber answers 503 to everything, asking for 20 s of peace
    rt = get_runtime()
    did = new_delivery(rt, index=first_index_of_sequence_one())
    set_faults(relay_config, error_rate=1, retry_after=20)
    # when
    first = run_delivery(did, WAREHOUSE, clock=clock_at(T0))
    # then
    assert first == "retrying"
    d = row(rt, did)
    assert d.status == "retrying"
    assert d.next_attempt_at == T0 + timedelta(seconds=20)
    assert (d.last_status_code, d.last_error) == (503, "HTTP 503")
    assert run_delivery(did, WAREHOUSE, clock=clock_at(T0 + timedelta(seconds=10))) == "skip"
    # when: the subscriber recovers and the retry is due
    clear_faults(relay_config)
    second = run_delivery(did, WAREHOUSE, clock=clock_at(d.next_attempt_at + timedelta(seconds=1)))
    # then
    assert second == "delivered"
    assert [(a.number, a.outcome, a.status_code) for a in attempt_rows(rt, did)] == [
        (1, "retryable", 503), (2, "delivered", 200)]
    stats = sandbox_stats(relay_config)
    assert (stats["distinct"], stats["faults"]["error"]) == (1, 1)


def test_wrong_secret_is_dead_with_the_reason(relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: the relay holds a secret the subscriber does not know
    monkeypatch.setenv("MOTCUA_WAREHOUSE_WEBHOOK_SECRET", new_secret())
    reset_runtime()
    rt = get_runtime()
    did = new_delivery(rt, index=first_index_of_sequence_one())
    # when
    status = run_delivery(did, WAREHOUSE, clock=clock_at(T0))
    # then
    assert status == "dead"
    d = row(rt, did)
    assert (d.status, d.last_status_code) == ("dead", 401)
    assert "rejected" in d.last_error and "401" in d.last_error
    assert d.next_attempt_at is None
    assert [a.outcome for a in attempt_rows(rt, did)] == ["permanent"]
    assert [r.id for r in dead_letters(rt.engine, DeadLetterFilter(destination=WAREHOUSE))] == [did]
    assert sandbox_stats(relay_config)["rejected_signature"] == 1


def test_a_stored_event_that_no_longer_parses_is_dead_with_the_fields_and_no_request(
    relay_config: RelayConfig,
) -> None:
    # given: a stored event its schema no longer accepts (the applicant gone, as after a careless migration)
    rt = get_runtime()
    did = new_delivery(rt, index=first_index_of_sequence_one())
    with rt.engine.begin() as conn:
        event_pk = conn.execute(select(deliveries.c.event_pk).where(deliveries.c.id == did)).scalar_one()
        stored = json.loads(conn.execute(select(events.c.payload).where(events.c.id == event_pk)).scalar_one())
        name = stored.pop("applicant")["name"]
        conn.execute(update(events).where(events.c.id == event_pk).values(payload=json.dumps(stored)))
    # when
    status = run_delivery(did, WAREHOUSE, clock=clock_at(T0))
    # then: a permanent failure naming the field, never its value; nothing was sent
    assert status == "dead"
    d = row(rt, did)
    assert d.last_error == f"rejected: the stored event no longer parses as {stored['type']}: applicant"
    assert name not in d.last_error
    assert [a.outcome for a in attempt_rows(rt, did)] == ["permanent"]
    stats = sandbox_stats(relay_config)
    assert (stats["receipts"], stats["invalid"], stats["rejected_signature"]) == (0, 0, 0)


def test_missing_secret_is_dead_without_a_request(relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOTCUA_WAREHOUSE_WEBHOOK_SECRET")
    reset_runtime()
    rt = get_runtime()
    did = new_delivery(rt, index=first_index_of_sequence_one())

    assert run_delivery(did, WAREHOUSE, clock=clock_at(T0)) == "dead"

    assert "MOTCUA_WAREHOUSE_WEBHOOK_SECRET" in row(rt, did).last_error
    assert sandbox_stats(relay_config)["receipts"] == 0


# --------------------------------------------------------------------------- protection


def test_open_breaker_defers_without_spending_attempts(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given: a breaker that opens after 3 failures, and a subscriber that fails
    rt = reconfigure(monkeypatch, relay_config, tmp_path, breaker='{ failure_threshold = 3, open_for = "30s" }')
    indexes = first_of_each_dossier(4)
    ids = [new_delivery(rt, index=i) for i in indexes]
    set_faults(relay_config, error_rate=1)
    # when: three deliveries fail
    assert [run_delivery(did, WAREHOUSE, clock=clock_at(T0)) for did in ids[:3]] == ["retrying"] * 3
    # then: the breaker is open and the fourth is deferred, not attempted
    assert rt.protection.state(WAREHOUSE)["open"]
    assert run_delivery(ids[3], WAREHOUSE, clock=clock_at(T0)) == "deferred"
    d = row(rt, ids[3])
    assert (d.status, d.attempts, d.budget_used) == ("pending", 0, 0)
    assert "circuit open" in d.last_error
    assert d.next_attempt_at >= datetime.now(UTC) + timedelta(seconds=25)
    # and a due retry is deferred too, keeping its attempt count
    retry = row(rt, ids[0])
    assert run_delivery(ids[0], WAREHOUSE, clock=clock_at(retry.next_attempt_at + timedelta(seconds=1))) == "deferred"
    assert row(rt, ids[0]).attempts == 1
    assert sandbox_stats(relay_config)["faults"]["error"] == 3


def test_a_success_resets_the_failure_count(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rt = reconfigure(monkeypatch, relay_config, tmp_path, breaker='{ failure_threshold = 3, open_for = "30s" }')
    ids = [new_delivery(rt, index=i) for i in first_of_each_dossier(5)]
    set_faults(relay_config, error_rate=1)
    for did in ids[:2]:
        run_delivery(did, WAREHOUSE, clock=clock_at(T0))
    clear_faults(relay_config)
    assert run_delivery(ids[2], WAREHOUSE, clock=clock_at(T0)) == "delivered"
    set_faults(relay_config, error_rate=1)

    results = [run_delivery(did, WAREHOUSE, clock=clock_at(T0)) for did in ids[3:]]

    assert results == ["retrying", "retrying"]
    assert not rt.protection.state(WAREHOUSE)["open"]


def test_permanent_answers_do_not_open_the_breaker(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rt = reconfigure(monkeypatch, relay_config, tmp_path, breaker='{ failure_threshold = 2, open_for = "30s" }')
    ids = [new_delivery(rt, index=i) for i in first_of_each_dossier(3)]
    set_faults(relay_config, error_rate=1, error_status=422)

    assert [run_delivery(did, WAREHOUSE, clock=clock_at(T0)) for did in ids] == ["dead"] * 3

    assert not rt.protection.state(WAREHOUSE)["open"]


def test_empty_rate_bucket_is_rate_limited_without_an_attempt(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given: one send per second, no burst
    rt = reconfigure(monkeypatch, relay_config, tmp_path, rate="{ per_second = 1, burst = 1 }")
    first, second = (new_delivery(rt, index=i) for i in first_of_each_dossier(2))
    # when
    results = [run_delivery(first, WAREHOUSE, clock=clock_at(T0)), run_delivery(second, WAREHOUSE, clock=clock_at(T0))]
    # then
    assert results == ["delivered", "rate_limited"]
    d = row(rt, second)
    assert (d.status, d.attempts) == ("pending", 0)
    assert attempt_rows(rt, second) == []
    assert sandbox_stats(relay_config)["distinct"] == 1


def test_backoff_without_retry_after_stays_within_the_first_step(relay_config: RelayConfig) -> None:
    rt = get_runtime()
    ids = [new_delivery(rt, index=i) for i in first_of_each_dossier(5)]
    set_faults(relay_config, error_rate=1)

    for did in ids:
        assert run_delivery(did, WAREHOUSE, clock=clock_at(T0)) == "retrying"

    cap = timedelta(seconds=rt.destination(WAREHOUSE).retry.schedule[0])
    assert all(T0 < row(rt, did).next_attempt_at <= T0 + cap for did in ids)


class _PausedAccount(Deliverer[Any]):
    """A service whose account cannot take any message: it answers the condition (``sent``), or the deliverer
    holds the message without calling (not ``sent``)."""

    def __init__(self, sent: bool) -> None:
        self.sent = sent
        self.calls = 0

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        self.calls += 1
        raise Paused("ZNS balance spent", condition="balance", sent=self.sent, status_code=200, retry_after=45,
                     excerpt='{"error": -115}')

    def close(self) -> None:
        pass


@pytest.mark.parametrize("sent", [True, False], ids=["answered", "held"])
def test_a_paused_destination_releases_the_delivery_without_spending_its_budget(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sent: bool
) -> None:
    # given a delivery on its last attempt of the budget (two allowed, one spent) and a paused destination
    rt = reconfigure(monkeypatch, relay_config, tmp_path,
                     retry='{ schedule = ["1s"], repeat_every = "1s", deadline = "1h", max_attempts = 2 }')
    did = new_delivery(rt, index=first_index_of_sequence_one())
    set_faults(relay_config, error_rate=1)
    assert run_delivery(did, WAREHOUSE, clock=clock_at(T0)) == "retrying"
    clear_faults(relay_config)
    monkeypatch.setitem(rt._deliverers, WAREHOUSE, _PausedAccount(sent))
    # when it meets the pause three times, long after its deadline's budget would allow
    later = T0 + timedelta(seconds=5)
    for n in range(3):
        assert run_delivery(did, WAREHOUSE, clock=clock_at(later + timedelta(seconds=60 * n))) == "paused"
    # then it waits as the deliverer said, its budget untouched, never dead
    d = row(rt, did)
    assert (d.status, d.budget_used) == ("retrying", 1)
    assert d.next_attempt_at == later + timedelta(seconds=120 + 45)
    assert d.last_error == "paused: ZNS balance spent"
    rows = attempt_rows(rt, did)
    if sent:  # the answers are kept for the audit, counted apart from the budget
        assert [a.outcome for a in rows] == ["retryable", "paused", "paused", "paused"] and d.attempts == 4
        assert rows[-1].status_code == 200 and "-115" in rows[-1].response_excerpt
    else:  # nothing was sent: nothing recorded, as if never claimed
        assert [a.outcome for a in rows] == ["retryable"] and d.attempts == 1
    # and once the destination takes messages again it is delivered on the attempt it had left
    rt._deliverers.pop(WAREHOUSE)
    assert run_delivery(did, WAREHOUSE, clock=clock_at(d.next_attempt_at)) == "delivered"
    assert row(rt, did).budget_used == 2


def test_waking_makes_due_only_the_deliveries_a_pause_held(relay_config: RelayConfig) -> None:
    from store.deliveries import defer, wake

    rt = get_runtime()
    held, other = (new_delivery(rt, index=i) for i in first_of_each_dossier(2))
    later = T0 + timedelta(hours=1)
    defer(rt.engine, held, later, "paused: ZNS balance spent", T0)
    defer(rt.engine, other, later, "quiet hours (21:00–07:00)", T0)

    woken = wake(rt.engine, WAREHOUSE, "paused: %", T0)

    assert [w.delivery_id for w in woken] == [held]
    assert (row(rt, held).next_attempt_at, row(rt, held).enqueued_at) == (T0, T0)
    assert row(rt, other).next_attempt_at == later
    assert wake(rt.engine, WAREHOUSE, "paused: %", T0) == []


class _ExpiringCredential(Deliverer[Any]):
    """A service whose first answer is "token expired" until the credential is refreshed."""

    def __init__(self, refreshable: bool) -> None:  # no destination: the engine's refresh rule alone is tested
        self.refreshable = refreshable
        self.calls = 0
        self.refreshes = 0
        self.fresh = False

    def refresh_auth(self) -> bool:
        if not self.refreshable:
            return False
        self.refreshes += 1
        self.fresh = True
        return True

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        self.calls += 1
        if not self.fresh:
            raise AuthExpired("session expired")
        return ConnectorResult(status_code=200, external_ref="ok")

    def close(self) -> None:
        pass


def test_auth_expired_refreshes_once_then_retries_in_the_same_attempt() -> None:
    service = _ExpiringCredential(refreshable=True)
    result = attempt_with_auth_refresh(service, parse_event(DAY[0]), "e:x")
    assert (result.external_ref, service.calls, service.refreshes) == ("ok", 2, 1)


def test_auth_expired_without_a_credential_to_refresh_stays_auth_expired() -> None:
    service = _ExpiringCredential(refreshable=False)
    with pytest.raises(AuthExpired):
        attempt_with_auth_refresh(service, parse_event(DAY[0]), "e:x")
    assert service.calls == 1
