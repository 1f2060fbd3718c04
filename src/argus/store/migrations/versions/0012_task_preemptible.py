"""Tasks: whether the scheduler may stop a task for a waiting task of higher priority.

`preemptible` is the TaskSpec's field (`argus.scheduler.preempt`); false for every existing
task, as it is by default.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        # A literal default: SQLite then adds the column in place (an expression would make the
        # batch copy the table, which the attempts' foreign key refuses).
        batch.add_column(sa.Column("preemptible", sa.Boolean, nullable=False, server_default="0"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite >= 3.35): a batch would copy `tasks`, which the attempts refuse.
        op.execute("ALTER TABLE tasks DROP COLUMN preemptible")
        return
    op.drop_column("tasks", "preemptible")
