"""Preemption: which running tasks to stop so that a waiting gang can start (issue 16, item 2).

Pure (no clock, no I/O); `argus.scheduler.preempt` acts on the choice. With the server's
`scheduler.preemption: priority`, the head of the queue (the first task in the policy's order
that waits for resources) may stop running tasks when its gang does not fit now. A running task
is a candidate (`eligible`) only when

- its TaskSpec says `preemptible: true`,
- its priority is strictly lower than the head's, and
- it was never preempted before, or its current attempt has run at least `min_run_s`
  (`scheduler.min_run_before_preempt`): a task preempted once is not preempted again before it
  has had that long to make progress (no thrash).

The work a victim loses is its GPUs x the time since its last complete checkpoint (since its
attempt started when it saved nothing since). `choose_victims` returns the set of candidates
whose GPUs, added to the free ones, let the head's whole gang fit (`Capacity.fit`, within the
head's pool), with the least lost work in total (fewest victims among equals); each victim in
it is needed (none can be left out and the gang still fit). Up to `EXACT_UP_TO` candidates
every set is weighed; beyond, greedily: least lost work first until the gang fits, then every
victim whose removal still lets it fit is dropped, most lost work first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from argus.domain.admission import Capacity, Demand

EXACT_UP_TO = 12  # candidates weighed set by set (2^12 fits at most); more: greedy, then pruned


@dataclass(frozen=True, slots=True)
class Candidate:
    """A running task that preemption may stop.

    Attributes:
        id: the task id.
        user: its owner (a victim's event names the head only to the same user).
        priority: its priority (0-1000).
        preemptible: its TaskSpec's `preemptible`.
        gpus_by_node: where its GPUs are counted (its attempt's placement, driver included).
        started: when its current attempt started (Ray's start, else its submission).
        saved_at: when its current attempt last completed a checkpoint; None: not yet.
        preempted_before: an earlier attempt of it ended PREEMPTED.
    """

    id: str
    user: str
    priority: int
    preemptible: bool
    gpus_by_node: Mapping[str, float]
    started: float
    saved_at: float | None = None
    preempted_before: bool = False

    @property
    def gpus(self) -> float:
        return float(sum(self.gpus_by_node.values()))

    def lost_work(self, now: float) -> float:
        """GPU-seconds lost if it is stopped at `now`: its GPUs x the time since its last
        checkpoint (since its attempt started when it saved nothing since)."""
        since = self.started if self.saved_at is None else max(self.started, self.saved_at)
        return self.gpus * max(0.0, now - since)


def eligible(c: Candidate, priority: int, now: float, min_run_s: float) -> bool:
    """Whether `c` may be stopped for a head of `priority` at `now` (see the module docstring)."""
    if not c.preemptible or c.priority >= priority:
        return False
    return not c.preempted_before or now - c.started >= min_run_s


def _fits(head: Demand, free: Mapping[str, float], pools: Mapping[str, str | None], freed: Sequence[Candidate]) -> bool:
    """Whether `head` fits on `free` plus the GPUs of `freed` (on nodes `free` knows)."""
    total = dict(free)
    for c in freed:
        for node, g in c.gpus_by_node.items():
            if node in total:
                total[node] += g
    return Capacity.of(total, pools).fit(head) is not None


def _helps(c: Candidate, head: Demand, free: Mapping[str, float], pools: Mapping[str, str | None]) -> bool:
    """Whether stopping `c` frees any GPU on a node the head may use."""
    return any(node in free and (head.pool is None or pools.get(node) == head.pool) for node in c.gpus_by_node)


def choose_victims(
    head: Demand,
    priority: int,
    candidates: Sequence[Candidate],
    free: Mapping[str, float],
    pools: Mapping[str, str | None],
    now: float,
    min_run_s: float,
) -> list[Candidate] | None:
    """The running tasks to stop so that `head` starts (see the module docstring).

    Args:
        head: the waiting gang (nnodes x GPUs per node, its driver's GPUs, its pool).
        priority: the head's priority; only lower ones are stopped.
        candidates: the running tasks (any; `eligible` ones are considered).
        free: free GPUs per schedulable node as admission counts them now.
        pools: each node's pool.
        now: the time of the pass.
        min_run_s: how long a task preempted before must have run in its current attempt.

    Returns:
        The victims, least lost work first; [] when the gang fits already; None when no set of
        eligible tasks makes it fit.
    """
    if _fits(head, free, pools, ()):
        return []
    pool = [
        c for c in candidates if eligible(c, priority, now, min_run_s) and c.gpus > 0 and _helps(c, head, free, pools)
    ]
    pool.sort(key=lambda c: (c.lost_work(now), c.gpus, c.id))
    if not _fits(head, free, pools, pool):
        return None
    if len(pool) <= EXACT_UP_TO:
        return _exact(head, pool, free, pools, now)
    return _greedy(head, pool, free, pools, now)


def _exact(
    head: Demand, pool: Sequence[Candidate], free: Mapping[str, float], pools: Mapping[str, str | None], now: float
) -> list[Candidate]:
    """The fitting set of least (lost work, victims, ids): every set weighed, those that cannot
    beat the best so far skipped before fitting."""
    lost = [c.lost_work(now) for c in pool]
    best: tuple[float, int, list[str]] | None = None
    chosen: list[Candidate] = list(pool)
    for mask in range(1, 1 << len(pool)):
        picked = [i for i in range(len(pool)) if mask >> i & 1]
        key = (sum(lost[i] for i in picked), len(picked), [pool[i].id for i in picked])
        if best is not None and key >= best:
            continue
        victims = [pool[i] for i in picked]
        if _fits(head, free, pools, victims):
            best, chosen = key, victims
    return chosen


def _greedy(
    head: Demand, pool: Sequence[Candidate], free: Mapping[str, float], pools: Mapping[str, str | None], now: float
) -> list[Candidate]:
    """Least lost work first until the gang fits, then each victim not needed dropped (most
    lost work first)."""
    chosen: list[Candidate] = []
    for c in pool:
        chosen.append(c)
        if _fits(head, free, pools, chosen):
            break
    for c in sorted(chosen, key=lambda c: -c.lost_work(now)):
        rest = [v for v in chosen if v is not c]
        if _fits(head, free, pools, rest):
            chosen = rest
    return chosen
