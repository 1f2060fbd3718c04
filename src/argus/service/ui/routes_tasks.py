"""The console's task list.

Owns `/ui/tasks`: the caller's tasks (the admin's: everyone's, or one user's), newest first, a
page at a time, filtered by state and workload, through `TaskService.list` (the API's own
visibility, validation and filters, run in the store's query), with each task's waited / ran
times read for the whole page at once.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from argus.domain.errors import Forbidden, Invalid
from argus.domain.task import TaskState
from argus.service.errors import APIError
from argus.service.task_queries import WORKLOADS
from argus.service.task_service import TaskService
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.web import page_session, render

router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE = 50
STATES = [s.value for s in TaskState]


def _tasks(request: Request) -> TaskService:
    return request.app.state.tasks


@router.get("/tasks")
def tasks_page(
    request: Request,
    session: Annotated[ConsoleSession, Depends(page_session)],
    state: Annotated[str, Query()] = "",
    workload: Annotated[str, Query()] = "",
    user: Annotated[str, Query()] = "",
    cursor: Annotated[str, Query()] = "",
) -> HTMLResponse:
    state, workload, user = state.strip().upper(), workload.strip(), user.strip()
    try:
        page = _tasks(request).list(
            session.identity,
            [state] if state else [],
            PAGE,
            cursor or None,
            workload or None,
            user or None,
            with_times=True,
        )
    except Forbidden as exc:
        raise APIError(403, exc.message) from None
    except Invalid as exc:  # the page says which filter and why
        raise APIError(400, "; ".join(f"{f}: {r}" for f, r in exc.problems) or exc.message) from None
    filters = {k: v for k, v in (("state", state), ("workload", workload), ("user", user)) if v}
    older = None
    if page["next_cursor"]:
        older = "/ui/tasks?" + urlencode({**filters, "cursor": page["next_cursor"]})
    return render(
        request,
        "tasks.html",
        session,
        tasks=page["tasks"],
        older=older,
        first_page="/ui/tasks?" + urlencode(filters) if cursor else None,
        state=state,
        workload=workload,
        user=user,
        states=STATES,
        workloads=WORKLOADS,
        filtered=bool(filters),
    )
