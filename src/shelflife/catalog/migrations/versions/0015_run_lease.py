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
from shelflife.errors import CatalogError

revision = "0015_run_lease"
down_revision = "0014_action_log_ids"
branch_labels = None
depends_on = None


# The advisory lock key runs took before this revision (PostgreSQL).
LEGACY_LOCK = 0x5E1F11FE


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # a run of an earlier version holds the catalog by that lock alone: upgrading
        # under it would let a second run in beside it
        free = bind.execute(sa.text(f"SELECT pg_try_advisory_xact_lock({LEGACY_LOCK})")).scalar()
        if not free:
            raise CatalogError(
                "a run of an earlier shelflife version holds this catalog, so its schema "
                "cannot be upgraded now",
                hint="let that run finish (or stop it), then start this version again",
            )
    lease = op.create_table(
        "run_lease",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(32)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("command", sa.String(255)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("identity", sa.String(255)),
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
