"""Fee collection: bills out, payments in, and each day's reconciliation ("đối soát").

Out (``kind = "payment"``): each assessed fee becomes one bill at the destination's provider, the national payment
platform or a bank (:mod:`services.payment.deliver`); the payment link goes out as ``fee.bill_created``.

In: payments from the providers' callbacks (:mod:`services.payment.callbacks`), from the query of bills no
callback answered and from the morning reconciliation (:mod:`services.payment.inbound`), each recorded once; the
reconciliation writes a CSV and a spreadsheet an accountant signs (:mod:`services.payment.report`). The portal's
question whether a dossier's fee is paid (``dptracuuthanhtoanhs``) is answered from the bills
(:mod:`services.payment.lookup`, mounted with the callbacks).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field

from config.options import ServiceOptions
from services.base import BeatJob, Lazy, Service, ServiceSettings, Simulator
from services.payment.deliver import PaymentDeliverer, PaymentOptions
from services.payment.inbound import query_job, reconcile_hint, reconcile_job


class PaymentSettings(ServiceSettings):
    payment_query_interval_seconds: float = Field(
        60.0, gt=0, description="how often beat queries payment providers about bills no callback has answered")
    reconcile_at: str = Field(
        "06:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="when (HH:MM, Vietnam time) beat reconciles the previous day of every payment destination")


def _provider(name: str) -> Callable[[ServiceOptions], bool]:
    return lambda options: isinstance(options, PaymentOptions) and options.provider == name


SERVICE = Service(
    kind="payment",
    title="fee collection (the national payment platform, banks)",
    deliverer=PaymentDeliverer,
    options=PaymentOptions,
    settings=PaymentSettings,
    jobs=(
        BeatJob[PaymentDeliverer](
            task="relay.payment.unanswered", entry="payment-unanswered-bills", title="querying bills no callback "
            "answered", run=query_job, every="payment_query_interval_seconds", lock_seconds=120,
            done="payment.queried", failed="payment.query_failed",
            noteworthy=lambda s: bool(s["paid"] or s["mismatched"] or s["errors"])),
        BeatJob[PaymentDeliverer](
            task="relay.payment.reconcile", entry="payment-reconciliation", title="reconciling the previous day",
            run=reconcile_job, daily_at="reconcile_at", lock_seconds=600, done="payment.reconciled",
            failed="payment.reconcile_failed", failure_hint=reconcile_hint),
    ),
    callbacks=Lazy("services.payment.callbacks:router"),
    simulators=(
        Simulator("payment platform", "payment_port", 8706, Lazy("services.payment.simulator:platform"),
                  takes=_provider("platform"),
                  help="POST /_admin/callback {url}, then POST /_admin/pay {transaction_id} pays a bill"),
        Simulator("bank", "bank_port", 8707, Lazy("services.payment.simulator:bank"), takes=_provider("bank"),
                  help="WSDL at /soap/billcollection?wsdl; POST /_admin/pay {billCode}"),
    ),
    demo=Lazy("services.payment.demo:configure"),
)
