"""`argus simulate`: replay a cluster trace through the scheduling policy.

Owns the options, the output (a Rich table of the metrics and one of the GPU-hours per user, or
one JSON object with --json, the latter under `gpu_hours_by_user`) and the exit codes of the
command: 0 done, 1 the policy did something the cluster cannot do, 2 bad input (every problem
listed). The replay itself is `argus.sim`; the GPU-hours are `argus.sim.usage`'s, computed by
the GPU-hour ledger's `argus.domain.usage.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from argus.domain.scheduling import POLICIES
from argus.sim import engine
from argus.sim import usage as sim_usage
from argus.sim.cases import parse_factor, user_limit_factors
from argus.sim.trace import DEFAULT_USERS, TraceError, load_trace

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(problems: list[str], code: int) -> NoReturn:
    if len(problems) == 1:
        err.print(f"[bold red]error:[/] {escape(problems[0])}")
    else:
        err.print("[bold red]error:[/] bad input:")
        for p in problems:
            err.print(f"  - {escape(p)}")
    raise typer.Exit(code)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds:,.0f} s ({seconds / 3600:,.1f} h)"
    return f"{seconds:,.0f} s"


def _table(result: engine.SimResult, trace: Path, users: str, limits: str) -> Table:
    m = result.metrics
    table = Table(
        "metric",
        "value",
        title=f"{trace.name} on {result.shape} ({result.shape.total_gpus} GPUs), "
        f"policy {result.policy}, time limit = {limits} x duration",
    )
    rows = [
        ("jobs", f"{m.jobs} ({m.finished} finished, {m.rejected} rejected: larger than the cluster)"),
        ("users", users),
        ("killed at their time limit", str(m.killed)),
        ("avg wait", _duration(m.avg_wait_s)),
        (
            "p50 / p95 / p99 wait",
            " / ".join(_duration(v) for v in (m.p50_wait_s, m.p95_wait_s, m.p99_wait_s)),
        ),
        ("max wait", _duration(m.max_wait_s)),
        (f"largest jobs ({m.largest_jobs_gpus} GPUs): worst wait", _duration(m.largest_jobs_max_wait_s)),
        (
            "avg JCT (lower bound: mean run time)",
            f"{_duration(m.avg_jct_s)}  (>= {_duration(m.jct_lower_bound_s)})",
        ),
        ("avg bounded slowdown (10 s)", f"{m.avg_bsld:.2f}"),
        ("GPU utilisation", f"{m.utilization:.3f}"),
        (
            "makespan (lower bound: GPU-seconds / GPUs)",
            f"{_duration(m.makespan_s)}  (>= {_duration(m.makespan_lower_bound_s)})",
        ),
        ("policy passes", f"{result.passes} (queue: max {result.max_queue}, mean {result.avg_queue:.1f})"),
        ("time in the policy / whole replay", f"{result.plan_seconds:.2f} s / {result.sim_seconds:.2f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _usage_table(rows: list[dict]) -> Table:
    table = Table("user", "GPU-hours", "jobs", "mean wait", "run", title="GPU-hours per user (the ledger's report)")
    for col in table.columns[1:]:
        col.justify = "right"
    for r in rows:
        wait = "-" if r["wait_s"] is None else _duration(r["wait_s"])
        table.add_row(escape(r["user"]), f"{r['gpu_hours']:,.2f}", str(r["jobs"]), wait, _duration(r["run_s"]))
    return table


def simulate(
    trace: Path = typer.Option(..., "--trace", help="trace CSV: job_id, submission_time, duration, num_gpu[, user]"),
    nodes: str = typer.Option(..., "--nodes", help="NxG: N nodes of G GPUs each, e.g. 16x8"),
    policy: str = typer.Option("default", "--policy", help=f"scheduling policy: {', '.join(POLICIES)}"),
    time_limit_factor: str = typer.Option(
        "2",
        "--time-limit-factor",
        help="each job's time limit is its duration times this; LOW:HIGH draws each job's factor "
        "uniformly from [LOW, HIGH] (seeded by --seed and the job id)",
    ),
    seed: int = typer.Option(1, "--seed", help="seed of the per-job factors of --time-limit-factor LOW:HIGH"),
    users: int = typer.Option(
        DEFAULT_USERS,
        "--users",
        help="synthetic users (hash of job_id mod K) when the trace has no user column",
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Replay TRACE through the scheduling policy on a simulated cluster and print the metrics."""
    problems: list[str] = []
    shape = None
    try:
        shape = engine.ClusterShape.parse(nodes)
    except TraceError as exc:
        problems.append(str(exc))
    if policy not in POLICIES:
        problems.append(f"--policy {policy!r}: unknown; one of {', '.join(POLICIES)}")
    factors = (2.0, 2.0)
    try:
        factors = parse_factor(time_limit_factor)
    except TraceError as exc:
        problems.append(str(exc))
    if users < 1:
        problems.append(f"--users {users}: must be at least 1")
    loaded = None
    try:
        loaded = load_trace(trace, max(users, 1))
    except TraceError as exc:
        problems.append(str(exc))
    if problems or shape is None or loaded is None:
        _fail(problems, 2)
    try:
        per_job = user_limit_factors(loaded.jobs, seed, *factors) if factors[0] < factors[1] else None
        result = engine.simulate(loaded.jobs, shape, policy, factors[0], limit_factors=per_job)
    except engine.SimulationError as exc:
        _fail([f"the {policy} policy failed the replay: {exc}"], 1)
    n_users = len({j.user for j in loaded.jobs})
    synthetic = loaded.synthetic_users is not None
    by_user = sim_usage.rows_json(sim_usage.per_user(result.records))
    if as_json:
        payload = result.to_json()
        payload.update(trace=str(trace), users=n_users, synthetic_users=synthetic, gpu_hours_by_user=by_user)
        if per_job is not None:
            payload.update(time_limit_factor=f"{factors[0]:g}:{factors[1]:g}", seed=seed)
        print(json.dumps(payload, indent=2))
        return
    who = f"{n_users} synthetic (hash of job_id mod {users})" if synthetic else f"{n_users} (the user column)"
    limits = f"U[{factors[0]:g}, {factors[1]:g}] (seed {seed})" if per_job is not None else f"{factors[0]:g}"
    out.print(_table(result, trace, who, limits))
    out.print(_usage_table(by_user))


def register(app: typer.Typer) -> None:
    """Add `argus simulate` to the `argus` command line."""
    app.command("simulate")(simulate)
