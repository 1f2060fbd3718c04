"""The console's task list.

Owns `/ui/tasks`: the caller's tasks (the admin's: everyone's), newest first, a page at a time,
filtered by state, through `TaskService.list` (the API's own visibility and validation).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from argus.domain.task import TaskState
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
    cursor: Annotated[str, Query()] = "",
) -> HTMLResponse:
    states = [state] if state else []
    page = _tasks(request).list(session.identity, states, PAGE, cursor or None)
    return render(
        request,
        "tasks.html",
        session,
        tasks=page["tasks"],
        next_cursor=page["next_cursor"],
        state=state,
        states=STATES,
    )
