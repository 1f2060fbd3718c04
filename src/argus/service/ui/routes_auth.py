"""Console login and logout.

Owns `/ui` (to the tasks page), `/ui/login` (a form with a password field `Token`; a good token
gives the session cookie, a wrong one the form again with `Invalid token`) and `/ui/logout`.
The login form's CSRF token is checked against its own short-lived cookie; the token typed in is
only ever in the POST body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from argus.service.errors import APIError
from argus.service.ui.sessions import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_CSRF_COOKIE,
    LOGIN_CSRF_TTL_S,
    ConsoleSession,
    ConsoleSessions,
    refuse_csrf,
)
from argus.service.ui.web import post_session, render, sessions, to_login

router = APIRouter(prefix="/ui", include_in_schema=False)


def _secure(request: Request) -> bool:
    forced = request.app.state.settings.service.ui_cookie_secure
    return request.url.scheme == "https" if forced is None else bool(forced)


def _login_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    csrf = ConsoleSessions.new_login_csrf()
    page = render(request, "login.html", None, status_code=status, login_csrf=csrf, error=error)
    page.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=LOGIN_CSRF_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return page


@router.get("")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/tasks", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if sessions(request).resolve(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse("/ui/tasks", status_code=303)
    return _login_form(request)


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "") -> Response:
    if not ConsoleSessions.csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        raise refuse_csrf()
    try:
        cookie, session = sessions(request).login(token)
    except APIError:
        return _login_form(request, 401, "Invalid token")
    out = RedirectResponse("/ui/tasks", status_code=303)
    max_age = max(1, int(session.expires_at - sessions(request).clock()))
    out.set_cookie(
        COOKIE,
        cookie,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    out.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    return out


@router.post("/logout")
async def logout(request: Request, session: Annotated[ConsoleSession, Depends(post_session)]) -> RedirectResponse:
    sessions(request).logout(session)
    out = to_login()
    out.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return out
