"""`/api/v2/tasks` and `/api/v2/queue` (seed 003 §4)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from argus.service.auth import Identity, admin_identity, current_identity
from argus.service.errors import APIError
from argus.spec.errors import Problem

router = APIRouter(prefix="/api/v2", tags=["tasks"])
T = TypeVar("T")
YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml")
Caller = Annotated[Identity, Depends(current_identity)]


def _svc(request: Request):
    return request.app.state.tasks


@router.post(
    "/tasks",
    status_code=201,
    summary="Submit a TaskSpec (YAML body)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
async def submit(request: Request, who: Caller) -> JSONResponse:
    svc = _svc(request)
    svc.take_rate(who)  # 429 with Retry-After past the user's submission rate
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in YAML_TYPES:
        raise APIError(
            415,
            f"the body must be TaskSpec YAML with Content-Type {YAML_TYPES[0]} "
            f"or {YAML_TYPES[1]} (got '{ctype or 'none'}')",
        )
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(400, "the body is not UTF-8", [Problem("<body>", "must be UTF-8 text")]) from None
    # Off the event loop: parse and insert on the accept threads, a new override set's verl
    # check in the check pool (fair between users); reads are never queued behind them.
    return JSONResponse(await svc.accept(who, text), status_code=201)


def _states(raw: list[str] | None) -> list[str]:
    return [s.strip().upper() for part in (raw or []) for s in part.split(",") if s.strip()]


@router.get("/tasks", summary="List your tasks, newest first")
def list_tasks(
    request: Request,
    who: Caller,
    state: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict:
    return _svc(request).list(who, _states(state), limit, cursor)


@router.get("/tasks/{task_id}", summary="One task")
def get_task(request: Request, task_id: str, who: Caller) -> dict:
    return _svc(request).get(who, task_id)


@router.get("/tasks/{task_id}/attempts", summary="A task's attempts (one Ray job each)")
def get_attempts(request: Request, task_id: str, who: Caller) -> dict:
    return _svc(request).attempts(who, task_id)


@router.post("/tasks/{task_id}:cancel", summary="Cancel a task in any non-final state")
async def cancel(request: Request, task_id: str, who: Caller) -> dict:
    return await on_ray_threads(request, _svc(request).cancel, who, task_id)


@router.post("/tasks/{task_id}:priority", summary="Change a waiting task's priority (admin)")
def set_priority(
    request: Request,
    task_id: str,
    _: Annotated[Identity, Depends(admin_identity)],
    body: Annotated[Any, Body()] = None,
) -> dict:
    if not isinstance(body, dict) or set(body) != {"priority"}:
        raise APIError(
            400,
            'the body must be {"priority": <0-1000>}',
            [Problem("priority", "is required, alone, as a JSON object key")],
        )
    return _svc(request).set_priority(_, task_id, body["priority"])


@router.get("/tasks/{task_id}/logs", response_class=PlainTextResponse, summary="An attempt's driver log (text/plain)")
async def logs(
    request: Request,
    task_id: str,
    who: Caller,
    attempt: str = "latest",
    tail: Annotated[int | None, Query(ge=0)] = None,
) -> PlainTextResponse:
    return PlainTextResponse(await on_ray_threads(request, _svc(request).logs, who, task_id, attempt, tail))


@router.get("/queue", summary="Your waiting and running tasks")
async def queue(request: Request, who: Caller) -> dict:
    return await on_ray_threads(request, _svc(request).queue, who)


async def on_ray_threads(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a route's work that may wait on Ray (seconds, when Ray is slow or gone) on threads of
    its own (`service.ray_threads`), never holding the few threads of the other reads."""
    state = request.app.state
    if getattr(state, "ray_threads", None) is None:
        state.ray_threads = anyio.CapacityLimiter(state.settings.service.ray_threads)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=state.ray_threads)
