"""The console's nodes page.

Owns `/ui/nodes` (and its live part, `/ui/nodes/grid`, which htmx polls): each node from
`NodeService.list` (the API's `GET /api/v2/nodes`, with its visibility) with its state, reason,
pool and a GPU grid: one cell per GPU, `free`, `held` or `draining` (a free GPU of a draining
node). Ray reports GPUs per node, not which task holds which GPU, so the held cells are counted
(total less free) and each names the tasks placed on the node that the caller may see (their
own; another user's is "another user's task"; the admin sees all).

The admin's forms `POST /ui/nodes/{name}/drain|undrain|offline` (with the session's CSRF token,
and a reason for drain and offline) go through `NodeService` exactly as the API's routes do; a
user posting gets 403.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from argus.service.api_models_requests import NodeReason
from argus.service.errors import APIError
from argus.service.node_service import NodeService
from argus.service.threads import on_ray_threads
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.web import page_session, post_session, render

router = APIRouter(prefix="/ui", include_in_schema=False)
ADMIN_ONLY = "only the admin drains, undrains or takes nodes offline"


def _svc(request: Request) -> NodeService:
    return request.app.state.nodes


def _count(value: float | None) -> int:
    """Whole GPUs (a fraction held counts as a GPU held)."""
    return 0 if not value else math.ceil(float(value) - 1e-9)


def holders(node: dict[str, Any]) -> str:
    """Who holds a node's held GPUs, as the caller may know it."""
    names = list(node.get("running_tasks") or [])
    others = int(node.get("running_tasks_other") or 0)
    if others:
        names.append("another user's task" if others == 1 else f"{others} other users' tasks")
    return ", ".join(names) if names else "work Argus did not start"


def gpu_cells(node: dict[str, Any]) -> list[dict[str, str]]:
    """One cell per GPU: its class (`free`, `held`, `draining`) and its title."""
    ray = node.get("ray")
    total = _count(ray["gpus_total"] if ray else node.get("gpus"))
    # Free as admission counts them (a gang admitted there that Ray has not placed yet holds
    # its GPUs), where the listing knows it; else Ray's own free GPUs.
    free_gpus = node.get("gpus_free") if node.get("gpus_free") is not None else (ray or {}).get("gpus_free")
    free = min(total, math.floor(float(free_gpus or 0) + 1e-9)) if ray and ray.get("alive") else 0
    held = total - free if ray and ray.get("alive") else 0
    draining = node.get("state") == "draining" or bool(ray and ray.get("draining"))
    cells: list[dict[str, str]] = []
    for i in range(total):
        if i < held:
            cells.append({"cls": "held", "title": f"GPU {i}: held by {holders(node)}"})
        elif not ray or not ray.get("alive"):
            cells.append({"cls": "draining" if draining else "free", "title": f"GPU {i}: not in Ray"})
        elif draining:
            cells.append({"cls": "draining", "title": f"GPU {i}: free, draining (nothing new is placed here)"})
        else:
            cells.append({"cls": "free", "title": f"GPU {i}: free"})
    return cells


def nodes_view(listing: dict[str, Any]) -> dict[str, Any]:
    nodes = [
        {
            **n,
            "cells": gpu_cells(n),
            "held": sum(1 for c in gpu_cells(n) if c["cls"] == "held"),
        }
        for n in listing["nodes"]
    ]
    return {"nodes": nodes, "pools": listing.get("pools"), "ray_error": listing.get("ray_error")}


async def _listing(request: Request, session: ConsoleSession) -> dict[str, Any]:
    return nodes_view(await on_ray_threads(request, _svc(request).list, session.identity))


@router.get("/nodes")
async def nodes_page(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    return render(request, "nodes.html", session, **await _listing(request, session))


@router.get("/nodes/grid")
async def nodes_grid(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    """The live part of the page (htmx swaps it in every few seconds)."""
    return render(request, "nodes_grid.html", session, **await _listing(request, session))


def _admin(session: ConsoleSession) -> None:
    if not session.identity.is_admin:
        raise APIError(403, ADMIN_ONLY)


def _reason(raw: str) -> str | None:
    """The form's reason through the API's own check (`NodeReason`): blank is none."""
    return NodeReason.check({"reason": raw} if raw.strip() else None)["reason"]


def _done() -> RedirectResponse:
    return RedirectResponse("/ui/nodes", status_code=303)


@router.post("/nodes/{name}/drain")
async def drain(
    request: Request,
    name: str,
    session: Annotated[ConsoleSession, Depends(post_session)],
    reason: Annotated[str, Form()] = "",
) -> RedirectResponse:
    _admin(session)
    await on_ray_threads(request, _svc(request).drain, name, _reason(reason))
    return _done()


@router.post("/nodes/{name}/undrain")
async def undrain(
    request: Request, name: str, session: Annotated[ConsoleSession, Depends(post_session)]
) -> RedirectResponse:
    _admin(session)
    await on_ray_threads(request, _svc(request).undrain, name)
    return _done()


@router.post("/nodes/{name}/offline")
async def offline(
    request: Request,
    name: str,
    session: Annotated[ConsoleSession, Depends(post_session)],
    reason: Annotated[str, Form()] = "",
) -> RedirectResponse:
    _admin(session)
    await on_ray_threads(request, _svc(request).offline, name, _reason(reason))
    return _done()
