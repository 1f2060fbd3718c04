"""The `argus` commands that talk to the Argus service through the SDK.

Owns `login`, `me`, `submit`, `tasks`, `status`, `attempts`, `logs`, `cancel`, `priority` and
`queue` (`users` and `tokens` are `users_cli`'s) and the plumbing `users_cli` and `nodes_cli`
share: their options, tables and exit codes (0 done; 1 the service refused or failed the
request, or cannot be reached; 2 bad input, including a 400/413/415 answer, each problem listed
as `field: message`). Every command takes `--url` and `--token`, which win over `ARGUS_URL` /
`ARGUS_TOKEN`, which win over the file `argus login` saved. `register(app)` adds the commands to the main Typer app.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from argus.client.sdk import (
    STATES,
    ArgusAPIError,
    ArgusClient,
    ArgusUnavailable,
    Credentials,
    CredentialsError,
    load_credentials,
    save_credentials,
)
from argus.domain.durations import format_duration

# Piped output (grep, less) gets wide lines rather than wrapped, cut columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

INPUT_STATUSES = (400, 413, 415)
STATE_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "TIMEOUT": "red",
    "CANCELED": "yellow",
    "RUNNING": "cyan",
    "SUBMITTED": "cyan",
}


def make_client(url: str, token: str) -> ArgusClient:
    """The client every command uses; tests replace this function.

    Raises:
        ValueError: the URL is not http(s).
    """
    return ArgusClient(url, token)


# -- shared plumbing --------------------------------------------------------------------------
def _url_opt() -> Any:
    return typer.Option(None, "--url", help="service URL (else $ARGUS_URL, else the saved login)")


def _token_opt() -> Any:
    return typer.Option(None, "--token", help="bearer token (else $ARGUS_TOKEN, else the saved login)")


def _json_opt() -> Any:
    return typer.Option(False, "--json", help="print the service's JSON answer")


def _fail(msg: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(code)


def _fail_api(exc: ArgusAPIError) -> None:
    code = 2 if exc.status in INPUT_STATUSES else 1
    err.print(f"[bold red]error:[/] {escape(exc.message)} ({exc.status} {escape(exc.error)})")
    for p in exc.problems:
        field = p.get("field") or "<request>"
        err.print(f"  - [bold]{escape(str(field))}[/]: {escape(str(p.get('message', '')))}")
    raise typer.Exit(code)


@contextmanager
def _session(url: str | None, token: str | None) -> Iterator[ArgusClient]:
    """A client for the resolved credentials; SDK errors become messages and exit codes."""
    try:
        creds = load_credentials(url=url, token=token)
        client = make_client(creds.url, creds.token)
    except (CredentialsError, ValueError) as exc:
        _fail(str(exc), 2)
    try:
        yield client
    except ArgusAPIError as exc:
        _fail_api(exc)
    except ArgusUnavailable as exc:
        _fail(str(exc))
    finally:
        client.close()


def _keep_ids_whole(table: Table) -> None:
    """Ids are what users copy: the first column is never wrapped or cut; others give way."""
    table.columns[0].no_wrap = True
    table.columns[0].min_width = 36


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _time(value: Any) -> str:
    if not value:
        return "-"
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _state(value: Any) -> str:
    text = escape(str(value or "-"))
    style = STATE_STYLE.get(str(value))
    return f"[{style}]{text}[/]" if style else text


def _gpus(resources: Any) -> str:
    if not isinstance(resources, dict):
        return "-"
    total = resources.get("total_gpus")
    if total is None and resources.get("nnodes") is not None and resources.get("n_gpus_per_node") is not None:
        total = resources["nnodes"] * resources["n_gpus_per_node"]
    return "-" if total is None else str(total)


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else escape(str(value))


def _first_line(value: Any) -> str:
    return _cell(str(value).strip().splitlines()[0] if value and str(value).strip() else None)


def _field(name: str, value: str) -> None:
    out.print(f"[bold]{name:<16}[/]{value}")


# -- identity ---------------------------------------------------------------------------------
def login(
    url: str | None = typer.Option(None, "--url", help="service URL, e.g. http://127.0.0.1:8080 ($ARGUS_URL)"),
    token: str | None = typer.Option(None, "--token", help="your token ($ARGUS_TOKEN)"),
) -> None:
    """Check URL and TOKEN against the service and save them for later commands."""
    url = url or os.environ.get("ARGUS_URL") or None
    token = token or os.environ.get("ARGUS_TOKEN") or None
    if not url or not token:
        _fail("login needs --url URL and --token TOKEN", 2)
    with _session(url, token) as client:
        who = client.me()
        creds = Credentials(url=client.url, token=token)
    try:
        path = save_credentials(creds)
    except OSError as exc:
        _fail(f"cannot save the credentials: {exc}")
    role = " (admin)" if who.get("is_admin") else ""
    out.print(f"logged in to {escape(creds.url)} as [bold]{escape(str(who.get('user_id')))}[/]{role}")
    out.print(f"credentials saved to {escape(str(path))}")


def me(url: str | None = _url_opt(), token: str | None = _token_opt(), as_json: bool = _json_opt()) -> None:
    """Show who the token belongs to."""
    with _session(url, token) as client:
        who = client.me()
    if as_json:
        _print_json(who)
        return
    role = " (admin)" if who.get("is_admin") else ""
    out.print(f"[bold]{escape(str(who.get('user_id')))}[/]{role} at {escape(client.url)}")


# -- tasks ------------------------------------------------------------------------------------
def submit(
    file: Path = typer.Argument(..., help="TaskSpec YAML, sent verbatim"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Submit the TaskSpec in FILE; print the new task's id."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(f"{file}: no such file", 2)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{file}: cannot read: {exc}", 2)
    with _session(url, token) as client:
        answer = client.submit(text)
    if as_json:
        _print_json(answer)
        return
    out.print(f"submitted [bold]{escape(str(answer.get('task_id')))}[/] ({_state(answer.get('state'))})")


def _states(values: list[str]) -> list[str]:
    states = [s.strip().upper() for v in values for s in v.split(",") if s.strip()]
    unknown = [s for s in states if s not in STATES]
    if unknown:
        _fail(f"unknown state(s) {', '.join(unknown)}; use {', '.join(sorted(STATES))}", 2)
    return states


def tasks(
    state: list[str] | None = typer.Option(None, "--state", "-s", help="only this state (repeat, or comma-separate)"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=500, help="tasks per page"),
    all_pages: bool = typer.Option(False, "--all", help="follow every page"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """List tasks, newest first (the admin sees everyone's)."""
    states = _states(state or []) or None
    with _session(url, token) as client:
        if all_pages:
            page = {"tasks": list(client.iter_tasks(state=states, limit=limit)), "next_cursor": None}
        else:
            page = client.tasks(state=states, limit=limit)
    if as_json:
        _print_json(page)
        return
    rows = page.get("tasks", [])
    if not rows:
        out.print("no tasks")
        return
    table = Table("task id", "user", "workload", "state", "GPUs", "attempts", "created", "reason")
    _keep_ids_whole(table)
    for t in rows:
        table.add_row(
            _cell(t.get("task_id")),
            _cell(t.get("user_id")),
            _cell(t.get("workload")),
            _state(t.get("state")),
            _gpus(t.get("desired_resources")),
            _cell(t.get("attempts")),
            _time(t.get("created_at")),
            _first_line(t.get("failure_cause") or t.get("pending_reason")),
        )
    out.print(table)
    if page.get("next_cursor"):
        err.print(f"more tasks: --all lists every page (next cursor {escape(str(page['next_cursor']))})")


def status(
    task_id: str = typer.Argument(..., help="task id"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Show one task: state, resources, latest attempt and why it waits or failed."""
    with _session(url, token) as client:
        t = client.task(task_id)
    if as_json:
        _print_json(t)
        return
    _field("task id", _cell(t.get("task_id")))
    _field("user", _cell(t.get("user_id")))
    _field("workload", _cell(t.get("workload")))
    _field("state", _state(t.get("state")))
    res = t.get("desired_resources") or {}
    _field("GPUs", f"{_gpus(res)} ({_cell(res.get('nnodes'))} node(s) x {_cell(res.get('n_gpus_per_node'))})")
    for key, name in (
        ("failure_cause", "failure cause"),
        ("error_summary", "error"),
        ("pending_reason", "pending reason"),
    ):
        if t.get(key):
            _field(name, _cell(t[key]))
    if t.get("estimated_start"):
        _field("estimated start", _time(t["estimated_start"]))
    if t.get("next_run_at"):
        _field("next run at", _time(t["next_run_at"]))
    if t.get("priority") is not None:
        _field("priority", _cell(t["priority"]))
    if t.get("time_limit_s"):
        _field("time limit", format_duration(t["time_limit_s"]))
    _field("created", _time(t.get("created_at")))
    _field("updated", _time(t.get("updated_at")))
    a = t.get("latest_attempt")
    if a:
        _field(
            "latest attempt",
            f"#{_cell(a.get('attempt_no'))} {_cell(a.get('ray_submission_id'))} {_cell(a.get('ray_status'))}",
        )
        if a.get("failure_kind"):
            _field("attempt failure", f"{_cell(a['failure_kind'])}: {_first_line(a.get('message'))}")
        if a.get("job_root"):
            _field("job root", _cell(a["job_root"]))
    else:
        _field("latest attempt", "-")


def attempts(
    task_id: str = typer.Argument(..., help="task id"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """List a task's attempts (one Ray job each)."""
    with _session(url, token) as client:
        answer = client.attempts(task_id)
    if as_json:
        _print_json(answer)
        return
    rows = answer.get("attempts", [])
    if not rows:
        out.print(f"{escape(task_id)} has no attempts yet")
        return
    table = Table("#", "ray submission id", "ray status", "failure kind", "created", "started", "ended", "message")
    table.columns[1].no_wrap = True
    for a in rows:
        table.add_row(
            _cell(a.get("attempt_no")),
            _cell(a.get("ray_submission_id")),
            _state(a.get("ray_status")),
            _cell(a.get("failure_kind")),
            _time(a.get("created_at")),
            _time(a.get("start_time")),
            _time(a.get("end_time")),
            _first_line(a.get("message")),
        )
    out.print(table)


def logs(
    task_id: str = typer.Argument(..., help="task id"),
    attempt: str = typer.Option("latest", "--attempt", "-a", help="'latest' or an attempt number"),
    tail: int | None = typer.Option(None, "--tail", min=1, help="only the last N lines"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing until the task ends"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
) -> None:
    """Print a task attempt's driver log."""
    attempt = attempt.strip().lower()
    if attempt != "latest" and not (attempt.isdigit() and int(attempt) >= 1):
        _fail(f"--attempt must be 'latest' or a positive attempt number, got {attempt!r}", 2)
    which: int | str = "latest" if attempt == "latest" else int(attempt)
    if follow and which != "latest":
        _fail("--follow follows the latest attempt; leave out --attempt", 2)
    with _session(url, token) as client:
        if not follow:
            sys.stdout.write(client.logs(task_id, attempt=which, tail=tail))
            sys.stdout.flush()
            return
        first = True
        for chunk in client.follow_logs(task_id):
            if first and tail is not None:
                lines = chunk.splitlines(keepends=True)
                chunk = "".join(lines[-tail:])
            first = False
            sys.stdout.write(chunk)
            sys.stdout.flush()


def cancel(
    task_id: str = typer.Argument(..., help="task id"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Cancel a task that has not ended (a running Ray job is stopped)."""
    with _session(url, token) as client:
        answer = client.cancel(task_id)
    if as_json:
        _print_json(answer)
        return
    out.print(f"{escape(str(answer.get('task_id', task_id)))}: {_state(answer.get('state'))}")


def priority(
    task_id: str = typer.Argument(..., help="task id"),
    value: int = typer.Argument(..., min=0, max=1000, help="0-1000; higher starts first (default 500)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Change a waiting task's priority (admin only)."""
    with _session(url, token) as client:
        answer = client.set_priority(task_id, value)
    if as_json:
        _print_json(answer)
        return
    out.print(f"{escape(str(answer.get('task_id', task_id)))}: priority {answer.get('priority')}")


def queue(url: str | None = _url_opt(), token: str | None = _token_opt(), as_json: bool = _json_opt()) -> None:
    """Show waiting and running tasks, oldest first."""
    with _session(url, token) as client:
        answer = client.queue()
    if as_json:
        _print_json(answer)
        return
    pending, running = answer.get("pending", []), answer.get("running", [])
    pools = answer.get("pools")
    if pools:
        table = Table("pool", "nodes", "GPUs free", "GPUs total", title="free GPUs per pool")
        for name, row in pools.items():
            table.add_row(
                _cell(name),
                _cell(row.get("nodes")),
                f"{row.get('gpus_free', 0):g}",
                f"{row.get('gpus_total', 0):g}",
            )
        out.print(table)
    elif answer.get("pools_error"):
        err.print(f"[yellow]free GPUs unknown:[/] {escape(str(answer['pools_error']))}")
    if not pending and not running:
        out.print("no waiting or running tasks")
        return
    if running:
        table = Table("task id", "user", "state", "pool", "ray submission id", title="running")
        _keep_ids_whole(table)
        table.columns[4].no_wrap = True
        for t in running:
            table.add_row(
                _cell(t.get("task_id")),
                _cell(t.get("user_id")),
                _state(t.get("state")),
                _cell(t.get("pool") or "-"),
                _cell(t.get("ray_submission_id")),
            )
        out.print(table)
    if pending:
        table = Table("task id", "user", "state", "pool", "created", "next run", "reason", title="waiting")
        _keep_ids_whole(table)
        for t in pending:
            table.add_row(
                _cell(t.get("task_id")),
                _cell(t.get("user_id")),
                _state(t.get("state")),
                _cell(t.get("pool") or "-"),
                _time(t.get("created_at")),
                _time(t.get("next_run_at")),
                _cell(t.get("pending_reason")),
            )
        out.print(table)


def register(app: typer.Typer) -> None:
    """Add the service commands to the main `argus` app."""
    for name, func in (
        ("login", login),
        ("me", me),
        ("submit", submit),
        ("tasks", tasks),
        ("status", status),
        ("attempts", attempts),
        ("logs", logs),
        ("cancel", cancel),
        ("priority", priority),
        ("queue", queue),
    ):
        app.command(name)(func)
