"""Attempts: GPU utilisation and memory while they ran, where Ray reports them.

`gpu_util_sum` / `gpu_util_samples` give the mean utilisation (percent) of the samples taken
(`argus.scheduler.gpu_sampler`); `gpu_mem_peak_bytes` is the most memory seen in use on one GPU
(null: never reported). Existing attempts get no samples.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("gpu_util_sum", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("gpu_util_samples", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("gpu_mem_peak_bytes", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for name in ("gpu_mem_peak_bytes", "gpu_util_samples", "gpu_util_sum"):
            batch.drop_column(name)
