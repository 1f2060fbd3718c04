"""The console's users page (the admin's).

Owns `/ui/users`: every user with their state; forms to create a user, disable and enable one,
and issue a token, each a POST with the session's CSRF token through `UserService` (the API's
own rules: `POST /api/v2/users`, `:disable`, `:enable`, `/tokens`). A new token is shown once, on
the answer to its POST (`<code id="new-token">`): it is never stored, put in a URL or in a
redirect, and no page is cached (`SecurityHeaders`). A bad user id gives the form again with the
problem next to the field. A user who is not the admin gets a 403 page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from argus.domain.errors import Conflict
from argus.domain.users import new_user_id_problem
from argus.service.errors import APIError
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.web import page_session, post_session, render
from argus.service.users import UserService

router = APIRouter(prefix="/ui", include_in_schema=False)
ADMIN_ONLY = "only the admin manages users"


def _users(request: Request) -> UserService:
    return request.app.state.users


def _admin(session: ConsoleSession) -> ConsoleSession:
    if not session.identity.is_admin:
        raise APIError(403, ADMIN_ONLY)
    return session


def _page(
    request: Request,
    session: ConsoleSession,
    status: int = 200,
    problem: str | None = None,
    typed: str = "",
    issued: dict[str, str] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    return render(
        request,
        "users.html",
        session,
        status_code=status,
        users=_users(request).list()["users"],
        problem=problem,
        typed=typed,
        issued=issued,
        notice=notice,
    )


def _back(notice: str) -> RedirectResponse:
    """After a change: the list again (POST, then GET, so a reload repeats nothing)."""
    return RedirectResponse(f"/ui/users?done={notice}", status_code=303)


NOTICES = {"created": "User created.", "disabled": "User disabled.", "enabled": "User enabled."}


@router.get("/users")
def users_page(
    request: Request, session: Annotated[ConsoleSession, Depends(page_session)], done: str = ""
) -> HTMLResponse:
    return _page(request, _admin(session), notice=NOTICES.get(done))


@router.post("/users")
def create_user(
    request: Request,
    session: Annotated[ConsoleSession, Depends(post_session)],
    user_id: Annotated[str, Form()] = "",
) -> Response:
    _admin(session)
    typed = user_id.strip()
    why = new_user_id_problem(typed) if typed else "is required"
    if why is None:
        try:
            _users(request).create(typed)
        except Conflict as exc:
            why = str(exc)
    if why is not None:
        return _page(request, session, 400, problem=why, typed=user_id)
    return _back("created")


@router.post("/users/{user_id}/disable")
def disable_user(
    request: Request, user_id: str, session: Annotated[ConsoleSession, Depends(post_session)]
) -> RedirectResponse:
    _admin(session)
    _users(request).disable(user_id)
    return _back("disabled")


@router.post("/users/{user_id}/enable")
def enable_user(
    request: Request, user_id: str, session: Annotated[ConsoleSession, Depends(post_session)]
) -> RedirectResponse:
    _admin(session)
    _users(request).enable(user_id)
    return _back("enabled")


@router.post("/users/{user_id}/tokens")
def issue_token(
    request: Request, user_id: str, session: Annotated[ConsoleSession, Depends(post_session)]
) -> HTMLResponse:
    """The new token, on this answer only (a reload does not show it again: it asks to resend)."""
    _admin(session)
    issued = _users(request).issue_token(user_id)
    return _page(request, session, issued=issued)
