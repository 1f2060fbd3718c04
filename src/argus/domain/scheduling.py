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
- `default`: the order of `argus.domain.ordering`: priority (higher first), the job reserved
  by the previous pass, then the smallest requested area (GPUs x time limit) weighted by the
  user's fair share and shrunk by waiting, overdue jobs first. The head of that order gets the
  EASY reservation, and backfill candidates are tried shortest time limit first.

Invariants: a job starts only when its whole gang fits now (nnodes bundles of gpus_per_node,
each whole on a distinct node, plus its driver's GPUs); the reserved job's start is never
delayed by a backfilled one, as far as time limits bound the running jobs; per-user limits and
max_running are never exceeded by what the plan admits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from argus.domain.admission import Capacity, Demand, Placement
from argus.domain.ordering import backfill_order, order
from argus.domain.records import Task

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

    @classmethod
    def of(cls, t: Task) -> Job:
        """A waiting task as the policy sees it."""
        return cls(
            t.task_id, t.user_id, t.nnodes, t.n_gpus_per_node, t.created_at, t.time_limit_s, t.priority,
            t.driver_gpus, t.next_run_at, t.pool,
        )  # fmt: skip


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


def _name_for(blocker: Job, job: Job, otherwise: str) -> str:
    """How `job`'s reason names `blocker`: by id when both are the same user's, else as
    `otherwise`, so that no reason shows a user another user's task."""
    return blocker.id if blocker.user == job.user else otherwise


def _would_delay(head: Job, job: Job, shadow: float) -> str:
    return f"would delay {_name_for(head, job, 'a higher-priority task')}, reserved to start by {shadow:.0f}"


def _reservation(
    job: Job,
    now: float,
    free: Mapping[str, float],
    running: Sequence[RunningJob],
    pools: Mapping[str, str | None],
    totals: Mapping[str, float] | None = None,
) -> tuple[float, dict[str, float], Placement] | None:
    """When and where `job` could start at the latest, releasing running jobs by their limits.

    Where the running jobs' GPUs are not counted on the nodes that hold them (Ray placed a gang
    elsewhere), releasing them all may still not make room: then it starts, at the latest, when
    the last of them ends, on the nodes' `totals`.

    Returns (start, free GPUs per node at that time, the job's placement then), or None when
    it cannot fit even on an empty cluster.
    """
    future = dict(free)
    placement = Capacity(dict(future), pools).fit(job.demand)
    if placement is not None:
        return now, future, placement
    for r in sorted(running, key=lambda r: r.ends_by):
        for node, gpus in r.gpus_by_node.items():
            if node in future:
                future[node] += gpus
        placement = Capacity(dict(future), pools).fit(job.demand)
        if placement is not None:
            return max(now, r.ends_by), future, placement
    if totals is not None:
        empty = {n: float(totals.get(n, g)) for n, g in free.items()}
        placement = Capacity(dict(empty), pools).fit(job.demand)
        if placement is not None:
            return max([now, *(r.ends_by for r in running)]), empty, placement
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
    totals: Mapping[str, float] | None = None,
) -> Plan:
    """Decide one scheduling pass (a `Planner` over these inputs).

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
        totals: each node's GPUs in all (whether a job could ever fit); None: free GPUs plus
            the running jobs' GPUs counted on it, which is wrong for a node where a gang was
            counted but Ray placed it elsewhere.

    Returns:
        The jobs to start now in order, each with its placement, and a wait for every other job.

    Raises:
        ValueError: an unknown policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    planner = Planner(now, running, free, policy, limits, day_usage or {}, explain, pools or {}, totals)
    return planner.run(order(queue, policy, usage, now, keep))


class Planner:
    """One pass of the policy: what it has decided so far, and its steps.

    `run(jobs)` takes the ordered queue and, for each job in turn: holds it back when it may
    not start yet (`_held_back`: its begin time, max_running, the user's quotas, or behind the
    FIFO head), fits it now (`_fit`), keeps a backfill off the reservation's GPUs
    (`_backfill`), starts it (`_start`), or makes it wait for resources (`_wait_for_resources`),
    where the first job that does not fit becomes the head: FIFO's blocker, or the reserved job
    (`_reserve`). Waits are explained as it goes (`_wait`).
    """

    def __init__(
        self,
        now: float,
        running: Sequence[RunningJob],
        free: Mapping[str, float],
        policy: str,
        limits: Limits,
        day: Mapping[str, float],
        explain: bool,
        pools: Mapping[str, str | None],
        totals: Mapping[str, float] | None = None,
    ) -> None:
        self.now, self.running, self.policy, self.limits = now, running, policy, limits
        self.day, self.explain, self.pools = day, explain, pools
        self.result = Plan()
        self.cap = Capacity.of(free, pools)
        self.capacity_total = dict(free)  # what each node would have free with nothing running
        self.user_gpus: dict[str, float] = {}
        for r in running:
            for node, g in r.gpus_by_node.items():
                if node in self.capacity_total:
                    self.capacity_total[node] += g
            self.user_gpus[r.user] = self.user_gpus.get(r.user, 0.0) + r.gpus
        self.totals = totals
        if totals is not None:  # the nodes' own totals: right even where Ray placed a gang elsewhere
            self.capacity_total = {n: float(totals.get(n, g)) for n, g in self.capacity_total.items()}
        self.started: list[RunningJob] = []  # this pass's starts, as running jobs for the reservation
        self.n_running = len(running)
        self.largest = max(self.cap.free.values(), default=0.0)
        self.failed: set[Demand] = set()  # demands that did not fit since capacity last changed
        self.spare_failed: set[Demand] = set()  # long demands that did not fit in the spare GPUs
        self.never_fits: set[Demand] = set()  # demands that do not fit even on empty nodes
        self.reasons: dict[Demand, str] = {}  # their reasons, for as long
        self.head: Job | None = None  # the reserved job (easy, default) or the blocking one (fifo)
        self.shadow: float | None = None  # the reserved start
        self.spare: dict[str, float] | None = None  # per node: GPUs the reservation leaves at its start
        self.blocked_detail = ""
        self.candidates: list[Job] = []
        self.next = 0
        self.backfill_sorted = False

    def run(self, jobs: list[Job]) -> Plan:
        """Decide for each of `jobs` (in the policy's order) and return the plan."""
        self.candidates = jobs
        self.next = 0
        while self.next < len(self.candidates):
            job = self.candidates[self.next]
            self.next += 1
            if self._held_back(job):
                continue
            demand = job.demand
            if self.shadow is not None and self.now + job.time_limit_s > self.shadow and demand in self.spare_failed:
                self._wait(job, PendingCode.PRIORITY, self._would_delay)
                continue
            placement = self._fit(demand)
            if placement is not None and self.shadow is not None:
                placement = self._backfill(job, demand, placement)
                if placement is None:
                    continue
            if placement is not None:
                self._start(job, placement)
            else:
                self._wait_for_resources(job, demand)
        return self.result

    def _wait(self, job: Job, code: PendingCode, detail: Callable[[Job], str], est: float | None = None) -> None:
        """Record `job`'s wait; its detail is built only when the plan explains."""
        self.result.waits[job.id] = Wait(code, detail(job) if self.explain else "", est)

    def _held_back(self, job: Job) -> bool:
        """Make `job` wait when it may not start whatever the GPUs: its begin time, the limits,
        or, in FIFO, a blocked job ahead of it. Returns whether it waits."""
        limits, user = self.limits, job.user
        if job.not_before is not None and job.not_before > self.now:
            self._wait(job, PendingCode.BEGIN_TIME, lambda _: "retrying after a failed start", job.not_before)
        elif limits.max_running is not None and self.n_running >= limits.max_running:
            self._wait(
                job, PendingCode.MAX_RUNNING, lambda _: f"max_running_tasks ({limits.max_running}) tasks are running"
            )
        elif limits.user_max_gpus is not None and self.user_gpus.get(user, 0.0) + job.gpus > limits.user_max_gpus:
            self._wait(
                job,
                PendingCode.QUOTA_USER,
                lambda _: (
                    f"user {user} holds {_fmt_gpus(self.user_gpus.get(user, 0.0))} GPU(s); "
                    f"the limit is {_fmt_gpus(limits.user_max_gpus or 0.0)}"
                ),
            )
        elif limits.user_gpu_hours_per_day is not None and self.day.get(user, 0.0) >= limits.user_gpu_hours_per_day:
            self._wait(
                job,
                PendingCode.QUOTA_USER,
                lambda _: (
                    f"user {user} used {self.day.get(user, 0.0):.1f} GPU-hours in the last 24 h; "
                    f"the limit is {limits.user_gpu_hours_per_day:g}"
                ),
            )
        elif self.head is not None and self.policy == "fifo":
            self._wait(job, PendingCode.PRIORITY, self._behind_head)
        else:
            return False
        return True

    def _fit(self, demand: Demand) -> Placement | None:
        """Where `demand` fits now, or None (remembered until the capacity changes)."""
        if demand.gpus_per_node > self.largest or demand in self.failed:
            return None
        placement = self.cap.fit(demand)
        if placement is None:
            self.failed.add(demand)
        return placement

    def _backfill(self, job: Job, demand: Demand, placement: Placement) -> Placement | None:
        """With a reservation made: where `job` may start without delaying it, or None (it waits).

        A job that ends by the reserved start keeps `placement`; a longer one may use only the
        GPUs the reservation leaves spare.
        """
        assert self.shadow is not None and self.spare is not None
        if self.now + job.time_limit_s <= self.shadow:
            return placement
        spare = self.spare
        limited = self.cap.with_free({n: min(g, spare.get(n, 0.0)) for n, g in self.cap.free.items()})
        placement_in_spare = limited.fit(demand)
        if placement_in_spare is None:
            self.spare_failed.add(demand)
            self._wait(job, PendingCode.PRIORITY, self._would_delay)
            return None
        for node, g in placement_in_spare.gpus_by_node.items():
            spare[node] = spare.get(node, 0.0) - g
        return placement_in_spare

    def _start(self, job: Job, placement: Placement) -> None:
        """Start `job` now on `placement`: take its GPUs and count it against the limits."""
        self.cap.take(placement)
        self.largest = max(self.cap.free.values(), default=0.0)
        self.failed.clear()
        self.spare_failed.clear()
        self.reasons.clear()
        self.n_running += 1
        self.user_gpus[job.user] = self.user_gpus.get(job.user, 0.0) + job.gpus
        self.result.start.append((job, placement))
        self.started.append(RunningJob(job.id, job.user, placement.gpus_by_node, self.now + job.time_limit_s))

    def _wait_for_resources(self, job: Job, demand: Demand) -> None:
        """`job` does not fit now: it waits, and the first such job that could fit on empty
        nodes becomes the head (`_reserve`)."""
        if self.head is not None:
            self._wait(job, PendingCode.RESOURCES, self._why_not)
        elif demand in self.never_fits or self.cap.with_free(self.capacity_total).fit(demand) is None:
            # Not even on empty nodes: it reserves nothing and blocks nobody, in any policy.
            self.never_fits.add(demand)
            self._wait(job, PendingCode.RESOURCES, lambda j: f"{self._why_not(j)}; it cannot fit on the current nodes")
        else:
            self._reserve(job)

    def _reserve(self, job: Job) -> None:
        """Make `job` the head: in FIFO it blocks the rest; else it gets the EASY reservation
        (the earliest start by the running jobs' limits, and the GPUs it leaves spare), and in
        `default` the rest are tried shortest time limit first."""
        self.head = job
        self.result.blocked_by = job.id
        if self.policy == "fifo":
            self._wait(job, PendingCode.RESOURCES, self._why_not)
            self.blocked_detail = "behind {}, which waits for resources" if self.explain else ""
            return
        res = _reservation(job, self.now, self.cap.free, [*self.running, *self.started], self.pools, self.totals)
        assert res is not None  # it fits on empty nodes, checked by the caller
        shadow, future, at = res
        self.shadow = shadow
        self.spare = dict(future)
        for node, g in at.gpus_by_node.items():
            self.spare[node] -= g
        self.result.reserved = (job.id, shadow)
        self._wait(job, PendingCode.RESOURCES, self._why_not, shadow)
        self.blocked_detail = f"behind {{}}, reserved to start by {shadow:.0f}"
        if self.policy == "default" and not self.backfill_sorted:
            # Backfill candidates: shortest time limit first (they free GPUs soonest).
            i = self.next
            self.candidates = self.candidates[:i] + backfill_order(self.candidates[i:])
            self.backfill_sorted = True

    # -- the waits' details ------------------------------------------------------------------
    def _why_not(self, job: Job) -> str:
        """Why `job`'s demand does not fit now (remembered until the capacity changes)."""
        demand = job.demand
        if demand not in self.reasons:
            self.reasons[demand] = self.cap.why_not(demand)
        return self.reasons[demand]

    def _would_delay(self, job: Job) -> str:
        assert self.head is not None and self.shadow is not None
        return _would_delay(self.head, job, self.shadow)

    def _behind_head(self, job: Job) -> str:
        assert self.head is not None
        return self.blocked_detail.format(_name_for(self.head, job, "an earlier task"))
