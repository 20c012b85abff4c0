"""Zalo Official Account notifications (ZNS template messages) to citizens who consented.

Out (``kind = "zalo"``): one template message per lifecycle event (:mod:`services.zalo.deliver`), held during
quiet hours and while an account-level condition pauses the destination or its template (the ZNS balance spent, a
daily quota, a template disabled: no attempt spent, ``motcua-relay zalo resume``), rerouted to the SMS fallback
for a phone without Zalo.

In: ``POST /v1/callbacks/zalo``, the OA's signed webhook, records receipts (:mod:`services.zalo.callbacks`).
"""

from __future__ import annotations

from services.base import Lazy, Service, Simulator
from services.zalo.deliver import ZaloDeliverer, ZaloOptions

SERVICE = Service(
    kind="zalo",
    title="Zalo Official Account (ZNS template messages)",
    deliverer=ZaloDeliverer,
    options=ZaloOptions,
    callbacks=Lazy("services.zalo.callbacks:router"),
    simulators=(Simulator("Zalo", "zalo_port", 8703, Lazy("services.zalo.simulator:official_account"),
                          help="POST /_admin/tokens gives a pair for `motcua-relay zalo set-token`"),),
    demo=Lazy("services.zalo.demo:configure"),
)
