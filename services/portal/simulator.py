"""The national portal's simulator, with the relay's account of the portal destination, on its endpoints."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sandbox.portal import create_app
from services.base import Configured
from services.portal.deliver import PortalOptions


def _path(endpoint: str) -> str:
    """Where the simulator serves an endpoint configured as a path or a full URL (its path)."""
    if endpoint.startswith(("http://", "https://")):
        return urlsplit(endpoint).path or "/"
    return endpoint


def portal(configured: list[Configured]) -> Any:
    options = configured[0].options
    assert isinstance(options, PortalOptions)
    return create_app(username=options.username.get_secret_value(), password=options.password.get_secret_value(),
                      dstcode=options.dstcode, auth_path=_path(options.auth_path),
                      integration_path=_path(options.integration_path), online_service=options.online_service)
