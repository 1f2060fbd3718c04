"""The console's submit page.

Owns `/ui/submit`: a TaskSpec pasted into the `spec` textarea or uploaded as `file` (the file
wins when both are given), POSTed as multipart with the session's CSRF token, and accepted by
`TaskService.accept`, the API's own path (the per-user rate, the same parse and checks, the
accept threads and the check pool, never the event loop). Problems come back next to the text,
one `<li data-field=...>` per field as the API names them, the text kept in the textarea;
success is a 303 to the new task's page (which shows the spec's credential warnings).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from argus.domain.errors import DomainError
from argus.service.errors import APIError, from_domain_error, from_spec_error
from argus.service.task_service import TaskService
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.web import page_session, post_session, render
from argus.spec.errors import Problem, SpecError

router = APIRouter(prefix="/ui", include_in_schema=False)


def _svc(request: Request) -> TaskService:
    return request.app.state.tasks


def _form(
    request: Request, session: ConsoleSession, text: str = "", problems: list[Problem] | None = None, status: int = 200
) -> HTMLResponse:
    return render(request, "submit.html", session, status_code=status, spec=text, problems=problems or [])


@router.get("/submit")
def submit_page(request: Request, session: Annotated[ConsoleSession, Depends(page_session)]) -> HTMLResponse:
    return _form(request, session)


async def _text(request: Request) -> tuple[str, list[Problem]]:
    """The TaskSpec text the form carries (the upload, else the textarea) and what is wrong
    with the form itself."""
    form = await request.form()
    pasted = form.get("spec")
    text = pasted if isinstance(pasted, str) else ""
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read()
        if raw:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return text, [Problem("file", "must be UTF-8 text (a TaskSpec in YAML)")]
    if not text.strip():
        return text, [Problem("spec", "paste a TaskSpec or choose a file")]
    return text.replace("\r\n", "\n"), []


@router.post("/submit")
async def submit(request: Request, session: Annotated[ConsoleSession, Depends(post_session)]) -> Response:
    text, problems = await _text(request)
    if problems:
        return _form(request, session, text, problems, 400)
    svc, who = _svc(request), session.identity
    try:
        svc.take_rate(who)
        accepted = await svc.accept(who, text)
    except (SpecError, APIError, DomainError) as exc:
        err = (
            from_spec_error(exc)
            if isinstance(exc, SpecError)
            else from_domain_error(exc)
            if isinstance(exc, DomainError)
            else exc
        )
        return _form(request, session, text, err.problems or [Problem("spec", err.message)], err.status)
    return RedirectResponse(f"/ui/tasks/{accepted['task_id']}", status_code=303)
