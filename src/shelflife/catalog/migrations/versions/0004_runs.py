"""Plans, run history, object tags and the source of each reference.

Revision ID: 0004_runs
Revises: 0003_journal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import UTCDateTime

revision = "0004_runs"
down_revision = "0003_journal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("tags", sa.String(2000)))
    with op.batch_alter_table("refs") as batch:
        batch.add_column(sa.Column("source", sa.Integer))
    op.create_table(
        "plans",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("evaluated_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actions", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("applied_at", UTCDateTime),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Integer, nullable=False),
        sa.Column("plan_id", sa.String(64)),
        sa.Column("totals", sa.String(4000)),
        sa.Column("failed_count", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.String(20000)),
        sa.Column("error", sa.String(2000)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
    )
    op.create_index("ix_runs_started", "runs", ["started_at"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("plans")
    with op.batch_alter_table("refs") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("tags")
