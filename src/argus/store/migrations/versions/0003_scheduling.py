"""Scheduling: a task's priority and time limit, and why it waits (code, estimated start).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="500"))
        batch.add_column(sa.Column("time_limit_s", sa.Float, nullable=False, server_default="86400"))
        batch.add_column(sa.Column("pending_code", sa.String(16)))
        batch.add_column(sa.Column("estimated_start", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name in ("estimated_start", "pending_code", "time_limit_s", "priority"):
            batch.drop_column(name)
