"""The console's queue page.

Owns `/ui/queue` (and its live part, `/ui/queue/body`, which htmx polls every 5 s): per pool,
the waiting tasks in the order the scheduling policy considers them, with their pending reasons
and estimated starts, and the running tasks with their time left; and the GPUs of each pool.

Everything shown is `TaskService.queue_board`'s (`argus.service.task_board`: the API's queue,
with its visibility, in the policy's order, with time left).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from argus.service.task_service import TaskService
from argus.service.threads import on_ray_threads
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.web import page_session, render

router = APIRouter(prefix="/ui", include_in_schema=False)


def _tasks(request: Request) -> TaskService:
    return request.app.state.tasks


def queue_view(request: Request, session: ConsoleSession) -> dict[str, Any]:
    """The page's figures (`TaskService.queue_board`, with the caller's visibility)."""
    return _tasks(request).queue_board(session.identity)


@router.get("/queue")
async def queue_page(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    return render(request, "queue.html", session, **await on_ray_threads(request, queue_view, request, session))


@router.get("/queue/body")
async def queue_body(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    """The live part of the page (htmx swaps it in every 5 s)."""
    return render(request, "queue_body.html", session, **await on_ray_threads(request, queue_view, request, session))
