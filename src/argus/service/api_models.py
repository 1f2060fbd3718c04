"""The API's response bodies as Pydantic models (docs/api.md): tasks, the queue, users, health.

Owns the documented shape of every JSON answer (the nodes' are in `api_models_nodes`, the
request bodies in `api_models_requests`); `/openapi.json` and `/docs` show them. Invariants:
a model lists exactly the keys its view builds, in the view's order, with the same nullability
(`extra="forbid"`; the integration tests validate real answers against the models). Times are
ISO 8601 strings in UTC, as `argus.service.views.iso` writes them.

The views build plain JSON-ready dicts, and the routes answer them as `JSONBody`: serialised
once by pydantic-core, exactly as FastAPI serialises a returned dict, without validating it
again against the model (the hot reads stay as cheap as before; see `JSONBody`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic_core
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from argus.domain.task import TaskState
from argus.domain.users import UserState

IsoTime = Annotated[str, Field(description="ISO 8601, UTC", examples=["2026-11-25T02:10:00.123456+00:00"])]


class JSONBody(JSONResponse):
    """A route's answer as a JSON-ready dict, rendered by pydantic-core: the same bytes FastAPI
    writes for a returned dict, with no second pass through the route's `response_model` (which
    stays for the documentation only)."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


class ApiModel(BaseModel):
    """Base of the API's bodies: exactly the keys listed, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class ErrorProblem(ApiModel):
    field: str = Field(description="the field at fault: `nnodes`, `overrides[2]`, `labels.pool`, `<body>`")
    message: str


class ErrorBody(ApiModel):
    """Every error (docs/api.md, Errors)."""

    error: str = Field(description="`bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, ...")
    message: str
    problems: list[ErrorProblem]


_ERROR_WHEN = {
    400: "Invalid input: `problems` names each field",
    401: "Missing, unknown or disabled token",
    403: "An admin route called by a user",
    404: "Unknown, or not the caller's",
    409: "The state does not allow it",
    413: "The body is over `service.max_body_bytes`",
    415: "Not a YAML content type",
    429: "Over the user's submission rate; see `Retry-After`",
    503: "Ray, or the database, cannot be reached",
}


def errors(*statuses: int, text_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the error statuses it may answer, each with `ErrorBody`, and `4XX`
    for the rest (which also keeps FastAPI from documenting a 422 that the API never sends:
    a request that fails validation is a 400).

    Args:
        text_route: the route answers text: FastAPI would file a `model` under the route's own
            media type, so the JSON schema is named by reference (the other routes register it).
    """
    when: dict[int | str, str] = {status: _ERROR_WHEN[status] for status in statuses}
    when["4XX"] = "Any other client error, the same body"
    if text_route:
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        return {status: {"description": what, "content": ref} for status, what in when.items()}
    return {status: {"model": ErrorBody, "description": what} for status, what in when.items()}


# -- tasks ----------------------------------------------------------------------------------------
class Resources(ApiModel):
    nnodes: int
    n_gpus_per_node: int
    total_gpus: int
    pool: str | None


class Attempt(ApiModel):
    """One attempt: one Ray job (`<task_id>--aNN`)."""

    attempt_no: int
    ray_submission_id: str
    ray_status: str | None
    failure_kind: str | None
    message: str | None
    start_time: IsoTime | None = Field(description="Ray's")
    end_time: IsoTime | None = Field(description="Ray's")
    job_root: str
    created_at: IsoTime | None = Field(description="when the attempt row was written, before `submit_job`")
    submitted_at: IsoTime | None = Field(description="when Ray accepted the job")
    driver_node_id: str | None = Field(description="the Ray node the job's driver runs on")
    driver_node_ip: str | None
    driver_node_name: str | None = Field(description="its registered name (`argus.io/node`), if any")
    gpu_util_mean: float | None = Field(
        description="mean GPU utilisation (percent) of its nodes' GPUs over the samples taken while it ran, "
        "as Ray's metrics report it (per node: a node shared with another task counts for both); "
        "null when Ray reported none (no GPUs, or not sampled yet)"
    )
    gpu_mem_peak_bytes: int | None = Field(
        description="the most GPU memory seen in use on one GPU of its nodes while it ran (bytes); "
        "null when Ray reported none"
    )
    resumed_from_step: int | None = Field(
        description="the step of the earlier attempt's checkpoint this retry resumed from "
        "(verl's `trainer.resume_mode=resume_path`); null when it started from scratch",
    )
    resumed_from: str | None = Field(
        description="that checkpoint's `global_step_N` directory (in the earlier attempt's job root)"
    )


class TaskSummary(ApiModel):
    task_id: str
    user_id: str
    workload: str
    state: TaskState
    failure_cause: str | None
    pending_reason: str | None = Field(description="`<Code>: <detail>`, Slurm-like")
    priority: int
    preemptible: bool = Field(
        description="it may be stopped for a waiting task of higher priority (server setting "
        "`scheduler.preemption: priority`), then requeued and resumed from its checkpoint"
    )
    created_at: IsoTime
    updated_at: IsoTime
    desired_resources: Resources
    attempts: int = Field(description="how many so far")


class TaskList(ApiModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class TaskDetail(ApiModel):
    task_id: str
    user_id: str
    workload: str
    state: TaskState
    desired_resources: Resources
    latest_attempt: Attempt | None
    error_summary: str | None
    failure_cause: str | None
    pending_reason: str | None
    pending_code: str | None = Field(description="Resources, Priority, QuotaUser, MaxRunning, BeginTime")
    estimated_start: IsoTime | None
    next_run_at: IsoTime | None
    priority: int
    preemptible: bool = Field(description="as in the task summary")
    time_limit_s: float
    attempts: int
    created_at: IsoTime
    updated_at: IsoTime
    ended_at: IsoTime | None
    gpu_seconds: float = Field(
        description="GPU-seconds allocated so far (the GPU-hour ledger; a running attempt to now)"
    )
    wait_s: float | None = Field(description="accepted -> first allocation start; null if it never started")
    run_s: float = Field(description="wall seconds its attempts held GPUs so far")
    jobspec_yaml: str = Field(description="the TaskSpec as submitted, `env_vars` values redacted")


class AttemptList(ApiModel):
    task_id: str
    attempts: list[Attempt]


class TaskStateAnswer(ApiModel):
    """A task accepted (`QUEUED`) or cancelled (`CANCELED`)."""

    task_id: str
    state: TaskState


class TaskAccepted(ApiModel):
    """A task accepted (`QUEUED`), with warnings about its spec (an env var that looks like a
    credential: keep it as a secret)."""

    task_id: str
    state: TaskState
    warnings: list[str]


class PriorityAnswer(ApiModel):
    task_id: str
    priority: int


# -- the queue ------------------------------------------------------------------------------------
class PoolCapacity(ApiModel):
    """A pool's schedulable nodes and GPUs, free as admission counts them."""

    nodes: int
    gpus_total: float
    gpus_free: float


Pools = dict[str, PoolCapacity]


class WaitingTask(ApiModel):
    task_id: str
    user_id: str
    state: TaskState
    pool: str | None
    priority: int
    next_run_at: IsoTime | None
    pending_reason: str | None
    estimated_start: IsoTime | None
    created_at: IsoTime


class RunningTask(ApiModel):
    task_id: str
    user_id: str
    state: TaskState
    pool: str | None
    ray_submission_id: str | None


class Queue(ApiModel):
    pools: Pools | None = Field(description="per pool (no pool: `-`); null when Ray cannot be read")
    pools_error: str | None
    pending: list[WaitingTask] = Field(description="oldest first")
    running: list[RunningTask]


# -- users ----------------------------------------------------------------------------------------
class UserBody(ApiModel):
    user_id: str
    state: UserState
    created_at: IsoTime


class UserList(ApiModel):
    users: list[UserBody]


class IssuedToken(ApiModel):
    user_id: str
    token: str = Field(description="shown once; only its SHA-256 is stored")


class UserStateAnswer(ApiModel):
    user_id: str
    state: UserState


class Me(ApiModel):
    user_id: str
    is_admin: bool


# -- health ---------------------------------------------------------------------------------------
class SchedulerProcess(ApiModel):
    pid: int | None = Field(description="the scheduler process's pid; null while it is not running")
    restarts: int = Field(description="how many times the server has started it again (or tried to) after it exited")
    last_exit: int | None = Field(description="the exit status of the last one that exited")


class SchedulerHealth(ApiModel):
    running: bool
    reconciled: bool
    last_tick_at: IsoTime | None
    ray_ok_at: IsoTime | None
    last_error: str | None
    process: SchedulerProcess | None = Field(
        description="the scheduler's own process (`scheduler.own_process`); null: it runs in the server's"
    )


class NodesHealth(ApiModel):
    reconciling: bool
    last_error: str | None


class Health(ApiModel):
    status: Literal["ok", "degraded"]
    db: str = Field(description="`ok` or `error: <kind>`")
    ray: str = Field(
        description="`ok`, `unreachable: <why>`, `unknown: no pass yet`, "
        "`unknown: the scheduler process is not running ...`, `not checked: ...`"
    )
    scheduler: SchedulerHealth
    nodes: NodesHealth
