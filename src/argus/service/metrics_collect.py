"""Scrape-time metrics: what `GET /metrics` reads from the database, Ray and shared storage.

Owns `ArgusCollector`, a prometheus_client collector in the app's own registry. At each scrape:

- the tasks table: tasks by state, waiting tasks by pool and pending code, the smallest
  `Resources` wait per pool, the GPUs active tasks hold per user and pool and per node and user
  (their latest attempt's placement);
- Ray (`RayProbe`, at most `RAY_WAIT_S` per scrape): nodes and their GPUs, GPUs per pool as
  admission counts them (`Scheduler.node_capacity`); when Ray does not answer in time
  `argus_ray_up` is 0 and the series read from Ray are left out (`argus_gpus`, the node series);
- the history since the last scrape (`argus.service.metrics_history.History`): wait and run
  time histograms, tasks ended;
- the GPU-hour ledger (GPU-seconds per user and pool, running attempts up to now);
- the head's record on shared storage: `argus_head_record_age_seconds`, -1 when there is none,
  +Inf when shared storage did not answer within `RAY_WAIT_S` (read in a thread of its own);
- tasks waiting for Resources whose gang fits the free GPUs per node now
  (`argus_pending_fits_now`: the scheduler should have started them).

Every family is emitted at every scrape, 0 where nothing is counted. No label value is a task
id, a path, a token or a secret: users, pools, workloads, states, codes, causes, node names and
IPs only (a pending code or cause outside the known ones is reported as "None" / "UNKNOWN").
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from argus.cluster.head_record import read_head
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.domain.admission import Demand, NodeFree, fits_now, pool_summary
from argus.domain.node_registration import NODE_LABEL, POOL_LABEL
from argus.domain.nodes import NodeState
from argus.domain.scheduling import PendingCode
from argus.domain.task import ACTIVE_STATES, FINAL_STATES, TaskState
from argus.ports import ClusterView
from argus.service.metrics_history import History
from argus.settings import ArgusSettings
from argus.store.metrics_reads import MetricsReads
from argus.store.nodes import NodeStore
from argus.store.tasks import TaskStore

RAY_WAIT_S = 3.0  # a scrape waits this long for Ray, then reports it down
NO_POOL = "-"
OTHER_POOL = "other"  # the label of waiting tasks that name a pool no node carries
PENDING_CODES = (*(c.value for c in PendingCode), "None")
_UNFINISHED = [s.value for s in TaskState if s not in FINAL_STATES]
RAY_NODE_STATES = ("alive", "dead")


def node_name(node: NodeCapacity) -> str:
    """A Ray node as the metrics name it: its `argus.io/node` label, else its id's first 12."""
    return node.labels.get(NODE_LABEL) or node.node_id[:12]


def node_pool(node: NodeCapacity) -> str:
    return node.labels.get(POOL_LABEL) or NO_POOL


@dataclass
class RayView:
    """What one scrape learnt from Ray: None fields when it did not answer in time."""

    snapshot: ClusterSnapshot | None = None
    capacity: dict[str, dict[str, float]] | None = None  # per pool (`pool_summary`)
    free: dict[str, float] | None = None  # per schedulable node, as admission counts them
    pools: dict[str, str | None] | None = None  # per schedulable node
    error: str | None = None


@dataclass
class Bounded:
    """Runs a read in a thread of its own, so a scrape waits at most `wait_s` for it.

    While a read that timed out is still running, no second one starts. `read()` returns the
    value, or None and why not.
    """

    fn: Callable[[], Any]
    wait_s: float = RAY_WAIT_S
    name: str = "argus-metrics-read"
    _busy: threading.Thread | None = field(default=None, repr=False)

    def read(self) -> tuple[Any, str | None]:
        if self._busy is not None and self._busy.is_alive():
            return None, "an earlier read has not returned"
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["value"] = self.fn()
            except Exception as exc:  # reported, never raised into the scrape
                out["error"] = type(exc).__name__

        thread = threading.Thread(target=run, name=self.name, daemon=True)
        thread.start()
        thread.join(self.wait_s)
        if thread.is_alive():
            self._busy = thread
            return None, "timed out"
        return out.get("value"), out.get("error")


class RayProbe:
    """Reads Ray (a snapshot and the free GPUs per node as admission counts them) within
    `wait_s`; while a read that timed out still runs, Ray counts as down."""

    def __init__(self, snapshots: ClusterView, node_capacity: Callable[[], NodeFree], wait_s: float = RAY_WAIT_S):
        self.snapshots = snapshots
        self.node_capacity = node_capacity
        self._bounded = Bounded(self._read_both, wait_s, "argus-metrics-ray")

    def _read_both(self) -> tuple[ClusterSnapshot, NodeFree]:
        return self.snapshots.snapshot(), self.node_capacity()

    def read(self) -> RayView:
        value, error = self._bounded.read()
        if value is None:
            return RayView(
                error=error
                if error != "an earlier read has not returned"
                else "an earlier read of Ray has not returned"
            )
        snap, (free, pools, total) = value
        return RayView(snap, pool_summary(free, pools, total), dict(free), dict(pools))


def _gauge(name: str, doc: str, labels: Iterable[str], values: Mapping[Any, float]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        g.add_metric(list(key), value)
    return g


class ArgusCollector(Collector):
    """The scrape-time families (see the module docstring); one per app."""

    def __init__(
        self,
        settings: ArgusSettings,
        store: TaskStore,
        nodes: NodeStore,
        ray: RayProbe,
        clock: Callable[[], float] = time.time,
        gpu_seconds: Callable[[float], Mapping[tuple[str, str], float]] | None = None,
    ):
        """`gpu_seconds(now)`: the ledger's GPU-seconds per (user, pool) (None: none counted)."""
        self.settings = settings
        self.store = store
        self.nodes = nodes
        self.ray = ray
        self.clock = clock
        self.gpu_seconds = gpu_seconds
        self.reads = MetricsReads(store.db)
        self.history = History(self.reads)
        self._pools: set[str] = {NO_POOL}  # every pool seen: their series stay while Ray is away
        self._users: set[str] = set()  # every user seen with a task: their series stay at 0
        self._gpu_seconds: dict[tuple[str, str], float] = {}  # the counter's last values
        self._head = Bounded(self._head_updated_at, RAY_WAIT_S, "argus-metrics-head")
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # scrape-time only: nothing is read at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        now = self.clock()
        ray = self.ray.read()
        snap = ray.snapshot
        if ray.capacity is not None:
            self._pools.update(ray.capacity)
        yield GaugeMetricFamily(
            "argus_ray_up", "1 when Ray's GCS answered this scrape, else 0", value=1.0 if snap is not None else 0.0
        )
        age, _ = self._head.read()
        yield GaugeMetricFamily(
            "argus_head_record_age_seconds",
            "Seconds since the Ray head last published its record on shared storage "
            "(-1: no record; +Inf: shared storage did not answer in time)",
            value=float("inf") if age is None else max(0.0, now - age) if age >= 0 else -1.0,
        )
        yield from self._task_families()
        yield from self._fit_families(ray)
        yield from self._gpu_families(ray)
        yield from self._node_families(snap)
        yield from self._allocation_families(snap, now)
        yield from self.history.families(self._pools)

    # -- tasks ------------------------------------------------------------------------------
    def _task_families(self) -> Iterator[Metric]:
        by_state = {(s.value,): 0.0 for s in TaskState}
        counts = self.reads.task_counts()
        by_state.update({(state,): float(n) for state, n in counts.by_state.items()})
        # A pool no node carries (a TaskSpec may name any) is labelled OTHER_POOL: label values
        # stay bounded by the pools the admin's nodes make.
        waiting = [(self._pool_label(pool), code, n, least) for pool, code, n, least in counts.waiting]
        per_user = counts.per_user
        pools = self._pools | {w[0] for w in waiting}
        self._users.update(u for u, _, _ in per_user)
        yield _gauge("argus_tasks", "Tasks by state", ["state"], by_state)
        user_tasks = {(u, s): 0.0 for u in self._users for s in _UNFINISHED}
        user_tasks.update({(u, s): float(n) for u, s, n in per_user})
        yield _gauge(
            "argus_user_tasks", "Each user's tasks that have not ended, by state", ["user", "state"], user_tasks
        )
        pending = {(p, c): 0.0 for p in pools for c in PENDING_CODES}
        least: dict[str, float] = {p: 0.0 for p in pools}
        for pool, code, n, gpus in waiting:
            reason = code if code in PENDING_CODES else "None"
            pending[(pool, reason)] += n
            if reason == PendingCode.RESOURCES.value and gpus is not None:
                least[pool] = float(gpus) if least[pool] == 0.0 else min(least[pool], float(gpus))
        yield _gauge(
            "argus_pending_tasks", "Waiting tasks by pool and the scheduler's reason", ["pool", "reason"], pending
        )
        yield _gauge(
            "argus_pending_min_gpus",
            "Fewest GPUs (gang and driver) any task waiting for Resources needs, per pool (0: none waits)",
            ["pool"],
            {(p,): v for p, v in least.items()},
        )

    # -- GPUs and nodes (Ray) ------------------------------------------------------------------
    def _gpu_families(self, ray: RayView) -> Iterator[Metric]:
        values: dict[tuple[str, str], float] = {}
        if ray.capacity is not None and ray.snapshot is not None:
            for pool, row in ray.capacity.items():
                values[(pool, "free")] = row["gpus_free"]
                values[(pool, "allocated")] = max(0.0, row["gpus_total"] - row["gpus_free"])
                values[(pool, "draining")] = 0.0
            for n in ray.snapshot.nodes:
                if n.alive and n.draining and not n.is_head:
                    for state in ("free", "allocated"):
                        values.setdefault((node_pool(n), state), 0.0)
                    values[(node_pool(n), "draining")] = values.get((node_pool(n), "draining"), 0.0) + n.total_gpus
        yield _gauge(
            "argus_gpus",
            "GPUs of schedulable nodes per pool as admission counts them (free, allocated), and of draining nodes",
            ["pool", "state"],
            values,
        )

    def _node_families(self, snap: ClusterSnapshot | None) -> Iterator[Metric]:
        counts = {(s.value,): 0.0 for s in NodeState} | {(s,): 0.0 for s in RAY_NODE_STATES}
        managed = self.nodes.list()
        for node in managed:
            counts[(node.state.value,)] = counts.get((node.state.value,), 0.0) + 1
        up: dict[tuple[str, str, str], float] = {}
        gpus: dict[tuple[str, str, str, str], float] = {}
        if snap is not None:
            ids = {n.ray_node_id for n in managed if n.ray_node_id}
            names = {n.name for n in managed}
            for n in snap.nodes:
                if n.is_head:
                    continue
                if n.node_id not in ids and n.labels.get(NODE_LABEL) not in names:
                    counts[("alive" if n.alive else "dead",)] += 1
                key = (node_name(n), n.node_ip, node_pool(n))
                if up.get(key, 0.0) >= 1.0:
                    continue  # a dead node of the same name and IP: the alive one counts
                up[key] = 1.0 if n.alive else 0.0
                free = n.available_gpus if n.alive else 0.0
                gpus[(*key, "free")] = free
                gpus[(*key, "allocated")] = max(0.0, n.total_gpus - free) if n.alive else 0.0
        yield _gauge(
            "argus_nodes", "Managed nodes by Argus state, and Ray-only workers (alive, dead)", ["state"], counts
        )
        yield _gauge("argus_node_up", "1 while the Ray worker node is alive", ["node", "ip", "pool"], up)
        yield _gauge(
            "argus_node_gpus", "GPUs of each Ray worker node, as Ray sees them", ["node", "ip", "pool", "state"], gpus
        )

    # -- allocations --------------------------------------------------------------------------
    def _allocation_families(self, snap: ClusterSnapshot | None, now: float) -> Iterator[Metric]:
        active = self.store.in_states([s.value for s in ACTIVE_STATES])
        latest = self.store.latest_attempts([t.task_id for t in active])
        ledger = dict(self.gpu_seconds(now)) if self.gpu_seconds is not None else {}
        by_user: dict[tuple[str, str], float] = defaultdict(float)
        for user, pool in ledger:
            by_user[(user, pool)] = 0.0
        by_node: dict[tuple[str, str, str, str], float] = defaultdict(float)
        known = {n.node_id: n for n in snap.nodes} if snap is not None else {}
        for t in active:
            by_user[(t.user_id, t.pool or NO_POOL)] += t.total_gpus
            attempt = latest.get(t.task_id)
            if snap is None or attempt is None:
                continue
            for node_id, n_gpus in attempt.placement.items():
                node = known.get(node_id)
                key = (node_name(node), node.node_ip, node_pool(node)) if node else (node_id[:12], "", NO_POOL)
                by_node[(*key, t.user_id)] += float(n_gpus)
        yield _gauge("argus_user_gpus_allocated", "GPUs held now by the user's active tasks", ["user", "pool"], by_user)
        yield _gauge(
            "argus_node_gpus_allocated",
            "GPUs the user's active tasks hold on the Ray node (from their placements)",
            ["node", "ip", "pool", "user"],
            by_node,
        )
        total = CounterMetricFamily(
            "argus_user_gpu_seconds",
            "GPU-seconds allocated to the user's tasks, per pool (GPU-hour ledger; running ones up to now)",
            labels=["user", "pool"],
        )
        for (user, pool), seconds in sorted(ledger.items()):
            # A running allocation counts up to this scrape, and its end row may be stamped a
            # little earlier (the pass's clock): the counter never goes back.
            seconds = max(seconds, self._gpu_seconds.get((user, pool), 0.0))
            self._gpu_seconds[(user, pool)] = seconds
            total.add_metric([user, pool], seconds)
        yield total

    def _pool_label(self, pool: str | None) -> str:
        if not pool:
            return NO_POOL
        return pool if pool in self._pools else OTHER_POOL

    def _head_updated_at(self) -> float:
        """When the head last published its record (-1: there is none)."""
        info, _ = read_head(self.settings.shared_root, self.settings.cluster_name)
        return info.updated_at if info is not None else -1.0

    def _fit_families(self, ray: RayView) -> Iterator[Metric]:
        """`argus_pending_fits_now{pool}`: tasks waiting for Resources whose whole gang fits the
        free GPUs per node right now (the scheduler should have started them); no samples while
        Ray does not answer."""
        fits: dict[tuple[str], float] = {}
        if ray.free is not None and ray.pools is not None:
            fits = {(p,): 0.0 for p in self._pools}
            for pool, nnodes, per_node, driver, n in self.reads.waiting_for_resources():
                if fits_now(Demand(nnodes, per_node, driver, pool), ray.free, ray.pools):
                    key = (self._pool_label(pool),)
                    fits[key] = fits.get(key, 0.0) + n
        yield _gauge(
            "argus_pending_fits_now",
            "Tasks waiting for Resources whose whole gang fits the free GPUs per node now, per pool",
            ["pool"],
            fits,
        )
