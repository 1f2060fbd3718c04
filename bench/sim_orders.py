"""Queue orders beside `default`: the three scheduling targets for each, and the per-case envelope.

Replays every case of `bench/sim_traces.py` (the seven ITP traces x load 0.7 and 0.9 x 2x and
user-like limits) under fifo and easy once, then under `default` with its order replaced by each
variant below (the backfill, the reservation and everything else stay `plan()`'s own). For each
variant it prints the per-case default / fifo ratio, marks the cases that miss T1 (avg wait >
easy's, "E") or T3 (largest jobs' worst wait > 1.1 x fifo's, "L"), and the three targets.

Then the envelope: for each case, the lowest default / fifo among the variants that meet T1 and
T3 in that case, and the geometric mean of those over the cases where one does: what one order
would reach if it were as good as the best listed one in every case at once. No order listed here
meets T1 and T3 in every case with a T2 below it; one above it may still be missed by each.

Variants (rate: seconds of weighted limit that each second waited takes off, times the job's node
count unless said otherwise, as `argus.domain.ordering.AGE_RATE`; a job whose score reaches 0 is
overdue, overdue jobs oldest first, as in `default`):

- default: the shipped order (rate 2 for every job, fair-share weight 1..2);
- area: GPUs x limit, no ageing, no fair share (shortest area first);
- cap-R: rate R for every job, without the node factor;
- guard-R-K: cap-R, and a job on more than one node is also overdue once it has waited K x the
  mean wait of the jobs waiting now;
- largest-A-B: rate A for the jobs that ask the most GPUs among those waiting, B for the rest;
- share-A-B: rate B + (A - B) x GPUs / the most GPUs asked among those waiting;
- fair-F: default with the fair-share weight bounded by F instead of 2;
- qage-K-P: no ageing by the job's own limit; a job is overdue once waited x nodes^P >= K x the
  mean wait of the jobs waiting now (a scale taken from the queue, not from the job), else its
  fair-share-weighted area.

Usage:
    python bench/sim_orders.py                                # every variant, about 14 min on 2 cores
    python bench/sim_orders.py --variants default,share-2-0.25 --only cluster10
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sim_traces import DEFAULT_TRACES, case_verdict, geo_mean, load_cases

import argus.domain.scheduling as scheduling
from argus.domain import ordering
from argus.domain.scheduling import Job
from argus.sim import ClusterShape, Metrics, simulate
from argus.sim.cases import Case

VARIANTS = (
    "default",
    "area",
    "cap-1",
    "guard-1-2",
    "guard-1.5-2",
    "largest-2-0.5",
    "largest-0.5-0.1",
    "share-2-0.25",
    "fair-1.25",
    "qage-2-0",
)
OrderFn = Callable[..., list[Job]]


def make_order(variant: str) -> OrderFn:
    """The order function `plan()` uses for `default` under `variant` (fifo and easy unchanged)."""
    if variant == "default":
        return ordering.order
    kind, _, params = variant.partition("-")
    try:
        nums = [float(p) for p in params.split("-")] if params else []
    except ValueError:
        nums = []
    arity = {"area": 0, "fair": 1, "cap": 1}.get(kind, 2)
    if kind not in ("area", "cap", "guard", "largest", "share", "fair", "qage") or len(nums) != arity:
        raise SystemExit(f"--variants: {variant!r} is not a variant (see the module docstring)")

    def order(
        jobs: Sequence[Job],
        policy: str,
        usage: Mapping[str, float] | None = None,
        now: float | None = None,
        keep: str | None = None,
    ) -> list[Job]:
        if policy != "default":
            return ordering.order(jobs, policy, usage, now, keep)
        t = now if now is not None else max((j.submitted_at for j in jobs), default=0.0)
        weights = ordering.fair_weights(usage)
        if kind == "fair":  # the same curve, bounded by F instead of FAIR_MAX
            scale = (nums[0] - 1.0) / (ordering.FAIR_MAX - 1.0)
            weights = {u: 1.0 + (w - 1.0) * scale for u, w in weights.items()}
        most = max((j.gpus for j in jobs), default=1.0)
        mean_wait = sum(max(0.0, t - j.submitted_at) for j in jobs) / max(1, len(jobs))

        def score(j: Job) -> float:
            waited = max(0.0, t - j.submitted_at)
            if kind == "area":
                return j.gpus * j.time_limit_s
            if kind == "qage":
                overdue = waited > 0 and waited * j.nnodes ** nums[1] >= nums[0] * mean_wait
                return 0.0 if overdue else j.gpus * j.time_limit_s * weights.get(j.user, 1.0)
            nodes = j.nnodes
            if kind in ("cap", "guard"):
                if kind == "guard" and j.nnodes > 1 and waited > 0 and waited >= nums[1] * mean_wait:
                    return 0.0
                rate, nodes = nums[0], 1
            elif kind == "fair":
                rate = ordering.AGE_RATE
            elif kind == "largest":
                rate = nums[0] if j.gpus >= most else nums[1]
            else:
                rate = nums[1] + (nums[0] - nums[1]) * j.gpus / most
            return j.gpus * max(0.0, j.time_limit_s * weights.get(j.user, 1.0) - rate * waited * nodes)

        return sorted(jobs, key=lambda j: (-j.priority, j.id != keep, score(j), j.submitted_at, j.id))

    return order


def _replay(task: tuple[Case, str, str]) -> tuple[str, str, str, Metrics]:
    """One case under one policy, `default` with `variant`'s order: (case, policy, variant, metrics)."""
    case, policy, variant = task
    scheduling.order = make_order(variant)  # type: ignore[assignment]  # this process only
    shape = ClusterShape(case.nodes, case.gpus_per_node)
    r = simulate(case.jobs, shape, policy, case.limit_factor, limit_factors=case.limit_factors)
    return case.label, policy, variant, r.metrics


def report(cases: list[Case], variants: list[str], got: dict[str, dict[str, Metrics]]) -> None:
    """Print the per-case table, each variant's targets and the envelope."""
    verdict = {
        (c.label, v): case_verdict(got[c.label][v], got[c.label]["easy"], got[c.label]["fifo"])
        for c in cases
        for v in variants
    }
    print("default / fifo avg wait per case; E: misses T1 (> easy's avg), L: misses T3 (> 1.1 x fifo's largest worst)")
    print("case".ljust(24) + "".join(v.rjust(17) for v in variants))
    best: dict[str, tuple[float, str]] = {}
    for c in cases:
        cells = []
        for v in variants:
            x = verdict[c.label, v]
            cells.append(f"{x.d_fifo:.3f}{'' if x.t1 else 'E'}{'' if x.t3 else 'L'}".rjust(17))
            if x.t1 and x.t3 and (c.label not in best or x.d_fifo < best[c.label][0]):
                best[c.label] = (x.d_fifo, v)
        print(f"{c.trace} {c.load:g} {c.limit_kind}".ljust(24) + "".join(cells))
    print("\nvariant".ljust(17) + "T1 misses (worst d/easy)   T2 geo-mean d/fifo   T3 misses (worst d/fifo)")
    for v in variants:
        xs = [verdict[c.label, v] for c in cases]
        miss1, miss3 = sum(not x.t1 for x in xs), sum(not x.t3 for x in xs)
        worst1, worst3 = max(x.d_easy for x in xs), max(x.largest_d_fifo for x in xs)
        gm = geo_mean([x.d_fifo for x in xs])
        print(f"{v:16s} {miss1:3d} ({worst1:.2f}){'':15s}{gm:.3f}{'':15s}{miss3:3d} ({worst3:.2f})")
    print("\nEnvelope: per case, the lowest default / fifo among the variants that meet T1 and T3 there")
    for c in cases:
        r, name = best.get(c.label, (math.nan, "none meets both"))
        print(f"  {c.trace} {c.load:g} {c.limit_kind:4s}  {r:.3f}  {name}")
    gm = geo_mean([r for r, _ in best.values()])
    print(f"  geometric mean over the {len(best)} of {len(cases)} cases where one does: {gm:.3f} (T2 asks <= 0.35)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="folder of clusterNN.csv")
    ap.add_argument("--only", default="", help="comma-separated trace names")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants (module docstring)")
    ap.add_argument("--processes", type=int, default=2, help="replays in parallel")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        make_order(v)  # refuses an unknown name before any replay
    cases = load_cases(args.traces, [n for n in args.only.split(",") if n] or None)
    if not cases:
        print("No trace found: no replays.")
        return
    tasks = [(c, p, "default") for c in cases for p in ("fifo", "easy")]
    tasks += [(c, "default", v) for c in cases for v in variants]
    tasks.sort(key=lambda t: -len(t[0].jobs))
    got: dict[str, dict[str, Metrics]] = {c.label: {} for c in cases}
    t0 = time.monotonic()
    with multiprocessing.Pool(max(1, args.processes)) as pool:
        for label, policy, variant, m in pool.imap_unordered(_replay, tasks):
            got[label][variant if policy == "default" else policy] = m
    print(f"{len(tasks)} replays in {time.monotonic() - t0:.0f} s\n")
    report(cases, variants, got)


if __name__ == "__main__":
    main()
