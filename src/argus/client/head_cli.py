"""`argus head start|stop|status` and `argus node-agent`: head discovery from the command line.

Owns the options, the output and the exit codes of these commands: 0 done, 1 the cluster
failed the request, 2 bad input (the option named). The work is in `argus.cluster.head` (the
head and its head.json publisher) and `argus.cluster.agent` (the node agent's loop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from argus.cluster.errors import ClusterError
from argus.spec.config import default_shared_root

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
head_app = typer.Typer(no_args_is_help=True, help="The Ray head (0 CPU, 0 GPU) and its head.json on shared storage.")


def _fail(msg: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(code)


def _shared_root_opt() -> Path:
    return typer.Option(Path(default_shared_root()), "--shared-root", help="shared storage root ($ARGUS_SHARED_ROOT)")


def _cluster_opt() -> str:
    return typer.Option(..., "--cluster", help="the cluster's name (head.json lives under it)")


def _check_node_ip(node_ip: str | None) -> None:
    """Exit 2 unless `--node-ip` is absent or an IPv4 address (what `ray start` takes)."""
    if node_ip is None:
        return
    import ipaddress

    try:
        ipaddress.IPv4Address(node_ip)
    except ValueError:
        _fail(f"--node-ip: {node_ip!r} is not an IPv4 address", 2)


def _check_cluster(cluster: str) -> None:
    from argus.cluster.head import check_cluster_name

    try:
        check_cluster_name(cluster)
    except ValueError as exc:
        _fail(f"--cluster: {exc}", 2)


@head_app.command("start")
def head_start(
    shared_root: Path = _shared_root_opt(),
    cluster: str = _cluster_opt(),
    port: int = typer.Option(6380, "--port", min=1, max=65535, help="Ray GCS port"),
    dashboard_port: int = typer.Option(
        8265, "--dashboard-port", min=1, max=65535, help="Ray dashboard / job server port"
    ),
    node_ip: str | None = typer.Option(None, "--node-ip", help="the head's IP (default: this host's routable IP)"),
    ttl_s: float = typer.Option(30.0, "--ttl", help="seconds head.json is trusted after each refresh"),
    refresh_s: float = typer.Option(5.0, "--refresh", help="seconds between refreshes of head.json"),
) -> None:
    """Start the Ray head and its head.json publisher in the background; return once both are up."""
    from argus.cluster import head

    _check_cluster(cluster)
    if not 0 < refresh_s < ttl_s:
        _fail(f"--refresh ({refresh_s:g}) must be positive and below --ttl ({ttl_s:g})", 2)
    _check_node_ip(node_ip)
    try:
        rec = head.start(str(shared_root), cluster, port, dashboard_port, node_ip, ttl_s, refresh_s)
    except ClusterError as exc:
        _fail(str(exc))
    out.print(f"head of cluster {cluster}: {rec.address}  (pid {rec.head_pid})")
    out.print(f"dashboard / job server: {rec.dashboard_url}")
    out.print(f"head.json: {head.discovery_file(rec.shared_root, cluster)}")


@head_app.command("stop")
def head_stop(shared_root: Path = _shared_root_opt(), cluster: str = _cluster_opt()) -> None:
    """Stop the head and its publisher; head.json then says the head stopped."""
    from argus.cluster import head

    _check_cluster(cluster)
    if head.stop(str(shared_root), cluster):
        out.print(f"head of cluster {cluster} stopped")
    else:
        out.print(f"no head of cluster {cluster} recorded under {shared_root}")


@head_app.command("status")
def head_status(
    shared_root: Path = _shared_root_opt(),
    cluster: str = _cluster_opt(),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Show the head and head.json; exit 1 when none runs or it is unhealthy."""
    from argus.cluster import head

    _check_cluster(cluster)
    st = head.status(str(shared_root), cluster)
    if st is None:
        _fail(f"no head of cluster {cluster} recorded under {shared_root}")
    rec, pub = st.record, st.published
    if as_json:
        print(
            json.dumps(
                {
                    "healthy": st.healthy,
                    "cluster": cluster,
                    "address": rec.address,
                    "dashboard_url": rec.dashboard_url,
                    "temp_dir": rec.temp_dir,
                    "head_pid": rec.head_pid,
                    "head_alive": st.head_alive,
                    "publisher_pid": rec.publisher_pid,
                    "publisher_alive": st.publisher_alive,
                    "head_json": json.loads(pub.to_json()) if pub else None,
                    "fresh": st.fresh,
                    "problem": st.problem,
                },
                indent=2,
            )
        )
    else:
        table = Table(show_header=False)
        table.add_row("address", rec.address)
        table.add_row("dashboard", rec.dashboard_url)
        table.add_row("head", f"pid {rec.head_pid}: {'alive' if st.head_alive else 'dead'}")
        table.add_row("publisher", f"pid {rec.publisher_pid}: {'alive' if st.publisher_alive else 'dead'}")
        age = f"{st.now - pub.updated_at:.0f}s old, TTL {pub.ttl_s:g}s" if pub else "-"
        table.add_row("head.json", f"{'fresh' if st.fresh else 'NOT fresh'} ({age})")
        if st.problem:
            table.add_row("problem", escape(st.problem))
        out.print(table)
    if not st.healthy:
        raise typer.Exit(1)


def node_agent(
    shared_root: Path = _shared_root_opt(),
    cluster: str = _cluster_opt(),
    gpus: int | None = typer.Option(None, "--gpus", min=0, max=1024, help="GPUs offered (default: nvidia-smi's count)"),
    cpus: int | None = typer.Option(None, "--cpus", min=1, max=4096, help="CPUs offered (default: Ray counts)"),
    labels: str | None = typer.Option(None, "--labels", help="Ray node labels k=v,... (the pool: pool=<name>)"),
    name: str | None = typer.Option(None, "--name", help="this node's name (default: the hostname)"),
    node_ip: str | None = typer.Option(None, "--node-ip", help="this node's IP (default: Ray chooses)"),
    temp_dir: str | None = typer.Option(None, "--temp-dir", help="Ray temp dir (default: the head's)"),
    poll_s: float = typer.Option(2.0, "--poll-s", min=0.05, help="seconds between looks at head.json"),
    drivers: int = typer.Option(
        100, "--drivers", min=1, help="job drivers this node may host (the worker_node resource)"
    ),
    object_store_memory: int | None = typer.Option(
        None, "--object-store-memory", min=78643200, help="object store bytes (default: Ray's)"
    ),
    port_start: int | None = typer.Option(
        None, "--port-start", min=1024, max=64000, help="where this node's free ports are looked for"
    ),
) -> None:
    """Keep this machine in the cluster that head.json names: join, re-join, leave (no head address needed)."""
    from argus.cluster import agent
    from argus.cluster.procs import detect_gpus

    _check_cluster(cluster)
    node_name = name or agent.default_name()
    try:
        agent.check_node_name(node_name)
    except ValueError as exc:
        _fail(f"--name: {exc}", 2)
    try:
        node_labels = agent.parse_labels(labels)
    except ValueError as exc:
        _fail(f"--labels: {exc}", 2)
    _check_node_ip(node_ip)
    spec = agent.NodeSpec(
        name=node_name,
        gpus=detect_gpus() if gpus is None else gpus,
        cpus=cpus,
        labels=node_labels,
        node_ip=node_ip,
        temp_dir=temp_dir,
        drivers=drivers,
        object_store_memory=object_store_memory,
        port_start=port_start,
    )
    raise typer.Exit(agent.run_agent(str(shared_root), cluster, spec, poll_s))


def register(app: typer.Typer) -> None:
    """Adds `argus head …` and `argus node-agent` to `app`."""
    app.add_typer(head_app, name="head")
    app.command("node-agent")(node_agent)
