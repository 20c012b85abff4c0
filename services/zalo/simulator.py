"""The Zalo Official Account's simulator: ZNS, the OAuth token refresh and the signed webhook."""

from __future__ import annotations

from typing import Any

from sandbox.zalo import create_app
from services.base import Configured, NotReady
from services.zalo.deliver import ZaloOptions


def official_account(configured: list[Configured]) -> Any:
    options = configured[0].options
    assert isinstance(options, ZaloOptions)
    if options.oa_secret_key is None:
        raise NotReady("set MOTCUA_ZALO_OA_SECRET_KEY (the Zalo destination's oa_secret_key), which signs its webhook")
    return create_app(app_id=options.app_id.get_secret_value(), app_secret=options.app_secret.get_secret_value(),
                      oa_secret_key=options.oa_secret_key.get_secret_value())
