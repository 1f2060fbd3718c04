"""The plumbing of the `argus` commands that talk to the Argus service, and `login` / `me`.

Owns `login` and `me` (the task commands are `tasks_cli`'s, `users` and `tokens` `users_cli`'s,
`nodes` `nodes_cli`'s) and the plumbing those modules share: the client (`make_client`, which
tests replace), their options, cells, tables and exit codes (0 done; 1 the service refused or
failed the request, or cannot be reached; 2 bad input, including a 400/413/415 answer, each
problem listed as `field: message`). Every command takes `--url` and `--token`, which win over
`ARGUS_URL` / `ARGUS_TOKEN`, which win over the file `argus login` saved. `register(app)` adds
`login` and `me` to the main Typer app.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from argus.client.sdk import (
    ArgusAPIError,
    ArgusClient,
    ArgusUnavailable,
    Credentials,
    CredentialsError,
    load_credentials,
    save_credentials,
)

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


def _fail(msg: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(code)


def _fail_api(exc: ArgusAPIError) -> NoReturn:
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


def register(app: typer.Typer) -> None:
    """Add `login` and `me` to the main `argus` app (the task commands are `tasks_cli`'s)."""
    for name, func in (("login", login), ("me", me)):
        app.command(name)(func)
