"""The queue as the console shows it: each pool's waiting tasks in the policy's order, and the
running tasks with their time left.

Owns `TaskBoard.queue_board`, built on `TaskQueries.queue` (what `GET /api/v2/queue` answers,
with its visibility: a user sees only their own tasks, and a reason names another user's task
only as "a higher-priority task"). The order is `argus.domain.scheduling.order` under the
configured policy over the tasks' records (their gangs, priorities, ages; for the admin's view
the users' fair share as the last full scheduler pass computed it); a running task's time left
is its time limit less the time since its attempt started (Ray's start, else its submission),
as the scheduler counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argus.domain.records import Attempt, Task
from argus.domain.scheduling import Job, order
from argus.domain.task import ACTIVE_STATES, WAITING_STATES
from argus.service.auth import Identity
from argus.service.task_queries import TaskQueries

ANY_POOL = "any pool"


def _started(attempt: Attempt | None) -> float | None:
    """When an attempt's time limit started counting (the scheduler's rule)."""
    if attempt is None:
        return None
    return attempt.start_time or attempt.submitted_at or attempt.created_at


class TaskBoard(TaskQueries):
    """The queue board of `TaskService`; `fair_share` is set by its constructor."""

    fair_share: Callable[[], dict[str, float]] | None

    def queue_board(self, who: Identity) -> dict[str, Any]:
        """`pools` (capacity), `groups` (per requested pool: its waiting tasks in the policy's
        order, with their position and GPUs; its running ones with GPUs, time limit and time
        left), `pools_error` and `policy`."""
        queue = self.queue(who)
        now = self.clock()
        user = None if who.is_admin else who.user_id
        states = [s.value for s in WAITING_STATES | ACTIVE_STATES]
        records: dict[str, Task] = {t.task_id: t for t in self.store.in_states(states, user)}
        policy = self.settings.scheduler.policy
        usage = self.fair_share() if self.fair_share and who.is_admin and policy == "default" else None
        waiting = [p for p in queue["pending"] if p["task_id"] in records]
        ranked = order([Job.of(records[p["task_id"]]) for p in waiting], policy, usage, now)
        rank = {job.id: i for i, job in enumerate(ranked)}
        running_ids = [r["task_id"] for r in queue["running"] if r["task_id"] in records]
        latest = self.store.latest_attempts(running_ids)
        groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for p in sorted(waiting, key=lambda p: rank[p["task_id"]]):
            t = records[p["task_id"]]
            group = groups.setdefault(t.pool or ANY_POOL, {"pending": [], "running": []})
            group["pending"].append({**p, "position": len(group["pending"]) + 1, "gpus": t.total_gpus})
        for r in queue["running"]:
            rec = records.get(r["task_id"])
            if rec is None:  # it ended between the two reads
                continue
            started = _started(latest.get(rec.task_id))
            left = None if started is None else started + rec.time_limit_s - now
            group = groups.setdefault(rec.pool or ANY_POOL, {"pending": [], "running": []})
            group["running"].append(
                {**r, "gpus": rec.total_gpus, "time_left_s": left, "time_limit_s": rec.time_limit_s}
            )
        named = sorted(g for g in groups if g != ANY_POOL)
        ordered = {g: groups[g] for g in [*named, *([ANY_POOL] if ANY_POOL in groups else [])]}
        return {"pools": queue["pools"], "pools_error": queue["pools_error"], "groups": ordered, "policy": policy}
