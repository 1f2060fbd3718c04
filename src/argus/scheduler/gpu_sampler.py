"""Sampling running attempts' GPU utilisation and memory from Ray, into their attempt rows.

Owns `GpuSampler`, a loop of its own beside the scheduler (started by
`argus.service.background`, paced by `argus.scheduler.pacing.Pacer` every
`scheduler.gpu_sample_interval_s`). Each pass (`sample(now)`):

1. finds the RUNNING tasks and their latest attempts, and the Ray nodes holding each attempt's
   GPUs (`argus.scheduler.node_reconciler.gpu_nodes`: where Ray put its placement groups, read
   once per pass with `JobTool.gpus_by_job`; before Ray shows them, where admission counted
   the gang);
2. reads Ray's GPU gauges once for all those nodes (`argus.ports.GpuStats`,
   `argus.cluster.gpu_metrics.RayGpuReader`); nodes without GPU series (no GPUs, or a metrics
   agent that does not answer) give nothing;
3. records one sample per attempt with at least one reading (`TaskStore.record_gpu_sample`):
   the mean utilisation over the GPUs of its nodes, and the most memory in use on any one of them.

What the figures mean: Ray reports per node and per GPU, never per task, and Argus does not know
which GPU indices Ray gave a task, so a node shared by two tasks gives both the node's figures,
and an attempt's figures include its nodes' GPUs it does not hold.

A pass never raises for Ray: when the cluster view cannot be read, the pass records nothing.
"""

from __future__ import annotations

import logging
import threading

from argus.cluster.errors import ClusterError
from argus.domain.task import TaskState
from argus.ports import Clock, ClusterView, GpuStats, JobTool
from argus.scheduler.node_reconciler import gpu_nodes
from argus.scheduler.pacing import Pacer
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.gpu_sampler")
_RUNNING = [TaskState.RUNNING.value]


class GpuSampler:
    """Samples the GPUs of running attempts (see the module docstring)."""

    def __init__(
        self,
        store: TaskStore,
        snapshots: ClusterView,
        reader: GpuStats,
        clock: Clock,
        interval_s: float,
        jobs: JobTool | None = None,
    ):
        """`jobs`: where Ray put each job's GPUs (None: admission's placement is taken)."""
        self.store = store
        self.jobs = jobs
        self.snapshots = snapshots
        self.reader = reader
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._pacer = Pacer("GPU sample", interval_s or 1.0, clock=clock, log=log)

    @property
    def enabled(self) -> bool:
        """Whether it samples at all (`gpu_sample_interval_s` > 0)."""
        return self.interval_s > 0

    def sample(self, now: float) -> int:
        """One pass; returns how many attempts got a sample."""
        del now  # the samples carry no time: each is one more point of the attempt's run
        running = self.store.in_states(_RUNNING)
        if not running:
            return 0
        latest = self.store.latest_attempts([t.task_id for t in running])
        placed = None
        if self.jobs is not None:
            try:
                placed = self.jobs.gpus_by_job()
            except ClusterError as exc:
                log.debug("placement groups not read: %s", exc)
        wanted = {
            latest[t.task_id].ray_submission_id: gpu_nodes(t, latest[t.task_id], placed)
            for t in running
            if t.task_id in latest
        }
        needed = {n for nodes in wanted.values() for n in nodes}
        if not needed:
            return 0
        try:
            snap = self.snapshots.snapshot()
        except ClusterError as exc:
            log.debug("GPU sample skipped: %s", exc)
            return 0
        readings = self.reader.read([n for n in snap.nodes if n.node_id in needed])
        recorded = 0
        for sid, nodes in wanted.items():
            got = [readings[n] for n in nodes if n in readings]
            if not got:
                continue
            util = [(r.util_pct_mean, r.gpus) for r in got if r.util_pct_mean is not None]
            weight = sum(max(g, 1) for _, g in util)
            mean = sum(u * max(g, 1) for u, g in util) / weight if util else None
            mems = [r.mem_used_max_bytes for r in got if r.mem_used_max_bytes is not None]
            self.store.record_gpu_sample(sid, mean, max(mems) if mems else None)
            recorded += 1
        return recorded

    def _tick(self, now: float, full: bool) -> None:
        del full
        self.sample(now)
        self.last_error = None

    def _failed(self, error: str) -> None:
        self.last_error = error

    def run(self, stop: threading.Event) -> None:
        """Sample every `interval_s` until `stop` (`nudge()` to wake it); nothing when disabled.
        The first sample is one interval after the start: a server that starts reconciles its
        tasks with Ray first."""
        if self.enabled and not stop.wait(self.interval_s):
            self._pacer.run(stop, self._tick, self._failed)

    def nudge(self) -> None:
        self._pacer.nudge()
