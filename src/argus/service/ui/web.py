"""Rendering and guarding console pages.

Owns the Jinja2 environment (autoescaping every template, so a name, a log line or a reason is
always text), the filters pages share (times, durations, GPUs), `render`, the security headers of
every `/ui` answer (`SecurityHeaders`: a Content-Security-Policy that allows scripts only from
`/ui/static`, so injected markup can never run; no framing; no sniffing; no caching of pages),
and the guards: `page_session` (a GET page: not logged in -> 303 to the login page) and
`post_session` (a POST: not logged in -> 401; without the session's CSRF token, in the form field
`csrf` or the header `X-CSRF-Token` -> 403).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argus.domain.durations import format_duration
from argus.service.errors import APIError
from argus.service.ui.sessions import COOKIE, ConsoleSession, ConsoleSessions, refuse_csrf

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def _when(value: str | float | None) -> str:
    """An API time (ISO text or epoch seconds) as `YYYY-MM-DD HH:MM:SS` UTC; '-' for none."""
    if value is None or value == "":
        return "-"
    when = datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int | float) else datetime.fromisoformat(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(max(0.0, float(seconds)))


def _gpus(value: float | None) -> str:
    return "-" if value is None else f"{float(value):g}"


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=_when, duration=_duration, gpus=_gpus)


class LoginRequired(Exception):
    """A page asked for without a live session: the answer is the login page."""


def sessions(request: Request) -> ConsoleSessions:
    return request.app.state.console


def render(
    request: Request, template: str, session: ConsoleSession | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The page `template` with the shared context (the session, its CSRF token, the path)."""
    html = ENV.get_template(template).render(
        request=request,
        session=session,
        me=session.identity if session else None,
        csrf=session.csrf if session else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


async def page_session(request: Request) -> ConsoleSession:
    """FastAPI dependency of a GET page: the live session, or LoginRequired (a 303 to the login)."""
    found = sessions(request).resolve(request.cookies.get(COOKIE))
    if found is None:
        raise LoginRequired()
    return found


async def post_session(request: Request) -> ConsoleSession:
    """FastAPI dependency of a console POST: the live session whose CSRF token came with it.

    Raises:
        APIError: 401 without a live session; 403 without its CSRF token.
    """
    found = sessions(request).resolve(request.cookies.get(COOKIE))
    if found is None:
        raise APIError(401, "not logged in to the console")
    given = request.headers.get("x-csrf-token")
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get("csrf")
            given = value if isinstance(value, str) else None
    if not ConsoleSessions.csrf_ok(found.csrf, given):
        raise refuse_csrf()
    return found


def to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


class SecurityHeaders:
    """Pure ASGI middleware: the console's security headers on every answer under `/ui`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/ui"):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/ui/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + _HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
