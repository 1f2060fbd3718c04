"""`argus code`: the caller's code snapshots through the service (SDK).

Owns `argus code push DIR [--name NAME] [--json]`, `argus code list [--json]` and `argus code
delete REF`: their options, table and output. A push prints `unchanged <sha12> <name>` when the
user had that content already (nothing uploaded), else `pushed <sha12> <name> (<n> files,
<size>)`, then the snapshot's path. Credentials, printing and exit codes are `service_cli`'s:
0 done; 1 the service refused or failed the request (404, 409), or cannot be reached; 2 bad input
(not a directory, an unreadable path in it, a 400 or 413 answer, each problem listed as
`field: message`). `register(app)` adds the group to the main Typer app.
"""

from __future__ import annotations

import os

import typer
from rich.markup import escape
from rich.table import Table

from argus.client.service_cli import _cell, _fail, _json_opt, _print_json, _session, _time, _token_opt, _url_opt, out
from argus.domain.code import human_size
from argus.domain.code_manifest import ManifestError

code_app = typer.Typer(
    no_args_is_help=True,
    help="Your code snapshots: a directory pushed once, read-only, named by its content hash.",
)


@code_app.command("push")
def code_push(
    directory: str = typer.Argument(..., help="the directory (.git, __pycache__ and .argusignore patterns left out)"),
    name: str | None = typer.Option(None, "--name", help="the snapshot's name (default: the directory's name)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Push DIR as a code snapshot; nothing is uploaded when it has not changed."""
    if not os.path.isdir(directory):
        _fail(f"{directory} is not a directory", 2)
    with _session(url, token) as client:
        try:
            answer = client.push_code(directory, name)
        except (ManifestError, OSError) as exc:
            _fail(f"cannot snapshot {directory}: {exc}", 2)
    if as_json:
        _print_json(answer)
        return
    sha = escape(str(answer.get("sha256", ""))[:12])
    shown = escape(str(answer.get("name", "")))
    if answer.get("unchanged"):
        out.print(f"unchanged {sha} {shown}")
    else:
        size = human_size(int(answer.get("size_bytes") or 0))
        out.print(f"pushed {sha} {shown} ({answer.get('files')} files, {size})")
    out.print(escape(str(answer.get("path", ""))))


@code_app.command("list")
def code_list(url: str | None = _url_opt(), token: str | None = _token_opt(), as_json: bool = _json_opt()) -> None:
    """List your snapshots, most recently pushed first, with the tasks that use each."""
    with _session(url, token) as client:
        answer = client.code_snapshots()
    if as_json:
        _print_json(answer)
        return
    table = Table("sha256", "name", "size", "files", "created", "tasks")
    table.columns[0].no_wrap = True
    for s in answer.get("snapshots", []):
        tasks = s.get("tasks") or []
        table.add_row(
            _cell(str(s.get("sha256", ""))[:12]),
            _cell(s.get("name")),
            human_size(int(s.get("size_bytes") or 0)),
            _cell(s.get("files")),
            _time(s.get("created_at")),
            _cell(", ".join(str(t) for t in tasks) or None),
        )
    out.print(table)


@code_app.command("delete")
def code_delete(
    ref: str = typer.Argument(..., help="a name (its newest snapshot), or 8+ hex characters of the hash"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Delete a snapshot; refused while a task that has not ended uses it."""
    with _session(url, token) as client:
        answer = client.delete_code(ref)
    if as_json:
        _print_json(answer)
        return
    out.print(f"deleted {escape(str(answer.get('sha256', ''))[:12])} {escape(str(answer.get('name', '')))}")


def register(app: typer.Typer) -> None:
    """Adds `argus code …` to `app`."""
    app.add_typer(code_app, name="code")
