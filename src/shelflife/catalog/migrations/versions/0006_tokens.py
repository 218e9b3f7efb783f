"""API tokens (hashes only).

Revision ID: 0006_tokens
Revises: 0005_metrics
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shelflife.catalog.schema import UTCDateTime

revision = "0006_tokens"
down_revision = "0005_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("hash", sa.String(100), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
