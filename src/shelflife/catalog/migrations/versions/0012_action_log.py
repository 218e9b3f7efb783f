"""The action log: every action a run took, skipped or failed, and why; and the age
basis of fanned-out runs' actions, which the log records.

Revision ID: 0012_action_log
Revises: 0011_reference_counts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import KeyType, UTCDateTime

revision = "0012_action_log"
down_revision = "0011_reference_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("rule", sa.String(128)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("to_tier", sa.String(64)),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(2000)),
        sa.Column("age", sa.String(16)),
        sa.Column("aged_from", UTCDateTime),
        sa.Column("detail", sa.String(2000)),
    )
    op.create_index("ix_action_log_key", "action_log", ["key", "id"])
    op.create_index("ix_action_log_rule", "action_log", ["rule", "id"])
    op.create_index("ix_action_log_run", "action_log", ["run_id", "id"])
    op.create_index("ix_action_log_recorded", "action_log", ["recorded_at"])
    op.add_column("run_actions", sa.Column("age", sa.String(16)))
    op.add_column("run_actions", sa.Column("aged_from", UTCDateTime))


def downgrade() -> None:
    op.drop_column("run_actions", "aged_from")
    op.drop_column("run_actions", "age")
    op.drop_table("action_log")
