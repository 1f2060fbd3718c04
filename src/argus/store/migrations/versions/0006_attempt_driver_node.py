"""Attempts: the node Ray ran the driver on (its Ray node id, IP and Argus node name).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("driver_node_id", sa.String(64)))
        batch.add_column(sa.Column("driver_node_ip", sa.String(64)))
        batch.add_column(sa.Column("driver_node_name", sa.String(63)))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for name in ("driver_node_name", "driver_node_ip", "driver_node_id"):
            batch.drop_column(name)
