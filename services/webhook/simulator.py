"""The webhook service's simulator: the one-stop software, subscribed to every webhook destination."""

from __future__ import annotations

from typing import Any

from sandbox.onestop import create_app
from services.base import Configured, NotReady
from services.webhook.deliver import WebhookOptions


def onestop(configured: list[Configured]) -> Any:
    """The one-stop software, subscribed to every webhook destination with its secret."""
    secrets = {c.destination.name: c.options.secret.get_secret_value() for c in configured
               if isinstance(c.options, WebhookOptions)}
    if not secrets:
        raise NotReady("no subscriber secrets configured (set the variable that each webhook destination's "
                       "secret_env names, in the environment or in .env)")
    return create_app(secrets)
