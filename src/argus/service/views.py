"""Task records to API bodies (docs/api.md): ISO times, the seeds' field names.

Takes the store's records (`argus.domain.records`), never rows. A task's `jobspec_yaml` is shown
with its `env_vars` values redacted (argus.spec.redact); the database keeps the text verbatim.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from argus.domain.records import Attempt, Task
from argus.domain.usage import TaskFigures
from argus.spec.redact import redact_spec_text


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def resources(task: Task) -> dict[str, Any]:
    n, g = task.nnodes, task.n_gpus_per_node
    return {"nnodes": n, "n_gpus_per_node": g, "total_gpus": n * g, "pool": task.pool}


def attempt_view(a: Attempt) -> dict[str, Any]:
    """One attempt; `driver_node_*` is the node Ray ran its driver on (a worker), once Ray says;
    `gpu_util_mean` and `gpu_mem_peak_bytes` its nodes' GPU figures while it ran, where Ray
    reported them (else null); `resumed_from_step` / `resumed_from` the earlier attempt's
    checkpoint it resumed from (null: it started from scratch)."""
    util = a.gpu_util_mean
    return {
        "attempt_no": a.attempt_no,
        "ray_submission_id": a.ray_submission_id,
        "ray_status": a.ray_status,
        "failure_kind": a.failure_kind,
        "message": a.message,
        "start_time": iso(a.start_time),
        "end_time": iso(a.end_time),
        "job_root": a.job_root,
        "created_at": iso(a.created_at),
        "submitted_at": iso(a.submitted_at),
        "driver_node_id": a.driver_node_id,
        "driver_node_ip": a.driver_node_ip,
        "driver_node_name": a.driver_node_name,
        "gpu_util_mean": None if util is None else round(util, 2),
        "gpu_mem_peak_bytes": None if a.gpu_mem_peak_bytes is None else int(a.gpu_mem_peak_bytes),
        "resumed_from_step": a.resumed_from_step,
        "resumed_from": a.resumed_from,
    }


def pending_reason(task: Task) -> str | None:
    """`Code: detail`, Slurm-like (Resources, Priority, QuotaUser, MaxRunning, BeginTime)."""
    if task.pending_reason is None:
        return None
    code = task.pending_code
    return f"{code}: {task.pending_reason}" if code else task.pending_reason


def task_summary(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "user_id": task.user_id,
        "workload": task.workload,
        "state": task.state.value,
        "failure_cause": task.failure_cause,
        "pending_reason": pending_reason(task),
        "priority": task.priority,
        "preemptible": task.preemptible,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "desired_resources": resources(task),
        "attempts": task.attempts,
    }


def figures_view(figures: TaskFigures) -> dict[str, Any]:
    """A task's GPU-hour ledger figures so far (`argus.store.ledger.LedgerStore.task_figures`)."""
    wait = None if figures.wait_s is None else round(figures.wait_s, 3)
    return {"gpu_seconds": round(figures.gpu_seconds, 3), "wait_s": wait, "run_s": round(figures.run_s, 3)}


def task_detail(task: Task, latest: Attempt | None, spec_text: str, figures: TaskFigures) -> dict[str, Any]:
    """The task with its latest attempt, its ledger figures (GPU-seconds, wait and run time so
    far) and its TaskSpec text (`env_vars` values redacted)."""
    return {
        "task_id": task.task_id,
        "user_id": task.user_id,
        "workload": task.workload,
        "state": task.state.value,
        "desired_resources": resources(task),
        "latest_attempt": attempt_view(latest) if latest else None,
        "error_summary": task.error_summary,
        "failure_cause": task.failure_cause,
        "pending_reason": pending_reason(task),
        "pending_code": task.pending_code,
        "estimated_start": iso(task.estimated_start),
        "next_run_at": iso(task.next_run_at),
        "priority": task.priority,
        "preemptible": task.preemptible,
        "time_limit_s": task.time_limit_s,
        "attempts": task.attempts,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "ended_at": iso(task.ended_at),
        **figures_view(figures),
        "jobspec_yaml": redact_spec_text(spec_text),
    }
