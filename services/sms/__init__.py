"""A brandname SMS gateway: the text of the event's template (``config/zalo.toml``, ``sms``), for citizens whose
phone has no Zalo. Only the Zalo destination's ``fallback`` sends here (no route of its own)."""

from __future__ import annotations

from services.base import Lazy, Service, Simulator
from services.sms.deliver import SmsDeliverer, SmsOptions

SERVICE = Service(
    kind="sms",
    title="brandname SMS gateway (the Zalo fallback)",
    deliverer=SmsDeliverer,
    options=SmsOptions,
    simulators=(Simulator("SMS gateway", "sms_port", 8704, Lazy("services.sms.simulator:gateway")),),
    demo=Lazy("services.sms.demo:configure"),
)
