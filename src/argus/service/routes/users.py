"""`/api/v2/users` (admin) and `/api/v2/me` (seed 004).

Thin: the work and the clock are `argus.service.users.UserService`'s; the body of a new user is
`UserCreate`; answers are documented by `argus.service.api_models` and sent as `JSONBody`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from argus.service.api_models import IssuedToken, JSONBody, Me, UserBody, UserList, UserStateAnswer, errors
from argus.service.api_models_requests import NO_BODY, UserCreate
from argus.service.auth import Identity, admin_identity, current_identity
from argus.service.users import UserService

router = APIRouter(prefix="/api/v2", tags=["users"])
Admin = Annotated[Identity, Depends(admin_identity)]


def _users(request: Request) -> UserService:
    return request.app.state.users


@router.post(
    "/users",
    status_code=201,
    summary="Create a user (admin)",
    response_model=UserBody,
    responses=errors(400, 401, 403, 409),
    openapi_extra=UserCreate.openapi(),
)
def create_user(
    request: Request, _: Admin, body: Annotated[UserCreate, Body(validate_default=True)] = NO_BODY
) -> JSONBody:
    return JSONBody(_users(request).create(body.user_id), status_code=201)


@router.get("/users", summary="List users (admin)", response_model=UserList, responses=errors(401, 403))
def list_users(request: Request, _: Admin) -> JSONBody:
    return JSONBody(_users(request).list())


@router.post(
    "/users/{user_id}/tokens",
    status_code=201,
    summary="Issue a token (admin; shown once)",
    response_model=IssuedToken,
    responses=errors(401, 403, 404, 409),
)
def issue_token(request: Request, user_id: str, _: Admin) -> JSONBody:
    return JSONBody(_users(request).issue_token(user_id), status_code=201)


@router.post(
    "/users/{user_id}:disable",
    summary="Disable a user (admin); every token of theirs is revoked at once, for good",
    response_model=UserStateAnswer,
    responses=errors(401, 403, 404),
)
def disable_user(request: Request, user_id: str, _: Admin) -> JSONBody:
    return JSONBody(_users(request).disable(user_id))


@router.post(
    "/users/{user_id}:enable",
    summary="Re-enable a disabled user (admin); their old tokens stay revoked",
    response_model=UserStateAnswer,
    responses=errors(401, 403, 404),
)
def enable_user(request: Request, user_id: str, _: Admin) -> JSONBody:
    return JSONBody(_users(request).enable(user_id))


@router.get("/me", summary="Who you are", response_model=Me, responses=errors(401))
def me(who: Annotated[Identity, Depends(current_identity)]) -> JSONBody:
    return JSONBody({"user_id": who.user_id, "is_admin": who.is_admin})
