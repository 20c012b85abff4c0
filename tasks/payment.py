"""Fee collection: bills out, payments in, and each day's reconciliation.

Out (``kind = "payment"``): a ``fee.assessed`` event becomes one bill at the destination's provider
(``provider = "platform"``, the national payment platform, or ``"bank"``, a bank's SOAP bill-collection
service). The bill code comes from the dossier and the fee; a bill the ledger already holds is not sent
again, and otherwise the provider is asked first (a repeated attempt after a timeout that landed finds
the bill), and both providers answer a repeated creation with the first one's link. The bill is stored
(``store.payments``) and a ``fee.bill_created`` event carrying the payment link is ingested and routed
(to Zalo, where that destination exists, and back to the one-stop software).

In: a payment is learnt from the provider's callback (``api/callbacks.py``), from the query of bills
left without one (beat ``relay.payment.unanswered``), or from the reconciliation (beat
``relay.payment.reconcile`` each morning, or ``motcua-relay reconcile --date D``). All three go through
:func:`record_payment`: the bill's amount makes a ``fee.paid`` event whose id is the bill's, stored
before the bill is marked paid, so it reaches the one-stop software exactly once whichever way, and
however often, the payment is reported; another amount puts the bill in quarantine, never paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
import structlog
from pydantic import SecretStr, ValidationError

from adapters.payment import (
    ANOMALIES,
    BillView,
    CallbackView,
    PaymentMapping,
    PaymentMappingError,
    ReconciliationLine,
    Settlement,
    bank_bill,
    bill_code,
    bill_created_event,
    judge_payment,
    paid_event,
    platform_bill,
    reconcile,
)
from config.routing import Destination, parse_duration
from config.settings import Settings
from connectors.bank import BankConnector
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.payment import PlatformConnector
from schemas import bank as bank_wire
from schemas import payment as platform_wire
from schemas.payment import VN_TZ
from schemas.privacy import error_fields
from store import intake, payments, queries
from store.payments import PaidVia, Verdict
from store.reports import day_bounds
from store.tables import BillState
from tasks.app import app
from tasks.delivery import enqueue_deliveries
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)



@dataclass(frozen=True)
class ProviderPayment:
    """A payment as a provider reports it (by query or in a settlement list)."""

    bill_code: str
    transaction_id: str
    amount: int
    paid_at: datetime


class PaymentDeliverer:
    """Adapter + connector for one payment destination, and what the callbacks and beat jobs need of it."""

    def __init__(self, destination: Destination, settings: Settings, client: redis.Redis | None = None) -> None:
        self.name = destination.name
        options = destination.resolved_options()
        self.mapping = PaymentMapping.from_options(options)
        self.provider = self.mapping.provider
        self.query_after = parse_duration(options.get("query_after", "30m"))
        self.query_every = parse_duration(options.get("query_every", "1h"))
        self.query_for = parse_duration(options.get("query_for", "7d"))
        self.query_batch = int(options.get("query_batch", 200))
        url = options.get("url")
        if not url:
            raise ValueError(f"destination {destination.name}: the payment provider needs a url")
        self.platform: PlatformConnector | None = None
        self.bank: BankConnector | None = None
        self._missing: list[str] = []
        if self.provider == "platform":
            client_id = options.get("client_id")
            key, key_env = destination.secret("request_key", "MOTCUA_PAYMENT_REQUEST_KEY")
            self._missing = [env for env, value in ((key_env, key),) if not value and env]
            if not client_id:
                raise ValueError(f"destination {destination.name}: the payment platform needs a client_id")
            if not self._missing:
                self.platform = PlatformConnector(
                    base_url=str(url), client_id=str(client_id), request_key=SecretStr(str(key)),
                    client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                             settings.worker_concurrency))
        else:
            partner = options.get("partner_code")
            username = options.get("username")
            password, password_env = destination.secret("password", "MOTCUA_BANK_PASSWORD")
            if not partner or not username:
                raise ValueError(f"destination {destination.name}: the bank needs a partner_code and a username")
            self._missing = [env for env, value in ((password_env, password),) if not value and env]
            if not self._missing:
                wsdl = str(url) if "?" in str(url) else f"{str(url).rstrip('/')}{bank_wire.ENDPOINT_PATH}?wsdl"
                self.bank = BankConnector(
                    wsdl_url=wsdl, partner_code=str(partner), username=str(username),
                    password=SecretStr(str(password)), connect_timeout=destination.timeouts.connect,
                    read_timeout=destination.timeouts.read)

    def _require(self) -> None:
        if self._missing:
            raise Permanent(f"payment credentials not configured: set {' and '.join(self._missing)}")

    # ---- out: bills

    def deliver(self, event: dict[str, Any], idempotency_key: str) -> ConnectorResult:
        self._require()
        if event.get("type") != "fee.assessed":
            raise Permanent(f"the payment provider takes assessed fees, not {event.get('type')}")
        data = event.get("data") or {}
        code = bill_code(str(event["dossier_code"]), str(data.get("fee_id")))
        rt = get_runtime()
        held = payments.get_bill(rt.engine, code)
        if held is not None:
            state = f"already issued ({held.state})"
            url, ref = held.payment_url or "", held.external_ref
        else:
            try:
                url, ref, state = self._issue(event)
            except PaymentMappingError as exc:
                raise Permanent(str(exc)) from exc
            except ValidationError as exc:
                raise Permanent(f"the bill would be invalid: {', '.join(error_fields(exc))}") from exc
            payments.record_bill(rt.engine, payments.NewBill(
                bill_code=code, destination=self.name, provider=self.provider, dossier_code=str(event["dossier_code"]),
                fee_id=str(data["fee_id"]), amount=int(data["amount"]), assessed_event_id=str(event["event_id"]),
                payment_url=url or None, external_ref=ref), datetime.now(UTC))
        created = bill_created_event(event, self.mapping, code, url, datetime.now(UTC))
        _ingest([created])
        return ConnectorResult(status_code=200, external_ref=ref or code,
                               excerpt=f"bill {code} {state} at the {self.provider}, {data.get('amount')} đ")

    def _issue(self, event: dict[str, Any]) -> tuple[str, str | None, str]:
        """Create the bill at the provider, asking first: ``(payment url, provider's reference, what happened)``."""
        if self.platform is not None:
            code, amount, info = platform_bill(event, self.mapping)
            found = self.platform.query(code)
            if found is not None and found.trans_amount not in (None, amount) and found.status != platform_wire.PAID:
                raise Permanent(f"transaction {code} exists at the platform with another amount "
                                f"({found.trans_amount}, the fee is {amount})")
            answer = self.platform.register(code, amount, self.mapping.return_url, info)
            return answer.payment_url or "", answer.transaction_id, ("created" if found is None
                                                                     else "already held by the platform")
        assert self.bank is not None
        request = bank_bill(event, self.mapping)
        found_bill = self.bank.query(request.billCode)
        if found_bill is not None and found_bill.amount not in (None, request.amount):
            raise Permanent(f"bill {request.billCode} exists at the bank with another amount "
                            f"({found_bill.amount}, the fee is {request.amount})")
        made = self.bank.create_bill(request)
        return made.paymentUrl, made.bankReference, ("created" if made.created and found_bill is None
                                                     else "already held by the bank")

    # ---- in: what the provider says of a bill, and of a day

    def query(self, code: str) -> ProviderPayment | None:
        """The payment of a bill as the provider holds it, or ``None`` while it is unpaid (or unknown)."""
        self._require()
        if self.platform is not None:
            answer = self.platform.query(code)
            if answer is None or answer.status != platform_wire.PAID or not answer.payment_time:
                return None
            return ProviderPayment(code, answer.gateway_trans_id or "", int(answer.trans_amount or 0),
                                   platform_wire.parse_time(answer.payment_time))
        assert self.bank is not None
        status = self.bank.query(code)
        if status is None or status.status != bank_wire.PAID or status.paidAt is None:
            return None
        return ProviderPayment(code, status.transactionId or "", int(status.paidAmount or 0), status.paidAt)

    def settled(self, day: date) -> list[Settlement]:
        self._require()
        if self.platform is not None:
            return [Settlement(s.transaction_id, s.gateway_trans_id, s.trans_amount,
                               platform_wire.parse_time(s.payment_time)) for s in self.platform.settled(day)]
        assert self.bank is not None
        return [Settlement(s.billCode, s.transactionId, s.amount, s.paidAt) for s in self.bank.settled(day)]

    def close(self) -> None:
        if self.platform is not None:
            self.platform.close()
        if self.bank is not None:
            self.bank.close()


def payment_deliverer(name: str) -> PaymentDeliverer:
    deliverer = get_runtime().deliverer(name)
    if not isinstance(deliverer, PaymentDeliverer):
        raise ValueError(f"destination {name} is not a payment provider")
    return deliverer


def payment_destinations() -> list[str]:
    return [name for name, dest in get_runtime().routing.destinations.items() if dest.kind == "payment"]


def _ingest(payloads: list[dict[str, Any]]) -> intake.Numbered:
    """Store follow-up events of the payment origin, numbered in arrival order, and queue their deliveries."""
    rt = get_runtime()
    result = intake.ingest_numbered(rt.engine, payloads, datetime.now(UTC), rt.routing.destinations_for, rt.rules,
                                    in_arrival_order=True)
    enqueue_deliveries(result.ready, rt)
    return result


def record_payment(destination: str, code: str, transaction_id: str, amount: int, paid_at: datetime,
                   via: PaidVia) -> Verdict:
    """What a reported payment means for the bill, acted on: ``fee.paid`` once for the bill's amount
    (the event is stored before the bill is marked, so a crash between leaves it to the next report),
    quarantine for another amount, nothing for a repeat or a bill we never issued."""
    rt = get_runtime()
    bill = payments.get_bill(rt.engine, code)
    if bill is None:
        log.warning("payment.unknown_bill", destination=destination, bill_code=code, via=via)
        return "unknown_bill"
    now = datetime.now(UTC)
    if judge_payment(int(bill.amount), amount, True) == "amount_mismatch":
        if payments.quarantine(rt.engine, code, transaction_id, amount, paid_at, via, now):
            log.warning("payment.amount_mismatch", destination=destination, bill_code=code, bill_amount=bill.amount,
                        paid_amount=amount, via=via)
        return "amount_mismatch"
    if bill.state == BillState.QUARANTINED:
        return "amount_mismatch"
    if bill.state == BillState.PAID:
        return "repeat" if bill.transaction_id == transaction_id else "second_payment"
    mapping = payment_deliverer(destination).mapping
    assessed = queries.event_payload(rt.engine, bill.assessed_event_id)
    _ingest([paid_event(assessed, mapping, code, transaction_id, paid_at)])
    if payments.mark_paid(rt.engine, code, transaction_id, amount, paid_at, via, now):
        log.info("payment.paid", destination=destination, bill_code=code, via=via)
        return "paid"
    return "repeat"


def receive_callback(destination: str, scheme: str, code: str, transaction_id: str, amount: int, paid: bool,
                     paid_at: datetime | None) -> Verdict:
    """A verified callback: acted on (:func:`record_payment`) and kept with its verdict."""
    verdict: Verdict = "not_paid"
    if paid and paid_at is not None:
        verdict = record_payment(destination, code, transaction_id, amount, paid_at, "callback")
    payments.record_callback(get_runtime().engine, destination=destination, scheme=scheme, bill_code=code,
                             transaction_id=transaction_id, amount=amount, paid=paid, paid_at=paid_at,
                             verdict=verdict, now=datetime.now(UTC))
    return verdict


# --------------------------------------------------------------------------- bills without a callback


@dataclass
class QueryReport:
    asked: int = 0
    paid: int = 0
    mismatched: int = 0
    errors: list[str] = field(default_factory=list)


def query_unanswered(destination: str, now: datetime | None = None) -> QueryReport:
    """Ask the provider about issued bills left without a callback for ``query_after``; a paid one is recorded."""
    rt = get_runtime()
    deliverer = payment_deliverer(destination)
    now = now or datetime.now(UTC)
    rows = payments.unanswered(rt.engine, destination, now - timedelta(seconds=deliverer.query_after),
                               now - timedelta(seconds=deliverer.query_every),
                               now - timedelta(seconds=deliverer.query_for), deliverer.query_batch)
    report = QueryReport()
    checked: list[str] = []
    for row in rows:
        try:
            found = deliverer.query(row.bill_code)
        except Exception as exc:  # the provider's weather: the rest wait for the next run
            report.errors.append(f"{row.bill_code}: {exc}")
            break
        report.asked += 1
        checked.append(row.bill_code)
        if found is not None:
            verdict = record_payment(destination, row.bill_code, found.transaction_id, found.amount, found.paid_at,
                                     "query")
            report.paid += verdict == "paid"
            report.mismatched += verdict == "amount_mismatch"
    payments.mark_checked(rt.engine, checked, now)
    return report


@app.task(name="relay.payment.unanswered")
def query_unanswered_bills() -> dict[str, Any]:
    """Beat job: query the bills of every payment destination that no callback has answered."""

    def step(name: str) -> dict[str, Any]:
        report = query_unanswered(name)
        return {"asked": report.asked, "paid": report.paid, "mismatched": report.mismatched,
                "errors": len(report.errors)}

    return get_runtime().each_destination(
        "payment-unanswered", 120, payment_destinations(), step, done="payment.queried",
        failed="payment.query_failed", noteworthy=lambda s: bool(s["paid"] or s["mismatched"] or s["errors"]))


# --------------------------------------------------------------------------- reconciliation


@dataclass
class Reconciliation:
    destination: str
    day: date
    lines: list[ReconciliationLine]
    settled_total: int

    def count(self, outcome: str) -> int:
        return sum(1 for line in self.lines if line.outcome == outcome)

    @property
    def anomalies(self) -> list[ReconciliationLine]:
        return [line for line in self.lines if line.outcome in ANOMALIES]


def run_reconciliation(destination: str, day: date) -> Reconciliation:
    """Fetch the provider's settled list for ``day``, match it, act on it (recover, quarantine) and store
    the day's lines in place of a previous run's."""
    rt = get_runtime()
    deliverer = payment_deliverer(destination)
    settled = deliverer.settled(day)
    for s in settled:  # act first: the recovered and held bills are then what the lines say
        if s.amount > 0:
            record_payment(destination, s.bill_code, s.transaction_id, s.amount, s.paid_at, "reconciliation")
    heard = payments.callbacks_for(rt.engine, destination, [s.bill_code for s in settled], day_bounds(day))
    heard_paid = [h for h in heard if h.paid]
    codes = [s.bill_code for s in settled] + [h.bill_code for h in heard_paid]
    bills = {code: BillView(code, int(row.amount), row.dossier_code, row.paid_via)
             for code, row in payments.bills_by_code(rt.engine, codes).items()}
    lines = reconcile(day, settled, bills,
                      [CallbackView(h.bill_code, h.transaction_id, int(h.amount), h.paid_at) for h in heard_paid],
                      VN_TZ)
    payments.replace_lines(rt.engine, destination, day.isoformat(), [line_row(line) for line in lines],
                           datetime.now(UTC))
    return Reconciliation(destination, day, lines, sum(s.amount for s in settled))


def line_row(line: ReconciliationLine) -> dict[str, Any]:
    return {"outcome": line.outcome, "bill_code": line.bill_code, "transaction_id": line.transaction_id,
            "dossier_code": line.dossier_code, "bill_amount": line.bill_amount,
            "settled_amount": line.settled_amount, "callbacks": line.callbacks, "paid_at": line.paid_at,
            "note": line.note}


def yesterday(now: datetime | None = None) -> date:
    return ((now or datetime.now(UTC)).astimezone(VN_TZ) - timedelta(days=1)).date()


@app.task(name="relay.payment.reconcile")
def reconcile_yesterday(day: str | None = None, destinations: Sequence[str] | None = None) -> dict[str, Any]:
    """Beat job (each morning): reconcile the previous day (Vietnam time) of every payment destination; a
    provider down at dawn is an error whose hint is the command an operator reruns the day with."""
    from tasks.payment_report import write_report  # it imports this module

    rt = get_runtime()
    which = date.fromisoformat(day) if day else yesterday()

    def step(name: str) -> dict[str, Any]:
        result = run_reconciliation(name, which)
        csv_path, xlsx_path = write_report(result, payment_deliverer(name).provider, rt.settings.reports_dir)
        return {"day": which.isoformat(), "lines": len(result.lines), "anomalies": len(result.anomalies),
                "recovered": result.count("recovered"), "xlsx": str(xlsx_path), "csv": str(csv_path)}

    return rt.each_destination(
        "payment-reconcile", 600, destinations or payment_destinations(), step, done="payment.reconciled",
        failed="payment.reconcile_failed",
        failure_hint=lambda name: f"motcua-relay reconcile --date {which.isoformat()} --destination {name}")
