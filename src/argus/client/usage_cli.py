"""`argus usage`: GPU-hours from the GPU-hour ledger through the service (SDK), like `sreport`.

Owns the command's options (`--from`, `--to`, `--by user|pool|day|task`, `--user` for the admin)
and its three outputs: a table (GPU-hours, tasks, attempts, mean wait, run time, and the total),
`--json` (the service's answer) and `--csv` (a header row, then one row per group). Credentials,
errors and exit codes are `service_cli`'s: 0 done; 1 the service refused the request or cannot
be reached; 2 bad input (a 400 answer, each problem listed as `field: message`).
`register(app)` adds the command to the main Typer app.
"""

from __future__ import annotations

import csv
import sys
from typing import Any

import typer
from rich.table import Table

from argus.client.service_cli import _cell, _fail, _json_opt, _print_json, _session, _time, _token_opt, _url_opt, out
from argus.domain.durations import format_duration

GROUPS = ("user", "pool", "day", "task")
CSV_COLUMNS = ("key", "gpu_hours", "gpu_seconds", "tasks", "attempts", "wait_s", "run_s")


def _seconds(value: Any) -> str:
    return "-" if value is None else format_duration(float(value))


def _hours(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.2f}"


def usage_table(answer: dict[str, Any]) -> Table:
    """The report as a table: one row per group, then the total."""
    by = str(answer.get("group_by", "user"))
    title = f"GPU usage {_time(answer.get('start'))} -> {_time(answer.get('end'))} UTC, by {by}"
    if answer.get("user"):
        title += f" (user {answer['user']})"
    table = Table(by, "GPU-hours", "tasks", "attempts", "mean wait", "run", title=title)
    for col in table.columns[1:]:
        col.justify = "right"
    rows = list(answer.get("rows") or [])
    for r in rows:
        table.add_row(
            _cell(r.get("key")),
            _hours(r.get("gpu_hours")),
            _cell(r.get("tasks")),
            _cell(r.get("attempts")),
            _seconds(r.get("wait_s")),
            _seconds(r.get("run_s")),
        )
    t = answer.get("total") or {}
    if t:
        table.add_section()
        table.add_row(
            "[bold]total[/]",
            _hours(t.get("gpu_hours")),
            _cell(t.get("tasks")),
            _cell(t.get("attempts")),
            _seconds(t.get("wait_s")),
            _seconds(t.get("run_s")),
        )
    return table


def write_csv(answer: dict[str, Any], stream: Any) -> None:
    """The report's rows as CSV: a header row (`CSV_COLUMNS`, the first named after the
    grouping), then one row per group; an unknown wait is an empty cell."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([str(answer.get("group_by", "key")), *CSV_COLUMNS[1:]])
    for r in answer.get("rows") or []:
        writer.writerow(["" if r.get(c) is None else r.get(c) for c in CSV_COLUMNS])


def usage(
    start: str | None = typer.Option(
        None, "--from", help="window start: ISO 8601 date/time (UTC unless zoned) or epoch seconds; default: 7 days ago"
    ),
    end: str | None = typer.Option(None, "--to", help="window end, the same forms; default: now"),
    by: str = typer.Option("user", "--by", help="group by user, pool, day (UTC) or task"),
    user: str | None = typer.Option(None, "--user", help="the admin only: one user's usage"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
    as_csv: bool = typer.Option(False, "--csv", help="print CSV: a header row, then one row per group"),
) -> None:
    """GPU-hours, tasks, attempts, wait and run time in a window (yours; the admin's: everyone's)."""
    if by not in GROUPS:
        _fail(f"--by {by!r}: must be one of {', '.join(GROUPS)}", 2)
    if as_json and as_csv:
        _fail("--json and --csv: choose one", 2)
    with _session(url, token) as client:
        answer = client.usage(start, end, by, user)
    if as_json:
        _print_json(answer)
    elif as_csv:
        write_csv(answer, sys.stdout)
    else:
        out.print(usage_table(answer))


def register(app: typer.Typer) -> None:
    """Adds `argus usage` to `app`."""
    app.command("usage")(usage)
