"""Preemption in the trace simulator (issue 16): priorities, checkpoints and lost work.

Owns `PreemptionModel` (the options of a replay with priorities and, optionally, preemption)
and `Preemptions`, the per-job state that `argus.sim.engine` keeps while it replays: each job's
priority, the work it has checkpointed, its current attempt's start, and the work it lost. The
choice of victims is the live scheduler's, `argus.domain.preemption.choose_victims`, called
unchanged.

Model:
- the traces have no priorities: each job is high priority (`high_priority`, not preemptible)
  with probability `high_fraction`, drawn from `random.Random(f"{seed}:{job_id}")`; the rest
  have `NORMAL_PRIORITY` (`priorities` may set some jobs' own); a job is preemptible when its
  priority is at most `NORMAL_PRIORITY`;
- a running job completes a checkpoint every `checkpoint_every_s` of its current attempt
  (counted from the attempt's start); stopped at t, it loses GPUs x (t - its last checkpoint,
  or its attempt's start when it saved none), and its checkpointed work is kept;
- a requeued job keeps its submission time, priority and time limit (the live scheduler keeps
  the TaskSpec's limit for every attempt); its next attempt runs its remaining work (duration
  less the work it checkpointed), killed at its limit as any attempt;
- a job preempted before may be stopped again only once its current attempt has run
  `min_run_s` (the live `scheduler.min_run_before_preempt`); a blocked head that only such
  jobs could make room for has the replay pass again when the first of them may be stopped;
- with `preempt` False the priorities apply but nothing is stopped: the baseline of the same
  replay with preemption.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from argus.domain.preemption import Candidate, choose_victims
from argus.domain.scheduling import Job, RunningJob
from argus.sim.metrics import JobRecord
from argus.sim.trace import TraceJob

NORMAL_PRIORITY = 500  # the live default; the engine's priority when there is no model


@dataclass(frozen=True)
class PreemptionModel:
    """The options of a replay with priorities (see the module docstring).

    Attributes:
        high_fraction: the share of jobs drawn high priority (0..1).
        high_priority: their priority (above NORMAL_PRIORITY, at most 1000).
        seed: the seed of the draw.
        checkpoint_every_s: a running job completes a checkpoint this often (> 0).
        min_run_s: a job preempted before is not stopped again before its attempt ran this long.
        preempt: whether a blocked head stops lower-priority jobs (False: priorities only).
        priorities: per job id, its priority in place of the draw (jobs not named are drawn).
    """

    high_fraction: float = 0.1
    high_priority: int = 900
    seed: int = 1
    checkpoint_every_s: float = 1800.0
    min_run_s: float = 600.0
    preempt: bool = True
    priorities: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.high_fraction <= 1.0:
            raise ValueError(f"high_fraction {self.high_fraction!r}: must be within [0, 1]")
        if not NORMAL_PRIORITY < self.high_priority <= 1000:
            raise ValueError(f"high_priority {self.high_priority!r}: must be within ({NORMAL_PRIORITY}, 1000]")
        if not self.checkpoint_every_s > 0 or math.isinf(self.checkpoint_every_s):
            raise ValueError(f"checkpoint_every_s {self.checkpoint_every_s!r}: must be a positive number")
        if not self.min_run_s >= 0:
            raise ValueError(f"min_run_s {self.min_run_s!r}: must be at least 0")

    def priority(self, job_id: str) -> int:
        """`job_id`'s priority: as `priorities` names it, else high with probability
        `high_fraction`, seeded by the job id."""
        if self.priorities is not None and job_id in self.priorities:
            return self.priorities[job_id]
        draw = random.Random(f"{self.seed}:{job_id}").random()
        return self.high_priority if draw < self.high_fraction else NORMAL_PRIORITY


@dataclass
class _JobState:
    """One job's progress across its attempts."""

    duration: float
    priority: int
    saved: float = 0.0  # work checkpointed by earlier attempts (seconds)
    first_start: float | None = None
    attempt_start: float = 0.0
    held_s: float = 0.0  # seconds its GPUs were held by earlier attempts
    preemptions: int = 0
    lost_gpu_s: float = 0.0


@dataclass
class Preemptions:
    """The per-job state of a replay under a `PreemptionModel` (see the module docstring)."""

    model: PreemptionModel
    jobs: dict[str, _JobState] = field(default_factory=dict)

    def add(self, job_id: str, duration: float) -> int:
        """Track `job_id` (of `duration` seconds of work); returns its priority."""
        priority = self.model.priority(job_id)
        self.jobs[job_id] = _JobState(duration, priority)
        return priority

    def remaining(self, job_id: str) -> float:
        """The work `job_id`'s next (or current) attempt has to do: duration less what it saved."""
        s = self.jobs[job_id]
        return s.duration - s.saved

    def start(self, job_id: str, now: float) -> None:
        """`job_id` starts an attempt at `now`."""
        s = self.jobs[job_id]
        if s.first_start is None:
            s.first_start = now
        s.attempt_start = now

    def saved_at(self, job_id: str, now: float) -> float | None:
        """When `job_id`'s current attempt last completed a checkpoint by `now`; None: not yet."""
        s = self.jobs[job_id]
        k = math.floor((now - s.attempt_start) / self.model.checkpoint_every_s)
        return s.attempt_start + k * self.model.checkpoint_every_s if k > 0 else None

    def candidates(self, running: Mapping[str, RunningJob], now: float, below: int = 1001) -> list[Candidate]:
        """The running jobs of a priority under `below` as the pure choice sees them (it
        filters the eligible ones)."""
        out = []
        for job_id, r in running.items():
            s = self.jobs[job_id]
            if s.priority >= below:
                continue
            out.append(
                Candidate(
                    id=job_id,
                    user=r.user,
                    priority=s.priority,
                    preemptible=s.priority <= NORMAL_PRIORITY,
                    gpus_by_node=dict(r.gpus_by_node),
                    started=s.attempt_start,
                    saved_at=self.saved_at(job_id, now),
                    preempted_before=s.preemptions > 0,
                )
            )
        return out

    def victims(
        self,
        head: Job,
        running: Mapping[str, RunningJob],
        free: Mapping[str, float],
        now: float,
    ) -> list[str]:
        """The running jobs to stop so that the blocked `head` fits (none: no set helps, or the
        model does not preempt).

        Args:
            head: the plan's blocked head.
            running: the running jobs by id.
            free: the free GPUs per node after this pass's starts.
            now: the time of the pass.

        Returns:
            The victims' ids, least lost work first.
        """
        if not self.model.preempt:
            return []
        candidates = self.candidates(running, now, head.priority)
        chosen = choose_victims(head.demand, head.priority, candidates, free, {}, now, self.model.min_run_s)
        return [c.id for c in chosen or ()]

    def wake_at(self, head: Job, running: Mapping[str, RunningJob], now: float) -> float | None:
        """The earliest time after `now` at which a running job that the min-run rule protects
        from the blocked `head` may be stopped (the replay passes again then, as the live
        scheduler's periodic passes would); None: no such job, or the model does not preempt."""
        if not self.model.preempt:
            return None
        times = [
            s.attempt_start + self.model.min_run_s
            for s in (self.jobs[job_id] for job_id in running)
            if s.preemptions > 0 and s.priority < head.priority and s.priority <= NORMAL_PRIORITY
        ]
        later = [t for t in times if t > now]
        return min(later) if later else None

    def stop(self, job_id: str, gpus: float, now: float) -> None:
        """`job_id` (holding `gpus` GPUs) is preempted at `now`: keep its checkpointed work,
        count the work since its last checkpoint as lost."""
        s = self.jobs[job_id]
        saved_at = self.saved_at(job_id, now)
        s.saved += (saved_at - s.attempt_start) if saved_at is not None else 0.0
        s.lost_gpu_s += gpus * (now - (saved_at if saved_at is not None else s.attempt_start))
        s.held_s += now - s.attempt_start
        s.preemptions += 1

    def record(self, tj: TraceJob, end: float, gpus_by_node: Mapping[str, float], limit_s: float) -> JobRecord:
        """The record of `tj`, whose last attempt (on `gpus_by_node`, with a limit of `limit_s`)
        ended at `end`: its wait ends at its first start; killed when that attempt's work
        exceeded the limit."""
        s = self.jobs[tj.id]
        assert s.first_start is not None  # only started jobs end
        return JobRecord(
            tj,
            s.first_start,
            end,
            dict(gpus_by_node),
            s.duration - s.saved > limit_s,
            priority=s.priority,
            held_s=s.held_s + (end - s.attempt_start),
            preemptions=s.preemptions,
            lost_gpu_s=s.lost_gpu_s,
        )
