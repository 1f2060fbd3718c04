"""`argus server`, `argus up` and `argus down`: running the service.

Owns the options and output of these three commands; the work is in `argus.service.launcher`
(background cluster and server) and `argus.service.app` (the server itself). `server` and `up`
first narrow the process's umask to at least 027 (`private_umask`): what the server, the local
cluster and their jobs create (under `users/`, `common/db`, `common/run`, `common/logs`) is never
readable by other users of the machine.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from argus.cluster import local
from argus.cluster.errors import ClusterError
from argus.spec.config import default_shared_root
from argus.spec.errors import SpecError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


PRIVATE_UMASK = 0o027


def private_umask() -> int:
    """Narrow this process's umask to at least PRIVATE_UMASK (a stricter one is kept).

    Returns:
        The umask now in force (children inherit it).
    """
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old | PRIVATE_UMASK


def _shared_root_opt() -> Path:
    return typer.Option(Path(default_shared_root()), "--shared-root", help="shared storage root ($ARGUS_SHARED_ROOT)")


def server(
    config: Path | None = typer.Option(None, "--config", help="server config YAML (ray, service, scheduler)"),
    host: str | None = typer.Option(None, "--host", help="overrides service.host"),
    port: int | None = typer.Option(None, "--port", help="overrides service.port"),
) -> None:
    """Run the API in this process (and `service.api_processes` - 1 more) and the scheduler in a
    child of it (foreground)."""
    import uvicorn

    private_umask()

    from argus.service.app import create_app
    from argus.settings import load_settings

    try:
        settings = load_settings(config)
    except SpecError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.source)} is invalid:")
        for p in exc.problems:
            err.print(f"  - [bold]{escape(p.field)}[/]: {escape(p.reason)}")
        raise typer.Exit(2) from None
    service = settings.service.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    settings = settings.model_copy(update={"service": service})
    if not settings.admin_token():
        err.print(
            f"[yellow]warning:[/] ${settings.service.admin_token_env} is not set: "
            "no admin token, so no users can be created"
        )
    if not settings.secrets_key():
        err.print(
            f"[yellow]warning:[/] ${settings.service.secrets_key_env} is not set: "
            "users' secrets are disabled (tasks that name secrets are refused)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = None
    if settings.service.api_processes > 1:
        from argus.service.api_processes import listen

        try:
            sock = listen(service.host, service.port)
        except OSError as exc:  # the address is taken or not ours
            err.print(f"[bold red]error:[/] cannot listen on {service.host}:{service.port}: {escape(str(exc))}")
            raise typer.Exit(1) from None
    child = None
    if settings.scheduler.enabled and settings.scheduler.own_process:
        from argus.service.scheduler_process import SchedulerChild

        child = SchedulerChild(settings)
    if sock is not None:
        from argus.service.api_processes import serve

        serve(settings, child, sock)
        return
    app = create_app(settings, scheduler_child=child)
    # What start-up made (modules, the app) lives as long as the process: frozen, it is left out
    # of every later collection, so a full collection under load scans only what requests and
    # passes made (bench/api_load.py: the longest pause 272 -> 103 ms, their total halved).
    gc.collect()  # start-up's garbage is not frozen with it
    gc.freeze()
    uvicorn.run(app, host=service.host, port=service.port, log_level=service.log_level, access_log=False)


def up(
    workers: int = typer.Option(2, "--workers", min=1, max=32),
    gpus_per_worker: int = typer.Option(4, "--gpus-per-worker", min=0, max=64),
    port: int = typer.Option(8080, "--port", help="the server's port"),
    shared_root: Path = _shared_root_opt(),
    gcs_port: int = typer.Option(local.DEFAULT_GCS_PORT, "--gcs-port", help="Ray GCS port of the head"),
    dashboard_port: int = typer.Option(
        local.DEFAULT_DASHBOARD_PORT, "--dashboard-port", help="Ray dashboard / job server port"
    ),
) -> None:
    """Start the local Ray cluster and the server in the background (idempotent)."""
    from argus.service import launcher

    private_umask()  # the cluster's processes, its jobs and the server inherit it

    try:
        info = launcher.up(
            str(shared_root), workers, gpus_per_worker, port, gcs_port=gcs_port, dashboard_port=dashboard_port
        )
    except ClusterError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    verb = "started" if info.started_now else "already running"
    out.print(f"server {verb}: {info.url}  (pid {info.pid}, log {info.log})")
    out.print(f"Ray dashboard / job server: {info.dashboard_url}")
    if info.admin_token:
        out.print(f"admin token: {info.admin_token}")
    else:
        out.print(
            "admin token: the one the running server was started with (neither "
            "$MVP_INTERNAL_TOKEN nor the saved token matches it)"
        )
    out.print(f"log in:  argus login --url {info.url} --token <admin token>")
    out.print(f"stop:    argus down --shared-root {shared_root}")
    if info.degraded:  # the server runs, but cannot run tasks: not a success
        err.print(f"[bold red]error:[/] the server reports itself degraded: {escape(info.degraded)}")
        raise typer.Exit(1)


def down(shared_root: Path = _shared_root_opt()) -> None:
    """Stop the server and the local cluster started by `argus up`."""
    from argus.service import launcher

    server_stopped, cluster_stopped = launcher.down(shared_root)
    out.print("server stopped" if server_stopped else "no server was running")
    out.print("cluster stopped" if cluster_stopped else "no local cluster was running")


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("up")(up)
    app.command("down")(down)
