"""The console's queue page.

Owns `/ui/queue` (and its live part, `/ui/queue/body`, which htmx polls every 5 s): per pool,
the waiting tasks in the order the scheduling policy considers them, with their pending reasons
and estimated starts, and the running tasks with their time left; and the GPUs of each pool.

The tasks, their reasons and estimates and the pools are `TaskService.queue`'s (what
`GET /api/v2/queue` answers, with its visibility: a user sees only their own tasks, and a reason
names another user's task only as "a higher-priority task"). The order is
`argus.domain.scheduling.order` under the configured policy, over the tasks' records (their
gangs, priorities, ages; for the admin's view the users' fair share too); a running task's time
left is its time limit less the time since its attempt started (Ray's start, else its
submission), as the scheduler counts it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from argus.domain.records import Attempt, Task
from argus.domain.scheduling import Job, order
from argus.domain.task import ACTIVE_STATES, WAITING_STATES
from argus.service.task_service import TaskService
from argus.service.threads import on_ray_threads
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.web import page_session, render

router = APIRouter(prefix="/ui", include_in_schema=False)
ANY_POOL = "any pool"


def _tasks(request: Request) -> TaskService:
    return request.app.state.tasks


def _started(attempt: Attempt | None) -> float | None:
    """When an attempt's time limit started counting (the scheduler's rule)."""
    if attempt is None:
        return None
    return attempt.start_time or attempt.submitted_at or attempt.created_at


def queue_view(request: Request, session: ConsoleSession) -> dict[str, Any]:
    """The page's figures: `pools` (capacity), `groups` (per requested pool: its waiting tasks
    in the policy's order, its running ones), `pools_error`, `policy`."""
    svc = _tasks(request)
    who = session.identity
    queue = svc.queue(who)
    now = svc.clock()
    user = None if who.is_admin else who.user_id
    states = [s.value for s in WAITING_STATES | ACTIVE_STATES]
    records: dict[str, Task] = {t.task_id: t for t in svc.store.in_states(states, user)}
    scheduler = request.app.state.scheduler
    policy = scheduler.settings.scheduler.policy
    usage = scheduler.fair_share_now() if who.is_admin and policy == "default" else None
    waiting = [p for p in queue["pending"] if p["task_id"] in records]
    ranked = order([Job.of(records[p["task_id"]]) for p in waiting], policy, usage, now)
    rank = {job.id: i for i, job in enumerate(ranked)}
    running_ids = [r["task_id"] for r in queue["running"] if r["task_id"] in records]
    latest = svc.store.latest_attempts(running_ids)
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
        group["running"].append({**r, "gpus": rec.total_gpus, "time_left_s": left, "time_limit_s": rec.time_limit_s})
    named = sorted(g for g in groups if g != ANY_POOL)
    ordered = {g: groups[g] for g in [*named, *([ANY_POOL] if ANY_POOL in groups else [])]}
    return {"pools": queue["pools"], "pools_error": queue["pools_error"], "groups": ordered, "policy": policy}


@router.get("/queue")
async def queue_page(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    return render(request, "queue.html", session, **await on_ray_threads(request, queue_view, request, session))


@router.get("/queue/body")
async def queue_body(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    """The live part of the page (htmx swaps it in every 5 s)."""
    return render(request, "queue_body.html", session, **await on_ray_threads(request, queue_view, request, session))
