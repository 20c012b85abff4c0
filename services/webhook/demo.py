"""The one-stop software's part of the demo: its simulator, subscribed to every webhook destination with a fresh
secret, and the faults it injects (503s; the event applied, then the connection dropped, so the relay retries and
the subscriber must recognise the idempotency key)."""

from __future__ import annotations

from typing import Any

import httpx

from config.options import option_variable, secret_variable
from services.base import DemoPlay, Measure, Stage

PORT = 8701


def configure(stage: Stage, names: list[str]) -> OnestopPlay:
    from sandbox.onestop import create_app
    from services.webhook import WebhookOptions

    env, routing = stage.env, stage.routing
    secrets = {}
    for name in names:
        dest = routing.destinations[name]
        variable = secret_variable(dest, WebhookOptions, "secret") or f"MOTCUA_{name.upper()}_SECRET"
        secrets[name] = env.setdefault(variable, stage.secret())
    url = stage.serve(create_app(secrets), PORT)
    for name in names:
        variable = option_variable(routing.destinations[name], "url", f"MOTCUA_{name.upper()}_URL") or ""
        env[variable] = f"{url}/subscribers/{name}/events"
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
