"""`GET /healthz`: liveness of the database and the two loops, without calling Ray.

Answers 200 `ok`, or 200 `degraded` when Ray was unreachable at the scheduler's last pass or the
scheduler's process is down (the server and its database work; tasks wait), or 503 when the
database cannot be read. A scheduler
in its own process is read from what it last reported (`argus.scheduler.link`), with its pid and
how often the server has started it again (`process`). Runs on the
event loop: one indexed read, no thread to wait for.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from argus.service.api_models import Health, JSONBody, errors
from argus.service.errors import error_response
from argus.service.views import iso

log = logging.getLogger("argus.service")

router = APIRouter(tags=["operations"])


def _ray_state(request: Request) -> str:
    """Ray as the scheduler's last pass found it (never a Ray call here)."""
    state = request.app.state
    if not state.scheduler_running:
        return "not checked: the scheduler is off"
    child = state.scheduler_child
    if child is not None and not child.running:
        return f"unknown: the scheduler process is not running (restarted {child.restarts} time(s))"
    scheduler = state.scheduler_health
    if scheduler.ray_error is not None:
        return f"unreachable: {scheduler.ray_error}"
    return "ok" if scheduler.ray_ok_at is not None else "unknown: no pass yet"


@router.get(
    "/healthz",
    summary="Liveness: the database and the scheduler",
    response_model=Health,
    responses=errors(503),
)
async def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    try:
        state.store.get("-")
    except Exception as exc:  # report, do not raise
        log.warning("healthz: the database cannot be read: %s", type(exc).__name__)
        return error_response(503, "database unavailable")
    scheduler, child = state.scheduler_health, state.scheduler_child
    ray_state = _ray_state(request)
    down = child is not None and state.scheduler_running and not child.running
    return JSONBody(
        {
            "status": "degraded" if down or ray_state.startswith("unreachable") else "ok",
            "db": "ok",
            "ray": ray_state,
            "scheduler": {
                "running": state.scheduler_running and (child is None or child.running),
                "reconciled": scheduler.reconciled,
                "last_tick_at": iso(scheduler.last_tick_at),
                "ray_ok_at": iso(scheduler.ray_ok_at),
                "last_error": scheduler.last_error,
                "process": None
                if child is None
                else {"pid": child.pid, "restarts": child.restarts, "last_exit": child.last_exit},
            },
            "nodes": {"reconciling": state.nodes_reconciling, "last_error": state.node_reconciler.last_error},
        }
    )
