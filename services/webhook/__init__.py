"""Signed webhooks to any subscriber: the one-stop software itself, a provincial data warehouse, a citizen app.

Out (``kind = "webhook"``): the canonical event goes out as the ledger holds it, signed the Standard Webhooks way
with the subscriber's ``whsec_`` secret, the delivery's idempotency key as the message id (``adapters/webhook.py``
signs, ``connectors/webhook.py`` posts and reads the answer). Its simulator is the one-stop software
(``sandbox/onestop.py``), which subscribes to every webhook destination.
"""

from __future__ import annotations

from services.base import Lazy, Service, Simulator
from services.webhook.deliver import WebhookDeliverer, WebhookOptions

SERVICE = Service(
    kind="webhook",
    title="signed webhook subscribers (the one-stop software, a data warehouse)",
    deliverer=WebhookDeliverer,
    options=WebhookOptions,
    simulators=(Simulator("one-stop software", "port", 8701, Lazy("services.webhook.simulator:onestop"),
                          required=True),),
    demo=Lazy("services.webhook.demo:configure"),
)
