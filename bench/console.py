"""The console benchmark: every page's answer time with a million deliveries in PostgreSQL.

Seeds a fresh PostgreSQL ledger (a database of its own, dropped after) in SQL: ``--events`` events (default
250,000) of 50,000 dossiers over the last ``--days`` days (30), four deliveries each (a million), one attempt
each; 97 % delivered, 1 % dead, 1 % retrying, 1 % pending. ``--skew 3`` crowds them towards today (a third of
everything in the last day, 48,000 events the day before): the pages that read a day read far more. Then it
starts ``motcua-relay api`` with a throwaway operator account, logs in, and asks each page ``--repeat`` times
(after one warm-up): the overview, the dead letters (all; one destination; a reason), a dossier, the reports.
It prints the answer times (p50 / p95 / max, milliseconds) and exits 1 when a page's p95 is over ``--budget-ms`` (200).

Routing: ``bench/routing/console.toml``. Run, from the repository root: ``.venv/bin/python -m bench.console
--database-url postgresql://127.0.0.1:5432/test [--events 250000] [--json bench/results/console.json]``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from api.console.auth import hash_password
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
    routing_template,
    wait_http,
)
from store.db import get_engine, upgrade

SEED_SQL = """
INSERT INTO events (id, event_id, type, origin, unit_code, dossier_code, procedure_code, sequence, occurred_at,
                    received_at, content_hash, payload, routed_at, enqueued_at)
SELECT n, 'bench-' || n,
       (ARRAY['dossier.received', 'dossier.processing', 'dossier.completed', 'dossier.returned'])[1 + n % 4],
       'onestop', '000.21.00.H49', '000.21.00.H49-2611' || lpad((n / 5 % 50000)::text, 6, '0'),
       '1.000894.000.00.00.H49',
       1 + n % 5, t, t, md5(n::text) || md5(n::text),
       '{"applicant": {"name": "Nguyễn Văn An", "phone": "0912345678", "id_number": "001099012345"}, "data": {}}',
       t, t
FROM (SELECT n, now() - (power(random(), :skew) * :days * interval '1 day') AS t
      FROM generate_series(1, :events) AS n) AS s;
INSERT INTO deliveries (id, event_pk, destination, dossier_code, stream, sequence, status, attempts, budget_used,
                        replays, next_attempt_at, enqueued_at, lease_until, deadline_at, created_at, updated_at,
                        delivered_at, idempotency_key, external_ref, last_status_code, last_error)
SELECT (e.id - 1) * 4 + k, e.id, (ARRAY['portal','zalo','warehouse','onestop'])[k], e.dossier_code, 'onestop',
       e.sequence, st, CASE WHEN st = 'delivered' THEN 1 ELSE 2 END, 1, 0, NULL, e.received_at, NULL,
       e.received_at + interval '72 hours', e.received_at, e.received_at + interval '2 seconds',
       CASE WHEN st = 'delivered' THEN e.received_at + interval '2 seconds' END, e.event_id || ':' || k, NULL,
       CASE WHEN st = 'dead' THEN 400 END,
       CASE WHEN st = 'dead' THEN 'rejected: HTTP 400 rejected' END
FROM events e CROSS JOIN generate_series(1, 4) AS k
CROSS JOIN LATERAL (SELECT CASE WHEN (e.id * 7 + k) % 100 = 0 THEN 'dead' WHEN (e.id * 7 + k) % 100 = 1 THEN 'retrying'
                               WHEN (e.id * 7 + k) % 100 = 2 THEN 'pending' ELSE 'delivered' END AS st) AS s;
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, status_code, error, response_excerpt)
SELECT d.id, 1, d.created_at + interval '1 second', 35,
       CASE WHEN d.status = 'delivered' THEN 'delivered' WHEN d.status = 'dead' THEN 'permanent' ELSE 'retryable' END,
       CASE WHEN d.status = 'delivered' THEN 200 WHEN d.status = 'dead' THEN 400 ELSE 503 END,
       CASE WHEN d.status = 'dead' THEN 'rejected: HTTP 400 rejected' END, '{"ok": true}'
FROM deliveries d;
SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT max(id) FROM events));
SELECT setval(pg_get_serial_sequence('deliveries', 'id'), (SELECT max(id) FROM deliveries));
"""


def seed(url: str, events: int, days: float = 30.0, skew: float = 1.0) -> dict[str, Any]:
    engine = get_engine(url)
    started = time.monotonic()
    with engine.begin() as conn:
        for statement in SEED_SQL.split(";\n"):
            if statement.strip():
                conn.execute(text(statement), {"events": events, "skew": skew, "days": days}
                             if ":events" in statement else {})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events, deliveries, attempts"))  # as autovacuum would have by now
    with engine.connect() as conn:
        counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
                  for table in ("events", "deliveries", "attempts")}
        dossier = conn.execute(text("SELECT dossier_code FROM deliveries WHERE status = 'dead' LIMIT 1")).scalar_one()
    engine.dispose()
    return {**counts, "seconds": round(time.monotonic() - started, 1), "dossier": dossier}


def measure(client: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    client.get(path)  # warm-up: the first answer pays for imports and plans
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status_code}")
    return {"path": path, "p50_ms": round(statistics.median(times), 1), "p95_ms": round(percentile(times, 95) or 0, 1),
            "max_ms": round(max(times), 1), "bytes": len(answer.content)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="postgresql://… (a database of its own is created)")
    parser.add_argument("--events", type=int, default=250_000, help="events; four deliveries each")
    parser.add_argument("--days", type=float, default=30.0, help="the events spread over this many days")
    parser.add_argument("--skew", type=float, default=1.0,
                        help="1: evenly; 3: crowded towards today (a third of everything in the last day)")
    parser.add_argument("--repeat", type=int, default=20, help="requests per page")
    parser.add_argument("--budget-ms", type=float, default=200.0, help="the p95 every page must keep under")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server (no db number)")
    parser.add_argument("--redis-db", type=int, default=4, help="Redis db on --redis for the API (not flushed)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if not args.database_url.startswith("postgres"):
        parser.error("the million-row bench is for PostgreSQL")
    with tempfile.TemporaryDirectory(prefix="motcua-bench-console-") as tmp:
        workdir = Path(tmp)
        database = Database.create(args.database_url, workdir)
        try:
            upgrade(database.sqlalchemy_url)
            print(f"seeding {args.events:,} events and {4 * args.events:,} deliveries…", flush=True)
            seeded = seed(database.sqlalchemy_url, args.events, args.days, args.skew)
            print(f"seeded in {seeded['seconds']} s: {seeded['deliveries']:,} deliveries, "
                  f"{seeded['attempts']:,} attempts", flush=True)
            password, port = secrets.token_urlsafe(12), free_port()
            env = relay_env(database.url, redis_db_url(args.redis, args.redis_db), new_secret(), {},
                            routing_template("console"),
                            MOTCUA_LOG_LEVEL="WARNING", MOTCUA_CONSOLE_SECRET=secrets.token_urlsafe(32),
                            MOTCUA_CONSOLE_OPERATORS=f"bench:{hash_password(password, iterations=10_000)}")
            api = ManagedProcess("api", relay_cmd("api", "--port", str(port)), env, workdir / "api.log").start()
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", 60, api)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                    client.post("/console/login", data={"username": "bench", "password": password})
                    pages = ["/console/", "/console/deadletters", "/console/deadletters?destination=zalo",
                             "/console/deadletters?reason=HTTP+400", f"/console/dossiers/{seeded['dossier']}",
                             "/console/reports"]
                    results = [measure(client, page, args.repeat) for page in pages]
            finally:
                api.stop()
        finally:
            database.drop()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Console pages with {seeded['deliveries']:,} deliveries in PostgreSQL over {args.days:g} "
                        f"days, skew {args.skew:g} (bench/console.py)")
    for column in ("page", "p50 ms", "p95 ms", "max ms", "bytes"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for r in results:
        style = "[red]" if r["p95_ms"] > args.budget_ms else ""
        table.add_row(r["path"], str(r["p50_ms"]), f"{style}{r['p95_ms']}", str(r["max_ms"]), f"{r['bytes']:,}")
    Console(width=140).print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seeded": seeded, "results": results}, indent=2), encoding="utf-8")
    return 0 if all(r["p95_ms"] <= args.budget_ms for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
