"""`/api/v2/code`: the caller's code snapshots (issue 12).

Thin: the work is `argus.service.code_service.CodeService`'s; answers are documented by
`argus.service.api_models_code` and sent as `JSONBody`. A push's body is a tar.gz archive, read
raw (up to `service.code_max_bytes`, the body limit of this one route) and declared in OpenAPI by
hand. Unpacking and deleting touch the disk: they run on the code threads (two at a time), never
on the event loop nor in the threads that serve the reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Query, Request

from argus.service.api_models import JSONBody, errors
from argus.service.api_models_code import CodeDeleted, CodeList, CodePushAnswer, CodeSnapshotBody
from argus.service.auth import Identity, current_identity
from argus.service.code_service import CodeService
from argus.service.errors import APIError

router = APIRouter(prefix="/api/v2", tags=["code"])
Caller = Annotated[Identity, Depends(current_identity)]
ARCHIVE_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")
CODE_PATH = "/api/v2/code"  # the route whose body limit is `service.code_max_bytes`
CODE_THREADS = 2
T = TypeVar("T")

_UPLOAD_ERRORS = {
    **errors(400, 401, 413, 415),
    413: {
        "model": errors(413)[413]["model"],
        "description": "The body is over `service.code_max_bytes`, or the archive expands past it "
        "(`problems` names the largest files)",
    },
    415: {"model": errors(415)[415]["model"], "description": "Not application/gzip or application/octet-stream"},
}
_NAME = Query(description="the snapshot's name (a name means its newest snapshot)", min_length=1, max_length=128)


def _svc(request: Request) -> CodeService:
    return request.app.state.code


async def _on_code_threads(request: Request, fn: Callable[..., T], *args: Any) -> T:
    state = request.app.state
    if getattr(state, "code_threads", None) is None:
        state.code_threads = anyio.CapacityLimiter(CODE_THREADS)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=state.code_threads)


@router.post(
    "/code",
    status_code=201,
    summary="Push a directory as a code snapshot (tar.gz body)",
    response_model=CodePushAnswer,
    responses=_UPLOAD_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def push(request: Request, who: Caller, name: Annotated[str, _NAME]) -> JSONBody:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ARCHIVE_TYPES:
        raise APIError(
            415, f"the body must be a tar.gz archive with Content-Type {ARCHIVE_TYPES[0]} (got '{ctype or 'none'}')"
        )
    body = await request.body()
    return JSONBody(await _on_code_threads(request, _svc(request).push, who, body, name), status_code=201)


@router.post(
    "/code/{sha256}:touch",
    summary="Push again, by hash, content you have: it takes the name and becomes its newest",
    response_model=CodePushAnswer,
    responses=errors(400, 401, 404),
)
def touch(request: Request, sha256: str, who: Caller, name: Annotated[str, _NAME]) -> JSONBody:
    return JSONBody(_svc(request).touch(who, sha256, name))


@router.get("/code", summary="List your code snapshots", response_model=CodeList, responses=errors(401))
def list_code(request: Request, who: Caller) -> JSONBody:
    return JSONBody(_svc(request).list(who))


@router.get(
    "/code/{ref}",
    summary="One of your snapshots, by hash, hash prefix (8+ hex) or name",
    response_model=CodeSnapshotBody,
    responses=errors(400, 401, 404),
)
def get_code(request: Request, ref: str, who: Caller) -> JSONBody:
    return JSONBody(_svc(request).get(who, ref))


@router.delete(
    "/code/{ref}",
    summary="Delete one of your snapshots (not while a task that has not ended uses it)",
    response_model=CodeDeleted,
    responses=errors(400, 401, 404, 409),
)
async def delete_code(request: Request, ref: str, who: Caller) -> JSONBody:
    return JSONBody(await _on_code_threads(request, _svc(request).delete, who, ref))
