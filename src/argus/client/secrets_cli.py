"""`argus secrets`: the caller's own secrets through the service (SDK).

Owns `argus secrets set NAME` (the value read from stdin: piped, or typed at a prompt that does
not echo), `argus secrets list [--json]` and `argus secrets delete NAME`, and how the value is
read: one trailing newline is stripped, an empty value is refused (exit 2) before anything is
sent. Invariant: the value is never printed, echoed or put on a command line. Credentials,
printing and exit codes are `service_cli`'s: 0 done; 1 the service refused or failed the request,
or cannot be reached; 2 bad input (a 400 answer, each problem listed as `field: message`).
`register(app)` adds the group to the main Typer app.
"""

from __future__ import annotations

import getpass
import sys

import typer
from rich.markup import escape
from rich.table import Table

from argus.client.service_cli import _cell, _fail, _json_opt, _print_json, _session, _time, _token_opt, _url_opt, out

secrets_app = typer.Typer(
    no_args_is_help=True,
    help="Your secrets (API keys, tokens): a task names them under `secrets:` and gets each as an env var.",
)


def read_value(name: str) -> str:
    """The value for `name`: stdin, less one trailing newline; a prompt without echo on a terminal.

    Raises:
        typer.Exit: 2 when the value is empty or not UTF-8 text.
    """
    try:
        if sys.stdin.isatty():
            raw = getpass.getpass(f"value of {name} (not shown): ")
        else:
            raw = sys.stdin.read()
    except UnicodeDecodeError:
        _fail("the value read from stdin is not UTF-8 text", 2)
    except EOFError:
        raw = ""
    if raw.endswith("\r\n"):
        raw = raw[:-2]
    elif raw.endswith("\n"):
        raw = raw[:-1]
    if not raw:
        _fail(f"no value for {name}: pipe it in on stdin (e.g. `argus secrets set {name} < file`)", 2)
    return raw


@secrets_app.command("set")
def secrets_set(
    name: str = typer.Argument(..., help="an environment variable name, e.g. WANDB_API_KEY"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Set secret NAME to the value read from stdin (one trailing newline dropped); never shown again."""
    value = read_value(name)
    with _session(url, token) as client:
        answer = client.set_secret(name, value)
    if as_json:
        _print_json(answer)
        return
    out.print(f"secret [bold]{escape(str(answer.get('name', name)))}[/] set ({_time(answer.get('updated_at'))})")


@secrets_app.command("list")
def secrets_list(url: str | None = _url_opt(), token: str | None = _token_opt(), as_json: bool = _json_opt()) -> None:
    """List your secrets: names and times (values are never shown)."""
    with _session(url, token) as client:
        answer = client.secrets()
    if as_json:
        _print_json(answer)
        return
    table = Table("name", "created", "updated")
    for s in answer.get("secrets", []):
        table.add_row(_cell(s.get("name")), _time(s.get("created_at")), _time(s.get("updated_at")))
    out.print(table)


@secrets_app.command("delete")
def secrets_delete(
    name: str = typer.Argument(..., help="the secret's name"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Delete secret NAME."""
    with _session(url, token) as client:
        answer = client.delete_secret(name)
    if as_json:
        _print_json(answer)
        return
    out.print(f"deleted secret [bold]{escape(str(answer.get('name', name)))}[/]")


def register(app: typer.Typer) -> None:
    """Adds `argus secrets …` to `app`."""
    app.add_typer(secrets_app, name="secrets")
