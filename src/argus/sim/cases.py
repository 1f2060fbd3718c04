"""The evaluation cases of the scheduling benchmark: a trace at a target offered load (pure).

Owns how a trace becomes a case: the cluster size (nodes of 8 GPUs) that puts the trace near a
target offered load, the scaling of the submission times that makes the load exactly the
target, and the per-job time-limit factors ("user-like" limits). No I/O: the caller loads the
trace (`argus.sim.trace.load_trace`) and replays the case (`argus.sim.engine.simulate`).

Sizing, for a trace with span S = last submit - first submit and work W = sum(duration x
num_gpu) GPU-seconds, at the target load L:

- G = W / (S x L) GPUs; nodes = max(round(G / 8), the fewest nodes that hold the trace's largest
  job, 1);
- the natural load at that size is W / (nodes x 8 x S); the submission times are scaled about
  the first one, t' = first + (t - first) x k with k = natural load / L, so that the offered load
  W / (nodes x 8 x k x S) is exactly L. Durations and sizes are unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from argus.sim.trace import TraceError, TraceJob

GPUS_PER_NODE = 8
LOADS = (0.7, 0.9)
LIMIT_KINDS = ("2x", "user")  # time limit = 2 x run time; run time x U[1.2, 5] per job
USER_FACTORS = (1.2, 5.0)


@dataclass(frozen=True)
class Case:
    """One evaluation case: a trace, scaled to `load` on `nodes` nodes, with its limits."""

    trace: str
    load: float
    limit_kind: str
    nodes: int
    gpus_per_node: int
    k: float  # the submission times' scale
    jobs: list[TraceJob]
    limit_factor: float  # every job's factor when `limit_factors` is None
    limit_factors: dict[str, float] | None

    @property
    def label(self) -> str:
        return f"{self.trace} load {self.load:g} limits {self.limit_kind}"


def offered_load(jobs: Sequence[TraceJob], gpus: float) -> float:
    """sum(duration x num_gpu) / (gpus x (last submit - first submit)).

    Args:
        jobs: the trace (at least two distinct submission times).
        gpus: the cluster's GPUs.

    Returns:
        The offered load.

    Raises:
        TraceError: no jobs, no span, or no GPUs.
    """
    span = _span(jobs)
    if gpus <= 0:
        raise TraceError(f"the cluster needs GPUs, not {gpus!r}")
    return sum(j.duration_s * j.num_gpu for j in jobs) / (gpus * span)


def _span(jobs: Sequence[TraceJob]) -> float:
    if not jobs:
        raise TraceError("an empty trace has no offered load")
    times = [j.submitted_at for j in jobs]
    span = max(times) - min(times)
    if span <= 0:
        raise TraceError("every job is submitted at the same time: the trace has no span")
    return span


def size_cluster(jobs: Sequence[TraceJob], load: float, gpus_per_node: int = GPUS_PER_NODE) -> tuple[int, float]:
    """The node count and the submission-time scale that put `jobs` at `load` (module docstring).

    Args:
        jobs: the trace.
        load: the target offered load (> 0).
        gpus_per_node: the GPUs of each node.

    Returns:
        (nodes, k): scale the submission times by k (`scale_submissions`) for the load to be `load`.

    Raises:
        TraceError: a load that is not positive, or a trace without a span.
    """
    if not load > 0 or math.isinf(load):
        raise TraceError(f"the offered load must be a positive number, not {load!r}")
    span = _span(jobs)
    work = sum(j.duration_s * j.num_gpu for j in jobs)
    g = work / (span * load)
    biggest = -(-max(j.num_gpu for j in jobs) // gpus_per_node)
    nodes = max(round(g / gpus_per_node), biggest, 1)
    natural = work / (nodes * gpus_per_node * span)
    return nodes, natural / load


def scale_submissions(jobs: Sequence[TraceJob], k: float) -> list[TraceJob]:
    """The jobs with submission times t' = first + (t - first) x k (durations unchanged).

    Args:
        jobs: the trace.
        k: the scale (> 0).

    Returns:
        New jobs, in the given order.
    """
    if not jobs:
        return []
    first = min(j.submitted_at for j in jobs)
    return [replace(j, submitted_at=first + (j.submitted_at - first) * k) for j in jobs]


def user_limit_factors(
    jobs: Sequence[TraceJob], seed: int, low: float = USER_FACTORS[0], high: float = USER_FACTORS[1]
) -> dict[str, float]:
    """Per job: a time-limit factor drawn uniformly from [low, high], by a generator seeded with
    `seed` and the job's id, so a job's factor depends on nothing else.

    Args:
        jobs: the trace.
        seed: the seed.
        low: the smallest factor (> 0).
        high: the largest factor (>= low).

    Returns:
        job id -> factor.

    Raises:
        TraceError: a bad range.
    """
    if not (0 < low <= high) or math.isinf(high):
        raise TraceError(f"time-limit factors {low!r}:{high!r}: need 0 < low <= high, both finite")
    return {j.id: random.Random(f"{seed}:{j.id}").uniform(low, high) for j in jobs}


def parse_factor(text: str) -> tuple[float, float]:
    """Read a time-limit factor: `F` (every job F x its run time) or `LOW:HIGH` (each job a factor
    drawn uniformly from [LOW, HIGH]).

    Args:
        text: the --time-limit-factor value.

    Returns:
        (low, high); equal for a single factor.

    Raises:
        TraceError: not a positive number, or not LOW:HIGH with 0 < LOW <= HIGH.
    """
    parts = text.split(":")
    bad = TraceError(f"--time-limit-factor {text!r}: expected a positive number (2) or LOW:HIGH (1.2:5)")
    if len(parts) > 2:
        raise bad
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise bad from None
    low, high = values[0], values[-1]
    if not (0 < low <= high) or math.isinf(high):
        raise TraceError(f"--time-limit-factor {text!r}: must be positive, and LOW <= HIGH")
    return low, high


def make_case(
    trace: str,
    jobs: Sequence[TraceJob],
    load: float,
    limit_kind: str,
    seed: int = 1,
    gpus_per_node: int = GPUS_PER_NODE,
) -> Case:
    """One case: `jobs` sized and scaled to `load`, with limits of `limit_kind`.

    Args:
        trace: the trace's name.
        jobs: its jobs.
        load: the target offered load.
        limit_kind: "2x" (time limit = 2 x run time) or "user" (run time x U[1.2, 5] per job).
        seed: the seed of the user-like factors.
        gpus_per_node: the GPUs of each node.

    Returns:
        The case.

    Raises:
        TraceError: an unknown limit kind, or as `size_cluster`.
    """
    if limit_kind not in LIMIT_KINDS:
        raise TraceError(f"limit kind {limit_kind!r}: one of {', '.join(LIMIT_KINDS)}")
    nodes, k = size_cluster(jobs, load, gpus_per_node)
    factors = user_limit_factors(jobs, seed) if limit_kind == "user" else None
    return Case(trace, load, limit_kind, nodes, gpus_per_node, k, scale_submissions(jobs, k), 2.0, factors)


def all_cases(
    traces: Mapping[str, Sequence[TraceJob]],
    loads: Sequence[float] = LOADS,
    kinds: Sequence[str] = LIMIT_KINDS,
    seed: int = 1,
) -> list[Case]:
    """Every (trace, load, limit kind) case, in that order.

    Args:
        traces: trace name -> jobs.
        loads: the target loads.
        kinds: the limit kinds.
        seed: the seed of the user-like factors.

    Returns:
        The cases.
    """
    return [
        make_case(name, jobs, load, kind, seed) for name, jobs in traces.items() for load in loads for kind in kinds
    ]
