"""Rows to API bodies (docs/api.md): ISO times, the seeds' field names.

A task's `jobspec_yaml` is shown with its `env_vars` values redacted (argus.spec.redact); the
database keeps the text verbatim.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from argus.spec.redact import redact_spec_text


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def resources(row: dict[str, Any]) -> dict[str, Any]:
    n, g = row["nnodes"], row["n_gpus_per_node"]
    return {"nnodes": n, "n_gpus_per_node": g, "total_gpus": n * g, "pool": row.get("pool")}


def attempt_view(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt_no": a["attempt_no"],
        "ray_submission_id": a["ray_submission_id"],
        "ray_status": a["ray_status"],
        "failure_kind": a["failure_kind"],
        "message": a["message"],
        "start_time": iso(a["start_time"]),
        "end_time": iso(a["end_time"]),
        "job_root": a["job_root"],
        "created_at": iso(a["created_at"]),
        "submitted_at": iso(a["submitted_at"]),
    }


def pending_reason(row: dict[str, Any]) -> str | None:
    """`Code: detail`, Slurm-like (Resources, Priority, QuotaUser, MaxRunning, BeginTime)."""
    if row.get("pending_reason") is None:
        return None
    code = row.get("pending_code")
    return f"{code}: {row['pending_reason']}" if code else row["pending_reason"]


def task_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": row["task_id"],
        "user_id": row["user_id"],
        "workload": row["workload"],
        "state": row["state"],
        "failure_cause": row["failure_cause"],
        "pending_reason": pending_reason(row),
        "priority": row["priority"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "desired_resources": resources(row),
        "attempts": row["attempts"],
    }


def task_detail(row: dict[str, Any], latest: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "task_id": row["task_id"],
        "user_id": row["user_id"],
        "workload": row["workload"],
        "state": row["state"],
        "desired_resources": resources(row),
        "latest_attempt": attempt_view(latest) if latest else None,
        "error_summary": row["error_summary"],
        "failure_cause": row["failure_cause"],
        "pending_reason": pending_reason(row),
        "pending_code": row["pending_code"],
        "estimated_start": iso(row["estimated_start"]),
        "next_run_at": iso(row["next_run_at"]),
        "priority": row["priority"],
        "time_limit_s": row["time_limit_s"],
        "attempts": row["attempts"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "ended_at": iso(row["ended_at"]),
        "jobspec_yaml": redact_spec_text(row["jobspec_yaml"]),
    }


def user_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": row["user_id"], "state": row["state"], "created_at": iso(row["created_at"])}
