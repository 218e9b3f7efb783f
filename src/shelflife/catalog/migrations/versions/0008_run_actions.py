"""Per-action outcomes of fanned-out runs.

Revision ID: 0008_run_actions
Revises: 0007_schedule
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import KeyType

revision = "0008_run_actions"
down_revision = "0007_schedule"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_actions",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("action", sa.String(32), primary_key=True),
        sa.Column("tier", sa.String(64), primary_key=True),
        sa.Column("key", KeyType, primary_key=True),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("to_tier", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(1000)),
    )


def downgrade() -> None:
    op.drop_table("run_actions")
