"""The planner's statistics of the ledger's busiest tables, gathered when the server leaves them stale.

PostgreSQL plans the claim's queries from its statistics of ``deliveries``: autovacuum gathers them (``ANALYZE``)
once enough rows changed, but not on a server that runs without it (as this repository's CI server does), and not
on a new ledger before its first run. Without them both partial indexes of open deliveries look empty, and the
planner chose the destination's (``ix_deliveries_open``) for the test of an earlier open sequence of the stream:
a walk of every open delivery for each one claimed. With 7,578 open behind 1,422 in flight, one claim's candidate
query took 4.6 s (16 ms once analyzed), and the bench's +200 ms phase on 9,000 events fell to 76-152/s.

So the sweep asks, at most every :data:`CHECK_SECONDS`, how many rows of those tables changed since their last
``ANALYZE``, and analyzes those past autovacuum's own default threshold (50 rows and a tenth of the table). Where
autovacuum does it first, nothing is left to do. ``ANALYZE`` reads a sample (at most 30,000 rows a table) and
blocks no reads or writes. ``MOTCUA_LEDGER_ANALYZE=false`` leaves it to the server. SQLite: nothing (its claim
queries are written for the index they need).
"""

from __future__ import annotations

import threading
import time

import structlog
from sqlalchemy import Engine, bindparam, text

log = structlog.get_logger(__name__)

TABLES = ("deliveries", "events", "attempts", "audit_entries")
CHECK_SECONDS = 10.0
# autovacuum's defaults (autovacuum_analyze_threshold, autovacuum_analyze_scale_factor)
THRESHOLD_ROWS = 50
SCALE = 0.1

_CHANGED = text(
    "SELECT s.relname, s.n_mod_since_analyze, c.reltuples FROM pg_stat_user_tables AS s"
    " JOIN pg_class AS c ON c.oid = s.relid WHERE s.schemaname = current_schema() AND s.relname IN :tables"
).bindparams(bindparam("tables", value=list(TABLES), expanding=True))

_checked = -float("inf")
_lock = threading.Lock()


def stale_tables(engine: Engine) -> list[str]:
    """The ledger's tables whose rows changed since their last ``ANALYZE`` past autovacuum's threshold (PostgreSQL;
    none on SQLite)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        rows = conn.execute(_CHANGED).all()
    return sorted(r.relname for r in rows if r.n_mod_since_analyze > THRESHOLD_ROWS + SCALE * max(r.reltuples, 0))


def analyze_stale(engine: Engine) -> list[str]:
    """``ANALYZE`` each of :func:`stale_tables`: the tables analyzed."""
    stale = stale_tables(engine)
    if not stale:
        return []
    with engine.connect() as conn:
        for table in stale:
            started = time.monotonic()
            conn.exec_driver_sql(f'ANALYZE "{table}"')  # a name of TABLES, not a value
            conn.commit()
            log.info("ledger.analyzed", table=table, ms=round(1000 * (time.monotonic() - started), 1))
    return stale


def keep_fresh(engine: Engine, enabled: bool) -> list[str]:
    """:func:`analyze_stale`, at most once every :data:`CHECK_SECONDS` in this process (the sweep calls it); a
    failure is logged, not raised (the sweep goes on)."""
    global _checked
    if not enabled:
        return []
    with _lock:
        if time.monotonic() - _checked < CHECK_SECONDS:
            return []
        _checked = time.monotonic()
    try:
        return analyze_stale(engine)
    except Exception as exc:  # a permission refused, the server away: the next check tries again
        log.warning("ledger.analyze_failed", error=str(exc),
                    hint="the relay's database user may not ANALYZE the ledger: set MOTCUA_LEDGER_ANALYZE=false "
                         "and leave it to autovacuum")
        return []
