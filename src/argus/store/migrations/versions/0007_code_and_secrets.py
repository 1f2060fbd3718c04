"""Code snapshots, the snapshots each task reads, and users' encrypted secrets.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "code_snapshots",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_code_snapshots_user_name", "code_snapshots", ["user_id", "name"])
    op.create_table(
        "task_code",
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("via_code", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_task_code_user_sha", "task_code", ["user_id", "sha256"])
    op.create_table(
        "secrets",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    op.drop_index("ix_task_code_user_sha", "task_code")
    op.drop_table("task_code")
    op.drop_index("ix_code_snapshots_user_name", "code_snapshots")
    op.drop_table("code_snapshots")
