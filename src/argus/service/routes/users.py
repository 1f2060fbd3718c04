"""`/api/v2/users` (admin) and `/api/v2/me` (seed 004)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from argus.domain.task import check_user_id
from argus.service.auth import ADMIN, Identity, admin_identity, current_identity
from argus.service.errors import APIError, not_found
from argus.service.views import user_view
from argus.spec.errors import Problem
from argus.store.users import UserExists

router = APIRouter(prefix="/api/v2", tags=["users"])
Admin = Annotated[Identity, Depends(admin_identity)]


def _users(request: Request):
    return request.app.state.users


@router.post("/users", status_code=201, summary="Create a user (admin)")
def create_user(request: Request, _: Admin, body: Annotated[Any, Body()] = None) -> dict:
    if not isinstance(body, dict) or set(body) - {"user_id"}:
        extra = sorted(set(body) - {"user_id"}) if isinstance(body, dict) else []
        raise APIError(
            400,
            'the body must be {"user_id": ...}',
            [Problem(extra[0] if extra else "<body>", "unknown key" if extra else "must be a JSON object")],
        )
    user_id = body.get("user_id")
    if user_id is None:
        raise APIError(400, "user_id is required", [Problem("user_id", "is required")])
    try:
        check_user_id(user_id)
    except ValueError as exc:
        raise APIError(400, "invalid user_id", [Problem("user_id", str(exc))]) from None
    if user_id == ADMIN:
        raise APIError(400, "invalid user_id", [Problem("user_id", "'admin' is reserved")])
    try:
        return user_view(_users(request).create(user_id, time.time()))
    except UserExists:
        raise APIError(409, f"user {user_id} exists already") from None


@router.get("/users", summary="List users (admin)")
def list_users(request: Request, _: Admin) -> dict:
    return {"users": [user_view(u) for u in _users(request).list()]}


def _known_id(user_id: str) -> bool:
    try:
        check_user_id(user_id)
        return True
    except ValueError:
        return False


@router.post("/users/{user_id}/tokens", status_code=201, summary="Issue a token (admin; shown once)")
def issue_token(request: Request, user_id: str, _: Admin) -> dict:
    user = _users(request).get(user_id) if _known_id(user_id) else None
    if user is None:
        raise not_found(f"no user {user_id}")
    token = _users(request).issue_token(user_id, time.time()) if user["state"] == "ACTIVE" else None
    if token is None:
        raise APIError(409, f"user {user_id} is disabled")
    return {"user_id": user_id, "token": token}


@router.post(
    "/users/{user_id}:disable",
    summary="Disable a user (admin); every token of theirs is revoked at once, for good",
)
def disable_user(request: Request, user_id: str, _: Admin) -> dict:
    if not _known_id(user_id) or not _users(request).disable(user_id, time.time()):
        raise not_found(f"no user {user_id}")
    request.app.state.auth.forget()  # the user's tokens stop working with the next request
    return {"user_id": user_id, "state": "DISABLED"}


@router.post("/users/{user_id}:enable", summary="Re-enable a disabled user (admin); their old tokens stay revoked")
def enable_user(request: Request, user_id: str, _: Admin) -> dict:
    if not _known_id(user_id) or not _users(request).enable(user_id):
        raise not_found(f"no user {user_id}")
    request.app.state.auth.forget()  # nothing remembered from before survives the change
    return {"user_id": user_id, "state": "ACTIVE"}


@router.get("/me", summary="Who you are")
def me(who: Annotated[Identity, Depends(current_identity)]) -> dict:
    return {"user_id": who.user_id, "is_admin": who.is_admin}
