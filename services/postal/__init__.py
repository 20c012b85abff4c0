"""The post (VNPost public-administration post): orders out, statuses in.

Out (``kind = "postal"``): pickup orders for dossiers collected from citizens' homes, delivery orders for results
returned by post, cancellations on withdrawal or hand-over at the desk (:mod:`services.postal.deliver`).

In: statuses pushed to ``POST /v1/callbacks/postal`` and, as the fallback, read from the tracking list by beat
(:mod:`services.postal.inbound`, :mod:`services.postal.callbacks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from services.base import BeatJob, Configured, DemoPlay, Service, ServiceSettings, Simulator, Stage
from services.postal.deliver import PostalDeliverer, PostalOptions
from services.postal.inbound import poll

if TYPE_CHECKING:
    from fastapi import APIRouter


class PostalSettings(ServiceSettings):
    postal_poll_interval_seconds: float = Field(
        120.0, gt=0, description="how often beat reads postal destinations' tracking lists (the callbacks' fallback)")


def _callbacks() -> APIRouter:
    from services.postal.callbacks import router

    return router


def _simulator(configured: list[Configured], *, fast: bool = False, seed: int | None = None) -> Any:
    from sandbox.postal import create_app

    options = [c.options for c in configured if isinstance(c.options, PostalOptions)]
    return create_app(consumer_key=options[0].consumer_key.get_secret_value(),
                      consumer_secret=options[0].consumer_secret.get_secret_value(),
                      customer_codes=[o.customer_code for o in options], step_seconds=5.0, collect_after_seconds=30.0,
                      seed=seed)


def _demo(stage: Stage, names: list[str]) -> DemoPlay:
    from services.postal.demo import configure

    return configure(stage, names)


SERVICE = Service(
    kind="postal",
    title="VNPost public-administration post",
    deliverer=PostalDeliverer,
    options=PostalOptions,
    settings=PostalSettings,
    jobs=(BeatJob[PostalDeliverer](
        task="relay.postal.poll", entry="postal-tracking", run=poll, every="postal_poll_interval_seconds",
        applies=lambda options: bool(options.poll), done="postal.polled", failed="postal.poll_failed",
        noteworthy=lambda s: bool(s["stored"] or s["unknown"])),),
    callbacks=_callbacks,
    simulators=(Simulator("post", "postal_port", 8705, _simulator,
                          help="orders move every 5 s; POST /_admin/push {url, secret} sends their statuses to "
                               "/v1/callbacks/postal"),),
    demo=_demo,
)
