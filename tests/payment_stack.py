"""What the payment tests share: this process as a relay (its API included) in front of the payment provider's
simulator and the one-stop software's, on the payment bench's routing, and the small helpers that pay, wait and
read what came of it.

Real everything (the simulators under uvicorn, Redis, the ledger, the callback endpoints over HTTP); the
deliveries run in-process, one at a time (:func:`tests.harness.drain`).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from adapters.payment import transaction_id
from api.app import create_app
from bench.support import routing_file
from sandbox.bank import create_app as bank_app
from sandbox.onestop import create_app as onestop_app
from sandbox.payment import create_app as platform_app
from sandbox.workload import fee_day
from services.payment.deliver import PaymentDeliverer
from store.tables import payment_callbacks
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import become_relay, new_secret, relay_env, wait_for
from tests.servers import run_asgi

CLIENT, REQUEST_KEY, CALLBACK_KEY = "UBND-HALONG", "khoa-yeu-cau-test", "khoa-goi-lai-test"
PARTNER, USERNAME, PASSWORD = "HALONG01", "halong.ws", "mat-khau-ngan-hang"
TMN, VNPAY_SECRET = "HALONG01", "vnpay-bi-mat-test"
LOOKUP_USER, LOOKUP_PASSWORD = "dvcqg", "mat-khau-tra-cuu"
FAST_RETRY = {"schedule": ["0.2s", "0.5s", "1s"], "repeat_every": "2s", "deadline": "1h", "max_attempts": 50}


def payer(name: str = "payment") -> PaymentDeliverer:
    """The payment destination's deliverer, as the beat jobs and the reconcile command use it."""
    return get_runtime().deliverer_of(PaymentDeliverer, name)


def routing(path: Path, provider: str, *, query_after: str = "0s", read: float = 1.0,
            **options: Any) -> Path:
    """The payment bench's routing for ``provider``, with this file's codes and fast retries (and ``options`` of
    the payment destination); its addresses are :func:`addresses`."""
    return routing_file("payment", path, {
        "payment": {"provider": provider, "partner_code": PARTNER, "username": USERNAME, "vnpay_tmn_code": TMN,
                    "query_after": query_after, "query_every": "0s", "timeouts": {"read": read}, "retry": FAST_RETRY,
                    **options},
        "onestop": {"retry": FAST_RETRY}})


def addresses(provider_url: str, onestop_url: str) -> dict[str, str]:
    """The variables that point :func:`routing` at the simulators, and the client id the platform knows."""
    return {"MOTCUA_PAYMENT_URL": provider_url, "MOTCUA_PAYMENT_CLIENT_ID": CLIENT,
            "MOTCUA_ONESTOP_WEBHOOK_URL": f"{onestop_url}/subscribers/onestop/events"}


def assessed_fees(n: int, seed: int = 4) -> list[dict[str, Any]]:
    """``n`` assessed fees of distinct dossiers, as the workload makes them."""
    return fee_day(n, day=date(2026, 11, 20), seed=seed)


def amount_of(fee: dict[str, Any]) -> int:
    """The fee's amount in đồng (money is a decimal string in canonical JSON)."""
    return int(fee["data"]["amount"])


def bill_codes(fees: list[dict[str, Any]]) -> list[str]:
    """The platform's transaction ids of the fees: their bills' codes in the ledger."""
    return [transaction_id(f["dossier_code"], f["data"]["fee_id"]) for f in fees]


def later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def ingest(batch: list[dict[str, Any]]) -> None:
    from store import intake

    rt = get_runtime()
    intake.ingest_and_route(rt.engine, batch, datetime.now(UTC), rt.routing.destinations_for, rt.rules)


def received(onestop_url: str, kind: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{onestop_url}/_admin/received", params={"subscriber": "onestop", "full": True},
                     timeout=10).json()
    return [r["event"] for r in rows if r["type"] == kind]


def paid_codes(onestop_url: str) -> Counter[str]:
    """How many ``fee.paid`` of the payment origin the one-stop software received, by the bill's code."""
    return Counter(transaction_id(e["dossier_code"], e["data"]["fee_id"]) for e in received(onestop_url, "fee.paid")
                   if e["origin"] == "payment")


@contextmanager
def relay(db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str,
          **options: Any) -> Iterator[dict[str, Any]]:
    """This process as a relay (API included) against the provider's simulator and the one-stop's."""
    onestop_secret = new_secret()
    sim = (platform_app(client_id=CLIENT, request_key=REQUEST_KEY, callback_key=CALLBACK_KEY) if provider == "platform"
           else bank_app(partner_code=PARTNER, username=USERNAME, password=PASSWORD, seed=5))
    with run_asgi(sim) as provider_url, run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        path = routing(tmp_path / "routing.toml", provider, **options)
        prefix = f"pay{uuid.uuid4().hex[:6]}"
        env = relay_env(db_url, redis_url, new_secret(), {"onestop": onestop_secret}, path,
                        **addresses(provider_url, onestop_url),
                        MOTCUA_PAYMENT_REQUEST_KEY=REQUEST_KEY, MOTCUA_PAYMENT_CALLBACK_KEY=CALLBACK_KEY,
                        MOTCUA_BANK_PASSWORD=PASSWORD, MOTCUA_PAYMENT_VNPAY_SECRET=VNPAY_SECRET,
                        MOTCUA_PAYMENT_LOOKUP_PASSWORD=LOOKUP_PASSWORD, MOTCUA_REDIS_PREFIX=prefix)
        become_relay(monkeypatch, env)
        try:
            with run_asgi(create_app()) as api_url:
                if provider == "platform":
                    httpx.post(f"{provider_url}/_admin/callback",
                               json={"url": f"{api_url}/v1/callbacks/payment/platform"}, timeout=5).raise_for_status()
                else:
                    httpx.post(f"{provider_url}/_admin/notify", json={
                        "url": f"{api_url}/v1/callbacks/payment/vnpay", "tmn_code": TMN, "secret": VNPAY_SECRET},
                        timeout=5).raise_for_status()
                yield {"provider": provider_url, "onestop": onestop_url, "api": api_url, "env": env}
        finally:
            reset_runtime()
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)


def pay(urls: dict[str, str], bill: str, **how: Any) -> dict[str, Any]:
    """A citizen pays ``bill`` at the platform simulator (``how``: its ``PayRequest``)."""
    answer = httpx.post(f"{urls['provider']}/_admin/pay", json={"transaction_id": bill, **how}, timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def transactions(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {t["transaction_id"]: t for t in httpx.get(f"{urls['provider']}/_admin/transactions", timeout=5).json()}


def callbacks_answered(urls: dict[str, str], bill: str, n: int) -> None:
    wait_for(lambda: len(transactions(urls)[bill]["callbacks"]) >= n, 10, what=f"{n} callbacks answered")


def callbacks_recorded() -> int:
    with get_runtime().engine.connect() as conn:
        return len(conn.execute(select(payment_callbacks.c.id)).all())


def verdicts(bill: str) -> list[str]:
    with get_runtime().engine.connect() as conn:
        return list(conn.execute(select(payment_callbacks.c.verdict).where(payment_callbacks.c.bill_code == bill)
                                 .order_by(payment_callbacks.c.id)).scalars())
