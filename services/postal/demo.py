"""The post's part of the demo: its simulator (orders collected after 2 s, a step a second, 10 % of deliveries
failing once), its statuses pushed to the callback (some lost or repeated) and polled from the tracking list; at
the end, whether every order was created once and every delivery reported to the one-stop software once."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx

from adapters.postal import CANCELLING_TYPES, status_event_id
from schemas.postal import ACCEPTED, CANCELLED, DEFAULT_STATUS_MAP, DELIVERED, TrackingRecord
from schemas.postal import FINAL_STATUSES as FINAL
from services.base import DemoPlay, Measure, Stage
from services.postal.deliver import PostalOptions
from store import queries

PORT = 8705


def configure(stage: Stage, names: list[str]) -> PostalPlay:
    """One postal simulator for the postal destinations, with the demo's keys."""
    from sandbox.postal import create_app

    destinations = [stage.routing.destinations[name] for name in names]
    held = [stage.secrets(d, PostalOptions, {"consumer_key": "motcua-demo", "consumer_secret": uuid.uuid4().hex,
                                             "callback_secret": stage.secret()}) for d in destinations]
    customers = [str(d.options.get("customer_code")) for d in destinations]
    url = stage.serve(create_app(consumer_key=held[0]["consumer_key"], consumer_secret=held[0]["consumer_secret"],
                                 customer_codes=customers, step_seconds=1.0, collect_after_seconds=2.0, fail_rate=0.1,
                                 seed=stage.rng.randrange(2**31)), PORT)
    for d in destinations:
        stage.point(d, "url", "MOTCUA_POSTAL_URL", url)
    return PostalPlay(names, url, held[0]["callback_secret"])


class PostalPlay(DemoPlay):
    produces = frozenset({"postal.status"})

    def __init__(self, names: list[str], url: str, callback_secret: str) -> None:
        super().__init__(names)
        self.url = url
        self.callback_secret = callback_secret
        self.figures: dict[str, Any] = {}

    def describe(self) -> str:
        return f"post: {self.url}"

    def play(self, stage: Stage) -> list[str]:
        """Faults on the post's API; its statuses pushed to the callback, some lost or repeated."""
        faults = {"error_rate": round(stage.fault_rate * 0.8 / 2, 4), "busy_rate": round(stage.fault_rate * 0.2 / 2, 4),
                  "push_loss_rate": 0.2, "push_duplicate_rate": 0.1, "seed": stage.rng.randrange(2**31)}
        httpx.post(f"{self.url}/_admin/faults", json=faults, timeout=10).raise_for_status()
        httpx.post(f"{self.url}/_admin/push", json={"url": f"{stage.api}/v1/callbacks/postal",
                                                   "secret": self.callback_secret}, timeout=10).raise_for_status()
        return [f"post: {faults['error_rate']:.1%} of calls answer 503, {faults['busy_rate']:.1%} 'busy' "
                "(Status 503); orders move a step a second, 10 % of deliveries fail once; statuses are pushed to "
                "the callback (20 % lost, 10 % repeated) and polled from the tracking list"]

    def settled(self, stage: Stage) -> bool:
        """Every order at the post is final and every status it recorded that the one-stop software hears of is in
        the ledger, by its event id (a count would be met early: a status may come in twice, pushed and polled, as
        two events when their times differ by the second)."""
        orders = httpx.get(f"{self.url}/_admin/orders", timeout=10).json()
        if any(o["StatusCode"] not in FINAL for o in orders):
            return False
        expected = {status_event_id(TrackingRecord.model_validate(h)) for o in orders for h in o["history"]
                    if h["StatusCode"] != ACCEPTED and DEFAULT_STATUS_MAP.get(h["StatusCode"]) is not None}
        return expected <= queries.event_ids(stage.context.engine, "postal.status", stage.since)

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        """The post's view against the one-stop software's: orders created once, deliveries reported once."""
        orders = httpx.get(f"{self.url}/_admin/orders", timeout=10).json()
        post = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        # a request's effect is its order at the post; a withdrawal's or hand-over's is its answer
        # (cancelled, or nothing to cancel): one each, whatever the retries
        answered = sum(1 for r in rows if r["destination"] in self.names and r["status"] == "delivered"
                       and r["type"] in CANCELLING_TYPES)
        view = {"distinct": len(orders) + answered, "receipts": sum(post["answers"].values()),
                "faults": {"error": post["faults"]["error"] + post["faults"]["busy"], "reset": 0}}
        received = httpx.get(f"{stage.onestop}/_admin/received", params={"subscriber": "onestop", "full": True},
                             timeout=30).json()
        statuses = [r["event"]["data"] for r in received if r["type"] == "postal.status"]
        delivered = Counter(s["order_number"] for s in statuses if s["status"] == "delivered")
        self.figures = {
            "orders": len(orders), "created_once": len(orders) - post["creates"]["second_orders"],
            "cancelled": sum(1 for o in orders if o["StatusCode"] == CANCELLED),
            "delivered": sum(1 for o in orders if o["StatusCode"] == DELIVERED),
            "delivered_back": sum(1 for o in orders if o["StatusCode"] == DELIVERED
                                  and delivered[o["OrderNumber"]] == 1),
            "statuses": len(statuses), "pushes_lost": post["pushes"]["lost"],
            "pushes_repeated": post["pushes"]["duplicated"]}
        return Measure({name: view for name in self.names}, "postal", self.figures)

    def verdict(self, summary: dict[str, Any]) -> tuple[str, bool]:
        f = self.figures
        good = f["created_once"] == f["orders"] and f["delivered_back"] == f["delivered"]
        return (("[green]" if good else "[red]") + f"post: {f['created_once']} / {f['orders']} orders created exactly "
                f"once, {f['cancelled']} cancelled (withdrawn or handed over at the desk); {f['delivered_back']} / "
                f"{f['delivered']} deliveries reported to the one-stop software once, {f['statuses']} statuses in all "
                f"({f['pushes_lost']} pushes lost, {f['pushes_repeated']} repeated: the poller and the ledger made up "
                "for them)[/]", good)
