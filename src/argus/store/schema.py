"""The tables (SQLAlchemy Core): users, tokens, tasks, attempts, task_events, nodes, node_events,
code_snapshots, task_code, secrets, gpu_ledger and ui_sessions.

Times are seconds since the epoch (UTC) as floats, so SQLite and PostgreSQL sort and compare
them the same way. `tasks.seq` is the insertion order (FIFO and the list cursor). The migrations
in `argus/store/migrations/versions/` create exactly these tables; change both together.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.user_id"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
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
    sa.Column("priority", sa.Integer, nullable=False, server_default="500"),
    sa.Column("time_limit_s", sa.Float, nullable=False, server_default="86400"),
    sa.Column("pending_code", sa.String(16)),
    sa.Column("estimated_start", sa.Float),
    sa.Column("pool", sa.String(64)),
    # It may be stopped for a waiting task of higher priority (`argus.scheduler.preempt`).
    sa.Column("preemptible", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_tasks_user_seq", "user_id", "seq"),
    sa.Index("ix_tasks_state_seq", "state", "seq"),
    sa.Index("ix_tasks_state_next_run", "state", "next_run_at"),
)

attempts = sa.Table(
    "attempts",
    metadata,
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
    # The node Ray ran the driver on, as Ray reports it; the name is its `argus.io/node` label.
    sa.Column("driver_node_id", sa.String(64)),
    sa.Column("driver_node_ip", sa.String(64)),
    sa.Column("driver_node_name", sa.String(63)),
    # GPU figures while it ran, where Ray reports them (`argus.scheduler.gpu_sampler`): the sum
    # and count of the sampled mean utilisations (percent), the most memory seen on one GPU.
    sa.Column("gpu_util_sum", sa.Float, nullable=False, server_default="0"),
    sa.Column("gpu_util_samples", sa.Integer, nullable=False, server_default="0"),
    sa.Column("gpu_mem_peak_bytes", sa.Float),
    # The earlier attempt's checkpoint it resumed from (`argus.scheduler.resume`); null: none.
    sa.Column("resumed_from_step", sa.Integer),
    sa.Column("resumed_from", sa.Text),
    sa.UniqueConstraint("task_id", "attempt_no", name="uq_attempts_task_no"),
)

task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(128), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_state", sa.String(32)),
    sa.Column("to_state", sa.String(32), nullable=False),
    sa.Column("attempt_no", sa.Integer),
    sa.Column("reason", sa.Text),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("ssh_user", sa.String(64), nullable=False),
    sa.Column("key_ref", sa.String(255), nullable=False),
    sa.Column("labels", sa.Text, nullable=False, server_default="{}"),
    sa.Column("gpus", sa.Integer),
    sa.Column("cpus", sa.Integer),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("agent_pid", sa.Integer),
    sa.Column("agent_started_at", sa.Float),
    sa.Column("ray_node_id", sa.String(64)),
    sa.Column("offline_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

node_events = sa.Table(
    "node_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(63), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_state", sa.String(16)),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
)

# Code snapshots (issue 12): one row per (user, content hash); the files live, read-only, in
# `<shared_root>/users/<user>/code/<sha256>/`. A name may be pushed many times: each push of
# changed content is a new row, and the name then means the newest.
code_snapshots = sa.Table(
    "code_snapshots",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_code_snapshots_user_name", "user_id", "name"),
)

# Which snapshots a task reads (its code_path, reward file, data or model under one), recorded
# at accept; `via_code` marks the snapshot a TaskSpec's `code:` shorthand was pinned to.
task_code = sa.Table(
    "task_code",
    metadata,
    sa.Column("task_id", sa.String(128), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("via_code", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_task_code_user_sha", "user_id", "sha256"),
)

# A user's named secrets, encrypted at rest (Fernet, key from the server's environment).
secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# The GPU-hour ledger (issue 13): append-only (migration 0008 adds triggers that refuse UPDATE
# and DELETE on SQLite and PostgreSQL). A `start` row when an attempt is admitted, an `end` row
# when its task leaves SUBMITTED/RUNNING, each in the transaction of that change
# (`argus.store.ledger`). `nodes` (the placement, JSON) and `accepted_at` are on start rows only.
gpu_ledger = sa.Table(
    "gpu_ledger",
    metadata,
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
    sa.Index("ix_gpu_ledger_task", "task_id", "attempt_no", "kind", unique=True),
    sa.Index("ix_gpu_ledger_kind_at", "kind", "at"),
    sa.Index("ix_gpu_ledger_user_kind_at", "user_id", "kind", "at"),
)

# Console sessions (`/ui`): the SHA-256 of the id a browser's signed cookie carries; good until
# `expires_at` unless revoked (logout, the user disabled).
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("token_fp", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Index("ix_ui_sessions_user", "user_id"),
    sa.Index("ix_ui_sessions_expires", "expires_at"),
)
