"""API errors: one JSON shape for every error, and the handlers that produce it.

Body: `{"error": <code>, "message": <text>, "problems": [{"field", "message"}]}` (docs/api.md).
A request that fails FastAPI's own validation (a query parameter of the wrong type) is a 400
naming the parameter; an unexpected exception is a 500 that names nothing internal.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from argus.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, TooLarge, Unavailable
from argus.spec.errors import Problem, SpecError

log = logging.getLogger("argus.service")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


def bad_request(message: str, problems: list[Problem] | None = None) -> APIError:
    return APIError(400, message, problems)


def not_found(message: str) -> APIError:
    return APIError(404, message)


# Each domain error kind and its HTTP status: the one place where the core's errors meet HTTP.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 400,
    Forbidden: 403,
    Unavailable: 503,
    TooLarge: 413,
}


def from_domain_error(exc: DomainError) -> APIError:
    """The API error for a domain error (500 for a kind with no status of its own)."""
    status = next((s for kind, s in DOMAIN_STATUS.items() if isinstance(exc, kind)), 500)
    problems = [Problem(f, r) for f, r in exc.problems] if isinstance(exc, (Invalid, TooLarge)) else None
    return APIError(status, exc.message, problems)


def from_spec_error(exc: SpecError) -> APIError:
    return APIError(400, f"{exc.source} is invalid", exc.problems)


def _clean(text: str) -> str:
    """Text that can be written as UTF-8 (a lone surrogate from user input is escaped)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, message: str, problems: list[Problem] | None = None) -> dict:
    return {
        "error": CODES.get(status, "error"),
        "message": _clean(message),
        "problems": [{"field": _clean(p.field), "message": _clean(p.reason)} for p in (problems or [])],
    }


def error_response(
    status: int, message: str, problems: list[Problem] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, problems), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, exc.problems, headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        e = from_domain_error(exc)
        return error_response(e.status, e.message, e.problems)

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        e = from_spec_error(exc)
        return error_response(400, e.message, e.problems)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
            problems.append(Problem(".".join(loc) or "<request>", str(err.get("msg", "invalid"))))
        return error_response(400, "the request is invalid", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; see the server log")
