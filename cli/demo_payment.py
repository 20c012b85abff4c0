"""The demo's fee collection: the payment provider simulators, citizens paying their bills, the reconciliation.

Citizens pay the bills of the fees the desk did not take in cash, a second or two after the bill exists:
the provider's callbacks are sometimes lost (10 %) or repeated (5 %), one citizen pays the wrong amount and
one payment nobody billed turns up. The relay's query of unanswered bills (every 3 s in the demo) and the
reconciliation at the end make up for the lost callbacks; the wrong amount and the stranger are reported.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

PLATFORM_PORT, BANK_PORT = 8706, 8707
LOST, REPEATED = 0.10, 0.05


@dataclass
class Plan:
    """How one citizen pays one bill."""

    lost: bool = False
    copies: int = 1
    short_by: int = 0
    paid: bool = False


@dataclass
class PaymentPlay:
    """The simulators of the payment destinations and the citizens who pay."""

    names: list[str]
    provider: str
    url: str
    rng: random.Random
    plans: dict[str, Plan] = field(default_factory=dict)
    stray: str = ""
    bank_password: str = ""

    @classmethod
    def configure(cls, routing: Any, rng: random.Random,
                  serve: Callable[[Any, int], str]) -> PaymentPlay | None:
        """One simulator for the payment destinations (of the first one's provider), with the demo's keys."""
        from sandbox.bank import create_app as bank_app
        from sandbox.payment import create_app as platform_app

        env = os.environ
        dests = [(name, d) for name, d in routing.destinations.items() if d.kind == "payment"]
        if not dests:
            return None
        provider = str(dests[0][1].option("provider", "platform"))
        names = [name for name, d in dests if d.option("provider", "platform") == provider]
        first = dests[0][1].options
        if provider == "platform":
            request_key = env.setdefault(first.get("request_key_env", "MOTCUA_PAYMENT_REQUEST_KEY"), uuid.uuid4().hex)
            callback_key = env.setdefault(first.get("callback_key_env", "MOTCUA_PAYMENT_CALLBACK_KEY"),
                                          uuid.uuid4().hex)
            url = serve(platform_app(client_id=str(dests[0][1].option("client_id")), request_key=request_key,
                                     callback_key=callback_key), PLATFORM_PORT)
            play = cls(names, provider, url, rng)
        else:
            password = env.setdefault(first.get("password_env", "MOTCUA_BANK_PASSWORD"), uuid.uuid4().hex)
            env.setdefault(first.get("vnpay_secret_env", "MOTCUA_PAYMENT_VNPAY_SECRET"), uuid.uuid4().hex)
            url = serve(bank_app(partner_code=str(dests[0][1].option("partner_code")),
                                 username=str(dests[0][1].option("username")), password=password,
                                 seed=rng.randrange(2**31)), BANK_PORT)
            play = cls(names, provider, url, rng, bank_password=password)
        for name in names:
            env[routing.destinations[name].options.get("url_env", "MOTCUA_PAYMENT_URL")] = url
        return play

    def describe(self) -> str:
        return f"payment {self.provider}: {self.url}"

    def start(self, api: str, routing: Any, fault_rate: float, events: list[dict[str, Any]]) -> str:
        """Point the callbacks at the API, inject faults, and plan who pays what; one line to print."""
        from adapters.payment import bill_code

        env = os.environ
        first = routing.destinations[self.names[0]]
        if self.provider == "platform":
            httpx.post(f"{self.url}/_admin/callback", json={"url": f"{api}/v1/callbacks/payment/platform"},
                       timeout=10).raise_for_status()
        elif first.option("vnpay_tmn_code"):
            httpx.post(f"{self.url}/_admin/notify", json={
                "url": f"{api}/v1/callbacks/payment/vnpay", "tmn_code": str(first.option("vnpay_tmn_code")),
                "secret": env[first.options.get("vnpay_secret_env", "MOTCUA_PAYMENT_VNPAY_SECRET")]},
                timeout=10).raise_for_status()
        faults = {"error_rate": round(fault_rate * 0.8 / 2, 4), "busy_rate": round(fault_rate * 0.2 / 2, 4),
                  "seed": self.rng.randrange(2**31)}
        httpx.post(f"{self.url}/_admin/faults", json=faults, timeout=10).raise_for_status()
        at_desk = {(e["dossier_code"], e["data"]["fee_id"]) for e in events if e["type"] == "fee.paid"}
        for e in events:
            if e["type"] == "fee.assessed" and (e["dossier_code"], e["data"]["fee_id"]) not in at_desk:
                draw = self.rng.random()
                self.plans[bill_code(e["dossier_code"], e["data"]["fee_id"])] = Plan(
                    lost=draw < LOST, copies=2 if LOST <= draw < LOST + REPEATED else 1)
        if self.plans:
            next(iter(self.plans.values())).short_by = 1000  # one citizen pays the wrong amount
        self.stray = f"LA-{self.rng.randrange(10**8):08d}"
        lost = sum(p.lost for p in self.plans.values())
        return (f"payments ({self.provider}): {faults['error_rate']:.1%} of calls answer 503; {len(self.plans)} "
                f"fees paid online: {lost} callbacks lost, {sum(p.copies > 1 for p in self.plans.values())} repeated, "
                "1 wrong amount, 1 payment nobody billed; bills without a callback queried after 3 s")

    def pay_due(self, bills: dict[str, Any]) -> None:
        """Citizens pay the bills that exist (``bills``: the ledger's rows by code)."""
        for code, plan in self.plans.items():
            row = bills.get(code)
            if plan.paid or row is None:
                continue
            amount = int(row.amount) - plan.short_by
            with contextlib.suppress(httpx.HTTPError):
                if self.provider == "platform":
                    answer = httpx.post(f"{self.url}/_admin/pay", json={
                        "transaction_id": code, "lost": plan.lost, "copies": plan.copies, "amount": amount},
                        timeout=10)
                else:
                    answer = httpx.post(f"{self.url}/_admin/pay", json={
                        "billCode": code, "notify": not plan.lost, "copies": plan.copies, "amount": amount},
                        timeout=10)
                plan.paid = answer.status_code in (200, 409)

    def pay_stray(self) -> None:
        if self.provider == "platform":
            body: dict[str, Any] = {"transaction_id": self.stray, "amount": 50000, "callback": True}
        else:
            body = {"billCode": self.stray, "amount": 50000}
        httpx.post(f"{self.url}/_admin/settle-extra", json=body, timeout=10).raise_for_status()

    def run(self, stop: threading.Event, engine: Any) -> None:
        """The citizens: every quarter second, pay what can be paid; the stranger pays once all have."""
        from store.payments import bills_by_code

        while not stop.wait(0.25):
            waiting = [code for code, plan in self.plans.items() if not plan.paid]
            if not waiting:
                break
            self.pay_due(bills_by_code(engine, waiting))
        if not stop.is_set():
            self.pay_stray()

    def settled(self, engine: Any) -> bool:
        """Everyone has paid, and the relay knows of every payment (none of those bills is still open)."""
        from store.payments import bills_by_code
        from store.tables import BillState

        if not self.plans or not all(p.paid for p in self.plans.values()):
            return not self.plans
        return all(row.state != BillState.ISSUED for row in bills_by_code(engine, list(self.plans)).values())

    def provider_stats(self) -> dict[str, Any]:
        """The simulator's view in the demo summary's shape: one effect per bill, its requests and faults."""
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        if self.provider == "platform":
            counters = stats["counters"]
            return {"distinct": stats["transactions"], "receipts": sum(v for k, v in counters.items()
                                                                        if k.startswith("answer_")),
                    "faults": {"error": counters.get("fault_error", 0) + counters.get("fault_busy", 0), "reset": 0}}
        return {"distinct": sum(stats["bills"].values()), "receipts": sum(stats["answers"].values()),
                "faults": {"error": stats["faults"]["error"] + stats["faults"]["busy"], "reset": 0}}

    def reconcile(self, sandbox: str) -> dict[str, Any]:
        """The day's reconciliation of every payment destination, and the one-stop software's view of payments."""
        from adapters.payment import bill_code
        from tasks.payment import VN_TZ, payment_deliverer, run_reconciliation
        from tasks.payment_report import write_report
        from tasks.runtime import get_runtime

        day = datetime.now(VN_TZ).date()
        outcomes: Counter[str] = Counter()
        files = []
        for name in self.names:
            result = run_reconciliation(name, day)
            outcomes.update(line.outcome for line in result.lines)
            files.append(str(write_report(result, payment_deliverer(name).provider,
                                          get_runtime().settings.reports_dir)[1]))
        received = httpx.get(f"{sandbox}/_admin/received", params={"subscriber": "onestop", "full": True},
                             timeout=30).json()
        paid = Counter(bill_code(r["event"]["dossier_code"], r["event"]["data"]["fee_id"]) for r in received
                       if r["type"] == "fee.paid" and r["event"]["origin"] == "payment")
        right = [code for code, plan in self.plans.items() if plan.paid and not plan.short_by]
        wrong = [code for code, plan in self.plans.items() if plan.short_by]
        return {"bills_paid": len(right) + len(wrong), "paid_once": sum(1 for c in right if paid[c] == 1),
                "expected_paid": len(right), "wrong_amount_paid": sum(paid[c] for c in wrong),
                "callbacks_lost": sum(p.lost for p in self.plans.values()),
                "callbacks_repeated": sum(p.copies > 1 for p in self.plans.values()),
                "reconciliation": dict(outcomes), "report": files, "day": day.isoformat()}


def wait_settled(play: PaymentPlay, engine: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not play.settled(engine):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True
