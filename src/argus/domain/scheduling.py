"""The scheduling policy: who starts now, who waits and why (pure; no clock, no I/O).

One function, `plan(...)`, used unchanged by the live scheduler and by the trace simulator.
It takes the waiting jobs, the running ones (with the latest time each can end, from its time
limit), the free GPUs per schedulable node and the users' usage, and returns which jobs start
now (with where their GPUs are counted) and, for every other waiting job, a Slurm-like reason
with its detail and, where the plan knows it, an estimated start.

Policies:

- `fifo`: the seeds' policy. Strictly in submission order; the first job that does not fit
  blocks every job behind it.
- `easy`: submission order with EASY backfill. The first job that does not fit gets a
  reservation: the earliest time at which, by the running jobs' time limits, enough GPUs free up
  for its whole gang, on the nodes where they free up. A later job may start now only if it
  cannot delay that reservation: it ends (by its own limit) before the reserved start, or it
  uses only GPUs the reservation does not need.
- `default`: the order is priority (higher first), then fair share (the user with fewer
  decayed GPU-hours first), then submission time. The head of that order gets the EASY
  reservation, and backfill candidates are tried shortest time limit first.

Invariants: a job starts only when its whole gang fits now (nnodes bundles of gpus_per_node,
each whole on a distinct node, plus its driver's GPUs); the reserved job's start is never
delayed by a backfilled one, as far as time limits bound the running jobs; per-user limits and
max_running are never exceeded by what the plan admits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from argus.domain.admission import Capacity, Demand, Placement

POLICIES = ("fifo", "easy", "default")


class PendingCode(StrEnum):
    RESOURCES = "Resources"
    PRIORITY = "Priority"
    QUOTA_USER = "QuotaUser"
    MAX_RUNNING = "MaxRunning"
    BEGIN_TIME = "BeginTime"


@dataclass(frozen=True, slots=True)
class Job:
    """A waiting job."""

    id: str
    user: str
    nnodes: int
    gpus_per_node: float
    submitted_at: float
    time_limit_s: float
    priority: int = 500
    driver_gpus: float = 0.0
    not_before: float | None = None  # next_run_at: not considered before this time
    pool: str | None = None  # runs only on nodes of this pool

    @property
    def demand(self) -> Demand:
        return Demand(self.nnodes, self.gpus_per_node, self.driver_gpus, self.pool)

    @property
    def gpus(self) -> float:
        return self.nnodes * self.gpus_per_node + self.driver_gpus


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs; it ends at the latest at `ends_by` (start + time limit)."""

    id: str
    user: str
    gpus_by_node: Mapping[str, float]
    ends_by: float

    @property
    def gpus(self) -> float:
        return sum(self.gpus_by_node.values())


@dataclass(frozen=True)
class Limits:
    max_running: int | None = None
    user_max_gpus: float | None = None
    user_gpu_hours_per_day: float | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    code: PendingCode
    detail: str
    estimated_start: float | None = None

    def text(self) -> str:
        return f"{self.code.value}: {self.detail}"


@dataclass
class Plan:
    start: list[tuple[Job, Placement]] = field(default_factory=list)
    waits: dict[str, Wait] = field(default_factory=dict)
    reserved: tuple[str, float] | None = None  # (job id, reserved start)
    blocked_by: str | None = None  # the job that waits for resources at the head of the order


AGE_HORIZON_S = 6 * 3600.0


def _name_for(blocker: Job, job: Job, otherwise: str) -> str:
    """How `job`'s reason names `blocker`: by id when both are the same user's, else as
    `otherwise`, so that no reason shows a user another user's task."""
    return blocker.id if blocker.user == job.user else otherwise


def _would_delay(head: Job, job: Job, shadow: float) -> str:
    return f"would delay {_name_for(head, job, 'a higher-priority task')}, reserved to start by {shadow:.0f}"


def order(
    jobs: Sequence[Job],
    policy: str,
    usage: Mapping[str, float] | None = None,
    now: float | None = None,
    keep: str | None = None,
) -> list[Job]:
    """The queue order of `policy` (see the module docstring).

    For `default`: priority first; among equal priorities the job reserved by the previous pass
    (`keep`) stays first, so a reservation is never taken away by a newcomer; then a score of
    fair share (1 for a user with no usage, halving with each mean user's worth of decayed
    GPU-hours, so between 0 and 1) plus age (1 for every AGE_HORIZON_S waited, times the nodes
    the job needs, without bound), so light users go first among equals, and a job that has
    waited long, the more so a big one, overtakes newer ones whatever its user's usage; then
    submission time.
    """
    if policy != "default":
        return sorted(jobs, key=lambda j: (j.submitted_at, j.id))
    use = usage or {}
    mean = (sum(use.values()) / len(use)) if use else 0.0
    t = now if now is not None else max((j.submitted_at for j in jobs), default=0.0)

    def key(j: Job) -> tuple:
        fair = 0.5 ** (use.get(j.user, 0.0) / mean) if mean > 0 else 1.0
        age = max(0.0, t - j.submitted_at) / AGE_HORIZON_S * j.nnodes
        return (-j.priority, j.id != keep, -(fair + age), j.submitted_at, j.id)

    return sorted(jobs, key=key)


def _reservation(
    job: Job,
    now: float,
    free: Mapping[str, float],
    running: Sequence[RunningJob],
    pools: Mapping[str, str | None],
) -> tuple[float, dict[str, float], Placement] | None:
    """When and where `job` could start at the latest, releasing running jobs by their limits.

    Returns (start, free GPUs per node at that time, the job's placement then), or None when
    it cannot fit even on an empty cluster.
    """
    future = dict(free)
    cap = Capacity(dict(future), pools)
    placement = cap.fit(job.demand)
    if placement is not None:
        return now, future, placement
    for r in sorted(running, key=lambda r: r.ends_by):
        for node, gpus in r.gpus_by_node.items():
            if node in future:
                future[node] += gpus
        placement = Capacity(dict(future), pools).fit(job.demand)
        if placement is not None:
            return max(now, r.ends_by), future, placement
    return None


def _fmt_gpus(g: float) -> str:
    return f"{g:g}"


def plan(
    now: float,
    queue: Sequence[Job],
    running: Sequence[RunningJob],
    free: Mapping[str, float],
    policy: str = "default",
    limits: Limits = Limits(),
    usage: Mapping[str, float] | None = None,
    day_usage: Mapping[str, float] | None = None,
    explain: bool = True,
    keep: str | None = None,
    pools: Mapping[str, str | None] | None = None,
) -> Plan:
    """Decide one scheduling pass.

    Args:
        now: the time of the pass (the caller's clock).
        queue: every waiting job (any order; ordered here).
        running: jobs holding GPUs, with the latest time each ends.
        free: free GPUs per schedulable node.
        policy: fifo, easy or default.
        limits: max running jobs, per-user GPUs at once and GPU-hours per day.
        usage: decayed GPU-hours per user (fair share; `default` only).
        day_usage: GPU-hours per user over the last 24 h (for the daily limit).
        explain: build the waits' details (the simulator turns it off for speed).
        keep: the job the previous pass reserved (`Plan.reserved`), which keeps its place.
        pools: each node's pool (its `pool` label); a job that names a pool fits only on
            nodes of that pool, a job that names none on any node.

    Returns:
        The jobs to start now in order, each with its placement, and a wait for every other job.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    result = Plan()
    pools = pools or {}
    cap = Capacity.of(free, pools)
    jobs = order(queue, policy, usage, now, keep)
    capacity_total = dict(free)  # what each node would have free with nothing running
    for r in running:
        for node, g in r.gpus_by_node.items():
            if node in capacity_total:
                capacity_total[node] += g
    started: list[RunningJob] = []  # this pass's starts, as running jobs for the reservation
    n_running = len(running)
    user_gpus: dict[str, float] = {}
    for r in running:
        user_gpus[r.user] = user_gpus.get(r.user, 0.0) + r.gpus
    day = day_usage or {}
    largest = max(cap.free.values(), default=0.0)
    failed: set[Demand] = set()  # demands that did not fit since capacity last changed
    spare_failed: set[Demand] = set()  # long demands that did not fit in the spare GPUs
    reasons: dict[Demand, str] = {}  # their reasons, for as long

    def why_not(demand: Demand) -> str:
        if not explain:
            return ""
        if demand not in reasons:
            reasons[demand] = cap.why_not(demand)
        return reasons[demand]

    head: Job | None = None  # the reserved job (easy, default) or the blocking one (fifo)
    shadow: float | None = None
    spare: dict[str, float] | None = None  # per node: GPUs the reservation leaves at its start
    blocked_detail = ""

    def wait(job: Job, code: PendingCode, detail: str, est: float | None = None) -> None:
        result.waits[job.id] = Wait(code, detail if explain else "", est)

    candidates = jobs
    backfill_sorted = False
    i = 0
    while i < len(candidates):
        job = candidates[i]
        i += 1
        if job.not_before is not None and job.not_before > now:
            wait(job, PendingCode.BEGIN_TIME, "retrying after a failed start", job.not_before)
            continue
        if limits.max_running is not None and n_running >= limits.max_running:
            wait(job, PendingCode.MAX_RUNNING, f"max_running_tasks ({limits.max_running}) tasks are running")
            continue
        if limits.user_max_gpus is not None and user_gpus.get(job.user, 0.0) + job.gpus > limits.user_max_gpus:
            wait(
                job,
                PendingCode.QUOTA_USER,
                f"user {job.user} holds {_fmt_gpus(user_gpus.get(job.user, 0.0))} GPU(s); "
                f"the limit is {_fmt_gpus(limits.user_max_gpus)}",
            )
            continue
        if limits.user_gpu_hours_per_day is not None and day.get(job.user, 0.0) >= limits.user_gpu_hours_per_day:
            wait(
                job,
                PendingCode.QUOTA_USER,
                f"user {job.user} used {day.get(job.user, 0.0):.1f} GPU-hours in the last 24 h; "
                f"the limit is {limits.user_gpu_hours_per_day:g}",
            )
            continue
        if head is not None and policy == "fifo":
            wait(job, PendingCode.PRIORITY, blocked_detail.format(_name_for(head, job, "an earlier task")))
            continue
        demand = job.demand
        placement = None
        if shadow is not None and now + job.time_limit_s > shadow and demand in spare_failed:
            wait(job, PendingCode.PRIORITY, _would_delay(head, job, shadow))
            continue
        if demand.gpus_per_node <= largest and demand not in failed:
            placement = cap.fit(demand)
            if placement is None:
                failed.add(demand)
        if placement is not None and head is not None and shadow is not None and spare is not None:
            # Backfill: only if it cannot delay the reservation.
            if now + job.time_limit_s > shadow:
                limited = cap.with_free({n: min(g, spare.get(n, 0.0)) for n, g in cap.free.items()})
                placement = limited.fit(demand)
                if placement is None:
                    spare_failed.add(demand)
                    wait(job, PendingCode.PRIORITY, _would_delay(head, job, shadow), None)
                    continue
                for node, g in placement.gpus_by_node.items():
                    spare[node] = spare.get(node, 0.0) - g
        if placement is not None:
            cap.take(placement)
            largest = max(cap.free.values(), default=0.0)
            failed.clear()
            spare_failed.clear()
            reasons.clear()
            n_running += 1
            user_gpus[job.user] = user_gpus.get(job.user, 0.0) + job.gpus
            result.start.append((job, placement))
            started.append(RunningJob(job.id, job.user, placement.gpus_by_node, now + job.time_limit_s))
            continue
        # It does not fit now.
        if head is None and cap.with_free(capacity_total).fit(demand) is None:
            # Not even on empty nodes: it reserves nothing and blocks nobody, in any policy.
            wait(job, PendingCode.RESOURCES, f"{why_not(demand)}; it cannot fit on the current nodes")
            continue
        if head is None:
            head = job
            result.blocked_by = job.id
            reason = why_not(demand)
            if policy == "fifo":
                wait(job, PendingCode.RESOURCES, reason)
                blocked_detail = "behind {}, which waits for resources" if explain else ""
                continue
            res = _reservation(job, now, cap.free, [*running, *started], pools)
            assert res is not None  # it fits on empty nodes, checked above
            shadow, future, at = res
            spare = dict(future)
            for node, g in at.gpus_by_node.items():
                spare[node] -= g
            result.reserved = (job.id, shadow)
            wait(job, PendingCode.RESOURCES, reason, shadow)
            blocked_detail = f"behind {{}}, reserved to start by {shadow:.0f}"
            if policy == "default" and not backfill_sorted:
                # Backfill candidates: shortest time limit first (they free GPUs soonest).
                rest = sorted(candidates[i:], key=lambda j: (j.time_limit_s, j.submitted_at, j.id))
                candidates = candidates[:i] + rest
                backfill_sorted = True
            continue
        wait(job, PendingCode.RESOURCES, why_not(demand))
    return result
