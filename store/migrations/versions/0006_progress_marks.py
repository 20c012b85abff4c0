"""Progress marks: what the relay knows of each progress entry sent to a service that keeps no history it reads back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "progress_marks",
        sa.Column("destination", sa.String(60), nullable=False),
        sa.Column("entry", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("destination", "entry"),
    )


def downgrade() -> None:
    op.drop_table("progress_marks")
