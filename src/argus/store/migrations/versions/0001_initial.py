"""Users, tokens, tasks, attempts and task events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("disabled_at", sa.Float),
    )
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "tasks",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(128), nullable=False, unique=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("workload", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("jobspec_yaml", sa.Text, nullable=False),
        sa.Column("nnodes", sa.Integer, nullable=False),
        sa.Column("n_gpus_per_node", sa.Integer, nullable=False),
        sa.Column("driver_gpus", sa.Float, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failure_cause", sa.String(32)),
        sa.Column("error_summary", sa.Text),
        sa.Column("pending_reason", sa.Text),
        sa.Column("next_run_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
    )
    op.create_index("ix_tasks_user_seq", "tasks", ["user_id", "seq"])
    op.create_index("ix_tasks_state_seq", "tasks", ["state", "seq"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(128), sa.ForeignKey("tasks.task_id"), nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("ray_submission_id", sa.String(160), nullable=False, unique=True),
        sa.Column("ray_status", sa.String(16)),
        sa.Column("failure_kind", sa.String(32)),
        sa.Column("message", sa.Text),
        sa.Column("job_root", sa.Text, nullable=False),
        sa.Column("placement", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("submitted_at", sa.Float),
        sa.Column("start_time", sa.Float),
        sa.Column("end_time", sa.Float),
        sa.Column("log_archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("task_id", "attempt_no", name="uq_attempts_task_no"),
    )
    op.create_table(
        "task_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("attempt_no", sa.Integer),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_task_events_task_id", "task_events", ["task_id"])


def downgrade() -> None:
    for name in ("task_events", "attempts", "tasks", "tokens", "users"):
        op.drop_table(name)
