"""The trace simulator: a discrete-event replay of a trace through `argus.domain.scheduling.plan`.

Owns the fake cluster (N identical nodes of G GPUs), the fake clock (a heap of arrival and end
events), the fair-share usage the `default` policy reads, and the metrics of a replay. The
policy is the live scheduler's, called unchanged: after every batch of events that share a
timestamp, one `plan(...)` pass decides which waiting jobs start and where.

Model:
- a job with num_gpu <= G is one bundle of num_gpu GPUs on one node; a larger job takes
  ceil(num_gpu / G) whole nodes of G GPUs; a job larger than the cluster is rejected up front;
- the policy sees time_limit_s = duration x factor; a job ends at start + min(duration, limit)
  (a job longer than its limit is killed at the limit), and the policy is told it ends by
  start + limit;
- fair share (`default` only): per-user GPU-hours, decayed exponentially (7-day half-life by
  default), brought up to date at event times; all priorities are 500.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from argus.domain.scheduling import POLICIES, Job, RunningJob, plan
from argus.sim.trace import TraceError, TraceJob

HALF_LIFE_S = 7 * 86400.0
BSLD_BOUND_S = 10.0
PRIORITY = 500
_END, _ARRIVE = 0, 1
_NODES = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class SimulationError(RuntimeError):
    """The policy did something the cluster cannot do (a bad placement, jobs left forever)."""


@dataclass(frozen=True)
class ClusterShape:
    """N identical nodes of G GPUs each, named n000, n001, ..."""

    nodes: int
    gpus_per_node: int

    @classmethod
    def parse(cls, text: str) -> ClusterShape:
        """Read `NxG`, e.g. `16x8` (16 nodes of 8 GPUs).

        Args:
            text: the --nodes value.

        Returns:
            The shape.

        Raises:
            TraceError: not of the form NxG with N and G at least 1.
        """
        m = _NODES.match(text)
        if not m:
            raise TraceError(f"--nodes {text!r}: expected NxG, e.g. 16x8 (16 nodes of 8 GPUs each)")
        nodes, gpus = int(m.group(1)), int(m.group(2))
        if nodes < 1 or gpus < 1:
            raise TraceError(f"--nodes {text!r}: the node count and the GPUs per node must be at least 1")
        return cls(nodes, gpus)

    def __str__(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}"

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def node_names(self) -> list[str]:
        width = max(3, len(str(self.nodes - 1)))
        return [f"n{i:0{width}d}" for i in range(self.nodes)]

    def gang(self, num_gpu: int) -> tuple[int, int] | None:
        """The gang a job of `num_gpu` GPUs asks for: (nnodes, gpus per node), or None when it
        can never fit on this cluster."""
        if num_gpu <= self.gpus_per_node:
            return 1, num_gpu
        nnodes = -(-num_gpu // self.gpus_per_node)
        return (nnodes, self.gpus_per_node) if nnodes <= self.nodes else None


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


@dataclass
class SimResult:
    """A replay: its inputs, every job's record, the metrics and what the policy cost."""

    policy: str
    shape: ClusterShape
    time_limit_factor: float
    records: list[JobRecord]
    rejected: list[TraceJob]
    metrics: Metrics
    passes: int = 0
    plan_seconds: float = 0.0
    max_queue: int = 0
    avg_queue: float = 0.0
    sim_seconds: float = 0.0

    def to_json(self) -> dict:
        """One flat JSON-able object: the metrics, the inputs and the cost of the replay."""
        out: dict = {
            "policy": self.policy,
            "nodes": str(self.shape),
            "total_gpus": self.shape.total_gpus,
            "time_limit_factor": self.time_limit_factor,
        }
        out.update(vars(self.metrics))
        out.update(
            passes=self.passes,
            plan_seconds=round(self.plan_seconds, 3),
            max_queue=self.max_queue,
            avg_queue=round(self.avg_queue, 1),
            sim_seconds=round(self.sim_seconds, 3),
        )
        return out


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
        return Metrics(len(rejected), 0, len(rejected), 0, *([0.0] * 9), 0, 0.0, 0.0, 0.0)
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


class FairShare:
    """Per-user GPU-hours, decayed with a half-life, accrued by the jobs running between events.

    `advance(now)` brings `hours` up to `now`, exactly for GPUs held at a constant rate since
    the last call; `hold(user, gpus)` changes what a user holds from then on (negative: release).
    """

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.hours: dict[str, float] = {}
        self.rate: dict[str, float] = {}  # GPUs each user holds now
        self.at = 0.0

    def advance(self, now: float) -> None:
        """Decay and accrue every user's GPU-hours up to `now`."""
        dt = now - self.at
        self.at = now
        if dt <= 0:
            return
        d = 2.0 ** (-dt / self.half_life_s)
        # GPUs held at a constant rate over dt, each GPU-hour decayed from when it was used.
        accrued = (1.0 - d) * self.half_life_s / math.log(2) / 3600.0
        for user in self.hours:
            self.hours[user] = self.hours[user] * d + self.rate.get(user, 0.0) * accrued

    def hold(self, user: str, gpus: float) -> None:
        """From now on `user` holds `gpus` more GPUs (fewer when negative)."""
        self.rate[user] = self.rate.get(user, 0.0) + gpus
        self.hours.setdefault(user, 0.0)


def simulate(
    jobs: Sequence[TraceJob],
    shape: ClusterShape,
    policy: str = "default",
    time_limit_factor: float = 2.0,
    half_life_s: float = HALF_LIFE_S,
) -> SimResult:
    """Replay `jobs` on `shape` through the scheduling policy.

    Args:
        jobs: the trace (any order).
        shape: the fake cluster.
        policy: fifo, easy or default.
        time_limit_factor: each job's time limit is its duration times this (> 0).
        half_life_s: the half-life of the fair-share usage (`default` only).

    Returns:
        Every finished job's record, the rejected jobs, the metrics and the policy's cost.

    Raises:
        TraceError: an unknown policy, a factor that is not positive, or repeated job ids.
        SimulationError: the policy over-committed a node, placed a job in a shape other than
            its gang, started a job that was not waiting, or left jobs waiting forever.
    """
    if policy not in POLICIES:
        raise TraceError(f"--policy {policy!r}: unknown; one of {', '.join(POLICIES)}")
    if not time_limit_factor > 0 or math.isinf(time_limit_factor):
        raise TraceError(f"--time-limit-factor {time_limit_factor!r}: must be a positive number")
    t0 = time.perf_counter()
    free = {n: float(shape.gpus_per_node) for n in shape.node_names()}
    pending: list[Job | None] = []
    rejected: list[TraceJob] = []
    heap: list[tuple[float, int, int]] = []
    for i, tj in enumerate(jobs):
        gang = shape.gang(tj.num_gpu)
        if gang is None:
            rejected.append(tj)
            pending.append(None)
            continue
        pending.append(
            Job(
                id=tj.id,
                user=tj.user,
                nnodes=gang[0],
                gpus_per_node=float(gang[1]),
                submitted_at=tj.submitted_at,
                time_limit_s=tj.duration_s * time_limit_factor,
                priority=PRIORITY,
            )
        )
        heap.append((tj.submitted_at, _ARRIVE, i))
    heapq.heapify(heap)
    index = {tj.id: i for i, tj in enumerate(jobs)}
    if len(index) != len(jobs):
        raise TraceError("job ids repeat: every job of a trace needs an id of its own")
    queue: dict[str, Job] = {}
    running: dict[str, RunningJob] = {}
    started: dict[str, float] = {}
    records: list[JobRecord] = []
    usage = FairShare(half_life_s) if policy == "default" else None
    if usage is not None and heap:
        usage.at = heap[0][0]
    passes, plan_s, max_q, sum_q = 0, 0.0, 0, 0
    kept: str | None = None  # the job the last pass reserved

    while heap:
        now = heap[0][0]
        if usage is not None:
            usage.advance(now)
        while heap and heap[0][0] == now:
            _, kind, i = heapq.heappop(heap)
            tj = jobs[i]
            if kind == _ARRIVE:
                queue[tj.id] = pending[i]
                continue
            r = running.pop(tj.id)
            for node, g in r.gpus_by_node.items():
                free[node] += g
            if usage is not None:
                usage.hold(tj.user, -r.gpus)
            start = started.pop(tj.id)
            limit = pending[i].time_limit_s
            records.append(JobRecord(tj, start, now, dict(r.gpus_by_node), tj.duration_s > limit))
        if not queue:
            continue
        waiting = list(queue.values())
        kept = kept if kept in queue else None
        max_q, sum_q, passes = max(max_q, len(waiting)), sum_q + len(waiting), passes + 1
        p0 = time.perf_counter()
        decision = plan(
            now,
            waiting,
            list(running.values()),
            free,
            policy,
            usage=usage.hours if usage is not None else None,
            explain=False,
            keep=kept,
        )
        kept = decision.reserved[0] if decision.reserved else None  # as the live loop does
        plan_s += time.perf_counter() - p0
        for job, placement in decision.start:
            _start(job, placement.gpus_by_node, now, queue, free, running, started)
            i = index[job.id]
            end = now + min(jobs[i].duration_s, job.time_limit_s)
            heapq.heappush(heap, (end, _END, i))
            if usage is not None:
                usage.hold(job.user, job.gpus)
    if queue:
        raise SimulationError(
            f"{len(queue)} job(s) still wait with nothing running, e.g. "
            f"{next(iter(queue))}: the policy never started them"
        )
    records.sort(key=lambda r: (r.job.submitted_at, r.start))
    return SimResult(
        policy=policy,
        shape=shape,
        time_limit_factor=time_limit_factor,
        records=records,
        rejected=rejected,
        metrics=measure(records, rejected, shape),
        passes=passes,
        plan_seconds=plan_s,
        max_queue=max_q,
        avg_queue=sum_q / passes if passes else 0.0,
        sim_seconds=time.perf_counter() - t0,
    )


def _start(
    job: Job,
    by_node: dict[str, float],
    now: float,
    queue: dict[str, Job],
    free: dict[str, float],
    running: dict[str, RunningJob],
    started: dict[str, float],
) -> None:
    """Take `job` out of the queue onto its nodes, checking the placement against the cluster."""
    if queue.pop(job.id, None) is None:
        raise SimulationError(f"at t={now:g} the policy started {job.id}, which is not waiting")
    if len(by_node) != job.nnodes or any(g != job.gpus_per_node for g in by_node.values()):
        raise SimulationError(
            f"at t={now:g} {job.id} (gang {job.nnodes}x{job.gpus_per_node:g}) was placed as {by_node}"
        )
    for node, g in by_node.items():
        if free.get(node, -1.0) < g:
            raise SimulationError(
                f"at t={now:g} {job.id} takes {g:g} GPU(s) on {node}, which has {free.get(node, 0.0):g} free"
            )
    for node, g in by_node.items():
        free[node] -= g
    gpus = dict(by_node)
    running[job.id] = RunningJob(job.id, job.user, gpus, now + job.time_limit_s)
    started[job.id] = now
