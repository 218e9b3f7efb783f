"""Schedule state: the latest slot each entry was claimed for.

Revision ID: 0007_schedule
Revises: 0006_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import UTCDateTime

revision = "0007_schedule"
down_revision = "0006_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_due_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedule_state")
