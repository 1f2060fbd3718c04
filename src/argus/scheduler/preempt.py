"""Preemption in the live scheduler (issue 16, item 2): stop lower-priority preemptible tasks so
that the blocked head of the queue can start.

Owns one step of a full scheduler pass, `Preemptor.make_room`, called by
`argus.scheduler.loop.Scheduler.admit` after the policy's plan when the server's
`scheduler.preemption` is `priority` and the plan has a head (`Plan.blocked_by`: the first task
in the policy's order that waits for resources, and would fit on the nodes if they were empty):

1. the GPUs free for it are admission's free GPUs less what this pass starts, plus those of
   tasks preempted lately whose Ray jobs may not have let go of them yet (`releasing`: not yet
   seen ended by the archive pass, or ended within RELEASE_S), so the next passes, while Ray
   frees them, do not stop more tasks for the same head;
2. the candidates are the running tasks (SUBMITTED ones Ray accepted, and RUNNING ones) with
   their attempts' placements, start times, last complete checkpoints
   (`argus.scheduler.resume.checkpoint_time`) and whether they were preempted before; the pure
   choice is `argus.domain.preemption.choose_victims` (preemptible, lower priority, the
   `min_run_before_preempt` rule, least lost work, only as many as needed);
3. each victim's Ray job is asked for its status first: one that ended meanwhile calls the
   whole choice off (the next full pass syncs it and decides again);
4. the victims are requeued, their attempts ended PREEMPTED, with the head's event, in one
   transaction (`argus.store.preemptions.preempt`), then their Ray jobs are stopped (a stop
   that fails is retried by the archive pass, which stops a job that outlives its attempt).

The head is not started in the same pass: a later pass starts it once Ray shows the GPUs free.
A victim's next attempt resumes from its checkpoint like any retry (`argus.scheduler.resume`),
and its PREEMPTED attempt does not count against `max_attempts`
(`argus.domain.outcome.attempts_used`). A victim's event names the head only when both are the
same user's tasks, else "a higher-priority task (priority N)".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from argus.cluster.errors import ClusterError, JobNotFound
from argus.domain.admission import Demand, Placement
from argus.domain.preemption import Candidate, choose_victims, eligible
from argus.domain.records import Attempt, Task
from argus.domain.task import RAY_FINAL_STATUSES
from argus.ports import JobTool
from argus.scheduler.resume import checkpoint_time
from argus.settings import ArgusSettings
from argus.store.preemptions import Preemption, preempt, preempted_before, releasing
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.scheduler")
RELEASE_S = 30.0  # a preempted job's GPUs count as being freed for this long after it was stopped
HEAD_REASON = "preempting {n} task(s) to make room"


class Preemptor:
    """The scheduler's preemption step (see the module docstring)."""

    def __init__(self, settings: ArgusSettings, store: TaskStore, jobs: JobTool) -> None:
        self.settings, self.store, self.jobs = settings, store, jobs

    def make_room(
        self,
        head: Task,
        active: Sequence[Task],
        latest: Mapping[str, Attempt],
        free: Mapping[str, float],
        pools: Mapping[str, str | None],
        starts: Sequence[tuple[object, Placement]],
        now: float,
    ) -> list[str]:
        """Preempt what the blocked `head` needs, if the rules allow it.

        Args:
            head: the task at the head of the queue that waits for resources.
            active: the SUBMITTED and RUNNING tasks; `latest` their latest attempts.
            free: free GPUs per schedulable node as this pass's admission counted them;
                `starts` what the plan starts now (its GPUs are taken off).
            pools: each node's pool.
            now: the time of the pass.

        Returns:
            The ids of the tasks preempted (none: nothing to do, or nothing that helps).
        """
        room = dict(free)
        for _, placement in starts:
            for node, g in placement.gpus_by_node.items():
                room[node] = room.get(node, 0.0) - g
        for gpus in releasing(self.store, now - RELEASE_S):
            for node, g in gpus.items():
                if node in room:
                    room[node] += g
        candidates = self._candidates(head, active, latest, now)
        if not candidates:
            return []
        demand = Demand(head.nnodes, head.n_gpus_per_node, head.driver_gpus, head.pool)
        min_run = self.settings.scheduler.min_run_before_preempt_s
        victims = choose_victims(demand, head.priority, candidates, room, pools, now, min_run)
        if not victims or not self._still_running(victims, latest):
            return []
        chosen = [self._preemption(head, v, latest[v.id], now) for v in victims]
        done = preempt(self.store, head.task_id, HEAD_REASON, chosen, now)
        for tid in done:
            sid = latest[tid].ray_submission_id
            try:
                self.jobs.stop(sid)
            except JobNotFound:
                pass
            except ClusterError as exc:
                log.warning("stopping preempted %s failed (the archive pass retries): %s", sid, exc)
        if done:
            log.info("%s preempts %s", head.task_id, ", ".join(done))
        return done

    def _candidates(
        self, head: Task, active: Sequence[Task], latest: Mapping[str, Attempt], now: float
    ) -> list[Candidate]:
        """The eligible running tasks, with their last checkpoints read (only theirs)."""
        found: list[tuple[Candidate, Attempt]] = []
        for t in active:
            attempt = latest.get(t.task_id)
            if not t.preemptible or t.priority >= head.priority or attempt is None or attempt.submitted_at is None:
                continue
            started = attempt.start_time or attempt.submitted_at
            found.append((Candidate(t.task_id, t.user_id, t.priority, True, attempt.placement, started), attempt))
        if not found:
            return []
        before = preempted_before(self.store, [c.id for c, _ in found])
        out = []
        min_run = self.settings.scheduler.min_run_before_preempt_s
        for c, attempt in found:
            c = dataclasses.replace(c, preempted_before=c.id in before)
            if eligible(c, head.priority, now, min_run):
                out.append(dataclasses.replace(c, saved_at=checkpoint_time(attempt.job_root)))
        return out

    def _still_running(self, victims: Sequence[Candidate], latest: Mapping[str, Attempt]) -> bool:
        """Whether Ray still runs every victim's job (one that ended calls the choice off)."""
        for v in victims:
            try:
                if self.jobs.status(latest[v.id].ray_submission_id, diagnose=False).status in RAY_FINAL_STATUSES:
                    return False
            except JobNotFound:
                return False
        return True

    @staticmethod
    def _preemption(head: Task, victim: Candidate, attempt: Attempt, now: float) -> Preemption:
        """The victim's record: its event names the head only to the head's own user."""
        who = head.task_id if head.user_id == victim.user else f"a higher-priority task (priority {head.priority})"
        lost = victim.lost_work(now) / 60
        summary = f"preempted by {who}; requeued ({lost:.1f} GPU-minutes since its last checkpoint lost)"
        return Preemption(victim.id, attempt.attempt_no, f"PREEMPTED: {summary}", summary)
