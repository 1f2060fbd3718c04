"""Admission: does a task's whole gang of GPUs fit, and if not, why not (ARCHITECTURE.md,
"Admission that does not hang").

Pure. A task needs `nnodes` bundles of `n_gpus_per_node` GPUs, each bundle whole on a distinct
schedulable node, plus `driver_gpus` for its driver on some node. Free GPUs per node are what
the caller computed with `free_gpus` (Ray's free GPUs, less only what Argus admitted and Ray
has not placed yet). Aggregate free GPUs are never enough on their own: 8 free GPUs on two
nodes do not run a 1x8 task.

`bookings` turns the admitted tasks into the gangs `free_gpus` takes off Ray's view. `Capacity`
answers where a demand fits (best fit: the fullest nodes first) and, when it does not, why,
like Slurm's pending reasons; `argus.domain.scheduling.plan` decides the order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from argus.domain.records import Attempt, Task
from argus.domain.task import TaskState


@dataclass(frozen=True)
class Demand:
    """What one task asks of the cluster."""

    nnodes: int
    gpus_per_node: float
    driver_gpus: float = 0.0
    pool: str | None = None  # only nodes of this pool; None: any node

    @property
    def total_gpus(self) -> float:
        return self.nnodes * self.gpus_per_node + self.driver_gpus


@dataclass(frozen=True)
class Placement:
    """Where Argus counts a task's GPUs: node id -> GPUs held there."""

    gpus_by_node: dict[str, float]

    def to_json(self) -> dict[str, float]:
        return dict(self.gpus_by_node)


@dataclass
class Capacity:
    """Free GPUs per schedulable node, and each node's pool; `fit` takes from it."""

    free: dict[str, float] = field(default_factory=dict)
    pools: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, free: Mapping[str, float], pools: Mapping[str, str | None] | None = None) -> Capacity:
        return cls({n: max(0.0, float(g)) for n, g in free.items()}, pools or {})

    def with_free(self, free: Mapping[str, float]) -> Capacity:
        """The same nodes and pools with other free GPUs (a copy of `free` is kept)."""
        return Capacity(dict(free), self.pools)

    def eligible(self, demand: Demand) -> dict[str, float]:
        """Free GPUs of the nodes `demand` may use: its pool's, or every node's."""
        if demand.pool is None:
            return dict(self.free)
        return {n: g for n, g in self.free.items() if self.pools.get(n) == demand.pool}

    def fit(self, demand: Demand) -> Placement | None:
        """A placement for `demand`, best fit (fullest nodes first) within its pool, or None."""
        free = self.eligible(demand)
        by_node: dict[str, float] = {}
        for _ in range(demand.nnodes):
            options = [n for n, g in free.items() if n not in by_node and g >= demand.gpus_per_node]
            if not options:
                return None
            node = min(options, key=lambda n: (free[n], n))
            by_node[node] = demand.gpus_per_node
            free[node] -= demand.gpus_per_node
        if demand.driver_gpus > 0:
            options = [n for n, g in free.items() if g >= demand.driver_gpus]
            if not options:
                return None
            node = min(options, key=lambda n: (free[n], n))
            by_node[node] = by_node.get(node, 0.0) + demand.driver_gpus
            free[node] -= demand.driver_gpus
        return Placement(by_node)

    def take(self, placement: Placement) -> None:
        for node, gpus in placement.gpus_by_node.items():
            self.free[node] = self.free.get(node, 0.0) - gpus

    def why_not(self, demand: Demand) -> str:
        """The pending reason for a demand that does not fit (its pool named, if any)."""
        free = self.eligible(demand)
        where = f"in pool {demand.pool}" if demand.pool is not None else ""
        if not free:
            if demand.pool is not None:
                return f"no schedulable worker node is alive in pool {demand.pool}"
            return "no schedulable worker node is alive"
        need = f"needs {demand.nnodes} node(s) x {demand.gpus_per_node:g} GPU(s)"
        if demand.driver_gpus:
            need += f" + {demand.driver_gpus:g} for the driver"
        if where:
            need = f"{where}: {need}"
        fitting = sum(1 for g in free.values() if g >= demand.gpus_per_node)
        total_free = sum(free.values())
        largest = max(free.values())
        if fitting == 0:
            return f"{need}; largest free bundle is {largest:g} GPU(s) ({total_free:g} free on {len(free)} node(s))"
        return (
            f"{need}; only {fitting} node(s) have {demand.gpus_per_node:g} free GPU(s) "
            f"({total_free:g} free on {len(free)} node(s))"
        )


@dataclass(frozen=True)
class Booked:
    """An admitted task's GPUs as Argus counted them at admission (`Placement`), and whether
    Ray has placed them: True (running past the grace: surely), False (not started: surely
    not; its driver creates the placement groups), None (started lately: Ray's totals say).
    `pool` is the pool the task runs in (None: any node)."""

    gpus_by_node: Mapping[str, float]
    placed: bool | None
    pool: str | None = None
    # The gang's shape (nnodes, GPUs per node, driver GPUs), so it is fitted anew as Ray would
    # place it (the driver on any node); None: one bundle per node it was counted on.
    shape: tuple[int, float, float] | None = None

    @property
    def gpus(self) -> float:
        return float(sum(self.gpus_by_node.values()))


# A started task whose GPUs Ray does not show taken yet is counted as not placed (its GPUs kept
# off the nodes Argus counted it on) for this long after it started; after that, Ray's view
# alone (its driver has created its placement groups, or never will).
PLACEMENT_GRACE_S = 120.0


def bookings(active: Sequence[Task], latest: Mapping[str, Attempt], now: float) -> list[Booked]:
    """The admitted tasks' gangs for `free_gpus`, earliest started first: a task not RUNNING
    (or not started) surely not placed, one started more than PLACEMENT_GRACE_S ago surely
    placed, one started lately as Ray's totals say."""
    booked: list[tuple[float, Booked]] = []
    for t in active:
        attempt = latest.get(t.task_id)
        started = attempt.start_time if attempt is not None else None
        placed: bool | None
        if t.state != TaskState.RUNNING or not started:
            placed = False  # not started: its placement groups do not exist yet
        else:
            placed = True if now - started > PLACEMENT_GRACE_S else None
        shape = (int(t.nnodes), float(t.n_gpus_per_node), float(t.driver_gpus or 0))
        booked.append((started or now, Booked(attempt.placement if attempt else {}, placed, t.pool, shape)))
    booked.sort(key=lambda b: b[0])
    return [b for _, b in booked]


def _refit(free: dict[str, float], gang: Booked, pools: Mapping[str, str | None]) -> bool:
    """Take an unplaced gang's bundles (one per node, as counted) off `free`, best fit on
    distinct nodes of its pool, as Ray would place it now; False (nothing taken) when it
    does not fit."""
    nodes = [n for n in free if gang.pool is None or pools.get(n) == gang.pool]
    if gang.shape is not None:
        nnodes, per_node, driver = gang.shape
        placement = Capacity({n: free[n] for n in nodes}).fit(Demand(nnodes, per_node, driver))
        if placement is None:
            return False
        for node, size in placement.gpus_by_node.items():
            free[node] -= size
        return True
    taken: dict[str, float] = {}
    for size in sorted((float(g) for g in gang.gpus_by_node.values()), reverse=True):
        options = [n for n in nodes if n not in taken and free[n] >= size]
        if not options:
            return False
        node = min(options, key=lambda n: (free[n], n))
        taken[node] = size
    for node, size in taken.items():
        free[node] -= size
    return True


def free_gpus(
    ray_free: Mapping[str, float],
    ray_total: Mapping[str, float],
    booked: Sequence[Booked] = (),
    ray_used: float | None = None,
    pools: Mapping[str, str | None] | None = None,
) -> dict[str, float]:
    """Free GPUs per node: Ray's view, less only the admitted gangs Ray has not placed yet.

    Ray's free GPUs are right for every gang it has placed, wherever it put them: Argus's
    own count of a gang's nodes is never held against Ray's (when Ray shows GPUs free, they
    are free). What Ray cannot show is a gang admitted but not yet placed (its driver takes
    seconds to create its placement groups). A gang that started lately (`placed=None`)
    counts as placed when Ray shows enough GPUs taken beyond those of the surely placed
    gangs, oldest first. Each gang still unplaced is fitted onto Ray's free GPUs where Ray
    could put it now (not where Argus once counted it: Ray may choose other nodes), and
    those GPUs are taken off; when one no longer fits anywhere, every node it could use is
    counted full, so nothing admitted now can take the GPUs it is waiting for.

    Args:
        ray_free: Ray's free GPUs per schedulable node.
        ray_total: each schedulable node's GPUs.
        booked: every admitted task's GPUs, those of unknown placement oldest first.
        ray_used: GPUs Ray shows taken on all alive worker nodes (default: on these nodes).
        pools: each node's pool, for gangs that run in one.

    Returns:
        node -> free GPUs (never below 0), for every node of `ray_total`.
    """
    pools = pools or {}
    if ray_used is None:
        ray_used = sum(max(0.0, float(t) - float(ray_free.get(n, 0.0))) for n, t in ray_total.items())
    seen = ray_used - sum(b.gpus for b in booked if b.placed is True)
    free = {node: max(0.0, float(ray_free.get(node, 0.0))) for node in ray_total}
    for b in booked:
        if b.placed is True:
            continue
        if b.placed is None and b.gpus <= seen + 1e-9:
            seen -= b.gpus
            continue
        if not _refit(free, b, pools):
            for node in free:
                if b.pool is None or pools.get(node) == b.pool:
                    free[node] = 0.0
    return free


# Per schedulable node: free GPUs as admission counts them, its pool, its total GPUs
# (`argus.scheduler.loop.Scheduler.node_capacity`).
NodeFree = tuple[dict[str, float], dict[str, str | None], dict[str, float]]


def pool_summary(
    free: Mapping[str, float], pools: Mapping[str, str | None], total: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """Per pool (nodes without one under "-"), sorted: `{nodes, gpus_total, gpus_free}` of the
    schedulable nodes whose total GPUs are `total`, free GPUs `free` and pools `pools`."""
    out: dict[str, dict[str, float]] = {}
    for node, gpus in total.items():
        row = out.setdefault(pools.get(node) or "-", {"nodes": 0, "gpus_total": 0.0, "gpus_free": 0.0})
        row["nodes"] += 1
        row["gpus_total"] += gpus
        row["gpus_free"] += free.get(node, 0.0)
    return dict(sorted(out.items()))


def fits_now(demand: Demand, free: Mapping[str, float], pools: Mapping[str, str | None]) -> bool:
    """Whether `demand`'s whole gang (and driver) fits the free GPUs per node right now."""
    return Capacity.of(free, pools).fit(demand) is not None
