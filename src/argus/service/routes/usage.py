"""`/api/v2/usage`: GPU-hours from the GPU-hour ledger, like Slurm's `sreport` (issue 13).

Thin: the rules and the clock are `argus.service.usage_service.UsageService`'s; the answer is
documented by `argus.service.api_models_usage.UsageReport` and sent as `JSONBody`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from argus.service.api_models import JSONBody, errors
from argus.service.api_models_usage import UsageReport
from argus.service.auth import Identity, current_identity
from argus.service.usage_service import TIME_RULE, UsageService

router = APIRouter(prefix="/api/v2", tags=["usage"])
Caller = Annotated[Identity, Depends(current_identity)]


def _usage(request: Request) -> UsageService:
    return request.app.state.usage


@router.get(
    "/usage",
    summary="GPU-hours, tasks, attempts, wait and run time in a window, by user, pool, UTC day or task "
    "(yours; the admin's: everyone's)",
    response_model=UsageReport,
    responses=errors(400, 401, 403),
)
def usage(
    request: Request,
    who: Caller,
    start: Annotated[
        str | None, Query(alias="from", description=f"the window's start: {TIME_RULE}; default: to - 7 days")
    ] = None,
    end: Annotated[str | None, Query(alias="to", description=f"the window's end: {TIME_RULE}; default: now")] = None,
    group_by: Annotated[str, Query(description="user, pool, day (UTC) or task")] = "user",
    user: Annotated[str | None, Query(description="the admin only: one user's usage")] = None,
) -> JSONBody:
    return JSONBody(_usage(request).report(who, start, end, group_by, user))
