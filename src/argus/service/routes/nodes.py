"""`/api/v2/nodes`: managed nodes (seed v2.1 §4.1).

Any user may list and read nodes (to see the pools' capacity; SSH details are the admin's
only); registering, draining, undraining and taking a node offline are the admin's. A node's
`{id}` is its registered name, or, for a node that joined Ray by itself, its `argus.io/node`
label or its Ray node id. Bodies are request models (`argus.service.api_models_requests`);
answers are documented by `argus.service.api_models_nodes` and sent as `JSONBody`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from argus.service.api_models import JSONBody, errors
from argus.service.api_models_nodes import HoldLifted, NodeBody, NodeDetail, NodeList
from argus.service.api_models_requests import NO_BODY, NodeReason, NodeRegistrationBody
from argus.service.auth import Identity, admin_identity, current_identity
from argus.service.node_service import NodeService
from argus.service.threads import on_ray_threads

router = APIRouter(prefix="/api/v2", tags=["nodes"])
Caller = Annotated[Identity, Depends(current_identity)]
Admin = Annotated[Identity, Depends(admin_identity)]
Reason = Annotated[NodeReason, Body(validate_default=True)]


def _svc(request: Request) -> NodeService:
    return request.app.state.nodes


@router.post(
    "/nodes",
    status_code=201,
    summary="Register a node and start its agent over SSH (admin)",
    response_model=NodeBody,
    responses=errors(400, 401, 403, 409),
    openapi_extra=NodeRegistrationBody.openapi(),
)
async def register(
    request: Request, _: Admin, body: Annotated[NodeRegistrationBody, Body(validate_default=True)] = NO_BODY
) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).register, body.model_dump()), status_code=201)


@router.get(
    "/nodes",
    summary="Registered nodes with Ray's live view, and unmanaged Ray workers",
    response_model=NodeList,
    responses=errors(401),
)
async def list_nodes(request: Request, who: Caller) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).list, who))


@router.get(
    "/nodes/{node_id}", summary="One node, with its events", response_model=NodeDetail, responses=errors(401, 404, 503)
)
async def get_node(request: Request, node_id: str, who: Caller) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).get, who, node_id))


@router.post(
    "/nodes/{node_id}:drain",
    summary="Stop placing work on a node; running tasks finish (admin)",
    response_model=NodeBody,
    responses=errors(400, 401, 403, 404, 409, 503),
    openapi_extra=NodeReason.openapi(),
)
async def drain(request: Request, node_id: str, _: Admin, body: Reason = NO_BODY) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).drain, node_id, body.reason))


@router.post(
    "/nodes/{node_id}:undrain",
    summary="Take a draining node back (admin)",
    response_model=NodeBody | HoldLifted,
    responses=errors(401, 403, 404, 409, 503),
)
async def undrain(request: Request, node_id: str, _: Admin) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).undrain, node_id))


@router.post(
    "/nodes/{node_id}:offline",
    summary="Stop a node's agent once it is empty (admin)",
    response_model=NodeBody,
    responses=errors(400, 401, 403, 404, 409, 503),
    openapi_extra=NodeReason.openapi(),
)
async def offline(request: Request, node_id: str, _: Admin, body: Reason = NO_BODY) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _svc(request).offline, node_id, body.reason))
