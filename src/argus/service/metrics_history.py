"""Metrics of what happened, read from the database's history at scrape time.

Owns `History`: `argus_task_wait_seconds{pool}` (a task's acceptance to its first attempt's
admission, the start of its first allocation), `argus_task_run_seconds{workload}` (an attempt's
admission to the transition that took its task out of SUBMITTED/RUNNING: the allocation's end,
as the GPU-hour ledger counts it) and `argus_task_ends_total{state,cause}`.

Each scrape reads the `attempts` and `task_events` rows added since the last one (cursors on
their ids, starting from the beginning of history at the first scrape), so after a restart the
histograms and counters are rebuilt whole from the database. A writer's transaction may commit
after a later id's (PostgreSQL): ids skipped over are asked for again for `GAP_S` seconds. At
most `BATCH` rows per table are read per scrape; the rest wait for the next.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from argus.domain.failure import FailureCause
from argus.domain.task import ACTIVE_STATES, FINAL_STATES
from argus.store.db import Database
from argus.store.schema import attempts, task_events, tasks

BATCH = 200_000
GAP_S = 120.0
MAX_GAP = 1000  # a jump over more ids than this is not waited for
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
RUN_BUCKETS = (10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
WORKLOADS = ("ppo", "grpo", "sft")
CAUSES = (*(c.value for c in FailureCause), "none")
_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
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


@dataclass
class Cursor:
    """The ids of one table read so far: everything up to `last`, less the recent gaps."""

    last: int = 0
    gaps: dict[int, float] = field(default_factory=dict)  # id -> when it was first missed

    def where(self, column: sa.Column) -> sa.ColumnElement[bool]:
        if not self.gaps:
            return column > self.last
        return sa.or_(column > self.last, column.in_(sorted(self.gaps)))

    def seen(self, ids: Sequence[int], now: float) -> None:
        for i in ids:
            self.gaps.pop(i, None)
        for i in sorted(i for i in ids if i > self.last):
            if 1 < i - self.last <= MAX_GAP:
                self.gaps.update(dict.fromkeys(range(self.last + 1, i), now))
            self.last = i
        self.gaps = {i: at for i, at in self.gaps.items() if now - at < GAP_S}


class History:
    """The families read from history, brought up to date at each `families()`."""

    def __init__(self, db: Database, clock=time.time):
        self.db = db
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
        now = self.clock()
        with self.db.read.connect() as conn:
            q = (
                sa.select(attempts.c.id, attempts.c.attempt_no, attempts.c.created_at, tasks.c.created_at, tasks.c.pool)
                .join(tasks, tasks.c.task_id == attempts.c.task_id)
                .where(self._attempts.where(attempts.c.id))
                .order_by(attempts.c.id)
                .limit(BATCH)
            )
            rows = conn.execute(q).all()
            for _, no, admitted, accepted, pool in rows:
                if no == 1:
                    self.wait.observe(pool or "-", admitted - accepted)
            self._attempts.seen([r[0] for r in rows], now)
            q = (
                sa.select(
                    task_events.c.id,
                    task_events.c.task_id,
                    task_events.c.at,
                    task_events.c.from_state,
                    task_events.c.to_state,
                    task_events.c.attempt_no,
                )
                .where(self._events.where(task_events.c.id))
                .order_by(task_events.c.id)
                .limit(BATCH)
            )
            events = conn.execute(q).all()
            self._events.seen([e[0] for e in events], now)
            ended = [e for e in events if e.to_state in _FINAL]
            left = [e for e in events if e.from_state in _ACTIVE and e.to_state not in _ACTIVE]
            facts = self._tasks(conn, {e.task_id for e in ended + left})
            starts = self._starts(conn, {e.task_id for e in left})
        for e in ended:
            cause = facts.get(e.task_id, ("", None))[1] or "none"
            key = (e.to_state, cause if cause in CAUSES else FailureCause.UNKNOWN.value)
            self.ends[key] = self.ends.get(key, 0.0) + 1
        for e in left:
            tries = starts.get(e.task_id, {})
            no = e.attempt_no if e.attempt_no in tries else max(tries, default=None)
            if no is not None:
                self.run.observe(facts.get(e.task_id, ("-", None))[0], e.at - tries[no])

    @staticmethod
    def _tasks(conn: sa.Connection, ids: set[str]) -> dict[str, tuple[str, str | None]]:
        """Task id -> (workload, failure cause)."""
        out: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(sorted(ids)):
            q = sa.select(tasks.c.task_id, tasks.c.workload, tasks.c.failure_cause).where(tasks.c.task_id.in_(chunk))
            out.update({tid: (w, cause) for tid, w, cause in conn.execute(q)})
        return out

    @staticmethod
    def _starts(conn: sa.Connection, ids: set[str]) -> dict[str, dict[int, float]]:
        """Task id -> attempt number -> its admission time."""
        out: dict[str, dict[int, float]] = {}
        for chunk in _chunks(sorted(ids)):
            q = sa.select(attempts.c.task_id, attempts.c.attempt_no, attempts.c.created_at).where(
                attempts.c.task_id.in_(chunk)
            )
            for tid, no, at in conn.execute(q):
                out.setdefault(tid, {})[no] = at
        return out


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
