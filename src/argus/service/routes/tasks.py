"""`/api/v2/tasks` and `/api/v2/queue` (seed 003 §4).

Each route declares its answer's model (`argus.service.api_models`) for `/openapi.json` and
answers the service's dict as `JSONBody` (serialised once, not validated again); a TaskSpec is
YAML text, read raw and declared in OpenAPI by hand.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.responses import Response
from starlette.routing import Route

from argus.service.api_models import (
    AttemptList,
    JSONBody,
    PriorityAnswer,
    Queue,
    TaskAccepted,
    TaskDetail,
    TaskList,
    TaskStateAnswer,
    errors,
)
from argus.service.api_models_requests import NO_BODY, PriorityChange
from argus.service.auth import Identity, admin_identity, current_identity
from argus.service.errors import APIError
from argus.service.resume_from import resubmit_options
from argus.service.task_service import TaskService
from argus.service.threads import on_ray_threads
from argus.spec.errors import Problem

router = APIRouter(prefix="/api/v2", tags=["tasks"])
YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml")
Caller = Annotated[Identity, Depends(current_identity)]


def _svc(request: Request) -> TaskService:
    return request.app.state.tasks


@router.post(
    "/tasks",
    status_code=201,
    summary="Submit a TaskSpec (YAML body)",
    response_model=TaskAccepted,
    responses=errors(400, 401, 409, 413, 415, 429, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
async def submit(request: Request) -> JSONBody:
    # The caller is read here rather than as a dependency: the hottest route skips FastAPI's
    # dependency solving (about a tenth of a submission's CPU).
    who = await current_identity(request)
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
    return JSONBody(await svc.accept(who, text), status_code=201)


def plain_submit_route() -> Route:
    """`submit` as a plain Starlette route, which the app puts ahead of its routers.

    The hottest route then skips FastAPI's request handler (dependency solving parses the query,
    headers and cookies of every request, though `submit` reads its caller itself) and the
    walk through the included routers: about a tenth of a submission's CPU. Its `@router.post`
    declaration above stays for the OpenAPI schema and for apps that do not add this route; the
    errors it raises meet the same exception handlers either way.
    """

    async def endpoint(request: Request) -> Response:
        request.scope["route"] = route  # the request metrics' label: the route's template
        return await submit(request)

    route = Route("/api/v2/tasks", endpoint, methods=["POST"], include_in_schema=False)
    return route


def _states(raw: list[str] | None) -> list[str]:
    return [s.strip().upper() for part in (raw or []) for s in part.split(",") if s.strip()]


@router.get("/tasks", summary="List your tasks, newest first", response_model=TaskList, responses=errors(400, 401, 403))
def list_tasks(
    request: Request,
    who: Caller,
    state: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    workload: Annotated[str | None, Query(description="ppo, grpo or sft")] = None,
    user: Annotated[str | None, Query(description="the admin only: one user's tasks")] = None,
) -> JSONBody:
    return JSONBody(_svc(request).list(who, _states(state), limit, cursor, workload or None, user or None))


@router.get("/tasks/{task_id}", summary="One task", response_model=TaskDetail, responses=errors(401, 404))
def get_task(request: Request, task_id: str, who: Caller) -> JSONBody:
    return JSONBody(_svc(request).get(who, task_id))


@router.get(
    "/tasks/{task_id}/attempts",
    summary="A task's attempts (one Ray job each)",
    response_model=AttemptList,
    responses=errors(401, 404),
)
def get_attempts(request: Request, task_id: str, who: Caller) -> JSONBody:
    return JSONBody(_svc(request).attempts(who, task_id))


@router.post(
    "/tasks/{task_id}:cancel",
    summary="Cancel a task in any non-final state",
    response_model=TaskStateAnswer,
    responses=errors(401, 404, 409),
)
async def cancel(request: Request, task_id: str, who: Caller) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).cancel, who, task_id))


@router.post(
    "/tasks/{task_id}:resubmit",
    status_code=201,
    summary="Continue an ended task of yours as a new task (from its latest checkpoint)",
    response_model=TaskAccepted,
    responses=errors(400, 401, 404, 409, 413, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "time_limit": {"type": ["string", "integer"], "examples": ["12h"]},
                            "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
                        },
                        "additionalProperties": False,
                    }
                }
            },
        }
    },
)
async def resubmit(request: Request, task_id: str, who: Caller) -> JSONBody:
    svc = _svc(request)
    svc.take_rate(who)
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise APIError(400, "the body is not JSON", [Problem("<body>", "must be a JSON object")]) from None
    return JSONBody(await svc.resubmit(who, task_id, resubmit_options(body)), status_code=201)


@router.post(
    "/tasks/{task_id}:priority",
    summary="Change a waiting task's priority (admin)",
    response_model=PriorityAnswer,
    responses=errors(400, 401, 403, 404, 409),
    openapi_extra=PriorityChange.openapi(),
)
def set_priority(
    request: Request,
    task_id: str,
    admin: Annotated[Identity, Depends(admin_identity)],
    body: Annotated[PriorityChange, Body(validate_default=True)] = NO_BODY,
) -> JSONBody:
    return JSONBody(_svc(request).set_priority(admin, task_id, body.priority))


@router.get(
    "/tasks/{task_id}/logs",
    response_class=PlainTextResponse,
    summary="An attempt's driver log (text/plain)",
    responses=errors(400, 401, 404, 503, text_route=True),
)
async def logs(
    request: Request,
    task_id: str,
    who: Caller,
    attempt: str = "latest",
    tail: Annotated[int | None, Query(ge=0)] = None,
) -> PlainTextResponse:
    return PlainTextResponse(await on_ray_threads(request, _svc(request).logs, who, task_id, attempt, tail))


@router.get("/queue", summary="Your waiting and running tasks", response_model=Queue, responses=errors(401))
async def queue(request: Request, who: Caller) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).queue, who))
