"""The Zalo benchmark: a working day of notifications through two worker processes, the token expiring 3 times.

Every process real and separate: the Zalo simulator (``sandbox.zalo`` under uvicorn, 100 ms per
call), the SMS gateway simulator, ``motcua-relay api``, ``motcua-relay worker --processes 2`` (two
processes, so the refresh token's lock is tested across processes, not only threads) and
``motcua-relay beat``. The day's events (``--dossiers``, default 400) go through the signed intake;
every access token is expired at 25 %, 50 % and 75 % of the deliveries.

Figures: notifications, delivered / rerouted to SMS / dead, seconds and notifications per second,
p50/p99 intake → delivered, refreshes (must be 3), spent refresh tokens presented again (must be 0),
repeated ``tracking_id`` at Zalo (must be 0), requests refused for an expired token, the workers'
peak RSS.

Routing: ``bench/routing/zalo.toml``. Run, from the repository root:
``.venv/bin/python -m bench.zalo [--json bench/results/zalo.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from bench.support import (
    DEFAULT_REDIS,
    ROOT,
    Database,
    ManagedProcess,
    free_port,
    new_secret,
    percentile,
    redis_db_url,
    relay_cmd,
    relay_env,
    routing_template,
    tree_hwm_mb,
    wait_http,
)
from sandbox.workload import generate_day, send_events_sync
from store.db import get_engine, upgrade
from store.tables import FINAL_STATUSES, deliveries, events

APP_ID, APP_SECRET, OA_KEY, SMS_KEY = "4301520984", "bench-app-secret", "bench-oa-key", "bench-sms-key"
# the Zalo simulator's rules (the night refusal, the day of its quotas) read a morning of the bench's day
SIMULATORS = (
    "import os, uvicorn\n"
    "from datetime import datetime\n"
    "from sandbox.zalo import create_app as zalo\n"
    "from sandbox.sms import create_app as sms\n"
    "from schemas.vietnam import VN_TZ\n"
    "app = zalo(app_id=os.environ['MOTCUA_ZALO_APP_ID'], app_secret=os.environ['MOTCUA_ZALO_APP_SECRET'],"
    " oa_secret_key=os.environ['MOTCUA_ZALO_OA_SECRET_KEY'], start_at=datetime(2026, 11, 20, 9, tzinfo=VN_TZ))"
    " if os.environ['BENCH_WHICH'] == 'zalo' else sms(api_key=os.environ['MOTCUA_SMS_API_KEY'])\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(os.environ['BENCH_PORT']), access_log=False, log_level='warning')\n"
)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    database = Database.create(args.database_url, workdir)
    broker = redis_db_url(args.redis, args.redis_db)
    redis.Redis.from_url(broker).flushdb()
    zalo_port, sms_port, api_port = free_port(), free_port(), free_port()
    zalo_url, sms_url, api_url = (f"http://127.0.0.1:{p}" for p in (zalo_port, sms_port, api_port))
    intake_secret = new_secret()
    env = relay_env(database.url, broker, intake_secret, {}, routing_template("zalo"),
                    MOTCUA_ZALO_ZNS_URL=zalo_url, MOTCUA_SMS_URL=f"{sms_url}/api/v1/sms/send",
                    MOTCUA_LOG_LEVEL="WARNING", MOTCUA_ZALO_APP_ID=APP_ID, MOTCUA_ZALO_APP_SECRET=APP_SECRET,
                    MOTCUA_ZALO_OA_SECRET_KEY=OA_KEY, MOTCUA_SMS_API_KEY=SMS_KEY, MOTCUA_SWEEP_INTERVAL_SECONDS="1",
                    MOTCUA_WORKER_CONCURRENCY=str(args.concurrency), MOTCUA_REDIS_PREFIX="bench-zalo",
                    MOTCUA_BEAT_SCHEDULE_FILE=str(workdir / "beat-schedule"))
    upgrade(database.sqlalchemy_url)
    processes = [
        ManagedProcess("zalo", [sys.executable, "-c", SIMULATORS],
                       env | {"BENCH_WHICH": "zalo", "BENCH_PORT": str(zalo_port)}, workdir / "zalo.log"),
        ManagedProcess("sms", [sys.executable, "-c", SIMULATORS],
                       env | {"BENCH_WHICH": "sms", "BENCH_PORT": str(sms_port)}, workdir / "sms.log"),
        ManagedProcess("api", relay_cmd("api", "--port", str(api_port)), env, workdir / "api.log"),
        ManagedProcess("worker", relay_cmd("worker", "--processes", "2"), env, workdir / "worker.log"),
        ManagedProcess("beat", relay_cmd("beat"), env, workdir / "beat.log"),
    ]
    try:
        for process in processes:
            process.start()
        wait_http(f"{zalo_url}/_admin/stats", 60, processes[0])
        wait_http(f"{sms_url}/_admin/stats", 60, processes[1])
        wait_http(f"{api_url}/healthz", 60, processes[2])
        pair = httpx.post(f"{zalo_url}/_admin/tokens", timeout=5).json()
        subprocess_env = env | {"MOTCUA_ZALO_ACCESS_TOKEN": pair["access_token"],
                                "MOTCUA_ZALO_REFRESH_TOKEN": pair["refresh_token"]}
        subprocess.run(relay_cmd("zalo", "set-token", "--expires-in", pair["expires_in"]), env=subprocess_env,
                       check=True, capture_output=True, cwd=ROOT)
        httpx.post(f"{zalo_url}/_admin/faults", json={"latency_ms": 100}, timeout=5).raise_for_status()
        day = generate_day(args.dossiers, day=date(2026, 11, 20), seed=2026)
        engine = get_engine(database.sqlalchemy_url)
        started = time.monotonic()
        report = send_events_sync(f"{api_url}/v1/events", intake_secret, day, batch_size=100, concurrency=2)
        if report.accepted != len(day):
            raise RuntimeError(f"the intake took {report.accepted} of {len(day)}: {report.errors[:3]}")
        with engine.connect() as conn:
            expected = conn.execute(select(func.count()).where(deliveries.c.destination == "zalo")).scalar_one()
        marks = [expected * share for share in (0.25, 0.5, 0.75)]
        peak = 0.0
        while True:
            for process in processes:
                process.check()
            peak = max(peak, tree_hwm_mb(processes[3].pid))
            with engine.connect() as conn:
                total, final = conn.execute(select(func.count(), func.count().filter(
                    deliveries.c.status.in_(FINAL_STATUSES)))).one()
            if marks and final >= marks[0]:
                marks.pop(0)
                httpx.post(f"{zalo_url}/_admin/expire", timeout=5).raise_for_status()
            print(f"\r  {final} / {total} deliveries final, {3 - len(marks)} expiries, "
                  f"{time.monotonic() - started:.0f} s", end="", flush=True)
            if final == total and not marks:
                break
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"{total - final} deliveries still open after {args.timeout} s")
            time.sleep(0.3)
        print()
        with engine.connect() as conn:
            rows = conn.execute(select(deliveries.c.destination, deliveries.c.status, deliveries.c.delivered_at,
                                       events.c.received_at).join(events, events.c.id == deliveries.c.event_pk)).all()
            first = conn.execute(select(func.min(events.c.received_at))).scalar_one()
        stats = httpx.get(f"{zalo_url}/_admin/stats", timeout=5).json()
        sms = httpx.get(f"{sms_url}/_admin/stats", timeout=5).json()
        zalo_rows = [r for r in rows if r.destination == "zalo"]
        done = [r for r in rows if r.status == "delivered"]
        elapsed = (max(r.delivered_at for r in done) - first).total_seconds()
        lag = [(r.delivered_at - r.received_at).total_seconds() for r in done]
        return {
            "dossiers": args.dossiers, "notifications": len(zalo_rows),
            "delivered": sum(1 for r in zalo_rows if r.status == "delivered"),
            "rerouted_to_sms": sum(1 for r in zalo_rows if r.status == "superseded"),
            "sms_delivered": sum(1 for r in rows if r.destination == "sms" and r.status == "delivered"),
            "dead": sum(1 for r in rows if r.status == "dead"), "seconds": round(elapsed, 1),
            "per_second": round(len(done) / elapsed, 1), "lag_p50_s": round(percentile(lag, 50) or 0, 2),
            "lag_p99_s": round(percentile(lag, 99) or 0, 2), "refreshes": stats["refresh"]["ok"],
            "refresh_token_reuse": stats["refresh_token_reuse"], "duplicate_tracking": stats["duplicate_tracking"],
            "zalo_sent": stats["sent"], "token_expired_answers": stats["token_expired"],
            "sms_sent": sms["sent"], "workers_peak_rss_mb": round(peak, 1),
        }
    finally:
        for process in reversed(processes):
            process.stop()
        redis.Redis.from_url(broker).flushdb()
        database.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zalo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dossiers", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker process")
    parser.add_argument("--database-url", help="postgresql://… (a database of its own is created); default SQLite")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server (no db number)")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis db on --redis, flushed (not 0)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 is refused: the bench flushes it")
    with tempfile.TemporaryDirectory(prefix="motcua-bench-zalo-") as tmp:
        result = run(args, Path(tmp))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Zalo: a working day of notifications, 2 worker processes, token expired 3 times "
                        f"({datetime.now(UTC):%Y-%m-%d})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    ok = (result["dead"] == 0 and result["refresh_token_reuse"] == 0 and result["duplicate_tracking"] == 0
          and result["refreshes"] == 3 and result["zalo_sent"] == result["delivered"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
