"""The postal benchmark: a district's day of postal dossiers, orders to the post and statuses back.

Every process real and separate: the postal simulator and the one-stop simulator (under uvicorn),
``motcua-relay api``, ``worker`` and ``beat`` (the sweeper and the tracking poller). Two phases, each
on a fresh ledger and a flushed Redis db:

  clean   ``--dossiers`` (default 300) dossiers that involve the post, sent signed to the intake in
          time order; 10 withdrawn right after asking for the post and 10 results fetched in person
          (their orders cancelled); statuses pushed to the callback, the poller as the fallback
  faults  the same day with 15 % of the post's calls answering 503 and 5 % applied then left hanging
          past the read timeout, 30 % of pushes lost and 20 % repeated, 15 % of deliveries failing once

The post moves an order a step every ``--step`` seconds (after ``--collect-after`` seconds for the
postman), so the day lasts about as long as its slowest order: the figures that matter are the
relay's own. Per phase: order deliveries per second (first intake request → last order at the post),
orders created exactly once, cancelled as asked, statuses recorded by the post and reported to the
one-stop software (once each, or kept as late), the status lag (the post's status time → delivered
to the one-stop software, p50/p99) and how the statuses came (push, poll), dead letters, the
worker's peak RSS.

Routing: ``bench/routing/postal.toml``. Run, from the repository root:
``.venv/bin/python -m bench.postal [--dossiers 300] [--json bench/results/postal.json]``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.stack import parse, phase_arguments, relay_stack, run_phases
from bench.support import new_secret, percentile, tree_hwm_mb
from sandbox.workload import PostalDay, postal_day, send_events_sync
from schemas.postal import ACCEPTED, CANCELLED, DELIVERED
from schemas.postal import FINAL_STATUSES as FINAL_STATUSES_AT_POST
from store.tables import FINAL_STATUSES, attempts, deliveries, events

KEY, SECRET, CUSTOMER = "bench-relay", "bench-consumer-secret", "HCC-BENCH"
FAULTS = {"error_rate": 0.15, "error_status": 503, "timeout_rate": 0.05, "hang_seconds": 3,
          "push_loss_rate": 0.3, "push_duplicate_rate": 0.2, "seed": 11}
FINAL_AT_POST = tuple(FINAL_STATUSES_AT_POST)
SIMULATORS = (
    "import os, uvicorn\n"
    "from sandbox.postal import create_app\n"
    "from sandbox.onestop import create_app as onestop\n"
    "e = os.environ\n"
    "if e['BENCH_WHICH'] == 'postal':\n"
    "    app = create_app(consumer_key=e['MOTCUA_POSTAL_CONSUMER_KEY'],"
    " consumer_secret=e['MOTCUA_POSTAL_CONSUMER_SECRET'],"
    " customer_codes=[e['MOTCUA_POSTAL_CUSTOMER_CODE']], step_seconds=float(e['BENCH_STEP']),"
    " collect_after_seconds=float(e['BENCH_COLLECT_AFTER']), fail_rate=float(e['BENCH_FAIL_RATE']), seed=21)\n"
    "else:\n"
    "    app = onestop({'onestop': e['MOTCUA_ONESTOP_WEBHOOK_SECRET']})\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(e['BENCH_PORT']), access_log=False, log_level='warning')\n"
)


def to_cancel(plan: PostalDay) -> set[str]:
    """The order numbers that must end cancelled: a withdrawn dossier's, and the deliveries fetched in person."""
    numbers = {f"{e['dossier_code']}-{'TN' if e['type'] == 'postal.pickup_requested' else 'KQ'}"
               for e in plan.events if e["type"] in ("postal.pickup_requested", "postal.delivery_requested")}
    return {f"{c}-KQ" for c in plan.in_person} | {n for n in numbers if n.rsplit("-", 1)[0] in plan.withdrawn}


def run_phase(name: str, day: list[dict[str, Any]], cancelled: set[str], args: argparse.Namespace,
              workdir: Path) -> dict[str, Any]:
    """One phase on fresh processes, ledger and Redis db; its figures."""
    callback_secret = new_secret()

    def addresses(urls: dict[str, str]) -> dict[str, str]:
        return {"MOTCUA_POSTAL_URL": urls["postal"],
                "MOTCUA_ONESTOP_WEBHOOK_URL": f"{urls['onestop']}/subscribers/onestop/events"}

    with relay_stack(name, workdir, database_url=args.database_url, redis_url=args.redis, redis_db=args.redis_db,
                     simulators=("postal", "onestop"), code=SIMULATORS, routing="postal",
                     routing_changes={"postal": {"timeouts": {"read": args.read_timeout}}}, addresses=addresses,
                     MOTCUA_POSTAL_CONSUMER_KEY=KEY, MOTCUA_POSTAL_CONSUMER_SECRET=SECRET,
                     MOTCUA_POSTAL_CALLBACK_SECRET=callback_secret, MOTCUA_POSTAL_POLL_INTERVAL_SECONDS=str(args.poll),
                     MOTCUA_WORKER_CONCURRENCY=str(args.concurrency), MOTCUA_POSTAL_CUSTOMER_CODE=CUSTOMER,
                     BENCH_STEP=str(args.step), BENCH_COLLECT_AFTER=str(args.collect_after),
                     BENCH_FAIL_RATE="0.15" if name == "faults" else "0") as stack:
        postal_url, onestop_url, api_url = stack.urls["postal"], stack.urls["onestop"], stack.urls["api"]
        faults = FAULTS if name == "faults" else {}
        if faults:
            httpx.post(f"{postal_url}/_admin/faults", json=faults, timeout=5).raise_for_status()
        httpx.post(f"{postal_url}/_admin/push", json={"url": f"{api_url}/v1/callbacks/postal",
                                                      "secret": callback_secret}, timeout=5).raise_for_status()
        engine = stack.engine
        started = time.monotonic()
        report = send_events_sync(f"{api_url}/v1/events", stack.intake_secret, day, batch_size=50, concurrency=2)
        if report.accepted != len(day):
            raise RuntimeError(f"the intake took {report.accepted} of {len(day)} events: {report.errors[:3]}")
        peak = 0.0
        while True:
            stack.check()
            peak = max(peak, tree_hwm_mb(stack.processes["worker"].pid))
            orders = httpx.get(f"{postal_url}/_admin/orders", timeout=30).json()
            recorded = sum(1 for o in orders for h in o["history"] if h["StatusCode"] != ACCEPTED)
            with engine.connect() as conn:
                stored = conn.execute(select(func.count()).where(events.c.type == "postal.status")).scalar_one()
                total, final = conn.execute(select(
                    func.count(), func.count().filter(deliveries.c.status.in_(FINAL_STATUSES)))).one()
            done = sum(1 for o in orders if o["StatusCode"] in FINAL_AT_POST)
            print(f"\r  {name}: {done} / {len(orders)} orders final at the post, {stored} / {recorded} statuses in "
                  f"the ledger, {final} / {total} deliveries final, {time.monotonic() - started:.0f} s",
                  end="", flush=True)
            if orders and done == len(orders) and stored >= recorded and final == total:
                break
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"{name}: not settled after {args.timeout} s")
            time.sleep(1.0)
        print()
        return _figures(name, engine, postal_url, onestop_url, cancelled, peak)


def _figures(name: str, engine: Any, postal_url: str, onestop_url: str, cancelled: set[str],
             peak_mb: float) -> dict[str, Any]:
    orders = httpx.get(f"{postal_url}/_admin/orders", timeout=30).json()
    post = httpx.get(f"{postal_url}/_admin/stats", timeout=10).json()
    received = httpx.get(f"{onestop_url}/_admin/received", params={"subscriber": "onestop", "full": True},
                         timeout=60).json()
    sent = [r["event"] for r in received if r["type"] == "postal.status"]
    d, e = deliveries.c, events.c
    with engine.connect() as conn:
        postal_rows = conn.execute(select(d.status, d.delivered_at, e.received_at, e.type)
                                   .join(events, e.id == d.event_pk).where(d.destination == "postal")).all()
        status_rows = conn.execute(select(d.status, d.delivered_at, e.occurred_at)
                                   .join(events, e.id == d.event_pk)
                                   .where(d.destination == "onestop", e.type == "postal.status")).all()
        stored = conn.execute(select(func.count()).where(e.type == "postal.status")).scalar_one()
        first = conn.execute(select(func.min(e.received_at)).where(e.origin == "onestop")).scalar_one()
        attempt_count = conn.execute(select(func.count()).select_from(attempts).join(deliveries)
                                     .where(d.destination == "postal")).scalar_one()
    requests = [r for r in postal_rows if r.type.startswith("postal.")]
    last_order = max(r.delivered_at for r in requests if r.delivered_at)
    seconds = (last_order - first).total_seconds()
    lag = [(r.delivered_at - r.occurred_at).total_seconds() for r in status_rows if r.delivered_at]
    keys = Counter((s["data"]["order_number"], s["data"]["status_code"], s["occurred_at"]) for s in sent)
    recorded = sum(1 for o in orders for h in o["history"] if h["StatusCode"] != ACCEPTED)
    delivered = {o["OrderNumber"] for o in orders if o["StatusCode"] == DELIVERED}
    reported = Counter(s["data"]["order_number"] for s in sent if s["data"]["status"] == "delivered")
    return {
        "phase": name, "orders": len(orders), "order_deliveries": len(requests),
        "seconds_orders": round(seconds, 1), "orders_per_s": round(len(requests) / seconds, 1) if seconds else None,
        "created_once": len(orders) - post["creates"]["second_orders"],
        "create_repeats": post["creates"]["duplicates"],
        "cancelled": sum(1 for o in orders if o["StatusCode"] == CANCELLED), "to_cancel": len(cancelled),
        "cancelled_as_asked": {o["OrderNumber"] for o in orders if o["StatusCode"] == CANCELLED} == cancelled,
        "delivered": len(delivered), "delivered_reported_once": sum(1 for n in delivered if reported[n] == 1),
        "statuses_recorded": recorded, "statuses_stored": stored, "statuses_sent": len(sent),
        "statuses_late": stored - len(status_rows), "statuses_sent_twice": sum(1 for n in keys.values() if n > 1),
        "status_lag_p50_s": round(percentile(lag, 50) or 0, 1), "status_lag_p99_s": round(percentile(lag, 99) or 0, 1),
        "pushes": post["pushes"], "tracking_calls": post["tracking_calls"], "faults": post["faults"],
        "dead": sum(1 for r in postal_rows if r.status == "dead") + sum(1 for r in status_rows if r.status == "dead"),
        "attempts_per_postal_delivery": round(attempt_count / len(postal_rows), 2),
        "worker_peak_rss_mb": round(peak_mb, 1),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="The post: a district's postal dossiers, orders out and statuses back (bench/postal.py)")
    table.add_column("figure")
    for r in results:
        table.add_column(r["phase"], justify="right")
    rows = [
        ("orders at the post", "orders"), ("orders created exactly once", "created_once"),
        ("creates repeated after a timeout (answered 'duplicate')", "create_repeats"),
        ("seconds (first event → last order at the post)", "seconds_orders"), ("order deliveries / s", "orders_per_s"),
        ("attempts / postal delivery", "attempts_per_postal_delivery"),
        ("statuses recorded by the post", "statuses_recorded"), ("statuses stored in the ledger", "statuses_stored"),
        ("statuses sent to the one-stop software", "statuses_sent"),
        ("statuses kept as late (a newer one was sent)", "statuses_late"),
        ("statuses sent twice", "statuses_sent_twice"),
        ("status lag p50 (s, post's time → one-stop)", "status_lag_p50_s"), ("status lag p99 (s)", "status_lag_p99_s"),
        ("tracking list reads", "tracking_calls"), ("dead letters", "dead"),
        ("worker peak RSS (MB)", "worker_peak_rss_mb"),
    ]
    for label, key in rows:
        table.add_row(label, *(str(r[key]) for r in results))
    table.add_row("orders cancelled / to cancel",
                  *(f"{r['cancelled']} / {r['to_cancel']}" + ("" if r["cancelled_as_asked"] else " (differ)")
                    for r in results))
    table.add_row("delivered orders reported once / delivered",
                  *(f"{r['delivered_reported_once']} / {r['delivered']}" for r in results))
    table.add_row("pushes sent / lost / repeated",
                  *(f"{r['pushes']['sent']} / {r['pushes']['lost']} / {r['pushes']['duplicated']}" for r in results))
    table.add_row("faults injected (503 / timeouts)",
                  *(f"{r['faults']['error']} / {r['faults']['timeout']}" for r in results))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dossiers", type=int, default=300, help="dossiers that involve the post")
    parser.add_argument("--concurrency", type=int, default=48, help="worker threads")
    parser.add_argument("--read-timeout", type=float, default=2.0, help="the post's read timeout (s)")
    parser.add_argument("--step", type=float, default=0.5, help="seconds between the post's lifecycle steps")
    parser.add_argument("--collect-after", type=float, default=30.0, help="seconds before the postman collects")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between tracking list reads (beat)")
    phase_arguments(parser, redis_db=8, phases="clean,faults", timeout=900)
    args = parse(parser, argv)
    plan = postal_day(args.dossiers, day=date(2026, 11, 20), seed=2026)
    day, cancelled = plan.events, to_cancel(plan)
    results = run_phases(args, "postal", lambda phase, workdir: run_phase(phase, day, cancelled, args, workdir))
    print_table(results)
    ok = all(r["dead"] == 0 and r["created_once"] == r["orders"] and r["cancelled_as_asked"]
             and r["delivered_reported_once"] == r["delivered"] and r["statuses_sent_twice"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
