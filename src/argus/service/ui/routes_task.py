"""The console's page of one task, its live parts, its log, cancel and priority.

Owns `/ui/tasks/{task_id}` and what hangs off it: `/live` (the state, facts, pending reason and
attempts, polled by htmx every 2 s until the task is final), `/log/panel` (the log section,
polled until the first attempt exists), `/log/stream?attempt=N` (the driver log as server-sent
events: the text so far, then each second only what is new, every line HTML-escaped because
htmx inserts it as markup, each event's id the log's length so far so that a reconnecting
browser gets only the rest; `end` once the attempt ended and its log is complete), `/log`
(the log as a download), `/cancel` (a confirmation page, then the POST) and `/priority` (the
admin's form). Everything goes through `TaskService` with the session's identity; another
user's task and a task that does not exist both answer 404 `Task not found`.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import anyio
import yaml
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse

from argus.domain.errors import DomainError, NotFound, Unavailable
from argus.domain.task import FINAL_STATES, WAITING_STATES
from argus.service.errors import APIError
from argus.service.task_queries import SMALL_INT
from argus.service.task_service import TaskService
from argus.service.threads import on_ray_threads
from argus.service.ui.sessions import COOKIE, ConsoleSession
from argus.service.ui.web import page_session, post_session, render, sessions
from argus.spec.job_env import secret_like
from argus.spec.redact import ENV_KEY

router = APIRouter(prefix="/ui", include_in_schema=False)
NOT_FOUND = "Task not found"
LIVE_EVERY = "every 2s"
LOG_POLL_S = 1.0  # how often a followed log is read again
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing a quiet stream
FIRST_CHUNK_CHARS = 1_000_000  # a followed log starts with at most its last this many characters
LONG_LOG_CHARS = 4_000_000  # past this, a followed log is read again every 5 polls' time
SESSION_CHECK_POLLS = 5  # a followed log checks its session is still good every this many reads
_FINAL = {s.value for s in FINAL_STATES}
_WAITING = {s.value for s in WAITING_STATES}
Session = Annotated[ConsoleSession, Depends(page_session)]
Posted = Annotated[ConsoleSession, Depends(post_session)]


def _svc(request: Request) -> TaskService:
    return request.app.state.tasks


def _not_found() -> APIError:
    return APIError(404, NOT_FOUND)


def _detail(request: Request, session: ConsoleSession, task_id: str) -> dict[str, Any]:
    """The task's detail, or 404 `Task not found` (another user's task, or none)."""
    try:
        return _svc(request).get(session.identity, task_id)
    except NotFound:
        raise _not_found() from None


def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def _time_left(task: dict[str, Any], now: float) -> float | None:
    """Seconds before the time limit stops a running task (its latest attempt's start, else
    its submission, counts as the start, as the scheduler counts it); None unless it runs."""
    latest = task["latest_attempt"]
    if task["state"] in _FINAL or task["state"] in _WAITING or latest is None:
        return None
    started = _epoch(latest["start_time"] or latest["submitted_at"] or latest["created_at"])
    return None if started is None else max(0.0, task["time_limit_s"] - (now - started))


def _credential_warnings(spec_text: str) -> list[str]:
    """The warning the API gave at submission for each `env_vars` name that looks like a
    credential (the text is already redacted: only names are read)."""
    try:
        data = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return []
    env = data.get(ENV_KEY) if isinstance(data, dict) else None
    names = [str(k) for k in env] if isinstance(env, dict) else []
    return [
        f"env_vars.{n} looks like a credential: its value is stored with the task and shown to Ray; "
        f"keep it as a secret instead (`argus secrets set {n}`, then `secrets: [{n}]`)"
        for n in names
        if secret_like(n)
    ]


def _live_context(request: Request, session: ConsoleSession, task_id: str) -> dict[str, Any]:
    svc = _svc(request)
    task = _detail(request, session, task_id)
    attempts = svc.attempts(session.identity, task_id)["attempts"]
    final = task["state"] in _FINAL
    return {
        "task": task,
        "attempts": attempts,
        "final": final,
        "waiting": task["state"] in _WAITING,
        "time_left": _time_left(task, svc.clock()),
        "live_trigger": None if final else LIVE_EVERY,
    }


def _log_context(task_id: str, attempts: list[dict[str, Any]], chosen: str) -> dict[str, Any]:
    """The log section: the attempt shown (`chosen`, else the latest) and the others' links."""
    numbers = [a["attempt_no"] for a in attempts]
    shown = int(chosen) if _number(chosen) and int(chosen) in numbers else (numbers[-1] if numbers else None)
    return {"task_id": task_id, "log_attempts": numbers, "log_attempt": shown}


def _number(text: str) -> bool:
    """A small whole number in ASCII digits (`str.isdigit` also takes '²', which `int` refuses)."""
    return SMALL_INT.fullmatch(text) is not None


@router.get("/tasks/{task_id}")
def task_page(request: Request, session: Session, task_id: str, attempt: Annotated[str, Query()] = "") -> HTMLResponse:
    svc, who = _svc(request), session.identity
    live = _live_context(request, session, task_id)
    return render(
        request,
        "task.html",
        session,
        **live,
        **_log_context(task_id, live["attempts"], attempt),
        events=svc.events(who, task_id),
        checkpoints=svc.checkpoints(who, task_id),
        warnings=_credential_warnings(live["task"]["jobspec_yaml"]),
        priority_form=who.is_admin and live["waiting"],
    )


@router.get("/tasks/{task_id}/live")
def task_live(request: Request, session: Session, task_id: str) -> HTMLResponse:
    return render(request, "task_live.html", session, **_live_context(request, session, task_id))


@router.get("/tasks/{task_id}/log/panel")
def log_panel(request: Request, session: Session, task_id: str) -> HTMLResponse:
    try:
        attempts = _svc(request).attempts(session.identity, task_id)["attempts"]
    except NotFound:
        raise _not_found() from None
    return render(request, "task_log.html", session, **_log_context(task_id, attempts, ""))


def sse_message(event: str, text: str, event_id: int | None = None) -> str:
    """One server-sent event whose data is `text` HTML-escaped, a `data:` field per line (the
    browser joins them with newlines); `event_id`: the log's length so far, which a browser
    that reconnects sends back as `Last-Event-ID`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {event}\n" + ("" if event_id is None else f"id: {event_id}\n")
    return head + "".join(f"data: {html.escape(line)}\n" for line in lines) + "\n"


@router.get("/tasks/{task_id}/log/stream")
async def log_stream(
    request: Request, session: Session, task_id: str, attempt: Annotated[str, Query()] = "latest"
) -> StreamingResponse:
    svc, who = _svc(request), session.identity
    try:
        listed = (await on_ray_threads(request, svc.attempts, who, task_id))["attempts"]
    except NotFound:
        raise _not_found() from None
    if not _number(attempt) and listed:  # "latest" is resolved once: a later attempt streams apart
        attempt = str(listed[-1]["attempt_no"])
    try:
        first = await on_ray_threads(request, svc.log_now, who, task_id, attempt)
    except Unavailable:
        first = ("", False)  # Ray unreachable for now: the stream tries again
    cookie = request.cookies.get(COOKIE)

    resumed = request.headers.get("last-event-id", "")
    start = int(resumed) if _number(resumed) else 0  # a reconnect: only what is new

    async def follow() -> AsyncIterator[str]:
        sent, quiet, now, polls = start, 0.0, first, 0
        if len(first[0]) - sent > FIRST_CHUNK_CHARS:  # a long log: its end, and the rest by download
            sent = len(first[0]) - FIRST_CHUNK_CHARS
            yield sse_message("line", f"[{sent} earlier characters: download the log for all of it]", None)
        while True:
            text, ended = now
            if len(text) > sent:
                yield sse_message("line", text[sent:], len(text))
                sent, quiet = len(text), 0.0
            if ended:
                yield sse_message("end", "")
                return
            # A long log is read again less often (each read is the whole log).
            pause = LOG_POLL_S if len(text) < LONG_LOG_CHARS else LOG_POLL_S * 5
            await anyio.sleep(pause)
            quiet += pause
            if await request.is_disconnected():
                return
            if quiet >= KEEPALIVE_S:
                yield ": keepalive\n\n"
                quiet = 0.0
            polls += 1
            if polls % SESSION_CHECK_POLLS == 0 and sessions(request).resolve(cookie) is None:
                yield sse_message("end", "")  # logged out, expired, or the user disabled
                return
            try:
                now = await on_ray_threads(request, svc.log_now, who, task_id, attempt)
            except Unavailable:
                now = (text, False)  # Ray unreachable for now: try again
            except DomainError:
                yield sse_message("end", "")
                return

    headers = {"X-Accel-Buffering": "no"}
    return StreamingResponse(follow(), media_type="text/event-stream", headers=headers)


@router.get("/tasks/{task_id}/log")
async def log_download(
    request: Request, session: Session, task_id: str, attempt: Annotated[str, Query()] = "latest"
) -> PlainTextResponse:
    svc, who = _svc(request), session.identity
    try:
        attempts = (await on_ray_threads(request, svc.attempts, who, task_id))["attempts"]
    except NotFound:
        raise _not_found() from None
    text = await on_ray_threads(request, svc.logs, who, task_id, attempt, None)
    number = attempt if _number(attempt) else str(attempts[-1]["attempt_no"]) if attempts else "latest"
    disposition = f'attachment; filename="{task_id}-attempt-{number}.log"'
    return PlainTextResponse(text, headers={"Content-Disposition": disposition})


@router.get("/tasks/{task_id}/cancel")
def cancel_confirm(request: Request, session: Session, task_id: str) -> HTMLResponse:
    task = _detail(request, session, task_id)
    return render(request, "task_cancel.html", session, task=task, final=task["state"] in _FINAL)


@router.post("/tasks/{task_id}/cancel")
async def cancel(request: Request, session: Posted, task_id: str) -> RedirectResponse:
    try:
        await on_ray_threads(request, _svc(request).cancel, session.identity, task_id)
    except NotFound:
        raise _not_found() from None
    return RedirectResponse(f"/ui/tasks/{task_id}", status_code=303)


@router.post("/tasks/{task_id}/priority")
async def set_priority(
    request: Request, session: Posted, task_id: str, priority: Annotated[str, Form()] = ""
) -> RedirectResponse:
    if not session.identity.is_admin:
        raise APIError(403, "only the admin may change a task's priority")
    value = priority.strip()
    if not _number(value) or not 0 <= int(value) <= 1000:
        raise APIError(400, "priority: must be a whole number from 0 to 1000")
    try:
        await on_ray_threads(request, _svc(request).set_priority, session.identity, task_id, int(value))
    except NotFound:
        raise _not_found() from None
    return RedirectResponse(f"/ui/tasks/{task_id}", status_code=303)
