"""The post (VNPost public-administration post): orders out, statuses in.

Out (``kind = "postal"``): pickup orders for dossiers collected from citizens' homes, delivery orders for results
returned by post, cancellations on withdrawal or hand-over at the desk (:mod:`services.postal.deliver`).

In: statuses pushed to ``POST /v1/callbacks/postal`` and, as the fallback, read from the tracking list by beat
(:mod:`services.postal.inbound`, :mod:`services.postal.callbacks`).
"""

from __future__ import annotations

from pydantic import Field

from services.base import BeatJob, Lazy, Service, ServiceSettings, Simulator
from services.postal.deliver import PostalDeliverer, PostalOptions
from services.postal.inbound import poll


class PostalSettings(ServiceSettings):
    postal_poll_interval_seconds: float = Field(
        120.0, gt=0, description="how often beat reads postal destinations' tracking lists (the callbacks' fallback)")


SERVICE = Service(
    kind="postal",
    title="VNPost public-administration post",
    deliverer=PostalDeliverer,
    options=PostalOptions,
    settings=PostalSettings,
    jobs=(BeatJob[PostalDeliverer](
        task="relay.postal.poll", entry="postal-tracking", title="reading the post's tracking list", run=poll,
        every="postal_poll_interval_seconds", applies=lambda options: bool(options.poll), done="postal.polled",
        failed="postal.poll_failed", noteworthy=lambda s: bool(s["stored"] or s["unknown"])),),
    callbacks=Lazy("services.postal.callbacks:router"),
    simulators=(Simulator("post", "postal_port", 8705, Lazy("services.postal.simulator:post"),
                          help="orders move every 5 s; POST /_admin/push {url, secret} sends their statuses to "
                               "/v1/callbacks/postal"),),
    demo=Lazy("services.postal.demo:configure"),
)
