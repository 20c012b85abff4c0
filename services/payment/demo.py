"""Fee collection's part of the demo: the provider's simulator, citizens paying their bills, the reconciliation.

Citizens pay the bills of the fees the desk did not take in cash, a second or two after the bill exists: the
provider's callbacks are sometimes lost (10 %) or repeated (5 %), one citizen pays the wrong amount and one payment
nobody billed turns up. The relay's query of unanswered bills (every 3 s in the demo) and the reconciliation at the
end make up for the lost callbacks; the wrong amount and the stranger are reported.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from adapters.payment import bill_code_of
from schemas.vietnam import VN_TZ
from services.base import DemoPlay, Measure, Stage
from services.payment.deliver import PaymentDeliverer, PaymentOptions
from services.payment.inbound import reconcile_and_report
from store import payments
from store.tables import BillState

PLATFORM_PORT, BANK_PORT = 8706, 8707
LOST, REPEATED = 0.10, 0.05


@dataclass
class Plan:
    """How one citizen pays one bill."""

    lost: bool = False
    copies: int = 1
    short_by: int = 0
    paid: bool = False


def configure(stage: Stage, names: list[str]) -> PaymentPlay:
    """One simulator for the payment destinations of the first one's provider, with the demo's keys."""
    from sandbox.bank import create_app as bank_app
    from sandbox.payment import create_app as platform_app

    routing = stage.routing
    first = routing.destinations[names[0]]
    provider = str(first.options.get("provider", "platform"))
    names = [n for n in names if routing.destinations[n].options.get("provider", "platform") == provider]
    if provider == "platform":
        keys = stage.secrets(first, PaymentOptions, {"request_key": uuid.uuid4().hex,
                                                     "callback_key": uuid.uuid4().hex})
        url = stage.serve(platform_app(client_id=str(first.options.get("client_id")), request_key=keys["request_key"],
                                       callback_key=keys["callback_key"]), PLATFORM_PORT)
    else:
        keys = stage.secrets(first, PaymentOptions, {"password": uuid.uuid4().hex, "vnpay_secret": uuid.uuid4().hex})
        url = stage.serve(bank_app(partner_code=str(first.options.get("partner_code")),
                                   username=str(first.options.get("username")), password=keys["password"],
                                   seed=stage.rng.randrange(2**31)), BANK_PORT)
    for name in names:
        stage.point(routing.destinations[name], "url", "MOTCUA_PAYMENT_URL", url)
    return PaymentPlay(names, provider, url)


class PaymentPlay(DemoPlay):
    """The simulator of the payment destinations and the citizens who pay."""

    produces = frozenset({"fee.paid"})

    def __init__(self, names: list[str], provider: str, url: str) -> None:
        super().__init__(names)
        self.provider, self.url = provider, url
        self.plans: dict[str, Plan] = {}
        self.stray = ""
        self.figures: dict[str, Any] = {}

    def describe(self) -> str:
        return f"payment {self.provider}: {self.url}"

    def shape(self, stage: Stage, events: list[dict[str, Any]]) -> list[str]:
        """Point the callbacks at the API, inject faults, plan who pays what, and let the citizens pay."""
        options = stage.context.options_of(PaymentOptions, self.names[0])
        if self.provider == "platform":
            httpx.post(f"{self.url}/_admin/callback", json={"url": f"{stage.api}/v1/callbacks/payment/platform"},
                       timeout=10).raise_for_status()
        elif options.vnpay_tmn_code and options.vnpay_secret is not None:
            httpx.post(f"{self.url}/_admin/notify", json={
                "url": f"{stage.api}/v1/callbacks/payment/vnpay", "tmn_code": options.vnpay_tmn_code,
                "secret": options.vnpay_secret.get_secret_value()}, timeout=10).raise_for_status()
        faults = {"error_rate": round(stage.fault_rate * 0.8 / 2, 4), "busy_rate": round(stage.fault_rate * 0.2 / 2, 4),
                  "seed": stage.rng.randrange(2**31)}
        httpx.post(f"{self.url}/_admin/faults", json=faults, timeout=10).raise_for_status()
        at_desk = {(e["dossier_code"], e["data"]["fee_id"]) for e in events if e["type"] == "fee.paid"}
        for e in events:
            if e["type"] == "fee.assessed" and (e["dossier_code"], e["data"]["fee_id"]) not in at_desk:
                draw = stage.rng.random()
                self.plans[bill_code_of(self.provider, e["dossier_code"], e["data"]["fee_id"])] = Plan(
                    lost=draw < LOST, copies=2 if LOST <= draw < LOST + REPEATED else 1)
        if self.plans:
            next(iter(self.plans.values())).short_by = 1000  # one citizen pays the wrong amount
        self.stray = f"LA-{stage.rng.randrange(10**8):08d}"
        threading.Thread(target=self._citizens, args=(stage,), daemon=True).start()
        lost = sum(p.lost for p in self.plans.values())
        return [f"payments ({self.provider}): {faults['error_rate']:.1%} of calls answer 503; {len(self.plans)} fees "
                f"paid online: {lost} callbacks lost, {sum(p.copies > 1 for p in self.plans.values())} repeated, 1 "
                "wrong amount, 1 payment nobody billed; bills without a callback queried after 3 s"]

    def _citizens(self, stage: Stage) -> None:
        """Every quarter second, pay what can be paid; the stranger pays once all have."""
        stop = stage.stop
        while not stop.wait(0.25):
            waiting = [code for code, plan in self.plans.items() if not plan.paid]
            if not waiting:
                break
            self._pay_due(payments.bills_by_code(stage.context.engine, waiting))
        if not stop.is_set():
            self._pay_stray()

    def _pay_due(self, bills: dict[str, Any]) -> None:
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

    def _pay_stray(self) -> None:
        if self.provider == "platform":
            body: dict[str, Any] = {"transaction_id": self.stray, "amount": 50000, "callback": True}
        else:
            body = {"billCode": self.stray, "amount": 50000}
        httpx.post(f"{self.url}/_admin/settle-extra", json=body, timeout=10).raise_for_status()

    def settled(self, stage: Stage) -> bool:
        """Everyone has paid, and the relay knows of every payment (none of those bills is still open)."""
        if not self.plans or not all(p.paid for p in self.plans.values()):
            return not self.plans
        return all(row.state != BillState.ISSUED
                   for row in payments.bills_by_code(stage.context.engine, list(self.plans)).values())

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        """The day's reconciliation of every payment destination, and the one-stop software's view of payments."""
        day = datetime.now(VN_TZ).date()
        outcomes: Counter[str] = Counter()
        files = []
        for name in self.names:
            result, _, xlsx = reconcile_and_report(stage.context.deliverer_of(PaymentDeliverer, name), day,
                                                   stage.context.settings.reports_dir)
            outcomes.update(line.outcome for line in result.lines)
            files.append(str(xlsx))
        received = httpx.get(f"{stage.onestop}/_admin/received", params={"subscriber": "onestop", "full": True},
                             timeout=30).json()
        paid = Counter(bill_code_of(self.provider, r["event"]["dossier_code"], r["event"]["data"]["fee_id"])
                       for r in received
                       if r["type"] == "fee.paid" and r["event"]["origin"] == "payment")
        right = [code for code, plan in self.plans.items() if plan.paid and not plan.short_by]
        wrong = [code for code, plan in self.plans.items() if plan.short_by]
        self.figures = {
            "bills_paid": len(right) + len(wrong), "paid_once": sum(1 for c in right if paid[c] == 1),
            "expected_paid": len(right), "wrong_amount_paid": sum(paid[c] for c in wrong),
            "callbacks_lost": sum(p.lost for p in self.plans.values()),
            "callbacks_repeated": sum(p.copies > 1 for p in self.plans.values()),
            "reconciliation": dict(outcomes), "report": files, "day": day.isoformat()}
        return Measure({name: self._provider_stats() for name in self.names}, "payments", self.figures)

    def _provider_stats(self) -> dict[str, Any]:
        """The simulator's view in the demo summary's shape: one effect per bill, its requests and faults."""
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        if self.provider == "platform":
            counters = stats["counters"]
            return {"distinct": stats["transactions"],
                    "receipts": sum(v for k, v in counters.items() if k.startswith("answer_")),
                    "faults": {"error": counters.get("fault_error", 0) + counters.get("fault_busy", 0), "reset": 0}}
        return {"distinct": sum(stats["bills"].values()), "receipts": sum(stats["answers"].values()),
                "faults": {"error": stats["faults"]["error"] + stats["faults"]["busy"], "reset": 0}}

    def verdict(self, summary: dict[str, Any]) -> tuple[str, bool]:
        f = self.figures
        good = f["paid_once"] == f["expected_paid"] and not f["wrong_amount_paid"]
        found = ", ".join(f"{n} {outcome}" for outcome, n in sorted(f["reconciliation"].items()))
        return (("[green]" if good else "[red]") + f"payments: {f['paid_once']} / {f['expected_paid']} bills paid "
                f"online reached the one-stop software once as fee.paid ({f['callbacks_lost']} callbacks lost, "
                f"{f['callbacks_repeated']} repeated); the wrong amount was held, not paid[/]\nreconciliation of "
                f"{f['day']}: {found}; signable report: {', '.join(f['report'])}", good)
