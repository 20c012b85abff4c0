"""The national public service portal (Cổng DVC quốc gia), through the provincial LGSP.

On the contract OpenCPS integrates (``schemas/portal.py``). Out (``kind = "portal"``): each lifecycle event of a
dossier brings its record up to date and appends one progress entry (:mod:`services.portal.deliver`), that entry
exactly once although the portal returns no history (:mod:`services.portal.progress`); the ledger's per-dossier
ordering makes the entries arrive in ``sequence`` order and supersedes a late one, so a stale status never
overwrites a newer.

In: citizens' online dossiers, pulled by beat for the units in ``pull_units`` and pushed to
``POST /v1/callbacks/portal`` (:mod:`services.portal.inbound`, :mod:`services.portal.callbacks`). Neither is in
OpenCPS: the service (``online_service``) and its shape are the simulator's, to be matched to a province's LGSP.
"""

from __future__ import annotations

from pydantic import Field

from services.base import BeatJob, Lazy, Service, ServiceSettings, Simulator
from services.portal.deliver import PortalDeliverer, PortalOptions
from services.portal.inbound import pull


class PortalSettings(ServiceSettings):
    portal_pull_interval_seconds: float = Field(
        60.0, gt=0, description="how often beat pulls online dossiers from portal destinations with pull_units")


SERVICE = Service(
    kind="portal",
    title="national public service portal (via the provincial LGSP)",
    deliverer=PortalDeliverer,
    options=PortalOptions,
    settings=PortalSettings,
    jobs=(BeatJob[PortalDeliverer](
        task="relay.portal.pull", entry="portal-online-dossiers", title="pulling the portal's online dossiers",
        run=pull, every="portal_pull_interval_seconds", applies=lambda options: bool(options.pull_units),
        done="portal.pulled", failed="portal.pull_failed", noteworthy=lambda s: bool(s["pulled"])),),
    callbacks=Lazy("services.portal.callbacks:router"),
    simulators=(Simulator("national portal", "portal_port", 8702, Lazy("services.portal.simulator:portal")),),
    demo=Lazy("services.portal.demo:configure"),
)
