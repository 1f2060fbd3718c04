"""Index waiting tasks by when they are due, so the scheduler's pass stays cheap with many waiting.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_state_next_run", "tasks", ["state", "next_run_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_state_next_run", "tasks")
