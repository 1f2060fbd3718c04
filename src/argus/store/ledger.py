"""The GPU-hour ledger: its two writes (`append_start`, `append_end`) and its reads (`LedgerStore`).

Owns every access to `gpu_ledger`. The writes take the connection of the caller's transaction:
`argus.store.tasks.TaskStore` appends a start row when it admits an attempt (`start_attempt`) and
an end row when a task leaves SUBMITTED or RUNNING for any other state (`_move`), in the same
transaction as the change, so the ledger and the tasks never disagree. Rows are never changed or
deleted (the database refuses it: migration 0008's triggers).

An allocation is a start row paired with the end row of the same (task, attempt); without one,
the attempt still holds its GPUs. The reads turn pairs into `argus.domain.usage.Allocation`s;
the arithmetic is `argus.domain.usage`'s. Each read is one statement, so on PostgreSQL it sees
one snapshot (an attempt that ends meanwhile is counted once, either way).

`LedgerStore.gpu_seconds_by_user_pool` (read at every /metrics scrape) is incremental: the
instance keeps the totals of the allocations that ended before a watermark, and each call reads
only the ends since the watermark and the allocations still held (see `_Settled`).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from argus.domain.records import Task
from argus.domain.task import ACTIVE_STATES
from argus.domain.usage import NO_POOL, Allocation, TaskFigures, task_figures
from argus.store.db import Database
from argus.store.schema import gpu_ledger, tasks

START, END = "start", "end"
_ACTIVE = [s.value for s in ACTIVE_STATES]
# An end row is stamped with the scheduler pass's clock and committed within seconds of it, so
# the end rows with `at` more than SETTLE_S behind `now` are all committed (and visible).
SETTLE_S = 600.0
# The watermark moves in whole steps: most calls read no settled ends at all.
STEP_S = 300.0


def append_start(conn: sa.Connection, task: Task, attempt_no: int, nodes: Mapping[str, float], at: float) -> None:
    """The start row of `task`'s attempt `attempt_no`, placed on `nodes`, at `at` (in the
    caller's transaction): the task's user, pool, workload, GPUs (gang + driver) and acceptance."""
    conn.execute(
        gpu_ledger.insert().values(
            at=at,
            kind=START,
            task_id=task.task_id,
            attempt_no=attempt_no,
            user_id=task.user_id,
            pool=task.pool,
            workload=task.workload,
            gpus=task.total_gpus,
            nodes=json.dumps(dict(nodes), sort_keys=True),
            accepted_at=task.created_at,
        )
    )


def append_end(conn: sa.Connection, task: Task, attempt_no: int, at: float) -> None:
    """The end row of `task`'s attempt `attempt_no` at `at` (in the caller's transaction)."""
    conn.execute(
        gpu_ledger.insert().values(
            at=at,
            kind=END,
            task_id=task.task_id,
            attempt_no=attempt_no,
            user_id=task.user_id,
            pool=task.pool,
            workload=task.workload,
            gpus=task.total_gpus,
        )
    )


_S = gpu_ledger.alias("s")
_E = gpu_ledger.alias("e")
_COLUMNS = (
    _S.c.user_id,
    _S.c.task_id,
    _S.c.attempt_no,
    _S.c.pool,
    _S.c.workload,
    _S.c.gpus,
    _S.c.nodes,
    _S.c.at,
)


def _paired(start: sa.FromClause, end: sa.FromClause) -> sa.ColumnElement[bool]:
    return sa.and_(end.c.task_id == start.c.task_id, end.c.attempt_no == start.c.attempt_no, end.c.kind == END)


# One task's allocations (a task's detail, a hot read): built once, with a bound parameter.
_TASK_ALLOCATIONS = (
    sa.select(*_COLUMNS, _S.c.accepted_at, _E.c.at.label("end"))
    .select_from(_S.outerjoin(_E, _paired(_S, _E)))
    .where(_S.c.task_id == sa.bindparam("task_id"), _S.c.kind == START)
    .order_by(_S.c.attempt_no)
)


def _overlapping(
    columns: Sequence[sa.ColumnElement[Any]], lo: float, hi: float | None, user: str | None
) -> sa.CompoundSelect:
    """`columns` (of the start row), then the end (null while held), of the allocations that
    ended at or after `lo` or are still held, started before `hi` (when given), `user`'s only
    (when given). Ended ones come by the end rows' (kind, at) index, held ones from the active
    tasks (their current attempt), each paired by the (task, attempt, kind) index."""
    ended = (
        sa.select(*columns, _E.c.at.label("end"))
        .select_from(_E.join(_S, sa.and_(_paired(_S, _E), _S.c.kind == START)))
        .where(_E.c.kind == END, _E.c.at >= lo)
    )
    held = (
        sa.select(*columns, sa.null().label("end"))
        .select_from(tasks.join(_S, sa.and_(_S.c.task_id == tasks.c.task_id, _S.c.attempt_no == tasks.c.attempts)))
        # `kind` wrapped: SQLite (without statistics) then starts from the few active tasks,
        # not from every start row by the (kind, at) index.
        .where(tasks.c.state.in_(_ACTIVE), sa.func.coalesce(_S.c.kind, "") == START)
        .where(~sa.exists().where(_paired(_S, _E)))
    )
    if hi is not None:
        ended = ended.where(_S.c.at < hi)
        held = held.where(_S.c.at < hi)
    if user is not None:
        ended = ended.where(_E.c.user_id == user)
        held = held.where(tasks.c.user_id == user)
    return sa.union_all(ended, held)


def _settled_query(lo: float | None, hi: float) -> sa.Select[Any]:
    """GPU-seconds per (user, pool) of the allocations whose end row's `at` is in [lo, hi)
    (from the start when `lo` is None): one range of the end rows' (kind, at) index."""
    length = _E.c.at - _S.c.at
    q = (
        sa.select(_S.c.user_id, _S.c.pool, sa.func.sum(_S.c.gpus * sa.case((length > 0, length), else_=0.0)))
        .select_from(_E.join(_S, sa.and_(_paired(_S, _E), _S.c.kind == START)))
        .where(_E.c.kind == END, _E.c.at < hi)
        .group_by(_S.c.user_id, _S.c.pool)
    )
    return q if lo is None else q.where(_E.c.at >= lo)


def _allocation(r: sa.Row) -> Allocation:
    user, task_id, attempt_no, pool, workload, gpus, nodes, start, accepted, end = r
    return Allocation(
        user, task_id, attempt_no, pool, workload, gpus, json.loads(nodes or "{}"), start, end, accepted or start
    )


_LIVE = (_S.c.user_id, _S.c.pool, _S.c.gpus, _S.c.at)
_SPAN = (_S.c.user_id, _S.c.gpus, _S.c.at)


class _Settled:
    """The GPU-seconds per (user, pool) of the allocations whose end row's `at` is before the
    watermark `w`; `w` only moves forward, in steps of STEP_S, to at most `now - SETTLE_S`.

    A time watermark, not a cursor on ids: on PostgreSQL ids are handed out before commit and
    transactions commit in any order, so a row with a smaller id can appear after a larger one;
    an end row whose `at` is SETTLE_S behind `now` has been committed (it is stamped by the
    scheduler pass's clock and committed within seconds), so each range [old w, new w) is read
    once, complete. A lock keeps concurrent scrapes from reading a range twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._w: float | None = None  # None: nothing read yet
        self._totals: dict[tuple[str, str], float] = {}

    def advance(self, db: Database, now: float) -> tuple[float, dict[tuple[str, str], float]]:
        """Moves the watermark on to `now` (never back) and returns it with a copy of the totals."""
        target = math.floor((now - SETTLE_S) / STEP_S) * STEP_S
        with self._lock:
            w = self._w
            if w is None or target > w:
                with db.read.connect() as conn:
                    rows = conn.execute(_settled_query(w, target)).all()
                for user, pool, seconds in rows:
                    key = (user, pool or NO_POOL)
                    self._totals[key] = self._totals.get(key, 0.0) + float(seconds or 0.0)
                self._w = w = target
            return w, dict(self._totals)


class LedgerStore:
    """The ledger's reads over one database. One instance keeps the settled part of
    `gpu_seconds_by_user_pool` (the metrics hold one for the server's life)."""

    def __init__(self, db: Database):
        self.db = db
        self._settled = _Settled()

    def allocations(self, lo: float, hi: float, user: str | None = None) -> list[Allocation]:
        """The allocations that overlap [lo, hi): ended at or after `lo` and started before
        `hi`, or still held and started before `hi`; only `user`'s when given. Ordered by
        start, then task and attempt."""
        q = _overlapping((*_COLUMNS, _S.c.accepted_at), lo, hi, user)
        with self.db.read.connect() as conn:
            rows = conn.execute(q).all()
        out = [_allocation(r) for r in rows]
        out.sort(key=lambda a: (a.start, a.task_id, a.attempt_no))
        return out

    def spans(self, lo: float, hi: float, user: str | None = None) -> list[tuple[str, float, float, float | None]]:
        """The allocations that overlap [lo, hi) (as `allocations` chooses them), bare: (user,
        GPUs, start, end or None while held), in no particular order."""
        with self.db.read.connect() as conn:
            return [(u, g, s, e) for u, g, s, e in conn.execute(_overlapping(_SPAN, lo, hi, user)).all()]

    def gpu_seconds_by_user_pool(self, now: float) -> dict[tuple[str, str], float]:
        """Every user's GPU-seconds per pool since the ledger began, the allocations still held
        counted up to `now` (the `argus_user_gpu_seconds_total` counter: it never decreases
        while `now` does not). Keys are (user, pool), a task without a pool under `-`.

        Incremental (`_Settled`): the settled totals, moved on to `now - SETTLE_S` (a read of
        the ends since the watermark, when it moves), plus the allocations that ended at or
        after the watermark or are still held, each `gpus` x its interval cut at `now` (as
        `argus.domain.usage.gpu_seconds` over all time). The same answer as summing the whole
        ledger, as long as `now` does not go back past the watermark (by more than SETTLE_S)."""
        w, out = self._settled.advance(self.db, now)
        with self.db.read.connect() as conn:
            rows = conn.execute(_overlapping(_LIVE, w, None, None)).all()
        for user, pool, gpus, start, end in rows:
            key = (user, pool or NO_POOL)
            stop = now if end is None else min(end, now)
            out[key] = out.get(key, 0.0) + gpus * max(0.0, stop - start)
        return out

    def task_allocations(self, task_id: str) -> list[Allocation]:
        """The task's allocations, first to last (the last one without an end while held)."""
        with self.db.read.connect() as conn:
            return [_allocation(r) for r in conn.execute(_TASK_ALLOCATIONS, {"task_id": task_id}).all()]

    def figures_of(self, task_ids: Sequence[str], now: float) -> dict[str, TaskFigures]:
        """`task_figures` of several tasks in one read (a page of the task list); a task with
        no allocation yet is left out."""
        if not task_ids:
            return {}
        q = (
            sa.select(*_COLUMNS, _S.c.accepted_at, _E.c.at.label("end"))
            .select_from(_S.outerjoin(_E, _paired(_S, _E)))
            .where(_S.c.task_id.in_(list(task_ids)), _S.c.kind == START)
        )
        by_task: dict[str, list[Allocation]] = {}
        with self.db.read.connect() as conn:
            for r in conn.execute(q).all():
                alloc = _allocation(r)
                by_task.setdefault(alloc.task_id, []).append(alloc)
        return {tid: task_figures(allocs, now) for tid, allocs in by_task.items()}

    def task_figures(self, task_id: str, now: float) -> TaskFigures:
        """The task's GPU-seconds so far, its wait (accepted -> first allocation start; None if
        it never started) and its run time (its attempts' allocated wall time), at `now`."""
        return task_figures(self.task_allocations(task_id), now)
