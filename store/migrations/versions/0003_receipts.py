"""Receipts: what a channel reported back about a message the relay sent (Zalo received / seen).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("tracking_id", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("msg_id", sa.String(100), nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=True),
        sa.Column("seen_at", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("receipts")
