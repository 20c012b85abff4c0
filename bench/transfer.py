"""The transfer benchmark: a day of inter-level transfers through the LGSP exchange, and one 200 MB scan.

Every process real and separate: the exchange simulator (two wards, two departments, an office under one of
them and a ministry behind it, the LGSP's gateway in front: every call carries its OAuth2 token), the origin's
document server and the one-stop simulator (under uvicorn), ``motcua-relay api``, ``worker`` and ``beat`` (the
sweeper and the exchange's poll, every second). Two phases, each on a fresh ledger and a flushed Redis db:

  day     ``--transfers`` (default 100) sent signed to the intake on the two-level tree, 20 % ward → the land
          registration office (two hops through its department), the rest in turn ward → department,
          department → ministry and ward → ward; one to three scans each (50 KB to 4 MB); the units accept
          after 0.5 s and decide 1 s later, refusing 5 %; the department's system goes down for ``--outage``
          seconds (default 10) two seconds in; with ``--token-expire-rate`` the gateway
          drops that share of the calls' tokens (each then renewed and the call repeated)
  big     one dossier with a ``--big-mb`` (default 200) MB scan, ward → department: the worker's memory is
          read before (at rest, after a small transfer) and at its peak

Per phase: transfers, hops at the exchange, documents and MB streamed (and MB/s while streaming), seconds
from the first intake request to every transfer's last word at the origin, the round trip per transfer
(request → result or refusal back at the one-stop software, p50/p99), results home exactly once,
refusals, hops that met the outage (``UNIT_UNAVAILABLE``), tokens issued and calls the gateway refused, dead
letters, the worker's peak RSS and, for ``big``, its growth over its resting size.

Routing: ``bench/routing/transfer.toml``. Run, from the repository root:
``.venv/bin/python -m bench.transfer [--transfers 100] [--json bench/results/transfer.json]``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.stack import Stack, parse, phase_arguments, relay_stack, run_phases
from bench.support import percentile, tree_hwm_mb, tree_rss_mb
from sandbox.lgsp import DEPARTMENT, OFFICE, document_sha256, transfer_day
from sandbox.workload import send_events_sync
from store.tables import deliveries, events

USER, PASSWORD = "bench-lienthong", "bench-exchange-password"
CONSUMER_KEY, CONSUMER_SECRET = "bench-relay", "bench-consumer-secret"
SIMULATORS = (
    "import os, uvicorn\n"
    "from sandbox.lgsp import create_app, document_app, UnitConfig, DEFAULT_UNITS\n"
    "from sandbox.onestop import create_app as onestop\n"
    "e = os.environ\n"
    "if e['BENCH_WHICH'] == 'exchange':\n"
    "    units = {c: UnitConfig(name=u.name, accept_seconds=0.5, process_seconds=1.0, refuse_rate=0.05)"
    " for c, u in DEFAULT_UNITS.items()}\n"
    "    app = create_app(username=e['MOTCUA_TRANSFER_USERNAME'], password=e['MOTCUA_TRANSFER_PASSWORD'],"
    " units=units, seed=7, consumer_key=e['MOTCUA_TRANSFER_CONSUMER_KEY'],"
    " consumer_secret=e['MOTCUA_TRANSFER_CONSUMER_SECRET'])\n"
    "elif e['BENCH_WHICH'] == 'documents':\n"
    "    app = document_app()\n"
    "else:\n"
    "    app = onestop({'onestop': e['MOTCUA_ONESTOP_WEBHOOK_SECRET']})\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(e['BENCH_PORT']), access_log=False, log_level='warning')\n"
)


def last_words(onestop_url: str) -> dict[str, list[dict[str, Any]]]:
    """Each dossier's final answers at the one-stop software: its result home, or a refusal."""
    rows = httpx.get(f"{onestop_url}/_admin/received", params={"subscriber": "onestop", "full": True},
                     timeout=60).json()
    words: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        event = row["event"]
        if event["type"] == "transfer.refused" or (event["type"] == "transfer.result"
                                                   and not event["data"].get("return_to")):
            words.setdefault(event["dossier_code"], []).append(row)
    return words


def run_phase(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One phase on fresh processes, ledger and Redis db; its figures."""
    def addresses(urls: dict[str, str]) -> dict[str, str]:
        return {"MOTCUA_TRANSFER_URL": urls["exchange"],
                "MOTCUA_ONESTOP_WEBHOOK_URL": f"{urls['onestop']}/subscribers/onestop/events"}

    with relay_stack(name, workdir, database_url=args.database_url, redis_url=args.redis, redis_db=args.redis_db,
                     simulators=("exchange", "documents", "onestop"), code=SIMULATORS, routing="transfer",
                     addresses=addresses, MOTCUA_TRANSFER_USERNAME=USER, MOTCUA_TRANSFER_PASSWORD=PASSWORD,
                     MOTCUA_TRANSFER_CONSUMER_KEY=CONSUMER_KEY, MOTCUA_TRANSFER_CONSUMER_SECRET=CONSUMER_SECRET,
                     MOTCUA_TRANSFER_POLL_INTERVAL_SECONDS="1", MOTCUA_POSTAL_POLL_INTERVAL_SECONDS="3600",
                     MOTCUA_PAYMENT_QUERY_INTERVAL_SECONDS="3600",
                     MOTCUA_WORKER_CONCURRENCY=str(args.concurrency)) as stack:
        urls, engine, intake_secret = stack.urls, stack.engine, stack.intake_secret
        if name == "big":
            return _big(args, stack)
        day = transfer_day(args.transfers, urls["documents"], seed=2026)
        if args.token_expire_rate:
            httpx.post(f"{urls['exchange']}/_admin/faults", json={"expire_rate": args.token_expire_rate, "seed": 3},
                       timeout=5).raise_for_status()
        started = time.monotonic()
        half = len(day) // 2
        report = send_events_sync(f"{urls['api']}/v1/events", intake_secret, day[:half], batch_size=25)
        time.sleep(2)
        httpx.post(f"{urls['exchange']}/_admin/units/{DEPARTMENT}/down", json={"seconds": args.outage}, timeout=5)
        report2 = send_events_sync(f"{urls['api']}/v1/events", intake_secret, day[half:], batch_size=25)
        if report.accepted + report2.accepted != len(day):
            raise RuntimeError(f"the intake took {report.accepted + report2.accepted} of {len(day)} events")
        peak = 0.0
        wanted = {e["dossier_code"] for e in day}
        while True:
            stack.check()
            peak = max(peak, tree_hwm_mb(stack.processes["worker"].pid))
            words = last_words(urls["onestop"])
            done = len(wanted & set(words))
            print(f"\r  {name}: {done} / {len(wanted)} transfers ended at the origin, "
                  f"{time.monotonic() - started:.0f} s", end="", flush=True)
            if done == len(wanted):
                break
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"{name}: not settled after {args.timeout} s")
            time.sleep(1.0)
        print()
        seconds = time.monotonic() - started
        return _figures(name, day, urls, engine, seconds, peak)


def _figures(name: str, day: list[dict[str, Any]], urls: dict[str, str], engine: Any, seconds: float,
             peak: float) -> dict[str, Any]:
    words = last_words(urls["onestop"])
    stats = httpx.get(f"{urls['exchange']}/_admin/stats", timeout=10).json()
    counters = stats["counters"]
    requested = {e["dossier_code"]: datetime.fromisoformat(e["occurred_at"]) for e in day}
    with engine.connect() as conn:
        received = dict(conn.execute(select(events.c.dossier_code, func.min(events.c.received_at))
                                     .where(events.c.origin == "onestop").group_by(events.c.dossier_code)).all())
        dead = conn.execute(select(func.count()).where(deliveries.c.status == "dead")).scalar_one()
    round_trip = [(datetime.fromisoformat(rows[0]["received_at"]) - received[code]).total_seconds()
                  for code, rows in words.items() if code in received]
    homes = Counter(code for code, rows in words.items() for r in rows if r["type"] == "transfer.result")
    refused = {code for code, rows in words.items() if any(r["type"] == "transfer.refused" for r in rows)}
    megabytes = counters.get("document_bytes", 0) / 1e6
    return {
        "phase": name, "transfers": len(requested), "two_hop": sum(1 for e in day
                                                                   if e["data"]["target_unit"] == OFFICE),
        "hops": sum(stats["transfers"].values()), "documents": counters.get("documents_stored", 0),
        "megabytes": round(megabytes, 1), "seconds": round(seconds, 1),
        "round_trip_p50_s": round(percentile(round_trip, 50) or 0, 1),
        "round_trip_p99_s": round(percentile(round_trip, 99) or 0, 1),
        "results_home_once": sum(1 for code in requested if homes[code] == 1 and code not in refused),
        "refused": len(refused), "ended_twice": sum(1 for rows in words.values() if len(rows) > 1),
        "outage_refusals": counters.get("unit_unavailable", 0), "tokens_issued": counters.get("tokens_issued", 0),
        "gateway_refused": counters.get("gateway_refused", 0), "dead": dead, "worker_peak_rss_mb": round(peak, 1),
    }


def _big(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    from sandbox.lgsp import COMMUNE

    urls, engine = stack.urls, stack.engine
    small, big = (transfer_day(1, urls["documents"], two_hop_share=0, seed=s, max_document=60_000)[0] for s in (1, 2))
    size = args.big_mb * 1_000_000
    name = f"ban-quet-{size}.pdf"
    print(f"  big: hashing the {args.big_mb} MB scan for its event…", flush=True)
    big["data"]["documents"] = [{"name": name, "url": f"{urls['documents']}/files/{name}?size={size}",
                                 "sha256": document_sha256(name, size), "size": size}]
    big["unit_code"], big["data"]["target_unit"] = COMMUNE, DEPARTMENT
    big["dossier_code"] = f"{COMMUNE}-261121-0001"  # not the small one's: another hop

    def hop_delivered(count: int) -> bool:
        query = select(func.count()).where(deliveries.c.destination == "lgsp", deliveries.c.status == "delivered")
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) >= count

    send_events_sync(f"{urls['api']}/v1/events", stack.intake_secret, [small])
    _wait(lambda: hop_delivered(1), args.timeout, stack)
    time.sleep(1)
    worker = stack.processes["worker"]
    before = tree_rss_mb(worker.pid)
    counted = httpx.get(f"{urls['exchange']}/_admin/stats", timeout=10).json()["counters"].get("document_bytes", 0)
    started = time.monotonic()
    send_events_sync(f"{urls['api']}/v1/events", stack.intake_secret, [big])
    _wait(lambda: hop_delivered(2), args.timeout, stack)
    seconds = time.monotonic() - started
    peak = tree_hwm_mb(worker.pid)
    stats = httpx.get(f"{urls['exchange']}/_admin/stats", timeout=10).json()["counters"]
    return {"phase": "big", "document_mb": args.big_mb,
            "stored_mb": round((stats.get("document_bytes", 0) - counted) / 1e6, 1),
            "seconds": round(seconds, 1), "mb_per_s": round(args.big_mb / seconds, 1),
            "worker_rest_rss_mb": round(before, 1), "worker_peak_rss_mb": round(peak, 1),
            "worker_growth_mb": round(peak - before, 1)}


def _wait(done: Any, timeout: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        stack.check()
        if time.monotonic() > deadline:
            raise RuntimeError("not done in time")
        time.sleep(0.3)


def print_tables(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    for r in results:
        table = Table(title=f"Inter-level transfer, phase {r['phase']} (bench/transfer.py)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in r.items():
            if key != "phase":
                table.add_row(key.replace("_", " "), str(value))
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=100, help="transfers in the day")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the district's system is down")
    parser.add_argument("--big-mb", type=int, default=200, help="the big scan's size in MB")
    parser.add_argument("--concurrency", type=int, default=16, help="worker threads")
    parser.add_argument("--token-expire-rate", type=float, default=0.0,
                        help="day: the share of calls whose token the gateway drops (renewed, the call repeated)")
    phase_arguments(parser, redis_db=4, phases="day,big", timeout=600)
    args = parse(parser, argv)
    results = run_phases(args, "transfer", lambda phase, workdir: run_phase(phase, args, workdir))
    print_tables(results)
    ok = all((r["phase"] == "big" and r["worker_growth_mb"] < 50 and r["stored_mb"] == r["document_mb"])
             or (r["phase"] == "day" and r["dead"] == 0 and r["ended_twice"] == 0
                 and r["results_home_once"] + r["refused"] == r["transfers"]) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
