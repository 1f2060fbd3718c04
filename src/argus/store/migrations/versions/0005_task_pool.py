"""Pools: the node pool a task runs in (None: any worker node).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("pool", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("pool")
