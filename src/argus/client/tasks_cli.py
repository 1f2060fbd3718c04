"""The `argus` task commands: `submit`, `tasks`, `status`, `attempts`, `logs`, `cancel`,
`priority` and `queue`, through the SDK.

Owns how tasks, attempts and the queue are shown (tables, the fields of `status`, the driver
node of the latest attempt) and the inputs of these commands. Credentials, the client, printing
and exit codes are `service_cli`'s: 0 done; 1 the service refused or failed the request, or
cannot be reached; 2 bad input, including a 400/413/415 answer. `register(app)` adds the
commands to the main Typer app.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from argus.client.sdk import STATES, ArgusAPIError
from argus.client.service_cli import (
    _cell,
    _fail,
    _field,
    _first_line,
    _gpus,
    _json_opt,
    _keep_ids_whole,
    _print_json,
    _session,
    _state,
    _time,
    _token_opt,
    _url_opt,
    err,
    out,
)
from argus.domain.code import human_size
from argus.domain.durations import format_duration

# Ray node ids are 56 hex digits: `status` shows their start, `--json` all of it.
NODE_ID_SHOWN = 8


def driver_node(attempt: Mapping[str, Any]) -> str | None:
    """`worker-1 (10.0.0.2, id 3f2a01bc…)` for an attempt's driver node; None when not known.

    Args:
        attempt: an attempt object of the API (`driver_node_name`, `driver_node_ip`,
            `driver_node_id`, each nullable).
    """
    name, ip, node_id = (attempt.get(f"driver_node_{k}") for k in ("name", "ip", "id"))
    parts = [str(p) for p in (name, ip) if p]
    if node_id:
        text = str(node_id)
        parts.append(f"id {text[:NODE_ID_SHOWN]}{'…' if len(text) > NODE_ID_SHOWN else ''}")
    if not parts:
        return None
    first, *rest = (escape(p) for p in parts)
    return f"{first} ({', '.join(rest)})" if rest else first


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
    for warning in answer.get("warnings") or []:
        err.print(f"[yellow]warning:[/] {escape(str(warning))}")
    if as_json:
        _print_json(answer)
        return
    out.print(f"submitted [bold]{escape(str(answer.get('task_id')))}[/] ({_state(answer.get('state'))})")


def resubmit(
    task_id: str = typer.Argument(..., help="an ended task of yours (TIMEOUT, CANCELED, FAILED, SUCCEEDED)"),
    time_limit: str | None = typer.Option(None, "--time-limit", help="the new task's time limit, e.g. 12h"),
    priority: int | None = typer.Option(None, "--priority", min=0, max=1000, help="the new task's priority"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Continue an ended task as a new one, from its latest checkpoint; print the new task's id.

    The server submits the task's TaskSpec again with `resume_from: TASK_ID` (and the options).
    """
    with _session(url, token) as client:
        try:
            answer = client.resubmit(task_id, time_limit=time_limit, priority=priority)
        except ArgusAPIError as exc:
            if exc.status != 404:
                raise
            _fail(f"{exc.message} ({exc.status} {exc.error})", 2)  # an unknown task is bad input here
    if as_json:
        _print_json(answer)
        return
    out.print(
        f"submitted [bold]{escape(str(answer.get('task_id')))}[/] ({_state(answer.get('state'))}), "
        f"resuming from {escape(task_id)}"
    )


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
    if t.get("gpu_seconds") is not None:  # the GPU-hour ledger's figures so far
        gpu_s = float(t["gpu_seconds"])
        _field("GPU time", f"{gpu_s / 3600:,.2f} GPU-hours ({gpu_s:,.0f} GPU-seconds)")
        wait = t.get("wait_s")
        _field("waited", "-" if wait is None else format_duration(float(wait)))
        _field("ran", format_duration(float(t.get("run_s") or 0)))
    a = t.get("latest_attempt")
    if a:
        _field(
            "latest attempt",
            f"#{_cell(a.get('attempt_no'))} {_cell(a.get('ray_submission_id'))} {_cell(a.get('ray_status'))}",
        )
        node = driver_node(a)
        if node:
            _field("driver node", node)
        if a.get("gpu_util_mean") is not None:  # only where Ray reports GPU figures (real GPUs)
            _field("GPU util", f"{float(a['gpu_util_mean']):.1f} % (mean over the run, its nodes' GPUs)")
        if a.get("gpu_mem_peak_bytes") is not None:
            _field("GPU memory peak", f"{human_size(int(a['gpu_mem_peak_bytes']))} (on one GPU)")
        if a.get("resumed_from_step") is not None:
            _field("resumed from", f"step {a['resumed_from_step']} ({_cell(a.get('resumed_from'))})")
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
    table = Table(
        "#", "ray submission id", "ray status", "failure kind", "resumed from", "created", "started", "ended", "message"
    )
    table.columns[1].no_wrap = True
    for a in rows:
        table.add_row(
            _cell(a.get("attempt_no")),
            _cell(a.get("ray_submission_id")),
            _state(a.get("ray_status")),
            _cell(a.get("failure_kind")),
            "-" if a.get("resumed_from_step") is None else f"step {a['resumed_from_step']}",
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
    """Add the task commands to the main `argus` app."""
    for name, func in (
        ("submit", submit),
        ("tasks", tasks),
        ("status", status),
        ("attempts", attempts),
        ("logs", logs),
        ("cancel", cancel),
        ("priority", priority),
        ("resubmit", resubmit),
        ("queue", queue),
    ):
        app.command(name)(func)
