"""Request rate limits shared between processes: each rate-limited tier's next free slot.

Revision ID: 0013_rate_limits
Revises: 0012_action_log
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_rate_limits"
down_revision = "0012_action_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("tier", sa.String(64), primary_key=True),
        sa.Column("next_slot_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
