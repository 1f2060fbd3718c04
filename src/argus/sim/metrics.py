"""The figures of a replay: each job's record and the metrics over them (pure).

Owns `JobRecord` (when a job started and ended, and where), `Metrics` and `measure`, which the
simulator (`argus.sim.engine`) fills in at the end of a replay. Times are in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from argus.sim.trace import TraceJob

if TYPE_CHECKING:
    from argus.sim.engine import ClusterShape

BSLD_BOUND_S = 10.0
_NO_TIMES = (0.0,) * 9  # Metrics' nine figures from avg_wait_s to makespan_s, of a replay that ran nothing


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What happened to one job: when it started and ended, and where its GPUs were.

    A job preempted and requeued (`argus.sim.preempt`) has one record: `start` is its first
    start (its wait ends there), `end` its last attempt's end, `gpus_by_node` its last
    attempt's placement, `held_s` the seconds its attempts held their GPUs in all.
    """

    job: TraceJob
    start: float
    end: float
    gpus_by_node: dict[str, float]
    killed: bool  # ran into its time limit
    priority: int = 500
    held_s: float | None = None  # None: it ran once, from start to end
    preemptions: int = 0
    lost_gpu_s: float = 0.0  # GPU-seconds of work lost to preemptions (since their last checkpoints)

    @property
    def wait(self) -> float:
        return self.start - self.job.submitted_at

    @property
    def run(self) -> float:
        return self.end - self.start if self.held_s is None else self.held_s

    @property
    def queued(self) -> float:
        """The time it waited in all, its requeues' waits included."""
        return self.wait if self.held_s is None else self.jct - self.held_s

    @property
    def jct(self) -> float:
        return self.end - self.job.submitted_at


@dataclass(frozen=True)
class Metrics:
    """The figures of one replay (times in seconds)."""

    jobs: int
    finished: int
    rejected: int
    killed: int
    avg_wait_s: float
    p50_wait_s: float
    p95_wait_s: float
    p99_wait_s: float
    max_wait_s: float
    avg_jct_s: float
    avg_bsld: float
    utilization: float
    makespan_s: float
    largest_jobs_gpus: int
    largest_jobs_max_wait_s: float
    jct_lower_bound_s: float
    makespan_lower_bound_s: float
    high_priority_jobs: int = 0
    high_priority_avg_wait_s: float = 0.0
    others_avg_wait_s: float = 0.0
    avg_queued_s: float = 0.0
    others_avg_queued_s: float = 0.0
    preemptions: int = 0
    lost_gpu_hours: float = 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, interpolating linearly between ranks.

    Args:
        sorted_values: the values, ascending.
        q: the percentile.

    Returns:
        The percentile, or 0.0 for no values.
    """
    n = len(sorted_values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure(records: Sequence[JobRecord], rejected: Sequence[TraceJob], shape: ClusterShape) -> Metrics:
    """The metrics of a replay.

    Wait = start - submission; JCT = end - submission; bounded slowdown =
    max(1, (wait + run) / max(run, 10 s)); utilisation = GPU-seconds held / (total GPUs x
    makespan), makespan = last end - first submission. Lower bounds: the mean run time (for
    JCT) and GPU-seconds / total GPUs (for the makespan). The largest jobs are the finished
    jobs with the most GPUs. A preempted job's wait ends at its first start and its run time
    is the time its attempts held GPUs (lost work included); `avg_queued_s` (all jobs) and
    `others_avg_queued_s` count its requeues' waits too. High-priority jobs are those above
    priority 500, the others those at 500 or below.

    Args:
        records: the finished jobs.
        rejected: the jobs that could never fit.
        shape: the cluster.

    Returns:
        The metrics (zeros where there is no finished job).
    """
    n = len(records)
    killed = sum(1 for r in records if r.killed)
    if n == 0:
        return Metrics(len(rejected), 0, len(rejected), 0, *_NO_TIMES, 0, 0.0, 0.0, 0.0)
    waits = sorted(r.wait for r in records)
    first = min(r.job.submitted_at for r in records)
    makespan = max(r.end for r in records) - first
    held = sum(sum(r.gpus_by_node.values()) * r.run for r in records)
    asked = sum(r.job.num_gpu * r.run for r in records)
    bsld = sum(max(1.0, r.jct / max(r.run, BSLD_BOUND_S)) for r in records) / n
    biggest = max(r.job.num_gpu for r in records)
    high = [r.wait for r in records if r.priority > 500]
    others = [r for r in records if r.priority <= 500]
    return Metrics(
        jobs=n + len(rejected),
        finished=n,
        rejected=len(rejected),
        killed=killed,
        avg_wait_s=sum(waits) / n,
        p50_wait_s=percentile(waits, 50),
        p95_wait_s=percentile(waits, 95),
        p99_wait_s=percentile(waits, 99),
        max_wait_s=waits[-1],
        avg_jct_s=sum(r.jct for r in records) / n,
        avg_bsld=bsld,
        utilization=held / (shape.total_gpus * makespan) if makespan > 0 else 0.0,
        makespan_s=makespan,
        largest_jobs_gpus=biggest,
        largest_jobs_max_wait_s=max(r.wait for r in records if r.job.num_gpu == biggest),
        jct_lower_bound_s=sum(r.run for r in records) / n,
        makespan_lower_bound_s=asked / shape.total_gpus,
        high_priority_jobs=len(high),
        high_priority_avg_wait_s=sum(high) / len(high) if high else 0.0,
        others_avg_wait_s=sum(r.wait for r in others) / len(others) if others else 0.0,
        avg_queued_s=sum(r.queued for r in records) / n,
        others_avg_queued_s=sum(r.queued for r in others) / len(others) if others else 0.0,
        preemptions=sum(r.preemptions for r in records),
        lost_gpu_hours=sum(r.lost_gpu_s for r in records) / 3600,
    )
