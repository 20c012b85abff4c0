"""The national portal's simulator, with the relay's account of the portal destination."""

from __future__ import annotations

from typing import Any

from sandbox.portal import create_app
from services.base import Configured
from services.portal.deliver import PortalOptions


def portal(configured: list[Configured]) -> Any:
    options = configured[0].options
    assert isinstance(options, PortalOptions)
    return create_app(username=options.username.get_secret_value(), password=options.password.get_secret_value(),
                      dstcode=options.dstcode)
