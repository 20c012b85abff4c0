"""The demo's inter-level transfers: the LGSP exchange simulator with every unit of the directory behind it.

The desk's day asks the province's departments to decide some dossiers (``transfer.requested``): the district
→ the provincial centre → the department, two hops each. The day's documents carry no address, so the demo
serves them (``sandbox.lgsp.document_app``) and gives each its URL and real SHA-256 before the day is played.
The units accept after a second and decide two seconds later; the relay's poll of the exchange runs every 3 s.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

EXCHANGE_PORT = 8708


@dataclass
class TransferPlay:
    names: list[str]
    url: str
    documents: str

    @classmethod
    def configure(cls, routing: Any, serve: Callable[[Any, int], str]) -> TransferPlay | None:
        from config.units import load_directory
        from sandbox.lgsp import UnitConfig, document_app
        from sandbox.lgsp import create_app as exchange_app

        env = os.environ
        dests = [(name, d) for name, d in routing.destinations.items() if d.kind == "transfer"]
        if not dests:
            return None
        first = dests[0][1]
        password = env.setdefault(first.options.get("password_env", "MOTCUA_TRANSFER_PASSWORD"), uuid.uuid4().hex)
        units_file = first.option("units_file")
        directory = load_directory(str(units_file) if units_file else None)
        units = {code: UnitConfig(name=unit.name, accept_seconds=1.0, process_seconds=2.0)
                 for code, unit in directory.units.items()}
        url = serve(exchange_app(username=str(first.option("username")), password=password, units=units),
                    EXCHANGE_PORT)
        for _, dest in dests:
            env[dest.options.get("url_env", "MOTCUA_TRANSFER_URL")] = url
        return cls([name for name, _ in dests], url, serve(document_app(), 0))

    def describe(self) -> str:
        return f"LGSP exchange: {self.url}"

    def prepare(self, events: list[dict[str, Any]]) -> str:
        """Give the transfers' documents their URLs and checksums; one line to print."""
        from sandbox.lgsp import document_sha256

        documents = size = 0
        for event in events:
            if event["type"] != "transfer.requested":
                continue
            for document in event["data"].get("documents") or []:
                document["url"] = f"{self.documents}/files/{quote(document['name'], safe='')}?size={document['size']}"
                document["sha256"] = document_sha256(document["name"], document["size"])
                documents += 1
                size += document["size"]
        transfers = sum(1 for e in events if e["type"] == "transfer.requested")
        return (f"transfers: {transfers} dossiers to the province's departments (two hops each), {documents} "
                f"documents, {size / 1e6:.1f} MB streamed from the one-stop software to the exchange")

    def settled(self, sandbox: str, events: list[dict[str, Any]]) -> bool:
        """Every transfer of the day has its last word at the one-stop software (refused, or the result home)."""
        wanted = {e["dossier_code"] for e in events if e["type"] == "transfer.requested"}
        return not wanted or wanted <= self._ended(sandbox)

    @staticmethod
    def _received(sandbox: str) -> list[dict[str, Any]]:
        rows = httpx.get(f"{sandbox}/_admin/received", params={"subscriber": "onestop", "full": True}, timeout=30)
        return [r["event"] for r in rows.json() if r["type"].startswith("transfer.")]

    def _ended(self, sandbox: str) -> set[str]:
        return {e["dossier_code"] for e in self._received(sandbox) if e["type"] == "transfer.refused"
                or (e["type"] == "transfer.result" and not e["data"].get("return_to"))}

    def report(self, sandbox: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        wanted = {e["dossier_code"] for e in events if e["type"] == "transfer.requested"}
        got = self._received(sandbox)
        home = Counter(e["dossier_code"] for e in got
                       if e["type"] == "transfer.result" and not e["data"].get("return_to"))
        refused = {e["dossier_code"] for e in got if e["type"] == "transfer.refused"}
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        return {"transfers": len(wanted), "results_home_once": sum(1 for d in wanted if home[d] == 1),
                "refused": len(refused & wanted), "results_twice": sum(1 for d in wanted if home[d] > 1),
                "hops": sum(stats["transfers"].values()),
                "documents": stats["counters"].get("documents_stored", 0),
                "megabytes": round(stats["counters"].get("document_bytes", 0) / 1e6, 1)}

    def provider_stats(self) -> dict[str, Any]:
        """The exchange's view in the demo summary's shape: each hop sent and each result returned is an effect."""
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        counters = stats["counters"]
        returned = sum(1 for t in httpx.get(f"{self.url}/_admin/transfers", timeout=10).json()
                       if t["status"] == "RESULT" and t["toUnit"] != t["finalUnit"])
        return {"distinct": sum(stats["transfers"].values()) + returned,
                "receipts": sum(counters.get(op, 0) for op in ("SendDossier", "GetTransfer", "ReturnResult")),
                "faults": {"error": counters.get("fault_error", 0), "reset": 0}}
