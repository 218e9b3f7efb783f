"""The run lock becomes a lease: a row renewed by the coordinator, rows of its workers.

``lock_holder`` (who holds the process-bound lock) is replaced by ``run_lease``: the run
that holds the catalog, until when, and whether its batches went to workers;
``lease_workers`` holds a row per worker taking one of its batches.

Revision ID: 0015_run_lease
Revises: 0014_action_log_ids
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import UTCDateTime

revision = "0015_run_lease"
down_revision = "0014_action_log_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lease = op.create_table(
        "run_lease",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(32)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("command", sa.String(255)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("since", UTCDateTime),
        sa.Column("expires", sa.Double),
        sa.Column("period", sa.Double),
        sa.Column("fanned_out", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.bulk_insert(lease, [{"id": 1, "fanned_out": False}])
    op.create_table(
        "lease_workers",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
    )
    op.drop_table("lock_holder")


def downgrade() -> None:
    op.create_table(
        "lock_holder",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
    )
    op.drop_table("lease_workers")
    op.drop_table("run_lease")
