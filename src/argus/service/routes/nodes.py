"""`/api/v2/nodes`: managed nodes (seed v2.1 §4.1).

Any user may list and read nodes (to see the pools' capacity; SSH details are the admin's
only); registering, draining, undraining and taking a node offline are the admin's. A node's
`{id}` is its registered name, or, for a node that joined Ray by itself, its `argus.io/node`
label or its Ray node id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from argus.service.auth import Identity, admin_identity, current_identity
from argus.service.errors import APIError
from argus.service.routes.tasks import on_ray_threads
from argus.spec.errors import Problem

router = APIRouter(prefix="/api/v2", tags=["nodes"])
Caller = Annotated[Identity, Depends(current_identity)]
Admin = Annotated[Identity, Depends(admin_identity)]
MAX_REASON = 500


def _svc(request: Request):
    return request.app.state.nodes


def _reason(body: Any) -> str | None:
    """The optional `{"reason": "..."}` body of `:drain` and `:offline`.

    Raises:
        APIError: 400 naming `reason` for any other body.
    """
    if body is None:
        return None
    if not isinstance(body, dict) or set(body) - {"reason"}:
        raise APIError(400, 'the body must be empty or {"reason": "..."}', [Problem("reason", "the only key allowed")])
    value = body.get("reason")
    if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON):
        raise APIError(400, "invalid reason", [Problem("reason", f"must be text of 1-{MAX_REASON} characters")])
    return value.strip() if value is not None else None


@router.post("/nodes", status_code=201, summary="Register a node and start its agent over SSH (admin)")
async def register(request: Request, _: Admin, body: Annotated[Any, Body()] = None) -> JSONResponse:
    return JSONResponse(await on_ray_threads(request, _svc(request).register, body), status_code=201)


@router.get("/nodes", summary="Registered nodes with Ray's live view, and unmanaged Ray workers")
async def list_nodes(request: Request, who: Caller) -> dict:
    return await on_ray_threads(request, _svc(request).list, who)


@router.get("/nodes/{node_id}", summary="One node, with its events")
async def get_node(request: Request, node_id: str, who: Caller) -> dict:
    return await on_ray_threads(request, _svc(request).get, who, node_id)


@router.post("/nodes/{node_id}:drain", summary="Stop placing work on a node; running tasks finish (admin)")
async def drain(request: Request, node_id: str, _: Admin, body: Annotated[Any, Body()] = None) -> dict:
    return await on_ray_threads(request, _svc(request).drain, node_id, _reason(body))


@router.post("/nodes/{node_id}:undrain", summary="Take a draining node back (admin)")
async def undrain(request: Request, node_id: str, _: Admin) -> dict:
    return await on_ray_threads(request, _svc(request).undrain, node_id)


@router.post("/nodes/{node_id}:offline", summary="Stop a node's agent once it is empty (admin)")
async def offline(request: Request, node_id: str, _: Admin, body: Annotated[Any, Body()] = None) -> dict:
    return await on_ray_threads(request, _svc(request).offline, node_id, _reason(body))
