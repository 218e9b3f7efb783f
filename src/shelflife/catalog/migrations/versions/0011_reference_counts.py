"""References marked by merge leave no copy in the catalog: a snapshot then keeps, per
tier, how many objects (and bytes) the references named, for stats and /metrics.

And ``ix_objects_tier_created`` goes: ages count from ``coalesce(created_at,
modified_at)``, which that index cannot serve, while every inventory write paid for it.

Revision ID: 0011_reference_counts
Revises: 0010_ages
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_reference_counts"
down_revision = "0010_ages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JSON {tier: [objects, bytes]}; NULL for a snapshot whose references are in `refs`
    op.add_column("ref_snapshots", sa.Column("counts", sa.Text))
    op.drop_index("ix_objects_tier_created", table_name="objects")


def downgrade() -> None:
    op.create_index("ix_objects_tier_created", "objects", ["tier", "created_at"], unique=False)
    op.drop_column("ref_snapshots", "counts")
