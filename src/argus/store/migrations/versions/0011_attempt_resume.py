"""Attempts: the earlier attempt's checkpoint a retried attempt resumed from.

`resumed_from_step` is the step of that checkpoint and `resumed_from` its `global_step_N`
directory (`argus.scheduler.resume`); both null for an attempt that started from scratch, as
every existing attempt did.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("resumed_from_step", sa.Integer))
        batch.add_column(sa.Column("resumed_from", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for name in ("resumed_from", "resumed_from_step"):
            batch.drop_column(name)
