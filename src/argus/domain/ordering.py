"""The queue order of the scheduling policies (pure): who is considered first.

Owns `order(...)`, which `argus.domain.scheduling.plan` applies before each pass (and the queue
view ranks with), and `backfill_order(...)`, the order in which the `default` policy tries the
jobs behind its reserved one.

`fifo` and `easy` take the jobs in submission order. `default` orders by what the cluster gains:
priority first (higher first), then the job the previous pass reserved (`keep`), then a score,
smallest first, then submission time. The score is the job's requested area, GPUs x time limit,
weighted by its user's fair share (x1 for a user with no recent usage, up to x2 for the
heaviest), and shrunk by waiting: every second waited takes AGE_RATE x its node count seconds off
its weighted time limit. A job whose weighted limit is used up that way is overdue: its score is
0, so the overdue jobs go first, oldest first. Small jobs thus go before large ones and light
users before heavy ones among similar jobs, while no job waits longer than its weighted time
limit / AGE_RATE (a job on n nodes, n times less) before it goes ahead of every job that is not
overdue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argus.domain.scheduling import Job

FAIR_MAX = 2.0  # the heaviest user's jobs count as if this many times larger
AGE_RATE = 2.0  # seconds of weighted time limit that each second waited (per node) takes off


def fair_weights(usage: Mapping[str, float] | None) -> dict[str, float]:
    """Each user's area weight: 1 + (FAIR_MAX - 1) x (1 - 0.5 ** (usage / mean usage)).

    Args:
        usage: decayed GPU-hours per user.

    Returns:
        user -> weight in [1, FAIR_MAX); users not named weigh 1.
    """
    use = usage or {}
    mean = (sum(use.values()) / len(use)) if use else 0.0
    if mean <= 0:
        return {}
    return {u: 1.0 + (FAIR_MAX - 1.0) * (1.0 - 0.5 ** (h / mean)) for u, h in use.items()}


def score(job: Job, now: float, weight: float = 1.0) -> float:
    """`job`'s place in the `default` order among equal priorities (smaller first; 0: overdue).

    Args:
        job: the waiting job.
        now: the time of the pass.
        weight: its user's fair-share weight (`fair_weights`).

    Returns:
        GPUs x max(0, time limit x weight - AGE_RATE x waited x nodes), in GPU-seconds.
    """
    waited = max(0.0, now - job.submitted_at)
    return job.gpus * max(0.0, job.time_limit_s * weight - AGE_RATE * waited * job.nnodes)


def order(
    jobs: Sequence[Job],
    policy: str,
    usage: Mapping[str, float] | None = None,
    now: float | None = None,
    keep: str | None = None,
) -> list[Job]:
    """The queue order of `policy` (see the module docstring).

    Args:
        jobs: the waiting jobs.
        policy: fifo, easy or default.
        usage: decayed GPU-hours per user (`default` only).
        now: the time of the pass (default: the latest submission).
        keep: the job the previous pass reserved; first among its priority (`default` only).

    Returns:
        The jobs in order.
    """
    if policy != "default":
        return sorted(jobs, key=lambda j: (j.submitted_at, j.id))
    weights = fair_weights(usage)
    t = now if now is not None else max((j.submitted_at for j in jobs), default=0.0)
    return sorted(
        jobs,
        key=lambda j: (-j.priority, j.id != keep, score(j, t, weights.get(j.user, 1.0)), j.submitted_at, j.id),
    )


def backfill_order(jobs: Sequence[Job]) -> list[Job]:
    """The order in which `default` tries the jobs behind its reserved one: shortest time limit
    first (they free their GPUs soonest), then submission time."""
    return sorted(jobs, key=lambda j: (j.time_limit_s, j.submitted_at, j.id))
