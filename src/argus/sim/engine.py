"""The trace simulator: a discrete-event replay of a trace through `argus.domain.scheduling.plan`.

Owns the fake cluster (N identical nodes of G GPUs), the fake clock (a heap of arrival and end
events) and the fair-share usage the `default` policy reads; the metrics of a replay are
`argus.sim.metrics`'. The policy is the live scheduler's, called unchanged: after every batch
of events that share a timestamp, one `plan(...)` pass decides which waiting jobs start and
where.

Model:
- a job with num_gpu <= G is one bundle of num_gpu GPUs on one node; a larger job takes
  ceil(num_gpu / G) whole nodes of G GPUs; a job larger than the cluster is rejected up front;
- the policy sees time_limit_s = duration x factor (one factor for all jobs, or one per job); a
  job ends at start + min(duration, limit) (a job longer than its limit is killed at the
  limit), and the policy is told it ends by start + limit;
- fair share (`default` only): per-user decayed GPU-hours by the live scheduler's formula
  (`argus.domain.fairshare`, 7-day half-life by default), valued at every pass; without a
  preemption model, all priorities are 500;
- preemption (optional, `argus.sim.preempt`): seeded high priorities, checkpoints and lost work;
  after a pass whose plan has a blocked head, the live choice of victims stops lower-priority
  jobs, which are requeued, and another pass at the same time starts the head.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from argus.domain.fairshare import Usage, decayed_gpu_hours, horizon_start
from argus.domain.scheduling import POLICIES, Job, RunningJob, plan
from argus.sim.metrics import JobRecord, Metrics, measure
from argus.sim.preempt import PreemptionModel, Preemptions
from argus.sim.trace import TraceError, TraceJob

HALF_LIFE_S = 7 * 86400.0
PRIORITY = 500
_END, _ARRIVE, _WAKE = 0, 1, 2  # _WAKE: only a pass (preemption's min-run rule ran out)
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
    preemption: PreemptionModel | None = None

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
        if self.preemption is not None:
            out["preemption"] = asdict(self.preemption)
        return out


class FairShare:
    """Each user's decayed GPU-hours during a replay, by the live scheduler's formula.

    The formula is `argus.domain.fairshare`'s: `hours(now)` equals
    `fair_share(every usage so far, now, half_life_s).decayed` (up to rounding). The jobs that
    run now are valued with `decayed_gpu_hours` at every call; a job that ended is valued once,
    at its end, and its worth then decays by the formula's factor 0.5 ** ((now - end) /
    half_life_s), until it passes the horizon and is dropped as `fair_share` drops it. So a
    call costs O(users + running jobs), not O(history). Times must not decrease between calls.
    """

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.running: dict[str, Usage] = {}  # job id -> its usage so far (end None)
        self._ended: deque[tuple[float, str, float]] = deque()  # (end, user, worth at the end), by end
        self._settled: dict[str, float] = {}  # per user: the worth of the ended usages at `_at`
        self._counted: dict[str, int] = {}  # per user: ended usages in `_settled`
        self._at = -math.inf

    def start(self, key: str, user: str, gpus: float, now: float) -> None:
        """`user`'s job `key` holds `gpus` GPUs from `now`."""
        self.running[key] = Usage(user, gpus, now)

    def end(self, key: str, now: float) -> None:
        """Job `key` released its GPUs at `now`."""
        usage = replace(self.running.pop(key), end=now)
        self._advance(now)
        worth = decayed_gpu_hours(usage, now, self.half_life_s)
        if worth > 0:
            self._ended.append((now, usage.user, worth))
            self._settled[usage.user] = self._settled.get(usage.user, 0.0) + worth
            self._counted[usage.user] = self._counted.get(usage.user, 0) + 1

    def hours(self, now: float) -> dict[str, float]:
        """Per user with any: the decayed GPU-hours at `now`."""
        self._advance(now)
        out = {user: h for user, h in self._settled.items() if h > 0}
        for usage in self.running.values():
            h = decayed_gpu_hours(usage, now, self.half_life_s)
            if h > 0:
                out[usage.user] = out.get(usage.user, 0.0) + h
        return out

    def _advance(self, now: float) -> None:
        """Decay the ended usages' worth to `now` and drop those past the horizon."""
        if now > self._at:
            factor = 0.5 ** ((now - self._at) / self.half_life_s) if self._at > -math.inf else 0.0
            for user in self._settled:
                self._settled[user] *= factor
            self._at = now
        horizon = horizon_start(now, self.half_life_s)
        while self._ended and self._ended[0][0] <= horizon:
            end, user, worth = self._ended.popleft()
            self._counted[user] -= 1
            if self._counted[user] == 0:
                del self._counted[user], self._settled[user]
            else:
                left = self._settled[user] - worth * 0.5 ** ((now - end) / self.half_life_s)
                self._settled[user] = max(0.0, left)


def simulate(
    jobs: Sequence[TraceJob],
    shape: ClusterShape,
    policy: str = "default",
    time_limit_factor: float = 2.0,
    half_life_s: float = HALF_LIFE_S,
    limit_factors: Mapping[str, float] | None = None,
    preemption: PreemptionModel | None = None,
) -> SimResult:
    """Replay `jobs` on `shape` through the scheduling policy.

    Args:
        jobs: the trace (any order).
        shape: the fake cluster.
        policy: fifo, easy or default.
        time_limit_factor: each job's time limit is its duration times this (> 0).
        half_life_s: the half-life of the fair-share usage (`default` only).
        limit_factors: per job id, its own factor in place of `time_limit_factor` (jobs not
            named keep `time_limit_factor`).
        preemption: priorities, checkpoints and (if its `preempt`) preemption; None: every job
            has priority 500 and runs once.

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
    for job_id, f in (limit_factors or {}).items():
        if not f > 0 or math.isinf(f):
            raise TraceError(f"time-limit factor of {job_id}: {f!r}, must be a positive number")
    t0 = time.perf_counter()
    replay = _Replay(jobs, shape, policy, time_limit_factor, half_life_s, limit_factors or {}, preemption)
    replay.run()
    return replay.result(time.perf_counter() - t0)


class _Replay:
    """One replay's state and its steps: load the trace, then per event time apply the
    arrivals and ends, and plan a pass that starts jobs; finally the result."""

    def __init__(
        self,
        jobs: Sequence[TraceJob],
        shape: ClusterShape,
        policy: str,
        factor: float,
        half_life_s: float,
        factors: Mapping[str, float],
        preemption: PreemptionModel | None = None,
    ) -> None:
        self.trace, self.shape, self.policy, self.factor = jobs, shape, policy, factor
        self.factors = factors
        self.free = {n: float(shape.gpus_per_node) for n in shape.node_names()}
        self.pending: list[Job | None] = []  # by trace index; None: rejected
        self.rejected: list[TraceJob] = []
        self.heap: list[tuple[float, int, int, int]] = []  # (time, _END | _ARRIVE, trace index, generation)
        self.gen: dict[int, int] = {}  # per trace index: its preemptions (a stopped attempt's end is stale)
        self.pre = Preemptions(preemption) if preemption is not None else None
        self.wakes: set[float] = set()  # the _WAKE events pushed
        self.index = {tj.id: i for i, tj in enumerate(jobs)}
        if len(self.index) != len(jobs):
            raise TraceError("job ids repeat: every job of a trace needs an id of its own")
        self.queue: dict[str, Job] = {}
        self.running: dict[str, RunningJob] = {}
        self.started: dict[str, float] = {}
        self.records: list[JobRecord] = []
        self.usage = FairShare(half_life_s) if policy == "default" else None
        self.passes, self.plan_s, self.max_q, self.sum_q = 0, 0.0, 0, 0
        self.kept: str | None = None  # the job the last pass reserved
        self._load()

    def _load(self) -> None:
        """Turn the trace into waiting jobs (rejecting those that never fit) and arrival events."""
        for i, tj in enumerate(self.trace):
            gang = self.shape.gang(tj.num_gpu)
            if gang is None:
                self.rejected.append(tj)
                self.pending.append(None)
                continue
            self.pending.append(
                Job(
                    id=tj.id,
                    user=tj.user,
                    nnodes=gang[0],
                    gpus_per_node=float(gang[1]),
                    submitted_at=tj.submitted_at,
                    time_limit_s=tj.duration_s * self.factors.get(tj.id, self.factor),
                    priority=self.pre.add(tj.id, tj.duration_s) if self.pre is not None else PRIORITY,
                )
            )
            self.heap.append((tj.submitted_at, _ARRIVE, i, 0))
        heapq.heapify(self.heap)

    def run(self) -> None:
        """Replay every event; then no job may be left waiting.

        Raises:
            SimulationError: as `simulate`.
        """
        while self.heap:
            now = self.heap[0][0]
            self._events(now)
            while self.queue and self._pass(now):
                pass  # it preempted: another pass at the same time starts the head
        if self.queue:
            raise SimulationError(
                f"{len(self.queue)} job(s) still wait with nothing running, e.g. "
                f"{next(iter(self.queue))}: the policy never started them"
            )

    def _events(self, now: float) -> None:
        """Apply every arrival and end at `now`: queue the arrivals, free the ends' GPUs."""
        while self.heap and self.heap[0][0] == now:
            _, kind, i, gen = heapq.heappop(self.heap)
            if kind == _WAKE:
                continue
            tj, job = self.trace[i], self.pending[i]
            assert job is not None  # only jobs that fit have events
            if kind == _ARRIVE:
                self.queue[tj.id] = job
                continue
            if gen != self.gen.get(i, 0):
                continue  # the end of an attempt that was preempted
            r = self.running.pop(tj.id)
            for node, g in r.gpus_by_node.items():
                self.free[node] += g
            if self.usage is not None:
                self.usage.end(tj.id, now)
            start = self.started.pop(tj.id)
            if self.pre is not None:
                self.records.append(self.pre.record(tj, now, r.gpus_by_node, job.time_limit_s))
            else:
                self.records.append(JobRecord(tj, start, now, dict(r.gpus_by_node), tj.duration_s > job.time_limit_s))

    def _pass(self, now: float) -> bool:
        """One policy pass over the waiting jobs; start what it starts and schedule their ends;
        with preemption, stop what the blocked head needs.

        Returns:
            Whether it preempted (the caller passes again at `now`).
        """
        waiting = list(self.queue.values())
        kept = self.kept if self.kept in self.queue else None
        self.max_q, self.sum_q, self.passes = max(self.max_q, len(waiting)), self.sum_q + len(waiting), self.passes + 1
        usage = self.usage.hours(now) if self.usage is not None else None
        p0 = time.perf_counter()
        decision = plan(
            now, waiting, list(self.running.values()), self.free, self.policy, usage=usage, explain=False, keep=kept
        )
        self.kept = decision.reserved[0] if decision.reserved else None  # as the live loop does
        self.plan_s += time.perf_counter() - p0
        for job, placement in decision.start:
            self._start(job, placement.gpus_by_node, now)
            i = self.index[job.id]
            work = self.trace[i].duration_s
            if self.pre is not None:
                self.pre.start(job.id, now)
                work = self.pre.remaining(job.id)
            heapq.heappush(self.heap, (now + min(work, job.time_limit_s), _END, i, self.gen.get(i, 0)))
            if self.usage is not None:
                self.usage.start(job.id, job.user, job.gpus, now)
        if self.pre is None or decision.blocked_by is None:
            return False
        head = self.queue[decision.blocked_by]
        victims = self.pre.victims(head, self.running, self.free, now)
        wake = None if victims else self.pre.wake_at(head, self.running, now)
        if wake is not None and wake not in self.wakes:
            self.wakes.add(wake)
            heapq.heappush(self.heap, (wake, _WAKE, -1, 0))
        for victim in victims:
            self._stop(victim, now)
        return bool(victims)

    def _stop(self, job_id: str, now: float) -> None:
        """Preempt running `job_id` at `now`: free its GPUs, count its lost work, requeue it."""
        assert self.pre is not None
        r = self.running.pop(job_id)
        for node, g in r.gpus_by_node.items():
            self.free[node] += g
        if self.usage is not None:
            self.usage.end(job_id, now)
        self.started.pop(job_id)
        self.pre.stop(job_id, r.gpus, now)
        i = self.index[job_id]
        self.gen[i] = self.gen.get(i, 0) + 1
        job = self.pending[i]
        assert job is not None
        self.queue[job_id] = job

    def _start(self, job: Job, by_node: dict[str, float], now: float) -> None:
        """Take `job` out of the queue onto its nodes, checking the placement against the cluster."""
        if self.queue.pop(job.id, None) is None:
            raise SimulationError(f"at t={now:g} the policy started {job.id}, which is not waiting")
        if len(by_node) != job.nnodes or any(g != job.gpus_per_node for g in by_node.values()):
            raise SimulationError(
                f"at t={now:g} {job.id} (gang {job.nnodes}x{job.gpus_per_node:g}) was placed as {by_node}"
            )
        for node, g in by_node.items():
            if self.free.get(node, -1.0) < g:
                raise SimulationError(
                    f"at t={now:g} {job.id} takes {g:g} GPU(s) on {node}, which has {self.free.get(node, 0.0):g} free"
                )
        for node, g in by_node.items():
            self.free[node] -= g
        self.running[job.id] = RunningJob(job.id, job.user, dict(by_node), now + job.time_limit_s)
        self.started[job.id] = now

    def result(self, seconds: float) -> SimResult:
        """The replay's records (by submission, then start), metrics and cost."""
        self.records.sort(key=lambda r: (r.job.submitted_at, r.start))
        return SimResult(
            policy=self.policy,
            shape=self.shape,
            time_limit_factor=self.factor,
            records=self.records,
            rejected=self.rejected,
            metrics=measure(self.records, self.rejected, self.shape),
            passes=self.passes,
            plan_seconds=self.plan_s,
            max_queue=self.max_q,
            avg_queue=self.sum_q / self.passes if self.passes else 0.0,
            sim_seconds=seconds,
            preemption=self.pre.model if self.pre is not None else None,
        )
