"""The national portal's part of the demo: its simulator with faults and short sessions, citizens' online
dossiers (half pushed to the callback, half left to the pull), and, at the end, whether the portal holds exactly
the one-stop software's status and progress history of every dossier, with no content issue (the simulator's
``/_admin/dossiers`` view shows the entries it took, in order: ``TraCuuHoSo`` returns none)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from services.base import DemoPlay, Measure, Stage
from services.portal.deliver import PortalOptions

DEMO_UNIT = "000.21.00.H49"  # the workload generator's ward (UBND phường Hồng Gai)
PORT = 8702


def configure(stage: Stage, names: list[str]) -> PortalPlay:
    """One portal simulator for the portal destinations, with the demo's credentials."""
    from sandbox.portal import create_app

    destinations = [stage.routing.destinations[name] for name in names]
    held = [stage.secrets(d, PortalOptions, {"username": "motcua-demo", "password": uuid.uuid4().hex,
                                             "callback_secret": stage.secret()}) for d in destinations]
    url = stage.serve(create_app(username=held[0]["username"], password=held[0]["password"]), PORT)
    for d in destinations:
        stage.point(d, "pull_units", "MOTCUA_PORTAL_PULL_UNITS", DEMO_UNIT, keep=True)
        stage.point(d, "url", "MOTCUA_PORTAL_URL", url)
    return PortalPlay(names, url, held[0]["callback_secret"])


class PortalPlay(DemoPlay):
    def __init__(self, names: list[str], url: str, callback_secret: str) -> None:
        super().__init__(names)
        self.url = url
        self.callback_secret = callback_secret
        self.online: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def describe(self) -> str:
        return f"national portal: {self.url}"

    def play(self, stage: Stage) -> list[str]:
        """Faults and short sessions on the portal; citizens' online dossiers, half pushed, half left to the pull."""
        from sandbox.portal import online_dossiers

        # a delivery is three portal calls: a third of the rate per call fails about as many deliveries as --faults
        faults = {"error_rate": round(stage.fault_rate * 0.8 / 3, 4), "busy_rate": round(stage.fault_rate * 0.2 / 3, 4),
                  "session_ttl_seconds": 20, "seed": stage.rng.randrange(2**31)}
        httpx.post(f"{self.url}/_admin/faults", json=faults, timeout=10).raise_for_status()
        dossiers = max(2, stage.dossiers // 10)
        self.online = online_dossiers(dossiers, unit_code=DEMO_UNIT, seed=stage.rng.randrange(2**31))
        half = len(self.online) // 2
        httpx.post(f"{self.url}/_admin/push", json={"url": f"{stage.api}/v1/callbacks/portal",
                                                   "secret": self.callback_secret}, timeout=10).raise_for_status()
        httpx.post(f"{self.url}/_admin/online", json={"dossiers": self.online[:half]}, timeout=10)
        httpx.delete(f"{self.url}/_admin/push", timeout=10)
        httpx.post(f"{self.url}/_admin/online", json={"dossiers": self.online[half:]}, timeout=10)
        return [f"national portal: {faults['error_rate']:.1%} of calls answer 503, {faults['busy_rate']:.1%} "
                f"'busy' (96), sessions expire every 20 s; {len(self.online)} citizens submitted online there "
                f"({half} pushed to the callback, {len(self.online) - half} left for the pull)"]

    def shape(self, stage: Stage, events: list[dict[str, Any]]) -> list[str]:
        self.events = events
        return []

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        from adapters.portal import content_issues, expected_truth, holds
        from schemas.events import parse_stored

        view = httpx.get(f"{self.url}/_admin/dossiers", timeout=10).json()
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        entries = sum(len(d["QuaTrinhXuLy"]) for d in view.values())
        truth = expected_truth(parse_stored(e) for e in self.events)
        received = httpx.get(f"{stage.onestop}/_admin/received", params={"subscriber": "onestop"}, timeout=10).json()
        codes = [r["dossier_code"] for r in received if r["type"] == "dossier.submitted"]
        wanted = {d["MaHoSo"] for d in self.online}
        figures = {"dossiers": len(truth), "matching": sum(1 for c, t in truth.items() if holds(view.get(c), t)),
                   "content_issues": sum(len(content_issues(view[c], t)) for c, t in truth.items() if c in view),
                   "repeated_progress": stats["repeated_progress"],
                   "sessions_expired": stats["sessions_expired"], "online": len(self.online),
                   "online_delivered": sum(1 for c in set(codes) if c in wanted and codes.count(c) == 1)}
        # effects: the progress entries the portal holds; requests: its calls
        view_of = {"distinct": entries, "receipts": sum(stats["calls"].values()),
                   "faults": {"error": stats["faults"]["error"], "reset": 0}}
        self.figures = figures
        return Measure({name: view_of for name in self.names}, "portal", figures)

    def verdict(self, summary: dict[str, Any]) -> tuple[str, bool]:
        f = self.figures
        good = f["matching"] == f["dossiers"] and f["online_delivered"] == f["online"]
        return (("[green]" if good else "[red]") + f"national portal: {f['matching']} / {f['dossiers']} dossiers hold "
                f"exactly the one-stop software's status and progress history, in order, with no content issue "
                f"({f['sessions_expired']} expired sessions renewed, {f['repeated_progress']} unanswered progress "
                f"entries resolved by the portal's repeat answer); {f['online_delivered']} / {f['online']} online "
                "dossiers reached the one-stop software once[/]", good)
