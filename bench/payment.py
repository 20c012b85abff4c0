"""The payment benchmark: a day of fees billed, paid, called back (or not) and reconciled.

Every process real and separate: the payment platform simulator and the one-stop simulator (under
uvicorn), ``motcua-relay api``, ``worker`` and ``beat``. Two phases, each on a fresh ledger and a flushed
Redis db:

  clean   ``--bills`` (default 2000) fees assessed, sent signed to the intake; once billed, the citizens
          pay every one of them (``sandbox.payment.citizens_pay``): 10 % of callbacks lost, 5 % repeated,
          3 paid 1,000 đ short, 2 payments nobody billed; callbacks held back up to 1 s
  faults  the same day with 15 % of the platform's calls answering 503, 5 % "busy" (96) and 5 % of the
          registrations applied, then left hanging past the read timeout

The query of unanswered bills is set to wait an hour, so the reconciliation (``motcua-relay reconcile``,
run as the operator would) is what recovers the lost callbacks. Per phase: bill deliveries per second
(first intake request → last bill at the platform), transactions registered once, callbacks per second
taken by the API, the payment lag (citizen pays → ``fee.paid`` delivered to the one-stop software, p50/p99,
for the payments that called back), the reconciliation's wall time, whether its report holds exactly the
injected anomalies, ``fee.paid`` sent once per bill paid its amount (and never for a short one), dead
letters, the worker's and the API's peak RSS.

Routing: ``bench/routing/payment.toml``. Run, from the repository root:
``.venv/bin/python -m bench.payment [--bills 2000] [--json bench/results/payment.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from adapters.payment import transaction_id
from bench.stack import parse, phase_arguments, relay_stack, run_phases
from bench.support import percentile, relay_cmd, tree_hwm_mb
from sandbox.payment import PayingDay, citizens_pay
from sandbox.workload import fee_day, send_events_sync
from schemas.payment import AMOUNT_CONFLICT
from schemas.vietnam import VN_TZ
from store.tables import FINAL_STATUSES, attempts, bills, deliveries, events, payment_callbacks

CLIENT, REQUEST_KEY, CALLBACK_KEY = "UBND-BENCH", "bench-request-key", "bench-callback-key"
FAULTS = {"error_rate": 0.15, "error_status": 503, "busy_rate": 0.05, "timeout_rate": 0.05, "hang_seconds": 3,
          "seed": 13}
SIMULATORS = (
    "import os, uvicorn\n"
    "from sandbox.payment import create_app\n"
    "from sandbox.onestop import create_app as onestop\n"
    "e = os.environ\n"
    "if e['BENCH_WHICH'] == 'platform':\n"
    "    app = create_app(client_id=e['MOTCUA_PAYMENT_CLIENT_ID'], request_key=e['MOTCUA_PAYMENT_REQUEST_KEY'],"
    " callback_key=e['MOTCUA_PAYMENT_CALLBACK_KEY'])\n"
    "else:\n"
    "    app = onestop({'onestop': e['MOTCUA_ONESTOP_WEBHOOK_SECRET']})\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(e['BENCH_PORT']), access_log=False, log_level='warning')\n"
)


def run_phase(name: str, fees: list[dict[str, Any]], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One phase on fresh processes, ledger and Redis db; its figures."""
    def addresses(urls: dict[str, str]) -> dict[str, str]:
        return {"MOTCUA_PAYMENT_URL": urls["platform"],
                "MOTCUA_ONESTOP_WEBHOOK_URL": f"{urls['onestop']}/subscribers/onestop/events"}

    with relay_stack(name, workdir, database_url=args.database_url, redis_url=args.redis, redis_db=args.redis_db,
                     simulators=("platform", "onestop"), code=SIMULATORS, routing="payment",
                     routing_changes={"payment": {"timeouts": {"read": args.read_timeout}}}, addresses=addresses,
                     MOTCUA_PAYMENT_REQUEST_KEY=REQUEST_KEY, MOTCUA_PAYMENT_CALLBACK_KEY=CALLBACK_KEY,
                     MOTCUA_POSTAL_POLL_INTERVAL_SECONDS="3600", MOTCUA_WORKER_CONCURRENCY=str(args.concurrency),
                     MOTCUA_REPORTS_DIR=str(workdir / "reports"), MOTCUA_PAYMENT_CLIENT_ID=CLIENT) as stack:
        platform_url, onestop_url, api_url = stack.urls["platform"], stack.urls["onestop"], stack.urls["api"]
        if name == "faults":
            httpx.post(f"{platform_url}/_admin/faults", json=FAULTS, timeout=5).raise_for_status()
        httpx.post(f"{platform_url}/_admin/callback", json={"url": f"{api_url}/v1/callbacks/payment/platform"},
                   timeout=5).raise_for_status()
        engine = stack.engine
        peaks = {"worker": 0.0, "api": 0.0}

        def watch(what: str, done: Any, started: float) -> None:
            while True:
                stack.check()
                peaks["worker"] = max(peaks["worker"], tree_hwm_mb(stack.processes["worker"].pid))
                peaks["api"] = max(peaks["api"], tree_hwm_mb(stack.processes["api"].pid))
                finished, text = done()
                print(f"\r  {name}: {text}, {time.monotonic() - started:.0f} s", end="", flush=True)
                if finished:
                    print()
                    return
                if time.monotonic() - started > args.timeout:
                    raise RuntimeError(f"{name}: {what} not done after {args.timeout} s")
                time.sleep(0.5)

        def count(query: Any) -> int:
            with engine.connect() as conn:
                return int(conn.execute(query).scalar_one())

        started = time.monotonic()
        report = send_events_sync(f"{api_url}/v1/events", stack.intake_secret, fees, batch_size=100, concurrency=2)
        if report.accepted != len(fees):
            raise RuntimeError(f"the intake took {report.accepted} of {len(fees)} events: {report.errors[:3]}")
        watch("billing", lambda: ((n := count(select(func.count()).select_from(bills))) == len(fees),
                                  f"{n} / {len(fees)} bills issued"), started)
        # the citizens pay, once every bill exists
        httpx.delete(f"{platform_url}/_admin/faults", timeout=5)  # the citizens' side is not under test
        paid_on = datetime.now(VN_TZ).date()  # (a run across midnight in Vietnam splits the day: not handled)
        amounts = [(transaction_id(f["dossier_code"], f["data"]["fee_id"]), int(f["data"]["amount"])) for f in fees]
        paying = time.monotonic()
        day = citizens_pay(platform_url, amounts, lost_rate=0.10, duplicate_rate=0.05, mismatches=3, unknown=2,
                           delay_ms=1000, seed=31)
        if name == "faults":
            httpx.post(f"{platform_url}/_admin/faults", json=FAULTS, timeout=5).raise_for_status()
        heard = len(day.paid) - len(day.lost) + len(day.repeated) + len(day.unknown)
        watch("callbacks", lambda: ((n := count(select(func.count()).select_from(payment_callbacks))) >= heard,
                                    f"{n} / {heard} callbacks recorded"), paying)
        callbacks_seconds = time.monotonic() - paying
        # the operator reconciles the day; the settled list is read under the phase's faults
        reconciling = time.monotonic()
        reconciled = subprocess.run(relay_cmd("reconcile", "--date", paid_on.isoformat()), env={
            **stack.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=args.timeout)
        reconcile_seconds = time.monotonic() - reconciling
        if reconciled.returncode not in (0, 3):
            raise RuntimeError(f"reconcile exited {reconciled.returncode}: {reconciled.stdout[-2000:]}"
                               f"{reconciled.stderr[-2000:]}")
        open_query = select(func.count()).where(deliveries.c.status.notin_(FINAL_STATUSES))
        watch("deliveries", lambda: ((n := count(open_query)) == 0, f"{n} deliveries open"), reconciling)
        return _figures(name, engine, platform_url, onestop_url, day, peaks, callbacks_seconds, reconcile_seconds,
                        paid_on, reconciled.stdout)


def _figures(name: str, engine: Any, platform_url: str, onestop_url: str, day: PayingDay, peaks: dict[str, float],
             callbacks_seconds: float, reconcile_seconds: float, when: date, reconcile_out: str) -> dict[str, Any]:
    from store.payments import stored_lines

    platform = httpx.get(f"{platform_url}/_admin/transactions", timeout=60).json()
    paid_at = {t["transaction_id"]: datetime.fromisoformat(t["paid_at"]) for t in platform if t["paid_at"]}
    stats = httpx.get(f"{platform_url}/_admin/stats", timeout=10).json()
    received = httpx.get(f"{onestop_url}/_admin/received", params={"subscriber": "onestop", "full": True},
                         timeout=60).json()
    paid = Counter(_code(r["event"]) for r in received if r["type"] == "fee.paid")
    d, e = deliveries.c, events.c
    with engine.connect() as conn:
        bill_rows = conn.execute(select(d.status, d.delivered_at).where(d.destination == "payment")).all()
        first = conn.execute(select(func.min(e.received_at)).where(e.origin == "onestop")).scalar_one()
        paid_rows = conn.execute(select(d.status, d.delivered_at, e.payload).join(events, e.id == d.event_pk)
                                 .where(d.destination == "onestop", e.type == "fee.paid")).all()
        attempt_count = conn.execute(select(func.count()).select_from(attempts).join(deliveries)
                                     .where(d.destination == "payment")).scalar_one()
        dead = conn.execute(select(func.count()).where(d.status == "dead")).scalar_one()
        recorded = conn.execute(select(func.count()).select_from(payment_callbacks)).scalar_one()
    lines = stored_lines(engine, "payment", when.isoformat())
    found: dict[str, set[str]] = {}
    for line in lines:
        found.setdefault(line.outcome, set()).add(line.bill_code)
    seconds = (max(r.delivered_at for r in bill_rows if r.delivered_at) - first).total_seconds()
    called_back = set(day.paid) - day.lost - day.mismatched
    lag = []
    for row in paid_rows:
        event = json.loads(row.payload)
        if row.delivered_at and _code(event) in called_back:
            # from when the citizen paid at the platform: the fee.paid's paid_at is when the callback came (M12)
            lag.append((row.delivered_at - paid_at[_code(event)]).total_seconds())
    right = set(day.paid) - day.mismatched
    return {
        "phase": name, "bills": len(bill_rows), "seconds_bills": round(seconds, 1),
        "bills_per_s": round(len(bill_rows) / seconds, 1) if seconds else None,
        "transactions": len(platform), "conflicts": stats["counters"].get(f"answer_{AMOUNT_CONFLICT}", 0),
        "register_calls": sum(t["pay_calls"] for t in platform),
        "attempts_per_bill": round(attempt_count / len(bill_rows), 2),
        "callbacks_sent": stats["counters"].get("callbacks_sent", 0), "callbacks_recorded": recorded,
        "callbacks_per_s": round(stats["counters"].get("callbacks_sent", 0) / callbacks_seconds, 1),
        "lost": len(day.lost), "repeated": len(day.repeated), "mismatched": len(day.mismatched),
        "unknown": len(day.unknown),
        "payment_lag_p50_s": round(percentile(lag, 50) or 0, 1),
        "payment_lag_p99_s": round(percentile(lag, 99) or 0, 1),
        "reconcile_seconds": round(reconcile_seconds, 1), "report_lines": len(lines),
        "report_exact": {k: v for k, v in found.items() if k != "matched"} == day.anomalies
        and found.get("matched", set()) == set(day.paid) - day.lost - day.mismatched,
        "report_outcomes": {k: len(v) for k, v in sorted(found.items())},
        "paid_once": sum(1 for code in right if paid[code] == 1), "paid_expected": len(right),
        "short_paid": sum(paid[code] for code in day.mismatched),
        "faults": {k: v for k, v in stats["counters"].items() if k.startswith("fault_")},
        "dead": dead, "worker_peak_rss_mb": round(peaks["worker"], 1), "api_peak_rss_mb": round(peaks["api"], 1),
        "reconcile_exit": "anomalies" if "Anomalies" in reconcile_out else "clean",
    }


def _code(event: dict[str, Any]) -> str:
    """The bill's code at the platform (its transaction id) of a fee event."""
    return transaction_id(event["dossier_code"], event["data"]["fee_id"])


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Fee collection: bills, payments, callbacks lost and repeated, the reconciliation "
                        "(bench/payment.py)")
    table.add_column("figure")
    for r in results:
        table.add_column(r["phase"], justify="right")
    rows = [
        ("bills issued", "bills"), ("transactions at the platform", "transactions"),
        (f"amount conflicts ({AMOUNT_CONFLICT})", "conflicts"),
        ("register calls (a retry after a timeout registers again)", "register_calls"),
        ("seconds (first event → last bill)", "seconds_bills"), ("bill deliveries / s", "bills_per_s"),
        ("attempts / bill", "attempts_per_bill"), ("callbacks sent by the platform", "callbacks_sent"),
        ("callbacks recorded by the relay", "callbacks_recorded"),
        ("callbacks / s taken by the API", "callbacks_per_s"),
        ("payment lag p50 (s, paid → fee.paid at one-stop)", "payment_lag_p50_s"),
        ("payment lag p99 (s)", "payment_lag_p99_s"), ("reconcile wall time (s)", "reconcile_seconds"),
        ("report lines", "report_lines"), ("report = injected anomalies", "report_exact"),
        ("short payments sent as fee.paid", "short_paid"), ("dead letters", "dead"),
        ("worker peak RSS (MB)", "worker_peak_rss_mb"), ("API peak RSS (MB)", "api_peak_rss_mb"),
    ]
    for label, key in rows:
        table.add_row(label, *(str(r[key]) for r in results))
    table.add_row("fee.paid once / bills paid their amount",
                  *(f"{r['paid_once']} / {r['paid_expected']}" for r in results))
    table.add_row("injected: lost / repeated / short / unknown",
                  *(f"{r['lost']} / {r['repeated']} / {r['mismatched']} / {r['unknown']}" for r in results))
    table.add_row("report: outcomes", *(", ".join(f"{k} {v}" for k, v in r["report_outcomes"].items())
                                        for r in results))
    table.add_row("faults injected", *(", ".join(f"{k[6:]} {v}" for k, v in r["faults"].items()) or "none"
                                       for r in results))
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.payment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bills", type=int, default=2000, help="fees assessed and paid")
    parser.add_argument("--concurrency", type=int, default=48, help="worker threads")
    parser.add_argument("--read-timeout", type=float, default=2.0, help="the platform's read timeout (s)")
    phase_arguments(parser, redis_db=6, phases="clean,faults", timeout=900)
    args = parse(parser, argv)
    fees = fee_day(args.bills, day=date(2026, 11, 20), seed=2026)
    results = run_phases(args, "payment", lambda phase, workdir: run_phase(phase, fees, args, workdir))
    print_table(results)
    ok = all(r["dead"] == 0 and r["report_exact"] and r["paid_once"] == r["paid_expected"] and r["short_paid"] == 0
             and r["transactions"] == r["bills"] and r["conflicts"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
