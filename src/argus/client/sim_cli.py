"""`argus simulate`: replay a cluster trace through the scheduling policy.

Owns the options, the output (a Rich table of the metrics and one of the GPU-hours per user, or
one JSON object with --json, the latter under `gpu_hours_by_user`) and the exit codes of the
command: 0 done, 1 the policy did something the cluster cannot do, 2 bad input (every problem
listed). The replay itself is `argus.sim`; the GPU-hours are `argus.sim.usage`'s, computed by
the GPU-hour ledger's `argus.domain.usage.report`. `--preemption` replays with seeded
priorities, checkpoints and preemption (`argus.sim.preempt`) and adds their figures.
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
from argus.sim.preempt import PreemptionModel
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
    pm = result.preemption
    if pm is not None:
        rows += [
            (
                f"priorities: {pm.high_fraction:.0%} at {pm.high_priority}, the rest 500",
                f"preemption {'on' if pm.preempt else 'off'}; checkpoint every {_duration(pm.checkpoint_every_s)}, "
                f"min run {_duration(pm.min_run_s)}",
            ),
            (
                f"avg wait: {m.high_priority_jobs} high-priority jobs / the others",
                f"{_duration(m.high_priority_avg_wait_s)} / {_duration(m.others_avg_wait_s)}",
            ),
            ("the others' avg time queued (requeues included)", _duration(m.others_avg_queued_s)),
            ("preemptions / GPU-hours lost", f"{m.preemptions} / {m.lost_gpu_hours:,.2f}"),
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
    seed: int = typer.Option(
        1, "--seed", help="seed of the per-job factors of --time-limit-factor LOW:HIGH and of --preemption's priorities"
    ),
    users: int = typer.Option(
        DEFAULT_USERS,
        "--users",
        help="synthetic users (hash of job_id mod K) when the trace has no user column",
    ),
    preemption: bool = typer.Option(
        False,
        "--preemption",
        help="a share of jobs (--high-fraction, seeded by --seed and the job id) gets priority 900 and "
        "stops preemptible priority-500 jobs when it is the blocked head; they lose the work since "
        "their last checkpoint and are requeued",
    ),
    high_fraction: float = typer.Option(0.1, "--high-fraction", help="with --preemption: the share of jobs at 900"),
    checkpoint_every: float = typer.Option(
        1800.0, "--checkpoint-every", help="with --preemption: seconds between a job's checkpoints"
    ),
    min_run: float = typer.Option(
        600.0, "--min-run", help="with --preemption: seconds a job preempted before runs before it may be again"
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
    model = None
    if preemption:
        try:
            model = PreemptionModel(
                high_fraction=high_fraction, seed=seed, checkpoint_every_s=checkpoint_every, min_run_s=min_run
            )
        except ValueError as exc:
            problems.append(f"--preemption: {exc}")
    loaded = None
    try:
        loaded = load_trace(trace, max(users, 1))
    except TraceError as exc:
        problems.append(str(exc))
    if problems or shape is None or loaded is None:
        _fail(problems, 2)
    try:
        per_job = user_limit_factors(loaded.jobs, seed, *factors) if factors[0] < factors[1] else None
        result = engine.simulate(loaded.jobs, shape, policy, factors[0], limit_factors=per_job, preemption=model)
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
