"""Admission: does a task's whole gang of GPUs fit, and if not, why not (ARCHITECTURE.md,
"Admission that does not hang").

Pure. A task needs `nnodes` bundles of `n_gpus_per_node` GPUs, each bundle whole on a distinct
schedulable node, plus `driver_gpus` for its driver on some node. Free GPUs per node are what
the caller computed (Ray's free GPUs, less what Argus-admitted tasks hold and Ray has not yet
placed). Aggregate free GPUs are never enough on their own: 8 free GPUs on two nodes do not run
a 1x8 task.

`Capacity` answers where a demand fits (best fit: the fullest nodes first) and, when it does
not, why, like Slurm's pending reasons; `argus.domain.scheduling.plan` decides the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


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
    def of(cls, free: Mapping[str, float], pools: Mapping[str, str | None] | None = None) -> "Capacity":
        return cls({n: max(0.0, float(g)) for n, g in free.items()}, pools or {})

    def with_free(self, free: Mapping[str, float]) -> "Capacity":
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
            return (f"{need}; largest free bundle is {largest:g} GPU(s) "
                    f"({total_free:g} free on {len(free)} node(s))")
        return (f"{need}; only {fitting} node(s) have {demand.gpus_per_node:g} free GPU(s) "
                f"({total_free:g} free on {len(free)} node(s))")


def free_gpus(
    ray_free: Mapping[str, float],
    ray_total: Mapping[str, float],
    held: Mapping[str, float],
) -> dict[str, float]:
    """Free GPUs per node: the lesser of Ray's view and Argus's own book.

    Ray's view misses what was admitted but not yet placed (a driver takes seconds to create its
    placement group); the book misses where Ray actually put a bundle. Taking the lesser never
    admits a gang that Ray cannot place.
    """
    return {
        node: max(0.0, min(float(ray_free.get(node, 0.0)), float(total) - float(held.get(node, 0.0))))
        for node, total in ray_total.items()
    }
