"""Fee collection: bills out, payments in, and each day's reconciliation ("đối soát").

Out (``kind = "payment"``): each assessed fee becomes one bill at the destination's provider, the national payment
platform or a bank (:mod:`services.payment.deliver`); the payment link goes out as ``fee.bill_created``.

In: payments from the providers' callbacks (:mod:`services.payment.callbacks`), from the query of bills no
callback answered and from the morning reconciliation (:mod:`services.payment.inbound`), each recorded once; the
reconciliation writes a CSV and a spreadsheet an accountant signs (:mod:`services.payment.report`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from services.base import BeatJob, Configured, DemoPlay, NotReady, Service, ServiceSettings, Simulator, Stage
from services.payment.deliver import PaymentDeliverer, PaymentOptions
from services.payment.inbound import query_job, reconcile_hint, reconcile_job

if TYPE_CHECKING:
    from fastapi import APIRouter


class PaymentSettings(ServiceSettings):
    payment_query_interval_seconds: float = Field(
        60.0, gt=0, description="how often beat queries payment providers about bills no callback has answered")
    reconcile_at: str = Field(
        "06:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="when (HH:MM, Vietnam time) beat reconciles the previous day of every payment destination")


def _callbacks() -> APIRouter:
    from services.payment.callbacks import router

    return router


def _of(configured: list[Configured]) -> PaymentOptions:
    options = configured[0].options
    assert isinstance(options, PaymentOptions)
    return options


def _platform(configured: list[Configured], **_: Any) -> Any:
    from sandbox.payment import create_app

    options = _of(configured)
    if options.request_key is None or options.callback_key is None:
        raise NotReady("set MOTCUA_PAYMENT_REQUEST_KEY and MOTCUA_PAYMENT_CALLBACK_KEY (the destination's "
                       "request_key and callback_key)")
    return create_app(client_id=str(options.client_id), request_key=options.request_key.get_secret_value(),
                      callback_key=options.callback_key.get_secret_value().split(",")[0])


def _bank(configured: list[Configured], **_: Any) -> Any:
    from sandbox.bank import create_app

    options = _of(configured)
    assert options.password is not None  # a bank destination requires it
    return create_app(partner_code=str(options.partner_code), username=str(options.username),
                      password=options.password.get_secret_value())


def _demo(stage: Stage, names: list[str]) -> DemoPlay:
    from services.payment.demo import configure

    return configure(stage, names)


def _provider(name: str) -> Any:
    return lambda options: isinstance(options, PaymentOptions) and options.provider == name


SERVICE = Service(
    kind="payment",
    title="fee collection (the national payment platform, banks)",
    deliverer=PaymentDeliverer,
    options=PaymentOptions,
    settings=PaymentSettings,
    jobs=(
        BeatJob[PaymentDeliverer](
            task="relay.payment.unanswered", entry="payment-unanswered-bills", run=query_job,
            every="payment_query_interval_seconds", lock_seconds=120, done="payment.queried",
            failed="payment.query_failed", noteworthy=lambda s: bool(s["paid"] or s["mismatched"] or s["errors"])),
        BeatJob[PaymentDeliverer](
            task="relay.payment.reconcile", entry="payment-reconciliation", run=reconcile_job, daily_at="reconcile_at",
            lock_seconds=600, done="payment.reconciled", failed="payment.reconcile_failed",
            failure_hint=reconcile_hint),
    ),
    callbacks=_callbacks,
    simulators=(
        Simulator("payment platform", "payment_port", 8706, _platform, takes=_provider("platform"),
                  help="POST /_admin/callback {url}, then POST /_admin/pay {transaction_id} pays a bill"),
        Simulator("bank", "bank_port", 8707, _bank, takes=_provider("bank"),
                  help="WSDL at /soap/billcollection?wsdl; POST /_admin/pay {billCode}"),
    ),
    demo=_demo,
)
