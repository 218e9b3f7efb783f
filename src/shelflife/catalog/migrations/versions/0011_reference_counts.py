"""References marked by merge leave no copy in the catalog: a snapshot then keeps, per
tier, how many objects (and bytes) the references named, for stats and /metrics.

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


def downgrade() -> None:
    op.drop_column("ref_snapshots", "counts")
