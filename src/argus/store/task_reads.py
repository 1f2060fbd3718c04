"""Reading tasks, attempts and events: rows become typed records here, once.

Owns the queries behind every read of `tasks`, `attempts` and `task_events`, and the one place a
row becomes a record (`argus.domain.records`: `Task`, `Attempt`, `TaskEvent`). `TaskStore`
(`argus.store.tasks`) adds the writes. Invariants:

- the columns are selected in the records' field order and records are built positionally from
  the fetched tuples (no per-row mapping), so a read of thousands of rows stays cheap;
- a task's `state` becomes a `TaskState`, an attempt's `placement` is decoded from JSON;
- a `Task` never carries its TaskSpec text: that is read by name (`spec_text`);
- the scheduler's reads of the waiting queue (`waiting`, `due`) build no `Task`: each row becomes
  a `WaitingRow`, the policy's `Job` and the four columns its recorded wait is compared with.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from argus.domain.fairshare import Usage
from argus.domain.records import Attempt, Task, TaskEvent
from argus.domain.scheduling import Job
from argus.domain.task import FINAL_STATES, TaskState
from argus.store.db import Database
from argus.store.schema import attempts, task_events, tasks

LOST = "LOST"  # an attempt's ray_status once Ray no longer knows its job (its head restarted)

TASK_COLUMNS = tasks.c[*(f.name for f in dataclasses.fields(Task))]
ATTEMPT_COLUMNS = attempts.c[*(f.name for f in dataclasses.fields(Attempt))]
_EVENT_COLUMNS = task_events.c[*(f.name for f in dataclasses.fields(TaskEvent))]
_STATES = {s.value: s for s in TaskState}
# The builders below index these positions of the records' fields.
assert [c.name for c in TASK_COLUMNS][4] == "state" and [c.name for c in ATTEMPT_COLUMNS][8] == "placement"

# The hot one-row reads (a task's detail, the API's ownership checks), built once with a bound
# parameter: a statement of twenty-odd named columns costs more to build and to key for the
# compiled cache than to run, and a statement object keeps its cache key.
_ONE_TASK = sa.select(*TASK_COLUMNS).where(tasks.c.task_id == sa.bindparam("task_id"))
_ONE_TASK_WITH_SPEC = sa.select(*TASK_COLUMNS, tasks.c.jobspec_yaml).where(tasks.c.task_id == sa.bindparam("task_id"))
_SPEC_TEXT = sa.select(tasks.c.jobspec_yaml).where(tasks.c.task_id == sa.bindparam("task_id"))
_LATEST_ATTEMPT = (
    sa.select(*ATTEMPT_COLUMNS)
    .where(attempts.c.task_id == sa.bindparam("task_id"))
    .order_by(attempts.c.attempt_no.desc())
    .limit(1)
)


class WaitingRow(NamedTuple):
    """A waiting task as a scheduling pass reads it: its `Job` and its recorded wait."""

    job: Job
    state: str
    pending_code: str | None
    pending_reason: str | None
    estimated_start: float | None
    seq: int


# In `Job`'s field order, then the wait's columns and `seq` (`_waiting_rows` builds by position).
_WAITING_COLUMNS = (
    *tasks.c[
        "task_id", "user_id", "nnodes", "n_gpus_per_node", "created_at", "time_limit_s", "priority", "driver_gpus",
        "next_run_at", "pool",
    ],
    *tasks.c["state", "pending_code", "pending_reason", "estimated_start", "seq"],
)  # fmt: skip


assert len(dataclasses.fields(Job)) == 10 and [c.name for c in _WAITING_COLUMNS][9] == "pool"

# The reads every scheduling pass makes, built once like the one-row reads above (the states and
# ids are expanding parameters, the limit and the time bound ones).
_WAITING = (
    sa.select(*_WAITING_COLUMNS).where(tasks.c.state.in_(sa.bindparam("states", expanding=True))).order_by(tasks.c.seq)
)
_DUE_QUEUED = (
    sa.select(*_WAITING_COLUMNS)
    .where(tasks.c.state == TaskState.QUEUED.value)
    .order_by(tasks.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
_DUE_PENDING = (
    sa.select(*_WAITING_COLUMNS)
    .where(tasks.c.state == TaskState.PENDING_RESOURCES.value, tasks.c.next_run_at <= sa.bindparam("now"))
    .order_by(tasks.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
_IN_STATES = (
    sa.select(*TASK_COLUMNS).where(tasks.c.state.in_(sa.bindparam("states", expanding=True))).order_by(tasks.c.seq)
)


def _waiting_rows(result: sa.CursorResult[Any]) -> list[WaitingRow]:
    job, row = Job, WaitingRow
    return [row(job(*r[:10]), *r[10:]) for r in result.all()]


def task_record(r: Sequence[Any]) -> Task:
    """One `TASK_COLUMNS` row as a `Task`."""
    return Task(r[0], r[1], r[2], r[3], _STATES[r[4]], *r[5:])


def attempt_record(r: Sequence[Any]) -> Attempt:
    """One `ATTEMPT_COLUMNS` row as an `Attempt`."""
    return Attempt(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9], r[10], r[11], r[12], r[13], r[14],
        r[15], r[16], r[17], r[18], r[19], r[20], r[21],
    )  # fmt: skip


def _tasks(result: sa.CursorResult[Any]) -> list[Task]:
    states, make = _STATES, Task
    return [make(r[0], r[1], r[2], r[3], states[r[4]], *r[5:]) for r in result.all()]


def _attempts(result: sa.CursorResult[Any]) -> list[Attempt]:
    return [attempt_record(r) for r in result.all()]


class TaskReads:
    """The reads of `TaskStore`."""

    db: Database

    def get(self, task_id: str) -> Task | None:
        with self.db.read.connect() as conn:
            r = conn.execute(_ONE_TASK, {"task_id": task_id}).first()
        return None if r is None else task_record(r)

    def get_with_spec(self, task_id: str) -> tuple[Task, str] | None:
        """The task and its TaskSpec text in one read (a task's detail)."""
        with self.db.read.connect() as conn:
            r = conn.execute(_ONE_TASK_WITH_SPEC, {"task_id": task_id}).first()
        return None if r is None else (task_record(r[:-1]), r[-1])

    def spec_text(self, task_id: str) -> str | None:
        """The task's TaskSpec YAML, verbatim as submitted (None: no such task)."""
        with self.db.read.connect() as conn:
            return conn.execute(_SPEC_TEXT, {"task_id": task_id}).scalar()

    def list(
        self,
        user_id: str | None,
        states: Iterable[str] | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        workload: str | None = None,
    ) -> list[Task]:
        """Newest first; `user_id=None` lists everyone's; `workload` keeps that workload's."""
        q = sa.select(*TASK_COLUMNS).order_by(tasks.c.seq.desc()).limit(limit)
        if user_id is not None:
            q = q.where(tasks.c.user_id == user_id)
        if states:
            q = q.where(tasks.c.state.in_(list(states)))
        if workload is not None:
            q = q.where(tasks.c.workload == workload)
        if before_seq is not None:
            q = q.where(tasks.c.seq < before_seq)
        with self.db.read.connect() as conn:
            return _tasks(conn.execute(q))

    def in_states(self, states: Iterable[str], user_id: str | None = None) -> builtins.list[Task]:
        """Tasks in `states`, oldest first."""
        q = _IN_STATES if user_id is None else _IN_STATES.where(tasks.c.user_id == user_id)
        with self.db.read.connect() as conn:
            return _tasks(conn.execute(q, {"states": list(states)}))

    def waiting(self, states: Iterable[str]) -> builtins.list[WaitingRow]:
        """Every task in `states` as a scheduling pass reads it, oldest first."""
        with self.db.read.connect() as conn:
            return _waiting_rows(conn.execute(_WAITING, {"states": list(states)}))

    def due(self, now: float, limit: int = 1000) -> builtins.list[WaitingRow]:
        """New and due waiting tasks, oldest first: every QUEUED task, and the
        PENDING_RESOURCES ones whose `next_run_at` (a retry after a failed start) has come.

        Two indexed queries merged by age, rather than one OR that reads every waiting row."""
        with self.db.read.connect() as conn:
            rows = _waiting_rows(conn.execute(_DUE_QUEUED, {"limit": limit}))
            rows += _waiting_rows(conn.execute(_DUE_PENDING, {"now": now, "limit": limit}))
        rows.sort(key=lambda w: w.seq)
        return rows[:limit]

    def attempts(self, task_id: str) -> builtins.list[Attempt]:
        """The task's attempts, first to last."""
        q = sa.select(*ATTEMPT_COLUMNS).where(attempts.c.task_id == task_id).order_by(attempts.c.attempt_no)
        with self.db.read.connect() as conn:
            return _attempts(conn.execute(q))

    def attempt(self, task_id: str, attempt_no: int) -> Attempt | None:
        q = sa.select(*ATTEMPT_COLUMNS).where(attempts.c.task_id == task_id, attempts.c.attempt_no == attempt_no)
        with self.db.read.connect() as conn:
            r = conn.execute(q).first()
        return None if r is None else attempt_record(r)

    def latest_attempts(self, task_ids: Sequence[str]) -> dict[str, Attempt]:
        """The latest attempt of each task that has one."""
        if not task_ids:
            return {}
        if len(task_ids) == 1:  # one task's detail (the hot read): its index, newest first
            with self.db.read.connect() as conn:
                return {a.task_id: a for a in _attempts(conn.execute(_LATEST_ATTEMPT, {"task_id": task_ids[0]}))}
        latest = (
            sa.select(attempts.c.task_id, sa.func.max(attempts.c.attempt_no).label("n"))
            .where(attempts.c.task_id.in_(list(task_ids)))
            .group_by(attempts.c.task_id)
            .subquery()
        )
        q = sa.select(*ATTEMPT_COLUMNS).join(
            latest, sa.and_(attempts.c.task_id == latest.c.task_id, attempts.c.attempt_no == latest.c.n)
        )
        with self.db.read.connect() as conn:
            return {a.task_id: a for a in _attempts(conn.execute(q))}

    def unarchived_final_attempts(self) -> builtins.list[Attempt]:
        """Attempts whose Ray job ended (or was lost with its head), or whose task ended (even
        if Ray never confirmed the submission: a job it did accept is then found and stopped),
        with no archived log."""
        q = (
            sa.select(*ATTEMPT_COLUMNS)
            .join(tasks, tasks.c.task_id == attempts.c.task_id)
            .where(
                attempts.c.log_archived.is_(False),
                sa.or_(
                    tasks.c.state.in_([s.value for s in FINAL_STATES]),
                    sa.and_(
                        attempts.c.submitted_at.is_not(None),
                        attempts.c.ray_status.in_(["SUCCEEDED", "FAILED", "STOPPED", LOST]),
                    ),
                ),
            )
        )
        with self.db.read.connect() as conn:
            return _attempts(conn.execute(q))

    def events(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's history, oldest first."""
        q = sa.select(*_EVENT_COLUMNS).where(task_events.c.task_id == task_id).order_by(task_events.c.id)
        with self.db.read.connect() as conn:
            return [TaskEvent(*r) for r in conn.execute(q).all()]

    def usage_rows(self, since: float) -> builtins.list[Usage]:
        """Attempts that ran after `since` (or still run), as fair-share usages.

        Args:
            since: the earliest end that counts (`argus.domain.fairshare.horizon_start`).

        Returns:
            One `Usage` per started attempt that ended after `since` or has no end yet: the
            task's user and GPUs (its gang and its driver's), the attempt's start and end.
        """
        q = (
            sa.select(
                tasks.c.user_id,
                tasks.c.nnodes,
                tasks.c.n_gpus_per_node,
                tasks.c.driver_gpus,
                attempts.c.start_time,
                attempts.c.end_time,
            )
            .join(tasks, tasks.c.task_id == attempts.c.task_id)
            .where(
                attempts.c.start_time.is_not(None),
                sa.or_(attempts.c.end_time.is_(None), attempts.c.end_time > since),
            )
        )
        with self.db.read.connect() as conn:
            rows = conn.execute(q).all()
        return [
            Usage(user, nnodes * per_node + driver, start, end) for user, nnodes, per_node, driver, start, end in rows
        ]
