"""Plans kept in the catalog item by item; marks (saved orphan lists) become plans.

Revision ID: 0009_plan_items
Revises: 0008_run_actions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import KeyType, UTCDateTime

revision = "0009_plan_items"
down_revision = "0008_run_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plan_items",
        sa.Column("plan_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("action", sa.String(32)),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("to_tier", sa.String(64)),
        sa.Column("etag", sa.String(256)),
        sa.Column("modified_at", UTCDateTime),
        sa.Column("rows", sa.String(2000)),
        sa.Column("reason", sa.String(2000)),
    )
    op.create_index(
        "ix_plan_items_plan_tier_key", "plan_items", ["plan_id", "tier", "key"], unique=False
    )
    op.add_column("plans", sa.Column("header", sa.Text))
    op.drop_index("ix_mark_items_mark_key", table_name="mark_items")
    op.drop_table("mark_items")
    op.drop_table("marks")


def downgrade() -> None:
    op.drop_index("ix_plan_items_plan_tier_key", table_name="plan_items")
    op.drop_table("plan_items")
    op.drop_column("plans", "header")
    op.create_table(
        "marks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("evaluated_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("candidates", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("snapshot_id", sa.Integer),
    )
    op.create_table(
        "mark_items",
        sa.Column("mark_id", sa.Integer, nullable=False),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
        sa.Column("etag", sa.String(256)),
    )
    op.create_index("ix_mark_items_mark_key", "mark_items", ["mark_id", "key"])
