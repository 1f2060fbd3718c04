"""The reads behind `/metrics`: counts of tasks at scrape time, and the history rows added since
the last scrape.

Owns every query the metrics collector (`argus.service.metrics_collect`,
`argus.service.metrics_history`) makes, and `Cursor`, the ids of one table read so far. A
writer's transaction may commit after a later id's (PostgreSQL): ids skipped over are asked for
again for `GAP_S` seconds. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from argus.domain.scheduling import PendingCode
from argus.domain.task import ACTIVE_STATES, FINAL_STATES, WAITING_STATES, TaskState
from argus.store.db import Database
from argus.store.schema import attempts, task_events, tasks

GAP_S = 120.0
MAX_GAP = 1000  # a jump over more ids than this is not waited for
_WAITING = [s.value for s in WAITING_STATES]
_UNFINISHED = [s.value for s in TaskState if s not in FINAL_STATES]
_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
_FINAL = frozenset(s.value for s in FINAL_STATES)


@dataclass
class Cursor:
    """The ids of one table read so far: everything up to `last`, less the recent gaps."""

    last: int = 0
    gaps: dict[int, float] = field(default_factory=dict)  # id -> when it was first missed

    def where(self, column: sa.Column[Any]) -> sa.ColumnElement[bool]:
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


@dataclass(frozen=True, slots=True)
class TaskCounts:
    """Tasks by state; waiting tasks by (pool, pending code) with how many and the fewest GPUs
    one needs; unfinished tasks by (user, state)."""

    by_state: dict[str, int]
    waiting: list[tuple[str | None, str | None, int, float | None]]
    per_user: list[tuple[str, str, int]]


@dataclass(frozen=True, slots=True)
class Admission:
    """An attempt's admission: its number, when, when its task was accepted, the task's pool."""

    attempt_no: int
    admitted_at: float
    accepted_at: float
    pool: str | None


@dataclass(frozen=True, slots=True)
class Ending:
    """A task reaching a final state (`state`, its failure cause)."""

    state: str
    cause: str | None


@dataclass(frozen=True, slots=True)
class Release:
    """An attempt's allocation ending: its task's workload and how long it held its GPUs."""

    workload: str
    held_s: float


@dataclass(frozen=True, slots=True)
class HistoryBatch:
    """What happened since the cursors: admissions, tasks that ended, allocations released."""

    admissions: list[Admission]
    endings: list[Ending]
    releases: list[Release]
    full: bool  # a table gave `batch` rows: more may wait


class MetricsReads:
    """The metrics collector's reads of one database."""

    def __init__(self, db: Database):
        self.db = db

    def task_counts(self) -> TaskCounts:
        """Counts of tasks at this moment (one connection, three grouped queries)."""
        need = tasks.c.nnodes * tasks.c.n_gpus_per_node + tasks.c.driver_gpus
        with self.db.read.connect() as conn:
            by_state = {
                s: int(n) for s, n in conn.execute(sa.select(tasks.c.state, sa.func.count()).group_by(tasks.c.state))
            }
            q = (
                sa.select(tasks.c.pool, tasks.c.pending_code, sa.func.count(), sa.func.min(need))
                .where(tasks.c.state.in_(_WAITING))
                .group_by(tasks.c.pool, tasks.c.pending_code)
            )
            waiting = [(pool, code, int(n), least) for pool, code, n, least in conn.execute(q)]
            q = (
                sa.select(tasks.c.user_id, tasks.c.state, sa.func.count())
                .where(tasks.c.state.in_(_UNFINISHED))
                .group_by(tasks.c.user_id, tasks.c.state)
            )
            per_user = [(u, s, int(n)) for u, s, n in conn.execute(q)]
        return TaskCounts(by_state, waiting, per_user)

    def waiting_for_resources(self) -> list[tuple[str | None, int, float, float, int]]:
        """Tasks waiting with the pending code Resources, grouped by shape: (pool, nnodes,
        GPUs per node, driver GPUs, how many)."""
        shape = (tasks.c.pool, tasks.c.nnodes, tasks.c.n_gpus_per_node, tasks.c.driver_gpus)
        q = (
            sa.select(*shape, sa.func.count())
            .where(tasks.c.state.in_(_WAITING), tasks.c.pending_code == PendingCode.RESOURCES.value)
            .group_by(*shape)
        )
        with self.db.read.connect() as conn:
            return [(p, int(n), float(g), float(d or 0), int(c)) for p, n, g, d, c in conn.execute(q)]

    def history(self, admitted: Cursor, events: Cursor, now: float, batch: int) -> HistoryBatch:
        """The attempts and task events added since the cursors (at most `batch` of each), as
        admissions, endings and releases; the cursors are moved past what was read.

        A release is a task leaving SUBMITTED/RUNNING for any other state: its attempt held its
        GPUs from its admission (the attempt row's `created_at`) until that event.
        """
        with self.db.read.connect() as conn:
            q = (
                sa.select(attempts.c.id, attempts.c.attempt_no, attempts.c.created_at, tasks.c.created_at, tasks.c.pool)
                .join(tasks, tasks.c.task_id == attempts.c.task_id)
                .where(admitted.where(attempts.c.id))
                .order_by(attempts.c.id)
                .limit(batch)
            )
            rows = conn.execute(q).all()
            admission_ids = [r[0] for r in rows]
            admissions = [Admission(no, at, accepted, pool) for _, no, at, accepted, pool in rows]
            q = (
                sa.select(
                    task_events.c.id,
                    task_events.c.task_id,
                    task_events.c.at,
                    task_events.c.from_state,
                    task_events.c.to_state,
                    task_events.c.attempt_no,
                )
                .where(events.where(task_events.c.id))
                .order_by(task_events.c.id)
                .limit(batch)
            )
            rows = conn.execute(q).all()
            ended = [e for e in rows if e.to_state in _FINAL]
            left = [e for e in rows if e.from_state in _ACTIVE and e.to_state not in _ACTIVE]
            facts = _task_facts(conn, {e.task_id for e in ended + left})
            starts = _attempt_starts(conn, {e.task_id for e in left})
        # Only now that every read succeeded: a failed read leaves the rows to the next scrape.
        admitted.seen(admission_ids, now)
        events.seen([e[0] for e in rows], now)
        endings = [Ending(e.to_state, facts.get(e.task_id, ("", None))[1]) for e in ended]
        releases = []
        for e in left:
            tries = starts.get(e.task_id, {})
            no = e.attempt_no if e.attempt_no in tries else max(tries, default=None)
            if no is not None:
                releases.append(Release(facts.get(e.task_id, ("-", None))[0], e.at - tries[no]))
        return HistoryBatch(admissions, endings, releases, max(len(admission_ids), len(rows)) >= batch)


def _task_facts(conn: sa.Connection, ids: set[str]) -> dict[str, tuple[str, str | None]]:
    """Task id -> (workload, failure cause)."""
    out: dict[str, tuple[str, str | None]] = {}
    for chunk in _chunks(sorted(ids)):
        q = sa.select(tasks.c.task_id, tasks.c.workload, tasks.c.failure_cause).where(tasks.c.task_id.in_(chunk))
        out.update({tid: (w, cause) for tid, w, cause in conn.execute(q)})
    return out


def _attempt_starts(conn: sa.Connection, ids: set[str]) -> dict[str, dict[int, float]]:
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
