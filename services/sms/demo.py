"""The SMS gateway's part of the demo: the Zalo fallback's gateway, in the summary only when it was used."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from services.base import DemoPlay, Measure, Stage
from services.sms.deliver import SmsOptions

PORT = 8704


def configure(stage: Stage, names: list[str]) -> SmsPlay:
    from sandbox.sms import SEND_PATH, create_app

    first = stage.routing.destinations[names[0]]
    key = stage.secrets(first, SmsOptions, {"api_key": uuid.uuid4().hex})["api_key"]
    url = stage.serve(create_app(api_key=key, brandname=str(first.options.get("brandname", "UBND-HALONG"))), PORT)
    for name in names:
        stage.point(stage.routing.destinations[name], "url", "MOTCUA_SMS_URL", f"{url}{SEND_PATH}")
    return SmsPlay(names, url)


class SmsPlay(DemoPlay):
    """The gateway of the Zalo fallback; in the summary only when a phone without Zalo turned up."""

    def __init__(self, names: list[str], url: str) -> None:
        super().__init__(names)
        self.url = url

    def describe(self) -> str:
        return f"SMS: {self.url}"

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        used = {r["destination"] for r in rows} & set(self.names)
        if not used:  # a table row of zeros says nothing
            return Measure()
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        view = {"distinct": stats["sent"], "receipts": stats["sent"] + stats["duplicates"],
                "faults": {"error": stats["faults"]["error"], "reset": 0}}
        return Measure({name: view for name in used})
