"""`/api/v2/secrets`: the caller's own secrets (issue 12).

Thin: the work and the clock are `argus.service.secret_service.SecretService`'s; the body of a
`PUT` is `SecretValue`; answers are documented by `argus.service.api_models_secrets` and sent as
`JSONBody`. No answer carries a value.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from argus.service.api_models import JSONBody, errors
from argus.service.api_models_requests import NO_BODY
from argus.service.api_models_secrets import SecretBody, SecretDeleted, SecretList, SecretValue
from argus.service.auth import Identity, current_identity
from argus.service.secret_service import SecretService

router = APIRouter(prefix="/api/v2", tags=["secrets"])
Caller = Annotated[Identity, Depends(current_identity)]


def _secrets(request: Request) -> SecretService:
    return request.app.state.secrets


@router.put(
    "/secrets/{name}",
    summary="Set one of your secrets (201 when new, 200 when its value is replaced); the value is never shown",
    response_model=SecretBody,
    responses={201: {"model": SecretBody, "description": "A new secret"}, **errors(400, 401, 503)},
    openapi_extra=SecretValue.openapi(),
)
def put_secret(
    request: Request, name: str, who: Caller, body: Annotated[SecretValue, Body(validate_default=True)] = NO_BODY
) -> JSONBody:
    answer, created = _secrets(request).set(who, name, body.value.get_secret_value())
    return JSONBody(answer, status_code=201 if created else 200)


@router.get(
    "/secrets",
    summary="List your secrets: names and times, never values",
    response_model=SecretList,
    responses=errors(401),
)
def list_secrets(request: Request, who: Caller) -> JSONBody:
    return JSONBody(_secrets(request).list(who))


@router.delete(
    "/secrets/{name}",
    summary="Delete one of your secrets",
    response_model=SecretDeleted,
    responses=errors(400, 401, 404),
)
def delete_secret(request: Request, name: str, who: Caller) -> JSONBody:
    return JSONBody(_secrets(request).delete(who, name))
