"""Reference snapshots, pins, upload leases, orphan marks and quarantine.

Revision ID: 0002_references
Revises: 0001_inventory
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import KeyType, UTCDateTime

revision = "0002_references"
down_revision = "0001_inventory"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ref_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("taken_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("unmatched", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "refs",
        sa.Column("snapshot_id", sa.Integer, nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("key", KeyType, nullable=False),
    )
    op.create_index("ix_refs_snapshot_key", "refs", ["snapshot_id", "key"])
    op.create_table(
        "pins",
        sa.Column("tier", sa.String(64), primary_key=True),
        sa.Column("key", KeyType, primary_key=True),
        sa.Column("until", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_leases_tier_key", "leases", ["tier", "key"])
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
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("trash_key", KeyType, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("quarantined_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_index("ix_quarantine_tier_key", "quarantine", ["tier", "key"])
    op.create_index("ix_quarantine_state_expires", "quarantine", ["state", "expires_at"])


def downgrade() -> None:
    for name in ("quarantine", "mark_items", "marks", "leases", "pins", "refs", "ref_snapshots"):
        op.drop_table(name)
