"""Zalo Official Account notifications (ZNS template messages) to citizens who consented.

Out (``kind = "zalo"``): one template message per lifecycle event (:mod:`services.zalo.deliver`), held during
quiet hours and while the daily quota is spent, rerouted to the SMS fallback for a phone without Zalo.

In: ``POST /v1/callbacks/zalo``, the OA's signed webhook, records receipts (:mod:`services.zalo.callbacks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.base import Configured, DemoPlay, Service, Simulator, Stage
from services.zalo.deliver import ZaloDeliverer, ZaloOptions

if TYPE_CHECKING:
    from fastapi import APIRouter


def _callbacks() -> APIRouter:
    from services.zalo.callbacks import router

    return router


def _simulator(configured: list[Configured], **_: Any) -> Any:
    from sandbox.zalo import create_app
    from services.base import NotReady

    options = configured[0].options
    assert isinstance(options, ZaloOptions)
    if options.oa_secret_key is None:
        raise NotReady("set MOTCUA_ZALO_OA_SECRET_KEY (the Zalo destination's oa_secret_key), which signs its webhook")
    return create_app(app_id=options.app_id.get_secret_value(), app_secret=options.app_secret.get_secret_value(),
                      oa_secret_key=options.oa_secret_key.get_secret_value())


def _demo(stage: Stage, names: list[str]) -> DemoPlay:
    from services.zalo.demo import configure

    return configure(stage, names)


SERVICE = Service(
    kind="zalo",
    title="Zalo Official Account (ZNS template messages)",
    deliverer=ZaloDeliverer,
    options=ZaloOptions,
    callbacks=_callbacks,
    simulators=(Simulator("Zalo", "zalo_port", 8703, _simulator,
                          help="POST /_admin/tokens gives a pair for `motcua-relay zalo set-token`"),),
    demo=_demo,
)
