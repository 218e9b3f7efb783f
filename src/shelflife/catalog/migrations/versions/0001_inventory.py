"""Inventory of objects per tier, and the scans that keep it current.

Revision ID: 0001_inventory
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import KeyType, UTCDateTime

revision = "0001_inventory"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("key", KeyType, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(80)),
        sa.Column("etag", sa.String(256)),
        sa.Column("modified_at", UTCDateTime, nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_accessed_at", UTCDateTime),
        sa.Column("scan_id", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False, server_default="present"),
        sa.UniqueConstraint("tier", "key", name="uq_objects_tier_key"),
    )
    op.create_index("ix_objects_tier_modified", "objects", ["tier", "modified_at"])
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("objects", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("removed", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_scans_tier_started", "scans", ["tier", "started_at"])


def downgrade() -> None:
    op.drop_table("scans")
    op.drop_table("objects")
