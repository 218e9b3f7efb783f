"""Ages that survive moves (DESIGN I9): objects gain ``created_at`` and ``arrived_at``,
plan items the age basis and instant their rule used.

Existing rows know no more than their modification time and when shelflife first saw
them: both new instants start as the earlier of the two.

Revision ID: 0010_ages
Revises: 0009_plan_items
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import UTCDateTime

revision = "0010_ages"
down_revision = "0009_plan_items"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("objects", sa.Column("created_at", UTCDateTime))
    op.add_column("objects", sa.Column("arrived_at", UTCDateTime))
    earlier = sa.case(
        (sa.column("first_seen_at") < sa.column("modified_at"), sa.column("first_seen_at")),
        else_=sa.column("modified_at"),
    )
    objects = sa.table(
        "objects",
        sa.column("created_at"),
        sa.column("arrived_at"),
        sa.column("modified_at"),
        sa.column("first_seen_at"),
    )
    op.execute(objects.update().values(created_at=earlier, arrived_at=earlier))
    op.create_index("ix_objects_tier_created", "objects", ["tier", "created_at"], unique=False)
    op.add_column("plan_items", sa.Column("age", sa.String(16)))
    op.add_column("plan_items", sa.Column("aged_from", UTCDateTime))


def downgrade() -> None:
    op.drop_column("plan_items", "aged_from")
    op.drop_column("plan_items", "age")
    op.drop_index("ix_objects_tier_created", table_name="objects")
    op.drop_column("objects", "arrived_at")
    op.drop_column("objects", "created_at")
