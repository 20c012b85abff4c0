"""The post's simulator: one customer account per postal destination, orders moving a step every 5 s."""

from __future__ import annotations

from typing import Any

from sandbox.postal import create_app
from services.base import Configured
from services.postal.deliver import PostalOptions


def post(configured: list[Configured]) -> Any:
    options = [c.options for c in configured if isinstance(c.options, PostalOptions)]
    return create_app(consumer_key=options[0].consumer_key.get_secret_value(),
                      consumer_secret=options[0].consumer_secret.get_secret_value(),
                      customer_codes=[o.customer_code for o in options], step_seconds=5.0, collect_after_seconds=30.0)
