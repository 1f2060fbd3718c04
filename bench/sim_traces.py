"""Scheduling-policy benchmark: replays of the ITP traces, and the cost of one policy pass.

1. Replays cluster02 and cluster06 on 16x8 and cluster07 on 32x8 (time limit = 2 x duration,
   16 synthetic users) through fifo, easy and default, and prints the waits, the largest jobs'
   worst wait, JCT, bounded slowdown, utilisation, makespan, their lower bounds and the wall
   time of each replay; then, per trace, whether default meets the issue's targets: average
   wait <= 0.25 x fifo's and <= easy's, p99 wait <= fifo's, largest jobs' worst wait <= fifo's.
2. Times `plan()` over QUEUE waiting jobs (sizes drawn like the traces' num_gpu) on 128 nodes
   x 8 GPUs with a few hundred running jobs, REPEATS passes per policy, and prints the median.
   Two clusters: "busy" (about 300 running jobs of mixed sizes leave a few GPUs free) and
   "draining" (the oldest waiting job needs 64 GPUs; the only free GPUs, 4 on each of 8 nodes,
   are on the nodes reserved for it, so every small job fits now but may not start: the
   policy's most expensive path).

Usage:
    python bench/sim_traces.py                        # both parts, a few minutes on 2 cores
    python bench/sim_traces.py --skip-replays         # the plan() timing only
    python bench/sim_traces.py --traces ../shared/traces --repeats 20 --queue 10000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from argus.domain.admission import Capacity, Demand
from argus.domain.scheduling import Job, RunningJob, plan
from argus.sim import ClusterShape, load_trace, simulate

REPLAYS = [("cluster02", "16x8"), ("cluster06", "16x8"), ("cluster07", "32x8")]
POLICIES = ("fifo", "easy", "default")
# num_gpu over all seven ITP traces (README.txt): 1:57682, 2:1483, 4:2371, 8:7009, 16:381, 32:354, 64:71
SIZES = (1, 2, 4, 8, 16, 32, 64)
SIZE_WEIGHTS = (57682, 1483, 2371, 7009, 381, 354, 71)
DEFAULT_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def hours(s: float) -> str:
    return f"{s / 3600:.2f}"


def replays(traces: Path, factor: float) -> None:
    cols = (
        "trace",
        "nodes",
        "policy",
        "avg wait h",
        "p50 h",
        "p99 h",
        "largest worst h",
        "avg JCT h",
        "JCT lb h",
        "avg bsld",
        "util",
        "makespan d",
        "mkspan lb d",
        "passes",
        "plan s",
        "wall s",
    )
    widths = (10, 5, 7, 10, 7, 7, 15, 9, 8, 8, 5, 10, 11, 6, 6, 6)
    print(f"Replays: time limit = {factor:g} x duration, 16 synthetic users, times in hours (h) or days (d)")
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    checks = []
    for name, nodes in REPLAYS:
        path = traces / f"{name}.csv"
        if not path.exists():
            print(f"{name}: {path} is absent, skipped")
            continue
        jobs = load_trace(path).jobs
        got = {}
        for policy in POLICIES:
            r = simulate(jobs, ClusterShape.parse(nodes), policy, factor)
            m = got[policy] = r.metrics
            row = (
                name,
                nodes,
                policy,
                hours(m.avg_wait_s),
                hours(m.p50_wait_s),
                hours(m.p99_wait_s),
                f"{hours(m.largest_jobs_max_wait_s)} ({m.largest_jobs_gpus}g)",
                hours(m.avg_jct_s),
                hours(m.jct_lower_bound_s),
                f"{m.avg_bsld:.2f}",
                f"{m.utilization:.3f}",
                f"{m.makespan_s / 86400:.2f}",
                f"{m.makespan_lower_bound_s / 86400:.2f}",
                str(r.passes),
                f"{r.plan_seconds:.1f}",
                f"{r.sim_seconds:.1f}",
            )
            print("  ".join(c.rjust(w) for c, w in zip(row, widths)), flush=True)
        checks.append((name, got))
    print()
    print("Targets for default (per trace):")
    for name, got in checks:
        d, f, e = got["default"], got["fifo"], got["easy"]
        items = [
            ("avg wait <= 0.25 x fifo", d.avg_wait_s, 0.25 * f.avg_wait_s),
            ("avg wait <= easy", d.avg_wait_s, e.avg_wait_s),
            ("p99 wait <= fifo", d.p99_wait_s, f.p99_wait_s),
            ("largest jobs' worst wait <= fifo", d.largest_jobs_max_wait_s, f.largest_jobs_max_wait_s),
        ]
        for what, value, bound in items:
            verdict = "yes" if value <= bound else "NO"
            print(f"  {name:10s} {what:34s} {verdict:3s}  ({hours(value)} h vs {hours(bound)} h)")
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
    ap.add_argument("--factor", type=float, default=2.0, help="time limit = duration x factor")
    ap.add_argument("--queue", type=int, default=10000, help="waiting jobs in the plan() timing")
    ap.add_argument("--running", type=int, default=300, help="running jobs in the busy cluster")
    ap.add_argument("--repeats", type=int, default=20, help="plan() passes per policy")
    ap.add_argument("--skip-replays", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if not args.skip_replays:
        replays(args.traces, args.factor)
    plan_timing(args.queue, args.repeats, args.running)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
