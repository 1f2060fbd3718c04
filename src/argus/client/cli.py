"""The `argus` command line (Typer + Rich).

Owns argument parsing, printing and exit codes: 0 done, 1 the cluster or a job failed the
request, 2 bad input (every problem listed, field named). Commands delegate to `argus.spec`
(render, validate) and `argus.cluster` (job tool, local cluster); no logic lives here.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from argus.client import (
    code_cli,
    head_cli,
    monitoring_cli,
    nodes_cli,
    secrets_cli,
    server_cli,
    service_cli,
    sim_cli,
    tasks_cli,
    usage_cli,
    users_cli,
)
from argus.cluster import local
from argus.cluster.errors import ClusterError
from argus.spec.config import default_shared_root, load_ray_config
from argus.spec.entrypoint import shell_quote
from argus.spec.errors import SpecError
from argus.spec.loader import read_text
from argus.spec.render import prepare_submission
from argus.spec.taskspec import load_task_spec

if TYPE_CHECKING:
    from argus.cluster.jobs import JobView, RayJobTool

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Argus: verl training on a native Ray cluster.",
)
spec_app = typer.Typer(no_args_is_help=True, help="Render and validate TaskSpecs without submitting.")
cluster_app = typer.Typer(no_args_is_help=True, help="A local Ray cluster (head + worker nodes) on this machine.")
app.add_typer(spec_app, name="spec")
app.add_typer(cluster_app, name="cluster")
service_cli.register(app)
tasks_cli.register(app)
users_cli.register(app)
code_cli.register(app)
secrets_cli.register(app)
server_cli.register(app)
sim_cli.register(app)
head_cli.register(app)
nodes_cli.register(app)
usage_cli.register(app)
monitoring_cli.register(app)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Action(str, Enum):
    submit = "submit"
    status = "status"
    stop = "stop"
    logs = "logs"
    list = "list"


def _now() -> datetime:
    return datetime.now(UTC)


def _fail_input(exc: SpecError) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(exc.source)} is invalid:")
    for p in exc.problems:
        err.print(f"  - [bold]{escape(p.field)}[/]: {escape(p.reason)}")
    raise typer.Exit(2)


def _fail(msg: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(code)


def _load(jobspec: Path, config: Path | None, validate: bool = True, submission_id: str | None = None):
    cfg, _ = load_ray_config(config)
    text = read_text(jobspec)
    spec, rendered = prepare_submission(cfg, text, _now(), str(jobspec), submission_id=submission_id, validate=validate)
    return cfg, spec, text, rendered


# -- spec ----------------------------------------------------------------------------------
@spec_app.command("render")
def spec_render(
    jobspec: Path = typer.Argument(..., help="TaskSpec YAML"),
    config: Path | None = typer.Option(None, "--config", "-c", help="RayConfig YAML"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Print what would be submitted for JOBSPEC."""
    try:
        _, _, _, rendered = _load(jobspec, config, validate=False)
    except SpecError as exc:
        _fail_input(exc)
    req = rendered.request
    if as_json:
        keys = ("entrypoint", "runtime_env", "entrypoint_num_cpus", "entrypoint_resources", "submission_id")
        payload = {k: getattr(req, k) for k in keys}
        payload.update(entrypoint_num_gpus=req.entrypoint_num_gpus, job_root=str(rendered.job_root))
        print(json.dumps(payload, indent=2))
        return
    out.print(f"[bold]submission_id[/]  {req.submission_id}")
    out.print(f"[bold]job_root[/]       {rendered.job_root}")
    out.print(
        f"[bold]driver[/]         num_cpus={req.entrypoint_num_cpus} num_gpus={req.entrypoint_num_gpus} "
        f"resources={req.entrypoint_resources}"
    )
    out.print(f"[bold]env_vars[/]       {json.dumps(req.runtime_env['env_vars'])}")
    out.print("[bold]entrypoint[/]")
    import shlex

    print(" \\\n    ".join([" ".join(shlex.split(req.entrypoint)[:3])] + [shell_quote(a) for a in rendered.overrides]))
    for w in rendered.warnings:
        err.print(f"[yellow]warning:[/] {w}")


@spec_app.command("validate")
def spec_validate(
    jobspec: Path = typer.Argument(..., help="TaskSpec YAML"),
    config: Path | None = typer.Option(None, "--config", "-c", help="RayConfig YAML"),
) -> None:
    """Exit 0 when JOBSPEC is valid (fields, and overrides against verl's config), else 2."""
    try:
        _, spec, _, rendered = _load(jobspec, config)
    except SpecError as exc:
        _fail_input(exc)
    for w in rendered.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    where = f" against {rendered.config_dir}" if rendered.config_dir else ""
    out.print(f"[green]valid[/]: {spec.workload} {spec.nnodes}x{spec.n_gpus_per_node} GPUs, overrides compose{where}")


# -- run (the seeds' run.py) ----------------------------------------------------------------
@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="RayConfig YAML"),
    jobspec: Path | None = typer.Option(None, "--jobspec", "-j", help="TaskSpec YAML (submit)"),
    action: Action = typer.Option(..., "--action", "-a"),
    submission_id: str | None = typer.Option(None, "--submission-id", help="job to act on"),
    follow: bool = typer.Option(False, "--follow", "-f", help="logs: stream until the job ends"),
    tail: int | None = typer.Option(None, "--tail", help="logs: only the last N lines"),
    as_json: bool = typer.Option(False, "--json", help="status/list: print JSON"),
) -> None:
    """Submit, inspect, stop and read verl jobs through Ray's Jobs SDK."""
    from argus.cluster.jobs import RayJobTool

    try:
        if action is Action.submit:
            _submit(config, jobspec, submission_id)
            return
        cfg, _ = load_ray_config(config)
        tool = RayJobTool(cfg)
        if action is Action.list:
            _print_job_list(tool.list(), as_json)
            return
        submission_id = submission_id or _jobspec_submission_id(jobspec, cfg.shared_root, action)
        if action is Action.status:
            _print_job_status(tool.status(submission_id), as_json)
        elif action is Action.stop:
            stopped = tool.stop(submission_id)
            out.print(f"{submission_id}: {'stop requested' if stopped else 'already finished'}")
        elif action is Action.logs:
            _write_logs(tool, submission_id, follow, tail)
    except SpecError as exc:
        _fail_input(exc)
    except ClusterError as exc:
        _fail(str(exc))


def _submit(config: Path, jobspec: Path | None, submission_id: str | None) -> None:
    """Render JOBSPEC, submit it to Ray, and print its submission id and job root."""
    from argus.cluster.jobs import RayJobTool

    if jobspec is None:
        _fail("--jobspec is required for --action submit", 2)
    cfg, _, text, rendered = _load(jobspec, config, submission_id=submission_id)
    sid = RayJobTool(cfg).submit(rendered, text)
    out.print(f"submitted [bold]{sid}[/]")
    out.print(f"job root: {rendered.job_root}")


def _print_job_list(views: list[JobView], as_json: bool) -> None:
    """Print the jobs as JSON or as a table."""
    if as_json:
        print(json.dumps([v.as_dict() for v in views], indent=2))
        return
    table = Table("submission id", "status", "driver node", "started")
    for v in views:
        started = datetime.fromtimestamp(v.start_time).strftime("%Y-%m-%d %H:%M:%S") if v.start_time else "-"
        table.add_row(v.submission_id, v.status, (v.driver_node_id or "-")[:12], started)
    out.print(table)


def _jobspec_submission_id(jobspec: Path | None, shared_root: str, action: Action) -> str:
    """The submission id JOBSPEC names (exit 2 when there is no jobspec or it names none)."""
    if jobspec is None:
        _fail(f"--submission-id (or a --jobspec naming one) is required for --action {action.value}", 2)
    spec, _ = load_task_spec(jobspec, shared_root)
    return spec.submission_id or _fail("the jobspec has no submission_id; pass --submission-id", 2)


def _print_job_status(v: JobView, as_json: bool) -> None:
    """Print one job's status, driver node, message and diagnosis (or all of it as JSON)."""
    if as_json:
        print(json.dumps(v.as_dict(), indent=2))
        return
    out.print(f"[bold]{v.submission_id}[/]  {v.status}")
    out.print(f"driver node: {v.driver_node_id or '-'}")
    if v.message:
        out.print(f"message: {v.message.splitlines()[0] if v.message else ''}")
    if v.diagnosis:
        out.print(f"[bold red]cause[/]: {v.diagnosis.cause.value}")
        out.print(f"evidence: {v.diagnosis.evidence}")


def _write_logs(tool: RayJobTool, submission_id: str, follow: bool, tail: int | None) -> None:
    """Write the job's logs to stdout: streamed until it ends with `follow`, else its last `tail` lines."""
    if follow:
        for chunk in tool.follow(submission_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    else:
        sys.stdout.write(tool.logs(submission_id, tail))


# -- cluster --------------------------------------------------------------------------------
def _shared_root_opt() -> Path:
    return typer.Option(Path(default_shared_root()), "--shared-root", help="shared storage root ($ARGUS_SHARED_ROOT)")


@cluster_app.command("up")
def cluster_up(
    workers: int = typer.Option(2, "--workers", min=1, max=32),
    gpus_per_worker: int = typer.Option(4, "--gpus-per-worker", min=0, max=64),
    cpus_per_worker: int = typer.Option(4, "--cpus-per-worker", min=1, max=256),
    shared_root: Path = _shared_root_opt(),
    port: int = typer.Option(local.DEFAULT_GCS_PORT, "--port", help="Ray GCS port of the head"),
    dashboard_port: int = typer.Option(
        local.DEFAULT_DASHBOARD_PORT, "--dashboard-port", help="Ray dashboard / job server port"
    ),
) -> None:
    """Start a head (0 CPU, 0 GPU) and WORKERS worker nodes; idempotent."""
    try:
        state, started = local.up(str(shared_root), workers, gpus_per_worker, cpus_per_worker, port, dashboard_port)
    except ClusterError as exc:
        _fail(str(exc))
    verb = "started" if started else "already running"
    out.print(f"cluster {verb}: head {state.gcs_address}, {state.workers} workers x {state.gpus_per_worker} GPUs")
    out.print(f"dashboard / job server: {state.dashboard_url}")
    out.print(f"ray config: {local.config_file(state.shared_root)}")


@cluster_app.command("status")
def cluster_status(shared_root: Path = _shared_root_opt(), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the local cluster's nodes; exit 1 when none runs or it is unhealthy."""
    st = local.status(shared_root.resolve())
    if st is None:
        _fail(f"no local cluster recorded under {shared_root}")
    if as_json:
        print(
            json.dumps(
                {
                    "healthy": st.healthy,
                    "dashboard": st.state.dashboard_url,
                    "gcs": st.state.gcs_address,
                    "nodes": [
                        {
                            "name": n.name,
                            "ip": n.ip,
                            "gpus": n.gpus,
                            "pid": n.pid,
                            "process_alive": st.processes_alive[n.name],
                            "ray_alive": n.ip in st.nodes_alive,
                        }
                        for n in st.state.nodes
                    ],
                },
                indent=2,
            )
        )
    else:
        table = Table("node", "ip", "GPUs", "CPUs", "pid", "process", "in Ray")
        for n in st.state.nodes:
            table.add_row(
                n.name,
                n.ip,
                str(n.gpus),
                str(n.cpus),
                str(n.pid),
                "alive" if st.processes_alive[n.name] else "dead",
                "ALIVE" if n.ip in st.nodes_alive else "-",
            )
        out.print(f"dashboard / job server: {st.state.dashboard_url}  (GCS {st.state.gcs_address})")
        out.print(table)
    if not st.healthy:
        raise typer.Exit(1)


@cluster_app.command("down")
def cluster_down(shared_root: Path = _shared_root_opt()) -> None:
    """Stop the local cluster started for SHARED_ROOT."""
    if local.down(shared_root):
        out.print("cluster stopped")
    else:
        out.print(f"no local cluster recorded under {shared_root}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
