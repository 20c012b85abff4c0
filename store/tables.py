"""The ledger's tables (SQLAlchemy Core): events, deliveries, attempts, and feed cursors.

The schema itself is managed by the Alembic migrations in ``store/migrations``; these
definitions are what the code queries and what ``alembic check`` compares against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

Id = BigInteger().with_variant(Integer(), "sqlite")


class Status(StrEnum):
    """A delivery's state, as its ``status`` column stores it (members compare equal to the stored text)."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    SUPERSEDED = "superseded"
    DEAD = "dead"


# Tuples, not sets: the order of an IN list and of a summary's columns stays the same from run to run.
OPEN_STATUSES: tuple[Status, ...] = (Status.PENDING, Status.IN_FLIGHT, Status.RETRYING)
# The partial index of open deliveries is used only by a query that says this, in these words (values written
# in, not bound: neither SQLite nor PostgreSQL matches a partial index's condition with a parameter).
OPEN_CONDITION = "status IN ({})".format(", ".join(f"'{s.value}'" for s in OPEN_STATUSES))
FINAL_STATUSES: tuple[Status, ...] = (Status.DELIVERED, Status.SUPERSEDED, Status.DEAD)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no time zones), always returned tz-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("origin", String(40), nullable=False),
    Column("unit_code", String(60), nullable=False),
    Column("dossier_code", String(80), nullable=False),
    Column("procedure_code", String(60), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("routed_at", UTCDateTime, nullable=True),
    Column("enqueued_at", UTCDateTime, nullable=True),
    Index("ix_events_dossier", "dossier_code", "origin", "sequence"),
    Index("ix_events_unrouted", "routed_at", "received_at"),
    Index("ix_events_occurred", "occurred_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_pk", Id, ForeignKey("events.id"), nullable=False),
    Column("destination", String(60), nullable=False),
    Column("dossier_code", String(80), nullable=False),
    Column("stream", String(40), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("budget_used", Integer, nullable=False, default=0),
    Column("replays", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("enqueued_at", UTCDateTime, nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("idempotency_key", String(200), nullable=False),
    Column("external_ref", String(200), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("event_pk", "destination", name="uq_deliveries_event_destination"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_order", "dossier_code", "destination", "stream", "sequence"),
    Index("ix_deliveries_destination", "destination", "status", "updated_at"),
    Index("ix_deliveries_status_updated", "status", "updated_at"),
    Index("ix_deliveries_delivered", "delivered_at", "destination"),
    # the open deliveries only (OPEN_CONDITION): a destination's in id order, what a claim walks; a stream's in
    # sequence order, where it looks for an earlier one still open. However many are done.
    Index("ix_deliveries_open", "destination", "id", sqlite_where=text(OPEN_CONDITION),
          postgresql_where=text(OPEN_CONDITION)),
    Index("ix_deliveries_open_order", "dossier_code", "destination", "stream", "sequence",
          sqlite_where=text(OPEN_CONDITION), postgresql_where=text(OPEN_CONDITION)),
)


def is_open(status: Any) -> ColumnElement[bool]:
    """``status`` (a deliveries table's, or an alias's) is open, in the words of :data:`OPEN_CONDITION`, so that
    the partial indexes of open deliveries serve the query."""
    condition: ColumnElement[bool] = status.in_([literal_column(f"'{s.value}'") for s in OPEN_STATUSES])
    return condition

attempts = Table(
    "attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float, nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("response_excerpt", Text, nullable=True),
    Column("external_ref", String(200), nullable=True),
    Index("ix_attempts_delivery", "delivery_id", "number"),
    Index("ix_attempts_failed", "started_at", postgresql_where=text("outcome <> 'delivered'"),
          sqlite_where=text("outcome <> 'delivered'")),
)

cursors = Table(
    "cursors",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("position", String(200), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# What the relay knows of each progress entry it sent to a service that keeps no history it reads back (the
# national portal: services/portal/progress.py): unanswered (a call that may have landed), or taken.
progress_marks = Table(
    "progress_marks",
    metadata,
    Column("destination", String(60), primary_key=True),
    Column("entry", String(200), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("tracking_id", String(64), primary_key=True),
    Column("channel", String(20), nullable=False),
    Column("msg_id", String(100), nullable=True),
    Column("received_at", UTCDateTime, nullable=True),
    Column("seen_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# ---- fee collection: bills at the payment providers, the callbacks they sent, the reconciliations


class BillState(StrEnum):
    """A bill's state, as its ``state`` column stores it (see :mod:`store.payments`)."""

    ISSUED = "issued"
    PAID = "paid"
    QUARANTINED = "quarantined"


bills = Table(
    "bills",
    metadata,
    Column("bill_code", String(60), primary_key=True),
    Column("destination", String(60), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("dossier_code", String(80), nullable=False),
    Column("fee_id", String(60), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("assessed_event_id", String(100), nullable=False),
    Column("payment_url", Text, nullable=True),
    Column("external_ref", String(100), nullable=True),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("checked_at", UTCDateTime, nullable=True),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("paid_amount", BigInteger, nullable=True),
    Column("transaction_id", String(60), nullable=True),
    Column("paid_via", String(16), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_bills_open", "destination", "state", "created_at"),
    Index("ix_bills_dossier", "dossier_code"),
)

payment_callbacks = Table(
    "payment_callbacks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("destination", String(60), nullable=False),
    Column("scheme", String(20), nullable=False),
    Column("bill_code", String(60), nullable=False),
    Column("transaction_id", String(60), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("paid", Integer, nullable=False),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("verdict", String(20), nullable=False),
    Index("ix_payment_callbacks_bill", "destination", "bill_code"),
    Index("ix_payment_callbacks_paid", "destination", "paid_at"),
)

reconciliation_lines = Table(
    "reconciliation_lines",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("destination", String(60), nullable=False),
    Column("day", String(10), nullable=False),
    Column("outcome", String(24), nullable=False),
    Column("bill_code", String(60), nullable=False),
    Column("transaction_id", String(60), nullable=True),
    Column("dossier_code", String(80), nullable=True),
    Column("bill_amount", BigInteger, nullable=True),
    Column("settled_amount", BigInteger, nullable=True),
    Column("callbacks", Integer, nullable=False),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("note", Text, nullable=False),
    Column("run_at", UTCDateTime, nullable=False),
    Index("ix_reconciliation_day", "destination", "day", "outcome"),
)

# ---- the audit chain (store/audit, docs/audit.md): one hash chain of entries per destination, its heads, the signed
# checkpoints of every head, and where retention cut each chain

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("chain", String(60), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("delivery_id", Id, nullable=False),  # no foreign key: the entry outlives a pruned ledger row
    Column("attempt_id", Id, nullable=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("content", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_entries_delivery", "delivery_id", "seq"),
    Index("ix_audit_entries_recorded", "recorded_at"),
    Index("ix_audit_entries_attempt", "attempt_id"),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("chain", String(60), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("made_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", Text, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("tsa_token", Text, nullable=True),
    Index("ix_audit_checkpoints_made", "made_at"),
)

# a chain's entries up to ``seq`` were removed from the live ledger (archived first): ``hash`` is entry seq's, named by
# checkpoint ``checkpoint``, from which the chain's remaining entries follow on
audit_cuts = Table(
    "audit_cuts",
    metadata,
    Column("chain", String(60), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("checkpoint", BigInteger, nullable=False),
    Column("archive_sha256", String(64), nullable=False),
    Column("cut_at", UTCDateTime, nullable=False),
)
