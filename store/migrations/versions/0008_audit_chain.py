"""The audit chain: a hash chain of entries per destination, its heads, signed checkpoints, retention cuts.

Every attempt's end and every final outcome appends an entry in the transaction that records it (docs/audit.md).
A ledger made before this revision starts its chains empty: what it recorded before is not in them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.tables import Id, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("chain", sa.String(60), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("delivery_id", Id, nullable=False),
        sa.Column("attempt_id", Id, nullable=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("chain", "seq"),
    )
    op.create_index("ix_audit_entries_delivery", "audit_entries", ["delivery_id", "seq"])
    op.create_index("ix_audit_entries_recorded", "audit_entries", ["recorded_at"])
    op.create_index("ix_audit_entries_attempt", "audit_entries", ["attempt_id"])
    op.create_table(
        "audit_heads",
        sa.Column("chain", sa.String(60), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("made_at", UTCDateTime, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("tsa_token", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_checkpoints_made", "audit_checkpoints", ["made_at"])
    op.create_table(
        "audit_cuts",
        sa.Column("chain", sa.String(60), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.BigInteger, nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("cut_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_cuts")
    op.drop_index("ix_audit_checkpoints_made", "audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_heads")
    op.drop_index("ix_audit_entries_attempt", "audit_entries")
    op.drop_index("ix_audit_entries_recorded", "audit_entries")
    op.drop_index("ix_audit_entries_delivery", "audit_entries")
    op.drop_table("audit_entries")
