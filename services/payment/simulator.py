"""The payment providers' simulators: the national payment platform, and a bank's bill-collection service."""

from __future__ import annotations

from typing import Any

from sandbox.bank import create_app as bank_app
from sandbox.payment import create_app as platform_app
from services.base import Configured, NotReady
from services.payment.deliver import PaymentOptions


def _of(configured: list[Configured]) -> PaymentOptions:
    options = configured[0].options
    assert isinstance(options, PaymentOptions)
    return options


def platform(configured: list[Configured]) -> Any:
    options = _of(configured)
    if options.request_key is None or options.callback_key is None:
        raise NotReady("set MOTCUA_PAYMENT_REQUEST_KEY and MOTCUA_PAYMENT_CALLBACK_KEY (the destination's "
                       "request_key and callback_key)")
    return platform_app(client_id=str(options.client_id), request_key=options.request_key.get_secret_value(),
                        callback_key=options.callback_key.get_secret_value().split(",")[0], command=options.command,
                        version=options.version)


def bank(configured: list[Configured]) -> Any:
    options = _of(configured)
    assert options.password is not None  # a bank destination requires it
    return bank_app(partner_code=str(options.partner_code), username=str(options.username),
                      password=options.password.get_secret_value())
