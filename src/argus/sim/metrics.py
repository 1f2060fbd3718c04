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
    """What happened to one job: when it started and ended, and where its GPUs were."""

    job: TraceJob
    start: float
    end: float
    gpus_by_node: dict[str, float]
    killed: bool  # ran into its time limit

    @property
    def wait(self) -> float:
        return self.start - self.job.submitted_at

    @property
    def run(self) -> float:
        return self.end - self.start

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
    jobs with the most GPUs.

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
    )
