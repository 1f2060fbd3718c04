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
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import sqlalchemy as sa

from argus.domain.records import Task
from argus.domain.task import ACTIVE_STATES
from argus.domain.usage import NO_POOL, Allocation, TaskFigures, task_figures
from argus.store.db import Database
from argus.store.schema import gpu_ledger, tasks

START, END = "start", "end"
_ACTIVE = [s.value for s in ACTIVE_STATES]


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
    sa.select(*_COLUMNS, _E.c.at.label("end"), _S.c.accepted_at)
    .select_from(_S.outerjoin(_E, _paired(_S, _E)))
    .where(_S.c.task_id == sa.bindparam("task_id"), _S.c.kind == START)
    .order_by(_S.c.attempt_no)
)


def _allocation(r: sa.Row) -> Allocation:
    user, task_id, attempt_no, pool, workload, gpus, nodes, start, end, accepted = r
    return Allocation(
        user, task_id, attempt_no, pool, workload, gpus, json.loads(nodes or "{}"), start, end, accepted or start
    )


class LedgerStore:
    """The ledger's reads over one database."""

    def __init__(self, db: Database):
        self.db = db

    def allocations(self, lo: float, hi: float, user: str | None = None) -> list[Allocation]:
        """The allocations that overlap [lo, hi): ended at or after `lo` and started before
        `hi`, or still held and started before `hi`; only `user`'s when given. Ordered by
        start, then task and attempt."""
        ended = (
            sa.select(*_COLUMNS, _E.c.at.label("end"), _S.c.accepted_at)
            .select_from(_E.join(_S, sa.and_(_paired(_S, _E), _S.c.kind == START)))
            .where(_E.c.kind == END, _E.c.at >= lo, _S.c.at < hi)
        )
        held = (
            sa.select(*_COLUMNS, sa.null().label("end"), _S.c.accepted_at)
            .select_from(tasks.join(_S, sa.and_(_S.c.task_id == tasks.c.task_id, _S.c.attempt_no == tasks.c.attempts)))
            # `kind` wrapped: SQLite (without statistics) then starts from the few active tasks,
            # not from every start row by the (kind, at) index.
            .where(tasks.c.state.in_(_ACTIVE), sa.func.coalesce(_S.c.kind, "") == START, _S.c.at < hi)
            .where(~sa.exists().where(_paired(_S, _E)))
        )
        if user is not None:
            ended = ended.where(_E.c.user_id == user)
            held = held.where(tasks.c.user_id == user)
        with self.db.read.connect() as conn:
            rows = conn.execute(sa.union_all(ended, held)).all()
        out = [_allocation(r) for r in rows]
        out.sort(key=lambda a: (a.start, a.task_id, a.attempt_no))
        return out

    def gpu_seconds_by_user_pool(self, now: float) -> dict[tuple[str, str], float]:
        """Every user's GPU-seconds per pool since the ledger began, the allocations still held
        counted up to `now` (the `argus_user_gpu_seconds_total` counter: it never decreases
        while `now` does not). Keys are (user, pool), a task without a pool under `-`."""
        stop = sa.func.coalesce(_E.c.at, sa.literal(now, sa.Float))
        seconds = sa.func.sum(_S.c.gpus * sa.case((stop > _S.c.at, stop - _S.c.at), else_=0.0))
        q = (
            sa.select(_S.c.user_id, _S.c.pool, seconds)
            .select_from(_S.outerjoin(_E, _paired(_S, _E)))
            .where(_S.c.kind == START)
            .group_by(_S.c.user_id, _S.c.pool)
        )
        out: dict[tuple[str, str], float] = {}
        with self.db.read.connect() as conn:
            for user, pool, total in conn.execute(q).all():
                key = (user, pool or NO_POOL)
                out[key] = out.get(key, 0.0) + float(total or 0.0)
        return out

    def task_allocations(self, task_id: str) -> list[Allocation]:
        """The task's allocations, first to last (the last one without an end while held)."""
        with self.db.read.connect() as conn:
            return [_allocation(r) for r in conn.execute(_TASK_ALLOCATIONS, {"task_id": task_id}).all()]

    def task_figures(self, task_id: str, now: float) -> TaskFigures:
        """The task's GPU-seconds so far, its wait (accepted -> first allocation start; None if
        it never started) and its run time (its attempts' allocated wall time), at `now`."""
        return task_figures(self.task_allocations(task_id), now)
