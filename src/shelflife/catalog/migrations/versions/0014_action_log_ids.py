"""The action log's ids never restart on SQLite: its table is made AUTOINCREMENT.

Without it SQLite gives a new row the largest id in the table plus one, so a log pruned
empty (a quiet ``keep`` period) would start again at 1, below the cursor every exporter
and poller holds. PostgreSQL's sequence never goes back; nothing changes there.

Revision ID: 0014_action_log_ids
Revises: 0013_rate_limits
"""

from __future__ import annotations

from alembic import op

revision = "0014_action_log_ids"
down_revision = "0013_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # the table is copied into one declared AUTOINCREMENT, ids and indexes kept (the
    # copy's ids start sqlite_sequence at the largest)
    with op.batch_alter_table(
        "action_log", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "action_log", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
