"""Migration journal and run-lock holder.

Revision ID: 0003_journal
Revises: 0002_references
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import KeyType, UTCDateTime

revision = "0003_journal"
down_revision = "0002_references"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("src_tier", sa.String(64), nullable=False),
        sa.Column("dst_tier", sa.String(64), nullable=False),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(80)),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("error", sa.String(1000)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_journal_step", "journal", ["step"])
    op.create_table(
        "lock_holder",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("lock_holder")
    op.drop_table("journal")
