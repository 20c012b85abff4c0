"""Fee collection: the bills issued at payment providers, the callbacks they sent, reconciliation lines.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.tables import Id, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bills",
        sa.Column("bill_code", sa.String(60), primary_key=True),
        sa.Column("destination", sa.String(60), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("dossier_code", sa.String(80), nullable=False),
        sa.Column("fee_id", sa.String(60), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("assessed_event_id", sa.String(100), nullable=False),
        sa.Column("payment_url", sa.Text, nullable=True),
        sa.Column("external_ref", sa.String(100), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("checked_at", UTCDateTime, nullable=True),
        sa.Column("paid_at", UTCDateTime, nullable=True),
        sa.Column("paid_amount", sa.BigInteger, nullable=True),
        sa.Column("transaction_id", sa.String(60), nullable=True),
        sa.Column("paid_via", sa.String(16), nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_bills_open", "bills", ["destination", "state", "created_at"])
    op.create_index("ix_bills_dossier", "bills", ["dossier_code"])
    op.create_table(
        "payment_callbacks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(60), nullable=False),
        sa.Column("scheme", sa.String(20), nullable=False),
        sa.Column("bill_code", sa.String(60), nullable=False),
        sa.Column("transaction_id", sa.String(60), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("paid", sa.Integer, nullable=False),
        sa.Column("paid_at", UTCDateTime, nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
    )
    op.create_index("ix_payment_callbacks_bill", "payment_callbacks", ["destination", "bill_code"])
    op.create_index("ix_payment_callbacks_paid", "payment_callbacks", ["destination", "paid_at"])
    op.create_table(
        "reconciliation_lines",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(60), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("bill_code", sa.String(60), nullable=False),
        sa.Column("transaction_id", sa.String(60), nullable=True),
        sa.Column("dossier_code", sa.String(80), nullable=True),
        sa.Column("bill_amount", sa.BigInteger, nullable=True),
        sa.Column("settled_amount", sa.BigInteger, nullable=True),
        sa.Column("callbacks", sa.Integer, nullable=False),
        sa.Column("paid_at", UTCDateTime, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("run_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_reconciliation_day", "reconciliation_lines", ["destination", "day", "outcome"])


def downgrade() -> None:
    op.drop_table("reconciliation_lines")
    op.drop_table("payment_callbacks")
    op.drop_table("bills")
