"""The SMS gateway's simulator."""

from __future__ import annotations

from typing import Any

from sandbox.sms import create_app
from services.base import Configured
from services.sms.deliver import SmsOptions


def gateway(configured: list[Configured]) -> Any:
    options = configured[0].options
    assert isinstance(options, SmsOptions)
    return create_app(api_key=options.api_key.get_secret_value(), brandname=options.brandname)
