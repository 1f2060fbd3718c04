"""`argus nodes`: managed nodes through the service (SDK).

Owns `argus nodes [--json]` (the registry joined with Ray's live view, unmanaged Ray workers,
free GPUs per pool), `argus nodes show NAME`, and the admin's `argus nodes add|drain|undrain|
offline`. Credentials, printing and exit codes are `service_cli`'s: 0 done; 1 the service refused
or failed the request, or cannot be reached; 2 bad input (a 400 answer, each problem listed as
`field: message`, or a malformed `--labels`).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from argus.client.service_cli import (
    _cell,
    _fail,
    _field,
    _first_line,
    _json_opt,
    _print_json,
    _session,
    _time,
    _token_opt,
    _url_opt,
    out,
)
from argus.domain.nodes import parse_labels

nodes_app = typer.Typer(
    no_args_is_help=False,
    invoke_without_command=True,
    help="Worker nodes: list them; the admin adds, drains, undrains and takes them offline.",
)
NODE_STYLE = {"online": "green", "pending": "cyan", "draining": "yellow", "offline": "dim", "failed": "red"}


def _state(value: Any) -> str:
    text = escape(str(value or "-"))
    style = NODE_STYLE.get(str(value))
    return f"[{style}]{text}[/]" if style else text


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):g}"


def _where(node: dict[str, Any]) -> str:
    ssh, ray = node.get("ssh") or {}, node.get("ray") or {}
    host, ip = ssh.get("host"), ray.get("node_ip")
    if host and ip and host != ip:
        return f"{host} ({ip})"
    return host or ip or "-"


def _gpus(node: dict[str, Any]) -> str:
    ray = node.get("ray")
    if ray and ray.get("alive"):
        return f"{_num(ray.get('gpus_free'))}/{_num(ray.get('gpus_total'))}"
    return f"-/{_num(node.get('gpus'))}"


def _print_nodes(answer: dict[str, Any]) -> None:
    rows = answer.get("nodes", [])
    if not rows:
        out.print("no nodes")
    else:
        table = Table("name", "managed", "state", "host / IP", "pool", "GPUs free/total", "tasks", "reason")
        table.columns[0].no_wrap = True
        for n in rows:
            state = _state(n.get("state"))
            if n.get("offline_requested"):
                state += " (offline requested)"
            table.add_row(
                _cell(n.get("id")),
                "yes" if n.get("managed") else "no",
                state,
                escape(_where(n)),
                _cell(n.get("pool")),
                _gpus(n),
                str(len(n.get("running_tasks") or [])),
                _first_line(n.get("reason")),
            )
        out.print(table)
    pools = answer.get("pools") or {}
    if pools:
        table = Table("pool", "nodes", "GPUs free", "GPUs total", title="free GPUs per pool")
        for name, p in pools.items():
            table.add_row(_cell(name), _cell(p.get("nodes")), _num(p.get("gpus_free")), _num(p.get("gpus_total")))
        out.print(table)
    if answer.get("ray_error"):
        out.print(f"[yellow]Ray's live view is unavailable:[/] {escape(str(answer['ray_error']))}")


@nodes_app.callback()
def nodes(
    ctx: typer.Context,
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """List nodes: registered ones with Ray's live view, then those that joined by themselves."""
    if ctx.invoked_subcommand is not None:
        return
    with _session(url, token) as client:
        answer = client.nodes()
    if as_json:
        _print_json(answer)
        return
    _print_nodes(answer)


def _print_node(n: dict[str, Any]) -> None:
    _field("node", _cell(n.get("id")))
    _field("managed", "yes" if n.get("managed") else "no")
    _field("state", _state(n.get("state")) + (" (offline requested)" if n.get("offline_requested") else ""))
    if n.get("reason"):
        _field("reason", _cell(n["reason"]))
    if n.get("ssh"):
        ssh = n["ssh"]
        _field("ssh", escape(f"{ssh.get('user')}@{ssh.get('host')}:{ssh.get('port')} key {ssh.get('key')}"))
    _field("pool", _cell(n.get("pool")))
    labels = n.get("labels") or {}
    _field("labels", escape(",".join(f"{k}={v}" for k, v in sorted(labels.items()))) or "-")
    ray = n.get("ray")
    if ray:
        alive = "alive" + (", draining" if ray.get("draining") else "") if ray.get("alive") else "dead"
        _field("ray node", f"{_cell(ray.get('node_id'))} at {_cell(ray.get('node_ip'))} ({alive})")
        _field("GPUs free/total", _gpus(n))
    else:
        _field("ray node", "-")
    _field("running tasks", escape(", ".join(n.get("running_tasks") or [])) or "-")
    events = n.get("events") or []
    if events:
        table = Table("at", "from", "to", "reason", title="events")
        for e in events:
            table.add_row(
                _time(e.get("at")),
                _cell(e.get("from_state")),
                _cell(e.get("to_state")),
                _cell(e.get("reason")),
            )
        out.print(table)


@nodes_app.command("show")
def show(
    node_id: str = typer.Argument(..., help="node name (or a Ray node id)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Show one node with its events."""
    with _session(url, token) as client:
        node = client.node(node_id)
    if as_json:
        _print_json(node)
        return
    _print_node(node)


@nodes_app.command("add")
def add(
    name: str = typer.Argument(..., help="the node's name (a DNS label: a-z, 0-9, '-')"),
    host: str = typer.Option(..., "--host", help="host name or IP address to SSH to"),
    user: str = typer.Option(..., "--user", help="SSH user"),
    key: str = typer.Option(..., "--key", help="private key file name inside the server's key directory"),
    port: int = typer.Option(22, "--port", help="SSH port"),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs to offer (default: Ray detects them)"),
    cpus: int | None = typer.Option(None, "--cpus", help="CPUs to offer (default: Ray detects them)"),
    labels: str = typer.Option("", "--labels", help="k=v,... Ray node labels (pool=<name> puts it in a pool)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Register a node (admin); Argus starts its agent over SSH. Watch it with `argus nodes`."""
    try:
        parsed = parse_labels(labels)
    except ValueError as exc:
        _fail(f"--labels: {exc}", 2)
    with _session(url, token) as client:
        node = client.add_node(name, host, user, key, port=port, gpus=gpus, cpus=cpus, labels=parsed)
    if as_json:
        _print_json(node)
        return
    out.print(
        f"registered [bold]{escape(str(node.get('id', name)))}[/] ({_state(node.get('state'))}); "
        f"its agent is being started over SSH"
    )


def _act(
    action: str,
    node_id: str,
    url: str | None,
    token: str | None,
    as_json: bool,
    reason: str | None = None,
) -> None:
    with _session(url, token) as client:
        if action == "drain":
            node = client.drain_node(node_id, reason)
        elif action == "undrain":
            node = client.undrain_node(node_id)
        else:
            node = client.offline_node(node_id, reason)
    if as_json:
        _print_json(node)
        return
    extra = " (offline requested: it goes offline once its work ends)" if node.get("offline_requested") else ""
    out.print(f"{escape(str(node.get('id', node_id)))}: {_state(node.get('state'))}{extra}")


@nodes_app.command("drain")
def drain(
    node_id: str = typer.Argument(..., help="node name (or a Ray node id)"),
    reason: str | None = typer.Option(None, "--reason", help="why (kept in the node's events)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Place nothing new on the node; what runs there finishes (admin)."""
    _act("drain", node_id, url, token, as_json, reason)


@nodes_app.command("undrain")
def undrain(
    node_id: str = typer.Argument(..., help="node name (or a Ray node id)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Take a draining node back (admin)."""
    _act("undrain", node_id, url, token, as_json)


@nodes_app.command("offline")
def offline(
    node_id: str = typer.Argument(..., help="node name"),
    reason: str | None = typer.Option(None, "--reason", help="why (kept in the node's events)"),
    url: str | None = _url_opt(),
    token: str | None = _token_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Stop the node's agent once it runs nothing; a busy node is drained first (admin)."""
    _act("offline", node_id, url, token, as_json, reason)


def register(app: typer.Typer) -> None:
    """Adds `argus nodes …` to `app`."""
    app.add_typer(nodes_app, name="nodes")
