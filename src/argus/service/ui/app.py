"""Mounting the console: its routers, its static files, its error pages and its headers.

Owns `install(app)`: `/ui/static` (our stylesheet and script, and htmx with its SSE extension,
vendored from their npm packages with their licences), the page routers, an HTML error page for
API and domain errors raised under `/ui` (JSON stays the answer everywhere else), the 303 to the
login page for a GET without a session, and `SecurityHeaders`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from argus.domain.errors import DomainError
from argus.service.errors import APIError, from_domain_error
from argus.service.ui import (
    routes_auth,
    routes_nodes,
    routes_queue,
    routes_submit,
    routes_task,
    routes_tasks,
    routes_usage,
    routes_users,
)
from argus.service.ui.web import STATIC_DIR, LoginRequired, SecurityHeaders, render, sessions, to_login

ROUTERS = [
    routes_auth,
    routes_tasks,
    routes_task,
    routes_submit,
    routes_nodes,
    routes_queue,
    routes_usage,
    routes_users,
]


def _is_ui(request: Request) -> bool:
    return request.url.path.startswith("/ui")


def error_page(request: Request, exc: APIError) -> Response:
    """The console's error page, naming each problem's field (the caller's session, if any,
    keeps the navigation)."""
    from argus.service.ui.sessions import COOKIE

    session = sessions(request).resolve(request.cookies.get(COOKIE))
    page = render(
        request,
        "error.html",
        session,
        status_code=exc.status,
        status=exc.status,
        message=exc.message,
        problems=exc.problems,
    )
    return page


def install(app: FastAPI) -> None:
    """Mount the console on `app` (after `argus.service.errors.install`)."""
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for module in ROUTERS:
        app.include_router(module.router)
    json_api: Any = app.exception_handlers[APIError]
    json_domain: Any = app.exception_handlers[DomainError]

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, __: LoginRequired) -> Response:
        if request.headers.get("hx-request"):  # a live part polling: the whole page goes to the login
            return Response(status_code=204, headers={"HX-Redirect": "/ui/login"})
        return to_login()

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        if _is_ui(request):
            return error_page(request, exc)
        return await json_api(request, exc)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> Response:
        if _is_ui(request):
            return error_page(request, from_domain_error(exc))  # the API's own status for each kind
        return await json_domain(request, exc)

    app.add_middleware(SecurityHeaders)
