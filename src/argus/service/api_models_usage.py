"""The usage report's answer as Pydantic models (docs/api.md, Usage).

Owns the documented shape of `GET /api/v2/usage` (`UsageReport`, its rows `UsageRowBody`), which
`argus.service.usage_service` builds. Invariants as in `argus.service.api_models`: exactly the
keys the service builds, in its order; times are ISO 8601 in UTC.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from argus.service.api_models import ApiModel, IsoTime


class UsageRowBody(ApiModel):
    """One group of the report (or the whole window, `total`), like a row of Slurm's `sreport`."""

    key: str = Field(description="the user, the pool (`-`: none), the UTC day `YYYY-MM-DD`, the task id, or `total`")
    gpu_seconds: float = Field(description="GPUs x seconds allocated inside the window (running attempts to now)")
    gpu_hours: float
    tasks: int = Field(description="distinct tasks with an attempt in the window")
    attempts: int = Field(description="attempts in the window (started there, or held GPUs there)")
    wait_s: float | None = Field(
        description="MEAN wait (accepted -> first allocation start) of the tasks whose first attempt "
        "started in the window; null when none did"
    )
    run_s: float = Field(description="wall seconds the attempts held GPUs inside the window")


class UsageReport(ApiModel):
    """`GET /api/v2/usage`: GPU-hours in [start, end) from the GPU-hour ledger, grouped."""

    start: IsoTime = Field(description="the window's start (`from`)")
    end: IsoTime = Field(description="the window's end (`to`); nothing after `now` counts")
    now: IsoTime = Field(description="when the report was made: attempts still running count up to it")
    group_by: Literal["user", "pool", "day", "task"]
    user: str | None = Field(description="whose usage: the caller's own, or for the admin the `user` asked (null: all)")
    rows: list[UsageRowBody] = Field(description="sorted by key; only groups with an attempt in the window")
    total: UsageRowBody = Field(description="the whole window (each task counted once)")
