"""Partial indexes of the open deliveries: each destination's in id order (what a claim walks) and each stream's in
sequence order (where a claim looks for an earlier one still open).

Without them a claim walked every delivery its destination ever had (SQLite: the destination's index, then a
sort; after ANALYZE, the table in id order from the oldest), and for each candidate every earlier delivery of its
stream: its cost grew with the ledger's history, not with what is due.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.tables import OPEN_CONDITION

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # if not there already: an operator of a large PostgreSQL ledger may have built them CONCURRENTLY beforehand
    op.create_index("ix_deliveries_open", "deliveries", ["destination", "id"], if_not_exists=True,
                    sqlite_where=sa.text(OPEN_CONDITION), postgresql_where=sa.text(OPEN_CONDITION))
    op.create_index("ix_deliveries_open_order", "deliveries", ["dossier_code", "destination", "stream", "sequence"],
                    if_not_exists=True, sqlite_where=sa.text(OPEN_CONDITION),
                    postgresql_where=sa.text(OPEN_CONDITION))


def downgrade() -> None:
    op.drop_index("ix_deliveries_open_order", "deliveries")
    op.drop_index("ix_deliveries_open", "deliveries")
