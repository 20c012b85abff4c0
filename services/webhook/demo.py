"""The one-stop software's part of the demo: its simulator, subscribed to every webhook destination with a fresh
secret, and the faults it injects (503s; the event applied, then the connection dropped, so the relay retries and
the subscriber must recognise the idempotency key)."""

from __future__ import annotations

from typing import Any

import httpx

from services.base import DemoPlay, Measure, Stage
from services.webhook.deliver import WebhookOptions

PORT = 8701


def configure(stage: Stage, names: list[str]) -> OnestopPlay:
    """The one-stop software, subscribed to every webhook destination with a fresh secret (unless one is set)."""
    from sandbox.onestop import create_app

    destinations = [stage.routing.destinations[name] for name in names]
    secrets = {d.name: stage.secrets(d, WebhookOptions, {"secret": stage.secret()})["secret"] for d in destinations}
    url = stage.serve(create_app(secrets), PORT)
    for d in destinations:
        stage.point(d, "url", f"MOTCUA_{d.name.upper()}_URL", f"{url}/subscribers/{d.name}/events")
    stage.onestop = url
    return OnestopPlay(names, url)


class OnestopPlay(DemoPlay):
    def __init__(self, names: list[str], url: str) -> None:
        super().__init__(names)
        self.url = url
        self.faults: dict[str, Any] = {}

    def describe(self) -> str:
        return f"simulators (one-stop software, data warehouse): {self.url}"

    def play(self, stage: Stage) -> list[str]:
        self.faults = {"error_rate": round(stage.fault_rate * 0.8, 4), "error_status": 503, "reset_after_store": True,
                       "reset_rate": round(stage.fault_rate * 0.2, 4), "seed": stage.rng.randrange(2**31)}
        httpx.post(f"{self.url}/_admin/faults", json=self.faults, timeout=10).raise_for_status()
        return [f"faults: {self.faults['error_rate']:.0%} of webhook calls answer 503; {self.faults['reset_rate']:.0%} "
                "apply the event, then drop the connection (the relay retries, the subscriber must recognise the "
                "idempotency key); no hangs (read timeout 15 s)"]

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        views = {name: stats[name] for name in self.names if name in stats}
        # requests the subscriber recognised as repeats of one it had applied
        repeated = sum(v.get("receipts", 0) - v.get("distinct", 0) for v in views.values())
        return Measure(views, "faults", self.faults, repeated=repeated)
