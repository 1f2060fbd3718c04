"""Metrics of what happened, read from the database's history at scrape time.

Owns `History`: `argus_task_wait_seconds{pool}` (a task's acceptance to its first attempt's
admission, the start of its first allocation), `argus_task_run_seconds{workload}` (an attempt's
admission to the transition that took its task out of SUBMITTED/RUNNING: the allocation's end,
as the GPU-hour ledger counts it) and `argus_task_ends_total{state,cause}`.

Each scrape reads the `attempts` and `task_events` rows added since the last one
(`argus.store.metrics_reads.MetricsReads.history`, cursors on their ids, starting from the
beginning of history at the first scrape), so after a restart the histograms and counters are
rebuilt whole from the database. At most `BATCH` rows per table are read per scrape; the rest
wait for the next.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from argus.domain.failure import FailureCause
from argus.domain.task import FINAL_STATES
from argus.store.metrics_reads import Cursor, MetricsReads

BATCH = 200_000
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
RUN_BUCKETS = (10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
WORKLOADS = ("ppo", "grpo", "sft")
CAUSES = (*(c.value for c in FailureCause), "none")
_FINAL = frozenset(s.value for s in FINAL_STATES)


@dataclass
class Histograms:
    """Cumulative histograms of one family, per label value."""

    name: str
    doc: str
    label: str
    bounds: Sequence[float]
    counts: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def ensure(self, key: str) -> None:
        if key not in self.counts:
            self.counts[key] = [0] * (len(self.bounds) + 1)
            self.sums[key] = 0.0

    def observe(self, key: str, value: float) -> None:
        self.ensure(key)
        value = max(0.0, value)
        self.counts[key][bisect.bisect_left(self.bounds, value)] += 1
        self.sums[key] += value

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for key in sorted(self.counts):
            running, buckets = 0, []
            for bound, n in zip((*(str(float(b)) for b in self.bounds), "+Inf"), self.counts[key], strict=True):
                running += n
                buckets.append((bound, float(running)))
            fam.add_metric([key], buckets, self.sums[key])
        return fam


class History:
    """The families read from history, brought up to date at each `families()`."""

    def __init__(self, reads: MetricsReads, clock: Callable[[], float] = time.time):
        self.reads = reads
        self.clock = clock
        self.wait = Histograms(
            "argus_task_wait_seconds", "Acceptance to the first allocation (admission), per pool", "pool", WAIT_BUCKETS
        )
        self.run = Histograms(
            "argus_task_run_seconds",
            "Each attempt's allocation, admission to its end, per workload",
            "workload",
            RUN_BUCKETS,
        )
        self.wait.ensure("-")
        for w in WORKLOADS:
            self.run.ensure(w)
        self.ends: dict[tuple[str, str], float] = {(s, c): 0.0 for s in sorted(_FINAL) for c in CAUSES}
        self._attempts, self._events = Cursor(), Cursor()
        self._catching_up = True

    def families(self, pools: Iterable[str] = ()) -> Iterator[Metric]:
        """The families, brought up to date; `pools` get a wait histogram even when empty."""
        self.update()
        for pool in pools:
            self.wait.ensure(pool)
        yield self.wait.family()
        yield self.run.family()
        ends = CounterMetricFamily(
            "argus_task_ends", "Tasks that reached a final state, by state and failure cause", labels=["state", "cause"]
        )
        for (state, cause), n in sorted(self.ends.items()):
            ends.add_metric([state, cause], n)
        yield ends

    def update(self) -> None:
        """Count what was added since the last update; the first one reads until it has caught up
        with the whole history (a partial first answer would look like a counter reset)."""
        while self._update() and self._catching_up:
            pass
        self._catching_up = False

    def _update(self) -> bool:
        batch = self.reads.history(self._attempts, self._events, self.clock(), BATCH)
        for a in batch.admissions:
            if a.attempt_no == 1:
                self.wait.observe(a.pool or "-", a.admitted_at - a.accepted_at)
        for e in batch.endings:
            cause = e.cause or "none"
            key = (e.state, cause if cause in CAUSES else FailureCause.UNKNOWN.value)
            self.ends[key] = self.ends.get(key, 0.0) + 1
        for r in batch.releases:
            self.run.observe(r.workload, r.held_s)
        return batch.full
