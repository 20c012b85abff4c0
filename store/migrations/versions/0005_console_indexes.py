"""Indexes for the operator console's pages on a large ledger (a million deliveries and more).

The overview counts a window of deliveries by status and time and charts the hours of deliveries and of
failed attempts (a partial index: they are a small part of all); the dead-letter list is the newest dead
deliveries; the portal sync report reads a day's events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_status_updated", "deliveries", ["status", "updated_at"])
    op.create_index("ix_deliveries_delivered", "deliveries", ["delivered_at", "destination"])  # index-only
    op.create_index("ix_attempts_failed", "attempts", ["started_at"],
                    postgresql_where=sa.text("outcome <> 'delivered'"), sqlite_where=sa.text("outcome <> 'delivered'"))
    op.create_index("ix_events_occurred", "events", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_occurred", "events")
    op.drop_index("ix_attempts_failed", "attempts")
    op.drop_index("ix_deliveries_delivered", "deliveries")
    op.drop_index("ix_deliveries_status_updated", "deliveries")
