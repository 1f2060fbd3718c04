"""Scheduling-policy benchmark: every ITP trace at two loads and two kinds of limit, and the cost
of one policy pass.

1. Replays every case (`argus.sim.cases`): the seven ITP traces x offered load 0.7 and 0.9 x
   time limits of 2 x run time ("2x") or run time x U[1.2, 5] per job, seeded ("user"), 16
   synthetic users, nodes of 8 GPUs sized and submission times scaled so that the offered load
   is exactly the target. Each case runs fifo, easy and default; the table shows avg and p99
   wait, the largest jobs' worst wait, utilisation and wall time. Then the targets for default:
   (T1) avg wait <= easy's in every case; (T2) geometric mean over the cases of default / fifo
   avg wait <= 0.35; (T3) largest jobs' worst wait <= 1.1 x fifo's in every case, with the
   per-case ratios. Nothing is cached across runs; --processes replays in parallel.
2. Times `plan()` over QUEUE waiting jobs (sizes drawn like the traces' num_gpu) on 128 nodes
   x 8 GPUs with a few hundred running jobs, REPEATS passes per policy, and prints the median.
   Two clusters: "busy" (about 300 running jobs of mixed sizes leave a few GPUs free) and
   "draining" (the oldest waiting job needs 64 GPUs; the only free GPUs, 4 on each of 8 nodes,
   are on the nodes reserved for it, so every small job fits now but may not start: the
   policy's most expensive path).
3. Preemption (issue 16): PREEMPT_CASES (load 0.9, user limits) under `default`, each job high
   priority (900) with probability 0.1 (seeded by the job id), the rest 500 and preemptible,
   checkpoints every 30 min, min run 10 min (`argus.sim.preempt`); without and with
   preemption, same priorities: the high-priority and the other jobs' avg wait, preemptions,
   lost GPU-hours and utilisation. Skipped with --skip-replays or --skip-preemption.

Usage:
    python bench/sim_traces.py                        # both parts, about 5 min on 2 shared cores
    python bench/sim_traces.py --skip-replays         # the plan() timing only
    python bench/sim_traces.py --only cluster10,cluster01 --processes 1
    python bench/sim_traces.py --skip-preemption      # without part 3
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from argus.domain.admission import Capacity, Demand
from argus.domain.scheduling import Job, RunningJob, plan
from argus.sim import ClusterShape, Metrics, load_trace, simulate
from argus.sim.cases import Case, all_cases
from argus.sim.preempt import PreemptionModel

TRACES = ("cluster01", "cluster02", "cluster05", "cluster06", "cluster07", "cluster09", "cluster10")
POLICIES = ("fifo", "easy", "default")
# num_gpu over all seven ITP traces (README.txt): 1:57682, 2:1483, 4:2371, 8:7009, 16:381, 32:354, 64:71
SIZES = (1, 2, 4, 8, 16, 32, 64)
SIZE_WEIGHTS = (57682, 1483, 2371, 7009, 381, 354, 71)
DEFAULT_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
SEED = 1
PREEMPT_CASES = ("cluster02", "cluster06", "cluster07")  # at load 0.9, user limits
PREEMPT_MODEL = PreemptionModel(
    high_fraction=0.1, high_priority=900, seed=SEED, checkpoint_every_s=1800.0, min_run_s=600.0
)


def hours(s: float) -> str:
    return f"{s / 3600:.2f}"


def _replay(task: tuple[Case, str]) -> tuple[str, str, Metrics, float]:
    """One case under one policy: (case label, policy, metrics, wall seconds)."""
    case, policy = task
    shape = ClusterShape(case.nodes, case.gpus_per_node)
    r = simulate(case.jobs, shape, policy, case.limit_factor, limit_factors=case.limit_factors)
    return case.label, policy, r.metrics, r.sim_seconds


def load_cases(traces: Path, only: list[str] | None) -> list[Case]:
    """Every case of the traces present in `traces` (a line for each absent one)."""
    loaded = {}
    for name in only or TRACES:
        path = traces / f"{name}.csv"
        if not path.exists():
            print(f"{name}: {path} is absent, its cases skipped")
            continue
        loaded[name] = load_trace(path).jobs
    return all_cases(loaded, seed=SEED)


def run_cases(cases: list[Case], processes: int) -> dict[str, dict[str, tuple[Metrics, float]]]:
    """Replay every case under every policy: label -> policy -> (metrics, wall seconds)."""
    tasks = [(c, p) for c in sorted(cases, key=lambda c: -len(c.jobs)) for p in POLICIES]
    out: dict[str, dict[str, tuple[Metrics, float]]] = {c.label: {} for c in cases}
    if processes > 1:
        with multiprocessing.Pool(processes) as pool:
            results = pool.imap_unordered(_replay, tasks)
            for label, policy, m, wall in results:
                out[label][policy] = (m, wall)
    else:
        for label, policy, m, wall in map(_replay, tasks):
            out[label][policy] = (m, wall)
    return out


def replays(traces: Path, only: list[str] | None, processes: int) -> None:
    cases = load_cases(traces, only)
    if not cases:
        print("No trace found: no replays.\n")
        return
    print(
        "Cases: offered load exactly the target (nodes of 8 GPUs; submission times scaled by k), "
        f"16 synthetic users, limits 2x = 2 x run time, user = run time x U[1.2, 5] (seed {SEED})"
    )
    for c in cases:
        print(f"  {c.trace:10s} load {c.load:g}  nodes {c.nodes:3d}x8  k {c.k:.3f}  limits {c.limit_kind}")
    got = run_cases(cases, processes)
    cols = ("trace", "load", "limits", "nodes", "policy", "avg wait h", "p99 h", "largest worst h", "util", "wall s")
    widths = (10, 4, 6, 5, 7, 10, 8, 18, 5, 6)
    print("\nTimes in hours; 'largest' is the worst wait among the jobs with the most GPUs in the trace")
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for c in cases:
        for policy in POLICIES:
            m, wall = got[c.label][policy]
            row = (
                c.trace,
                f"{c.load:g}",
                c.limit_kind,
                str(c.nodes),
                policy,
                hours(m.avg_wait_s),
                hours(m.p99_wait_s),
                f"{hours(m.largest_jobs_max_wait_s)} ({m.largest_jobs_gpus}g)",
                f"{m.utilization:.3f}",
                f"{wall:.1f}",
            )
            print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    verdicts(cases, got)


def _ratio(a: float, b: float) -> float:
    """a / b, with 0 / 0 = 1 (both waited nothing) and x / 0 = inf."""
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


@dataclass(frozen=True)
class CaseVerdict:
    """default against easy and fifo in one case: the three ratios and the two per-case targets."""

    d_easy: float  # avg wait, default / easy
    d_fifo: float  # avg wait, default / fifo (T2's term)
    largest_d_fifo: float  # the largest jobs' worst wait, default / fifo
    t1: bool  # avg wait <= easy's
    t3: bool  # largest jobs' worst wait <= 1.1 x fifo's


def case_verdict(d: Metrics, easy: Metrics, fifo: Metrics) -> CaseVerdict:
    """T1 and T3 in one case, with the ratios they come from."""
    return CaseVerdict(
        _ratio(d.avg_wait_s, easy.avg_wait_s),
        _ratio(d.avg_wait_s, fifo.avg_wait_s),
        _ratio(d.largest_jobs_max_wait_s, fifo.largest_jobs_max_wait_s),
        d.avg_wait_s <= easy.avg_wait_s,
        d.largest_jobs_max_wait_s <= 1.1 * fifo.largest_jobs_max_wait_s,
    )


def geo_mean(values: list[float]) -> float:
    """The geometric mean (T2), NaN for none; values are floored at 1e-9."""
    return math.exp(sum(math.log(max(v, 1e-9)) for v in values) / len(values)) if values else math.nan


def verdicts(cases: list[Case], got: dict[str, dict[str, tuple[Metrics, float]]]) -> None:
    """Print the per-case ratios and whether default meets the three targets."""
    print("\nPer case: default / easy avg wait (T1 <= 1), default / fifo avg wait, largest default / fifo (T3 <= 1.1)")
    found = [(c, case_verdict(*(got[c.label][p][0] for p in ("default", "easy", "fifo")))) for c in cases]
    for c, v in found:
        print(
            f"  {c.trace:10s} load {c.load:g} {c.limit_kind:4s}  d/easy {v.d_easy:6.3f}{'' if v.t1 else ' NO'}"
            f"   d/fifo {v.d_fifo:6.3f}   largest d/fifo {v.largest_d_fifo:6.3f}{'' if v.t3 else ' NO'}"
        )
    t1, t3 = all(v.t1 for _, v in found), all(v.t3 for _, v in found)
    gm = geo_mean([v.d_fifo for _, v in found])
    print("\nTargets for default:")
    print(f"  T1 avg wait <= easy's in every case:             {'yes' if t1 else 'NO'}")
    print(f"  T2 geometric mean of default / fifo <= 0.35:     {'yes' if gm <= 0.35 else 'NO'} ({gm:.3f})")
    print(f"  T3 largest jobs' worst wait <= 1.1 x fifo's:     {'yes' if t3 else 'NO'}")
    print()


def _cluster(
    rng: random.Random, nodes: int, gpus: int, running: int, now: float, scenario: str
) -> tuple[dict[str, float], list[RunningJob]]:
    """Free GPUs per node and the running jobs of the timing scenario."""
    names = ClusterShape(nodes, gpus).node_names()
    cap = Capacity({n: float(gpus) for n in names})
    jobs: list[RunningJob] = []
    if scenario == "draining":
        # The first 8 nodes run one 4-GPU job each that ends within 10 minutes (4 GPUs free on
        # each); every other node is full until days later. The 64-GPU head is reserved on the
        # first 8 nodes, so the GPUs free now are all ones the reservation needs.
        for k, n in enumerate(names):
            shapes = (4,) if k < 8 else rng.choice([(8,), (4, 4), (4, 2, 1, 1), (2, 2, 2, 1, 1)])
            for g in shapes:
                ends = now + 600 if k < 8 else now + rng.uniform(86400, 7 * 86400)
                jobs.append(RunningJob(f"r{len(jobs)}", f"u{rng.randrange(16):02d}", {n: float(g)}, ends))
                cap.free[n] -= g
        return cap.free, jobs
    sizes = (1, 2, 4, 8, 16, 32)
    weights = (60, 10, 10, 15, 3, 2)
    misses = 0
    while len(jobs) < running and misses < 50 and sum(cap.free.values()) > 24:
        g = rng.choices(sizes, weights)[0]
        demand = Demand(1, float(g)) if g <= gpus else Demand(g // gpus, float(gpus))
        placement = cap.fit(demand)
        if placement is None:
            misses += 1
            continue
        cap.take(placement)
        jobs.append(
            RunningJob(
                f"r{len(jobs)}",
                f"u{rng.randrange(16):02d}",
                placement.gpus_by_node,
                now + rng.uniform(600, 7 * 86400),
            )
        )
    return cap.free, jobs


def _queue(rng: random.Random, n: int, gpus: int, now: float, scenario: str) -> list[Job]:
    out = []
    for i in range(n):
        g = rng.choices(SIZES, SIZE_WEIGHTS)[0]
        if scenario == "draining" and i == 0:
            g = 64
        nnodes, per = (1, g) if g <= gpus else (g // gpus, gpus)
        duration = min(10 * 86400.0, max(600.0, rng.lognormvariate(8.9, 1.3)))  # median ~2 h
        submitted = now - 86400.0 + i * (86400.0 / n)  # oldest first
        out.append(Job(f"q{i:05d}", f"u{rng.randrange(16):02d}", nnodes, float(per), submitted, 2 * duration))
    return out


def _preempt_replay(task: tuple[Case, bool]) -> tuple[str, bool, Metrics, float]:
    """One preemption case without (False) or with (True) preemption."""
    case, on = task
    shape = ClusterShape(case.nodes, case.gpus_per_node)
    model = PreemptionModel(**{**vars(PREEMPT_MODEL), "preempt": on})
    r = simulate(case.jobs, shape, "default", case.limit_factor, limit_factors=case.limit_factors, preemption=model)
    return case.label, on, r.metrics, r.sim_seconds


def preemption(traces: Path, only: list[str] | None, processes: int) -> None:
    """Part 3: PREEMPT_CASES under `default` without and with preemption (same priorities)."""
    names = [n for n in PREEMPT_CASES if only is None or n in only]
    cases = [c for c in load_cases(traces, names) if c.load == 0.9 and c.limit_kind == "user"] if names else []
    if not cases:
        print("Preemption: no case to replay.\n")
        return
    m = PREEMPT_MODEL
    print(
        f"Preemption (default policy, load 0.9, user limits): {m.high_fraction:.0%} of jobs priority "
        f"{m.high_priority} (seed {m.seed}), the rest 500 and preemptible; checkpoint every "
        f"{m.checkpoint_every_s / 60:g} min, min run {m.min_run_s / 60:g} min. Wait to the first start; "
        "'queued' counts requeues' waits too"
    )
    tasks = [(c, on) for c in sorted(cases, key=lambda c: -len(c.jobs)) for on in (False, True)]
    got: dict[tuple[str, bool], tuple[Metrics, float]] = {}
    if processes > 1:
        with multiprocessing.Pool(processes) as pool:
            for label, on, metrics, wall in pool.imap_unordered(_preempt_replay, tasks):
                got[label, on] = (metrics, wall)
    else:
        for label, on, metrics, wall in map(_preempt_replay, tasks):
            got[label, on] = (metrics, wall)
    cols = (
        "trace",
        "preempt",
        "high jobs",
        "high avg wait h",
        "others avg h",
        "others queued h",
        "preemptions",
        "lost GPU-h",
        "util",
        "wall s",
    )
    widths = (10, 7, 9, 15, 12, 14, 11, 10, 5, 6)
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for c in cases:
        for on in (False, True):
            mm, wall = got[c.label, on]
            row = (
                c.trace,
                "on" if on else "off",
                str(mm.high_priority_jobs),
                hours(mm.high_priority_avg_wait_s),
                hours(mm.others_avg_wait_s),
                hours(mm.others_avg_queued_s),
                str(mm.preemptions),
                f"{mm.lost_gpu_hours:.1f}",
                f"{mm.utilization:.3f}",
                f"{wall:.1f}",
            )
            print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    print()


def plan_timing(queue: int, repeats: int, running: int) -> None:
    nodes, gpus, now = 128, 8, 10 * 86400.0
    print(
        f"plan() timing: {queue} waiting jobs, {nodes} nodes x {gpus} GPUs, explain=False, "
        f"median of {repeats} passes (target < 50 ms)"
    )
    for scenario in ("busy", "draining"):
        rng = random.Random(7)
        free, run = _cluster(rng, nodes, gpus, running, now, scenario)
        waiting = _queue(rng, queue, gpus, now, scenario)
        usage = {f"u{u:02d}": rng.uniform(0, 5000) for u in range(16)}
        print(
            f"  {scenario}: {len(run)} running jobs, {sum(free.values()):g} GPUs free on "
            f"{sum(1 for g in free.values() if g > 0)} node(s)"
        )
        for policy in POLICIES:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                p = plan(now, waiting, run, free, policy, usage=usage, explain=False)
                times.append(time.perf_counter() - t0)
            print(
                f"    {policy:8s} median {statistics.median(times) * 1000:8.1f} ms   "
                f"min {min(times) * 1000:8.1f} ms   max {max(times) * 1000:8.1f} ms   "
                f"starts {len(p.start)}   reserved {p.reserved[0] if p.reserved else '-'}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="folder of clusterNN.csv")
    ap.add_argument("--only", type=lambda v: v.split(","), default=None, help="comma-separated trace names")
    ap.add_argument("--processes", type=int, default=2, help="replays in parallel")
    ap.add_argument("--queue", type=int, default=10000, help="waiting jobs in the plan() timing")
    ap.add_argument("--running", type=int, default=300, help="running jobs in the busy cluster")
    ap.add_argument("--repeats", type=int, default=20, help="plan() passes per policy")
    ap.add_argument("--skip-replays", action="store_true")
    ap.add_argument("--skip-preemption", action="store_true", help="skip part 3 (preemption)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if not args.skip_replays:
        replays(args.traces, args.only, args.processes)
        if not args.skip_preemption:
            preemption(args.traces, args.only, args.processes)
    plan_timing(args.queue, args.repeats, args.running)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
