"""`argus users` and `argus tokens`: the admin's user and token commands through the service (SDK).

Owns `argus users create|list|disable|enable` and `argus tokens issue`: their options, tables
and output. Credentials, printing and exit codes are `service_cli`'s: 0 done; 1 the service
refused or failed the request, or cannot be reached; 2 bad input (a 400 answer, each problem
listed as `field: message`). `register(app)` adds both groups to the main Typer app.
"""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from argus.client.service_cli import (
    _cell,
    _json_opt,
    _print_json,
    _session,
    _time,
    _token_opt,
    _url_opt,
    err,
    out,
)

users_app = typer.Typer(no_args_is_help=True, help="Manage users (admin only).")
tokens_app = typer.Typer(no_args_is_help=True, help="Issue user tokens (admin only).")


@users_app.command("create")
def users_create(
    user_id: str = typer.Argument(..., help="lower-case letters, digits and _, starting with a letter"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Create a user (then `argus tokens issue USER` gives them a token)."""
    with _session(url, token) as client:
        answer = client.create_user(user_id)
    if as_json:
        _print_json(answer)
        return
    out.print(f"created user [bold]{escape(str(answer.get('user_id', user_id)))}[/] ({_cell(answer.get('state'))})")


@users_app.command("list")
def users_list(url: str | None = _url_opt(), token: str | None = _token_opt(), as_json: bool = _json_opt()) -> None:
    """List users."""
    with _session(url, token) as client:
        answer = client.users()
    if as_json:
        _print_json(answer)
        return
    table = Table("user", "state", "created")
    for u in answer.get("users", []):
        table.add_row(_cell(u.get("user_id")), _cell(u.get("state")), _time(u.get("created_at")))
    out.print(table)


def _print_state(answer: dict, user_id: str, as_json: bool) -> None:
    """A user's new state, as `USER: STATE` (or the answer itself with --json)."""
    if as_json:
        _print_json(answer)
        return
    out.print(f"{escape(str(answer.get('user_id', user_id)))}: {_cell(answer.get('state'))}")


@users_app.command("disable")
def users_disable(
    user_id: str = typer.Argument(..., help="user id"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Disable a user; every token of theirs is revoked at once, for good."""
    with _session(url, token) as client:
        _print_state(client.disable_user(user_id), user_id, as_json)


@users_app.command("enable")
def users_enable(
    user_id: str = typer.Argument(..., help="user id"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Re-enable a disabled user; their old tokens stay revoked (issue a new one)."""
    with _session(url, token) as client:
        _print_state(client.enable_user(user_id), user_id, as_json)


@tokens_app.command("issue")
def tokens_issue(
    user_id: str = typer.Argument(..., help="user id"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Issue a token for USER; it is printed on stdout, this once only."""
    with _session(url, token) as client:
        answer = client.issue_token(user_id)
    if as_json:
        _print_json(answer)
        return
    err.print(f"token for {escape(str(answer.get('user_id', user_id)))} (shown once; it cannot be read again):")
    print(answer.get("token", ""))


def register(app: typer.Typer) -> None:
    """Adds `argus users …` and `argus tokens …` to `app`."""
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
