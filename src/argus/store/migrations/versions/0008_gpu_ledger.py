"""The GPU-hour ledger: an append-only table of allocation starts and ends.

Triggers refuse every UPDATE and DELETE of its rows (and, on PostgreSQL, TRUNCATE). The attempts
that hold GPUs when this runs (their task SUBMITTED or RUNNING) get their start row, written at
the attempt's creation, so that their end is paired; usage before this migration is not recorded.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REFUSED = "gpu_ledger is append-only"
_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER gpu_ledger_no_update BEFORE UPDATE ON gpu_ledger "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE refused'); END",
    f"CREATE TRIGGER gpu_ledger_no_delete BEFORE DELETE ON gpu_ledger "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE refused'); END",
)
_PG_TRIGGERS = (
    "CREATE FUNCTION gpu_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION '{REFUSED}: % refused', TG_OP; END $$",
    "CREATE TRIGGER gpu_ledger_no_change BEFORE UPDATE OR DELETE ON gpu_ledger "
    "FOR EACH ROW EXECUTE FUNCTION gpu_ledger_append_only()",
    "CREATE TRIGGER gpu_ledger_no_truncate BEFORE TRUNCATE ON gpu_ledger "
    "FOR EACH STATEMENT EXECUTE FUNCTION gpu_ledger_append_only()",
)
# The attempts that hold GPUs now: their start row (the task's current attempt).
_BACKFILL = """
INSERT INTO gpu_ledger (at, kind, task_id, attempt_no, user_id, pool, workload, gpus, nodes, accepted_at)
SELECT a.created_at, 'start', t.task_id, a.attempt_no, t.user_id, t.pool, t.workload,
       t.nnodes * t.n_gpus_per_node + t.driver_gpus, a.placement, t.created_at
FROM tasks t JOIN attempts a ON a.task_id = t.task_id AND a.attempt_no = t.attempts
WHERE t.state IN ('SUBMITTED', 'RUNNING')
"""


def upgrade() -> None:
    op.create_table(
        "gpu_ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("pool", sa.String(64)),
        sa.Column("workload", sa.String(16), nullable=False),
        sa.Column("gpus", sa.Float, nullable=False),
        sa.Column("nodes", sa.Text),
        sa.Column("accepted_at", sa.Float),
    )
    op.create_index("ix_gpu_ledger_task", "gpu_ledger", ["task_id", "attempt_no", "kind"], unique=True)
    op.create_index("ix_gpu_ledger_kind_at", "gpu_ledger", ["kind", "at"])
    op.create_index("ix_gpu_ledger_user_kind_at", "gpu_ledger", ["user_id", "kind", "at"])
    op.execute(_BACKFILL)
    for statement in _SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else _PG_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS gpu_ledger_no_update")
        op.execute("DROP TRIGGER IF EXISTS gpu_ledger_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS gpu_ledger_no_truncate ON gpu_ledger")
        op.execute("DROP TRIGGER IF EXISTS gpu_ledger_no_change ON gpu_ledger")
        op.execute("DROP FUNCTION IF EXISTS gpu_ledger_append_only()")
    op.drop_index("ix_gpu_ledger_user_kind_at", "gpu_ledger")
    op.drop_index("ix_gpu_ledger_kind_at", "gpu_ledger")
    op.drop_index("ix_gpu_ledger_task", "gpu_ledger")
    op.drop_table("gpu_ledger")
