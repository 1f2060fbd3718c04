"""A replay's GPU-hours per user, by the GPU-hour ledger's own arithmetic (pure).

Owns how a replay's `JobRecord`s become `argus.domain.usage.Allocation`s (one per job: its user,
the GPUs of its placement, its start and end; accepted at its submission) and the per-user
report of a replay: `argus.domain.usage.report(by="user")` over the whole replay, the window
from the first start to the last end, so that `argus simulate` and `argus usage` compute their
figures with the same code. A replay's jobs run once (attempt 1) and have no pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from argus.domain.usage import Allocation, UsageRow, report
from argus.sim.metrics import JobRecord

WORKLOAD = "trace"


def allocations(records: Iterable[JobRecord]) -> list[Allocation]:
    """One allocation per job record: the GPUs it held (its placement's) from start to end."""
    return [
        Allocation(
            user=r.job.user,
            task_id=r.job.id,
            attempt_no=1,
            pool=None,
            workload=WORKLOAD,
            gpus=float(sum(r.gpus_by_node.values())),
            nodes=dict(r.gpus_by_node),
            start=r.start,
            end=r.end,
            accepted_at=r.job.submitted_at,
        )
        for r in records
    ]


def per_user(records: Sequence[JobRecord]) -> list[UsageRow]:
    """The replay's usage per user (sorted by user): GPU-seconds, jobs, mean wait, run time."""
    if not records:
        return []
    lo, hi = min(r.start for r in records), max(r.end for r in records)
    return report(allocations(records), lo, hi + 1.0, hi, "user")


def rows_json(rows: Sequence[UsageRow]) -> list[dict[str, Any]]:
    """The rows as JSON: `{"user", "gpu_hours", "gpu_seconds", "jobs", "wait_s", "run_s"}`."""
    return [
        {
            "user": r.key,
            "gpu_hours": round(r.gpu_hours, 6),
            "gpu_seconds": round(r.gpu_seconds, 3),
            "jobs": r.tasks,
            "wait_s": None if r.wait_s is None else round(r.wait_s, 3),
            "run_s": round(r.run_s, 3),
        }
        for r in rows
    ]
