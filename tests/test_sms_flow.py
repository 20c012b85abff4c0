"""An SMS whose answer was lost, end to end: the ledger on each engine, the engine's attempts in this process,
the gateway simulator over HTTP in each dialect (the generic one replays the first answer, eSMS answers
``124`` "Duplicate RequestId").

The gateway takes the SMS and answers after the relay stopped waiting; the repeat, with the same request id, is
answered as a duplicate. That is a delivered SMS, sent once: not a dead letter, and not a second SMS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from sandbox.sms import create_app as sms_app
from sandbox.workload import generate_day
from schemas.sms import SEND_PATH
from schemas.vietnam import VN_TZ
from store import intake
from store.tables import Status, attempts, deliveries
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import become_relay, new_secret, relay_env
from tests.servers import run_asgi

SMS_KEY = "sms-api-key"
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=VN_TZ).astimezone(UTC)


@dataclass
class SmsStack:
    gateway: str
    dialect: str

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.gateway}/_admin/stats", timeout=5).json())


def routing(path: Path, gateway: str) -> Path:
    path.write_text(f"""
[destinations.sms]
kind = "sms"
url = "{gateway}{SEND_PATH}"
brandname = "UBND-HALONG"
ordering = "none"
timeouts = {{ connect = 2, read = 0.5 }}

[[routes]]
events = ["dossier.received"]
require = ["applicant.phone"]
destination = "sms"
""", encoding="utf-8")
    return path


@pytest.fixture(params=["generic", "esms"])
def stack(request: pytest.FixtureRequest, db_url: str, redis_url: str, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[SmsStack]:
    with run_asgi(sms_app(api_key=SMS_KEY, dialect=request.param), shutdown_grace=3) as gateway:
        redis.Redis.from_url(redis_url).flushdb()
        env = relay_env(db_url, redis_url, new_secret(), {}, routing(tmp_path / "routing.toml", gateway),
                        MOTCUA_SMS_API_KEY=SMS_KEY, MOTCUA_REDIS_PREFIX=f"s{uuid.uuid4().hex[:6]}")
        become_relay(monkeypatch, env)
        yield SmsStack(gateway, request.param)
        reset_runtime()


def received_with_a_phone() -> dict[str, Any]:
    event = next(e for e in generate_day(40, day=date(2026, 11, 20), seed=5)
                 if e["type"] == "dossier.received" and e["applicant"].get("phone"))
    return {**event, "event_id": f"s-{uuid.uuid4().hex[:12]}", "sequence": 1}


def test_a_lost_answer_then_a_duplicate_answer_is_one_delivered_sms(stack: SmsStack) -> None:
    # given a notification for the gateway, which will take the SMS and answer too late
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, [received_with_a_phone()], NOON, rt.routing.destinations_for, rt.rules)
    with rt.engine.connect() as conn:
        [delivery] = conn.execute(select(deliveries)).all()
    httpx.post(f"{stack.gateway}/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 2},
               timeout=5).raise_for_status()
    # when the first attempt times out
    assert run_delivery(delivery.id, "sms", clock=lambda: NOON) == Status.RETRYING
    # and the retry, with the gateway well again, is answered as a duplicate of the SMS it took
    httpx.delete(f"{stack.gateway}/_admin/faults", timeout=5).raise_for_status()
    assert run_delivery(delivery.id, "sms", clock=lambda: NOON + timedelta(hours=1)) == Status.DELIVERED
    # then the delivery is delivered after two attempts, and the gateway sent one SMS
    with rt.engine.connect() as conn:
        done = conn.execute(select(deliveries).where(deliveries.c.id == delivery.id)).one()
        tries = conn.execute(select(attempts).where(attempts.c.delivery_id == delivery.id)
                             .order_by(attempts.c.id)).all()
    [message] = httpx.get(f"{stack.gateway}/_admin/messages", timeout=5).json()
    assert done.status == Status.DELIVERED and done.attempts == 2
    assert done.external_ref == (message["sms_id"] if stack.dialect == "generic" else delivery.idempotency_key)
    assert message["request_id"] == delivery.idempotency_key
    assert [t.outcome for t in tries] == ["retryable", "delivered"] and "timeout" in (tries[0].error or "")
    assert (stack.dialect == "esms") is ('"CodeResult":"124"' in (tries[1].response_excerpt or "").replace(" ", ""))
    stats = stack.stats()
    assert (stats["sent"], stats["duplicates"], stats["faults"]["timeout"]) == (1, 1, 1)
