"""The national portal benchmark: a district's working day synced to the portal, clean and through faults.

Every process real and separate: the portal simulator (``sandbox.portal`` under uvicorn),
``motcua-relay api``, ``motcua-relay worker`` and ``motcua-relay beat`` (the sweeper: retries
live in the ledger). Two phases, each on a fresh ledger and a flushed Redis db:

  clean   the day's events (``--dossiers``, default 400) sent signed to the intake in time order
  faults  the same day, each dossier's events shuffled, with 20 % of portal calls answering 503,
          5 % applied and then left hanging past the read timeout, sessions expiring every 60 s

Figures per phase: lifecycle deliveries per second (first intake request → last ``delivered_at``),
p50/p99 relay lag (intake → the portal's acceptance), attempts and portal calls per delivery,
logins, expired sessions renewed, faults injected, dead letters, duplicated progress entries, progress
entries repeated (each answered "06") against the progress calls the portal left unanswered, dossiers whose
final view on the portal equals the one-stop software's truth (status, history, content), the worker's peak RSS.

Routing: ``bench/routing/portal.toml``. Run, from the repository root:
``.venv/bin/python -m bench.portal [--dossiers 400] [--json bench/results/portal.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from adapters.portal import expected_truth, holds
from bench.support import (
    DEFAULT_REDIS,
    Database,
    ManagedProcess,
    free_port,
    new_secret,
    percentile,
    redis_db_url,
    relay_cmd,
    relay_env,
    routing_file,
    tree_hwm_mb,
    wait_http,
)
from sandbox.workload import generate_day, send_events_sync, shuffle_per_dossier
from schemas.events import parse_stored
from store.db import get_engine, upgrade
from store.tables import FINAL_STATUSES, attempts, deliveries, events

USER, PASSWORD = "bench-relay", "bench-password"
FAULTS = {"error_rate": 0.2, "error_status": 503, "timeout_rate": 0.05, "hang_seconds": 3,
          "session_ttl_seconds": 60, "seed": 11}
PORTAL_CODE = (
    "import os, uvicorn\n"
    "from sandbox.portal import create_app\n"
    "app = create_app(username=os.environ['BENCH_PORTAL_USER'], password=os.environ['BENCH_PORTAL_PASSWORD'])\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(os.environ['BENCH_PORTAL_PORT']), access_log=False,"
    " log_level='warning')\n"
)


def run_phase(name: str, day: list[dict[str, Any]], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One phase on fresh processes, ledger and Redis db; its figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = Database.create(args.database_url, workdir)
    broker = redis_db_url(args.redis, args.redis_db)
    redis.Redis.from_url(broker).flushdb()
    portal_port, api_port = free_port(), free_port()
    portal_url, api_url = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{api_port}"
    routing = routing_file("portal", workdir / "routing.toml", {"portal": {"timeouts": {"read": args.read_timeout}}})
    intake_secret = new_secret()
    env = relay_env(database.url, broker, intake_secret, {}, routing, MOTCUA_PORTAL_URL=portal_url,
                    MOTCUA_LOG_LEVEL="WARNING", MOTCUA_PORTAL_USERNAME=USER, MOTCUA_PORTAL_PASSWORD=PASSWORD,
                    MOTCUA_SWEEP_INTERVAL_SECONDS="1", MOTCUA_WORKER_CONCURRENCY=str(args.concurrency),
                    MOTCUA_BEAT_SCHEDULE_FILE=str(workdir / "beat-schedule"), MOTCUA_REDIS_PREFIX=f"bench-{name}",
                    BENCH_PORTAL_USER=USER, BENCH_PORTAL_PASSWORD=PASSWORD, BENCH_PORTAL_PORT=str(portal_port))
    upgrade(database.sqlalchemy_url)
    processes = [
        ManagedProcess("portal", [sys.executable, "-c", PORTAL_CODE], env, workdir / "portal.log"),
        ManagedProcess("api", relay_cmd("api", "--port", str(api_port)), env, workdir / "api.log"),
        ManagedProcess("worker", relay_cmd("worker"), env, workdir / "worker.log"),
        ManagedProcess("beat", relay_cmd("beat"), env, workdir / "beat.log"),
    ]
    try:
        for process in processes:
            process.start()
        wait_http(f"{portal_url}/_admin/stats", 60, processes[0])
        wait_http(f"{api_url}/healthz", 60, processes[1])
        if name == "faults":
            httpx.post(f"{portal_url}/_admin/faults", json=FAULTS, timeout=5).raise_for_status()
        expected = sum(len(t.history) for t in expected_truth(parse_stored(e) for e in day).values())
        engine = get_engine(database.sqlalchemy_url)
        started = time.monotonic()
        since = datetime.now(UTC)
        report = send_events_sync(f"{api_url}/v1/events", intake_secret, day, batch_size=50, concurrency=2)
        if report.accepted != len(day):
            raise RuntimeError(f"the intake took {report.accepted} of {len(day)} events: {report.errors[:3]}")
        peak = 0.0
        while True:
            for process in processes:
                process.check()
            peak = max(peak, tree_hwm_mb(processes[2].pid))
            with engine.connect() as conn:
                total, final = conn.execute(select(
                    func.count(), func.count().filter(deliveries.c.status.in_(FINAL_STATUSES)))).one()
            print(f"\r  {name}: {final} / {expected} deliveries final, {time.monotonic() - started:.0f} s",
                  end="", flush=True)
            if total >= expected and final == total:
                break
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"{name}: {total - final} deliveries still open after {args.timeout} s")
            time.sleep(0.5)
        print()
        return _figures(name, engine, since, day, portal_url, expected, peak)
    finally:
        for process in reversed(processes):
            process.stop()
        redis.Redis.from_url(broker).flushdb()
        with contextlib.suppress(Exception):
            get_engine(database.sqlalchemy_url).dispose()
        database.drop()


def _figures(name: str, engine: Any, since: datetime, day: list[dict[str, Any]], portal_url: str, expected: int,
             peak_mb: float) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.status, deliveries.c.attempts, deliveries.c.delivered_at,
                                   events.c.received_at).join(events, events.c.id == deliveries.c.event_pk)).all()
        first_received = conn.execute(select(func.min(events.c.received_at))).scalar_one()
        attempt_count = conn.execute(select(func.count()).select_from(attempts)).scalar_one()
    delivered = [r for r in rows if r.status == "delivered"]
    lag = [(r.delivered_at - r.received_at).total_seconds() for r in delivered]
    last = max(r.delivered_at for r in delivered)
    elapsed = (last - first_received).total_seconds()
    stats = httpx.get(f"{portal_url}/_admin/stats", timeout=10).json()
    view = httpx.get(f"{portal_url}/_admin/dossiers", timeout=30).json()
    want = expected_truth(parse_stored(e) for e in day)
    matching = sum(1 for code, truth in want.items() if holds(view.get(code), truth))
    # entries the portal holds twice (it refuses a repeat: 0 unless the simulator is wrong)
    duplicates = sum(len(d["QuaTrinhXuLy"]) - len({(p["TrangThai"], p["ThoiDiemXuLy"]) for p in d["QuaTrinhXuLy"]})
                     for d in view.values())
    calls = sum(stats["calls"].values())
    return {
        "phase": name, "events": len(day), "deliveries": len(rows), "expected": expected,
        "delivered": len(delivered), "superseded": sum(1 for r in rows if r.status == "superseded"),
        "dead": sum(1 for r in rows if r.status == "dead"), "seconds": round(elapsed, 1),
        "deliveries_per_s": round(len(delivered) / elapsed, 1) if elapsed else None,
        "lag_p50_s": round(percentile(lag, 50) or 0, 2), "lag_p99_s": round(percentile(lag, 99) or 0, 2),
        "attempts_per_delivery": round(attempt_count / len(rows), 2),
        "calls_per_delivery": round(calls / len(rows), 2), "logins": stats["logins"]["ok"],
        "sessions_expired": stats["sessions_expired"], "faults": stats["faults"],
        "duplicate_progress": duplicates, "repeated_progress": stats["repeated_progress"],
        "unanswered_progress": stats["unanswered"].get("CapNhatTienDoHoSoMC", 0),
        "dossiers": len(want), "dossiers_matching": matching,
        "worker_peak_rss_mb": round(peak_mb, 1),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="National portal: a district's working day synced (bench/portal.py)")
    table.add_column("figure")
    for r in results:
        table.add_column(r["phase"], justify="right")
    rows = [
        ("lifecycle deliveries", "deliveries"), ("delivered", "delivered"), ("superseded", "superseded"),
        ("dead letters", "dead"), ("seconds (first event → last acceptance)", "seconds"),
        ("deliveries / s", "deliveries_per_s"), ("relay lag p50 (s)", "lag_p50_s"), ("relay lag p99 (s)", "lag_p99_s"),
        ("attempts / delivery", "attempts_per_delivery"), ("portal calls / delivery", "calls_per_delivery"),
        ("logins", "logins"), ("expired sessions renewed", "sessions_expired"),
        ("duplicated progress entries", "duplicate_progress"), ("worker peak RSS (MB)", "worker_peak_rss_mb"),
    ]
    for label, key in rows:
        table.add_row(label, *(str(r[key]) for r in results))
    table.add_row("progress repeats answered 06 / unanswered progress calls",
                  *(f"{r['repeated_progress']} / {r['unanswered_progress']}" for r in results))
    table.add_row("faults injected (503 / timeouts)",
                  *(f"{r['faults']['error']} / {r['faults']['timeout']}" for r in results))
    table.add_row("dossiers equal to the one-stop truth",
                  *(f"{r['dossiers_matching']} / {r['dossiers']}" for r in results))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.portal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dossiers", type=int, default=400, help="dossiers in the working day")
    parser.add_argument("--concurrency", type=int, default=64, help="worker threads")
    parser.add_argument("--read-timeout", type=float, default=2.0, help="the portal's read timeout (s)")
    parser.add_argument("--database-url", help="postgresql://… (a database of its own is created); default SQLite")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server (no db number)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis db on --redis, flushed (not 0)")
    parser.add_argument("--phases", default="clean,faults", help="comma-separated: clean, faults")
    parser.add_argument("--timeout", type=float, default=900, help="give up a phase after this many seconds")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 is refused: the bench flushes it")
    day = generate_day(args.dossiers, day=date(2026, 11, 20), seed=2026)
    results = []
    with tempfile.TemporaryDirectory(prefix="motcua-bench-portal-") as tmp:
        for phase in args.phases.split(","):
            events_ = shuffle_per_dossier(day, seed=7) if phase == "faults" else day
            results.append(run_phase(phase, events_, args, Path(tmp) / phase))
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2), encoding="utf-8")
    # a progress entry is repeated only after a call the portal left unanswered (services/portal/progress.py)
    ok = all(r["dead"] == 0 and r["dossiers_matching"] == r["dossiers"] and r["duplicate_progress"] == 0
             and r["repeated_progress"] <= r["unanswered_progress"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
