"""Zalo's part of the demo: the Official Account's simulator, the first token pair set as an operator sets it, the
signed webhook bringing receipts back, and the count of receipts at the end."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx

from connectors.credentials import TokenPairStore
from schemas.vietnam import VN_TZ
from services.base import DemoPlay, Measure, Stage
from services.zalo.deliver import ZaloOptions, set_token
from store import receipts

PORT = 8703


def configure(stage: Stage, names: list[str]) -> ZaloPlay:
    """One Zalo simulator for the Zalo destinations (the demo's app), quiet hours off."""
    from sandbox.zalo import create_app

    destinations = [stage.routing.destinations[name] for name in names]
    held = [stage.secrets(d, ZaloOptions, {"app_id": "4301520984", "app_secret": uuid.uuid4().hex,
                                           "oa_secret_key": uuid.uuid4().hex}) for d in destinations]
    # the day is played whatever the hour: the simulator's rules (ZNS refuses some sends at night) read a morning
    morning = datetime.now(VN_TZ).replace(hour=9, minute=0, second=0, microsecond=0)
    url = stage.serve(create_app(app_id=held[0]["app_id"], app_secret=held[0]["app_secret"],
                                 oa_secret_key=held[0]["oa_secret_key"], start_at=morning), PORT)
    for d in destinations:
        stage.point(d, "url", "MOTCUA_ZALO_ZNS_URL", url)
        stage.point(d, "oauth_url", "MOTCUA_ZALO_OAUTH_URL", url)
        stage.point(d, "quiet_hours", "MOTCUA_ZALO_QUIET_HOURS", "none", keep=True)
    return ZaloPlay(names, url)


class ZaloPlay(DemoPlay):
    def __init__(self, names: list[str], url: str) -> None:
        super().__init__(names)
        self.url = url
        self.figures: dict[str, int] = {}
        self.fallbacks: set[str] = set()

    def describe(self) -> str:
        return f"Zalo: {self.url}"

    def started(self, stage: Stage) -> list[str]:
        """The first token pair, as an operator sets it (`motcua-relay zalo set-token`); receipts come back."""
        ctx = stage.context
        pair = httpx.post(f"{self.url}/_admin/tokens", timeout=10).json()
        for name in self.names:
            set_token(TokenPairStore(ctx.redis, ctx.settings.redis_prefix), name, pair["access_token"],
                      pair["refresh_token"], float(pair["expires_in"]))
        httpx.post(f"{self.url}/_admin/webhook", json={"url": f"{stage.api}/v1/callbacks/zalo", "seen": True},
                   timeout=10).raise_for_status()
        return ["Zalo: a token pair set as an operator would; quiet hours off for the demo (production: "
                "21:00–07:00); phones ending in 000 have no Zalo and get an SMS"]

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        view = {"distinct": stats["sent"], "receipts": sum(stats["answers"].values()),
                "faults": {"error": stats["faults"]["error"], "reset": 0}}
        got, seen = receipts.counts(stage.context.engine)
        self.figures = {"received": got, "seen": seen}
        self.fallbacks = {f for name in self.names if (f := stage.context.options_of(ZaloOptions, name).fallback)}
        return Measure({name: view for name in self.names}, "zalo_receipts", self.figures)

    def verdict(self, summary: dict[str, Any]) -> tuple[str, bool]:
        delivered = sum(summary["destinations"].get(name, {}).get("delivered", 0) for name in self.names)
        by_sms = sum(summary["destinations"].get(name, {}).get("delivered", 0) for name in self.fallbacks)
        return (f"Zalo: {delivered} notifications delivered, {self.figures['received']} receipts 'received' and "
                f"{self.figures['seen']} 'seen' recorded from the signed webhook; {by_sms} sent by SMS instead "
                "(no Zalo account)", True)
