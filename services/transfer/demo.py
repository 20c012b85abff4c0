"""The demo's inter-level transfers: the LGSP exchange simulator with every unit of the directory behind it.

The day asks other units to decide some dossiers (``transfer.requested``), on the paths that exist since 1 July
2025: the ward's desk sends land and construction dossiers to the department that decides them and a birth
registered outside the applicant's ward to that ward, the provincial centre's department of justice sends
naturalisations to the ministry; one hop each. The day's documents carry no address, so the demo serves
them (``sandbox.lgsp.document_app``) and gives each its URL and real SHA-256 before the day is played. The units
accept after a second and decide two seconds later; the relay's poll of the exchange runs every 3 s. The LGSP's
gateway stands in front of the exchange when the routing names a consumer key (the shipped one does).
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx

from config.units import load_directory
from services.base import DemoPlay, Measure, Stage
from services.transfer.deliver import TransferOptions

EXCHANGE_PORT = 8708


def configure(stage: Stage, names: list[str]) -> TransferPlay:
    from sandbox.lgsp import UnitConfig, document_app
    from sandbox.lgsp import create_app as exchange_app

    routing = stage.routing
    first = routing.destinations[names[0]]
    password = stage.secrets(first, TransferOptions, {"password": uuid.uuid4().hex})["password"]
    key = first.options.get("consumer_key")
    secret = None
    if key:
        secret = stage.secrets(first, TransferOptions, {"consumer_secret": uuid.uuid4().hex})["consumer_secret"]
    units_file = first.options.get("units_file")
    directory = load_directory(str(units_file) if units_file else None)
    units = {code: UnitConfig(name=unit.name, accept_seconds=1.0, process_seconds=2.0)
             for code, unit in directory.handling().items()}
    url = stage.serve(exchange_app(username=str(first.options.get("username")), password=password, units=units,
                                   consumer_key=str(key) if key else None, consumer_secret=secret),
                      EXCHANGE_PORT)
    for name in names:
        stage.point(routing.destinations[name], "url", "MOTCUA_TRANSFER_URL", url)
        if key:  # the key the simulator's gateway knows, whatever a variable says
            stage.point(routing.destinations[name], "consumer_key", "MOTCUA_TRANSFER_CONSUMER_KEY", str(key))
    return TransferPlay(names, url, stage.serve(document_app(), 0))


class TransferPlay(DemoPlay):
    def __init__(self, names: list[str], url: str, documents: str) -> None:
        super().__init__(names)
        self.url, self.documents = url, documents
        self.events: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}

    def describe(self) -> str:
        return f"LGSP exchange: {self.url}"

    def shape(self, stage: Stage, events: list[dict[str, Any]]) -> list[str]:
        """Give the transfers' documents their URLs and checksums."""
        from sandbox.lgsp import document_sha256

        self.events = events
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
        return [f"transfers: {transfers} dossiers to the province's departments and other wards, {documents} "
                f"documents, {size / 1e6:.1f} MB streamed from the one-stop software to the exchange"]

    def settled(self, stage: Stage) -> bool:
        """Every transfer of the day has its last word at the one-stop software (refused, or the result home)."""
        wanted = {e["dossier_code"] for e in self.events if e["type"] == "transfer.requested"}
        return not wanted or wanted <= self._ended(stage)

    @staticmethod
    def _received(stage: Stage) -> list[dict[str, Any]]:
        rows = httpx.get(f"{stage.onestop}/_admin/received", params={"subscriber": "onestop", "full": True},
                         timeout=30)
        return [r["event"] for r in rows.json() if r["type"].startswith("transfer.")]

    def _ended(self, stage: Stage) -> set[str]:
        return {e["dossier_code"] for e in self._received(stage) if e["type"] == "transfer.refused"
                or (e["type"] == "transfer.result" and not e["data"].get("return_to"))}

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        wanted = {e["dossier_code"] for e in self.events if e["type"] == "transfer.requested"}
        got = self._received(stage)
        home = Counter(e["dossier_code"] for e in got
                       if e["type"] == "transfer.result" and not e["data"].get("return_to"))
        refused = {e["dossier_code"] for e in got if e["type"] == "transfer.refused"}
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        self.figures = {"transfers": len(wanted), "results_home_once": sum(1 for d in wanted if home[d] == 1),
                        "refused": len(refused & wanted), "results_twice": sum(1 for d in wanted if home[d] > 1),
                        "hops": sum(stats["transfers"].values()),
                        "documents": stats["counters"].get("documents_stored", 0),
                        "megabytes": round(stats["counters"].get("document_bytes", 0) / 1e6, 1),
                        "tokens": stats["counters"].get("tokens_issued", 0)}
        # a day without transfers has no row for the exchange
        views = {name: self._provider_stats() for name in self.names} if wanted else {}
        return Measure(views, "transfers", self.figures)

    def _provider_stats(self) -> dict[str, Any]:
        """The exchange's view in the demo summary's shape: each hop sent and each result returned is an effect."""
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        counters = stats["counters"]
        returned = sum(1 for t in httpx.get(f"{self.url}/_admin/transfers", timeout=10).json()
                       if t["status"] == "RESULT" and t["toUnit"] != t["finalUnit"])
        return {"distinct": sum(stats["transfers"].values()) + returned,
                "receipts": sum(counters.get(op, 0) for op in ("SendDossier", "GetTransfer", "ReturnResult")),
                "faults": {"error": counters.get("fault_error", 0), "reset": 0}}

    def verdict(self, summary: dict[str, Any]) -> tuple[str, bool]:
        f = self.figures
        good = f["results_home_once"] + f["refused"] == f["transfers"] and not f["results_twice"]
        return (("[green]" if good else "[red]") + f"transfers: {f['results_home_once']} / {f['transfers']} results "
                f"back at the origin once, {f['refused']} refused; {f['hops']} hops through the LGSP exchange, "
                f"{f['documents']} documents ({f['megabytes']} MB) streamed with their checksums, "
                f"{f['tokens']} token{'' if f['tokens'] == 1 else 's'} from its gateway[/]", good)
