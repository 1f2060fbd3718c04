"""Tasks, attempts and their events: one named function per state transition.

Owns every write to `tasks`, `attempts` and `task_events`. Invariants:

- every state change is compare-and-set (`UPDATE … WHERE task_id=? AND state=<the state read in
  the same transaction>`), allowed only by `argus.domain.task.ALLOWED_FROM`, and appends a
  `task_events` row in the same transaction; a final state is never left;
- an attempt row (with its Ray submission id) is written, and the task moved to SUBMITTED, in one
  transaction *before* `submit_job` is called; `mark_submitted` records Ray's acceptance.

Rows are returned as plain dicts keyed by column name. Times are epoch seconds passed in by the
caller (the clock is never read here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from argus.domain.task import ALLOWED_FROM, FINAL_STATES, TaskState, attempt_submission_id
from argus.store.db import Database
from argus.store.schema import attempts, task_events, tasks


def _row(r: Any) -> dict[str, Any] | None:
    return None if r is None else dict(r._mapping)


def _dicts(result: Any) -> list[dict[str, Any]]:
    """Every row of `result` as a dict (zipped with the keys once: a row's `_mapping` per row
    costs several times more, which shows on a queue of thousands)."""
    keys = tuple(result.keys())
    return [dict(zip(keys, r)) for r in result.all()]


def wait_changed(row: Mapping[str, Any], code: str, detail: str, est: float | None) -> bool:
    """Whether recording this wait would change the waiting task's row (its state, reason
    code, detail or estimated start). A retry's BeginTime keeps the evidence it was written
    with, so only its code and estimate count."""
    if code == "BeginTime" and row["pending_code"] == code:
        detail = row["pending_reason"]
    return (row["state"], row["pending_code"], row["pending_reason"], row["estimated_start"]) != (
        TaskState.PENDING_RESOURCES.value,
        code,
        detail,
        est,
    )


class TaskStore:
    """Tasks and attempts in one database."""

    def __init__(self, db: Database):
        self.db = db

    # -- helpers --------------------------------------------------------------------------
    def _locked_task(self, conn: sa.Connection, task_id: str) -> dict[str, Any] | None:
        q = sa.select(tasks).where(tasks.c.task_id == task_id)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        return _row(conn.execute(q).first())

    @staticmethod
    def _event(
        conn: sa.Connection,
        task_id: str,
        now: float,
        from_state: str | None,
        to_state: str,
        reason: str | None = None,
        attempt_no: int | None = None,
    ) -> None:
        conn.execute(
            task_events.insert().values(
                task_id=task_id,
                at=now,
                from_state=from_state,
                to_state=to_state,
                attempt_no=attempt_no,
                reason=reason,
            )
        )

    def _move(
        self,
        conn: sa.Connection,
        task: dict[str, Any],
        to: TaskState,
        now: float,
        reason: str | None,
        attempt_no: int | None,
        fields: dict[str, Any],
    ) -> bool:
        current = TaskState(task["state"])
        if current not in ALLOWED_FROM[to]:
            return False
        values = {"state": to.value, "updated_at": now, **fields}
        if to in FINAL_STATES:
            values.setdefault("ended_at", now)
        res = conn.execute(
            tasks.update().where(tasks.c.task_id == task["task_id"], tasks.c.state == current.value).values(**values)
        )
        if res.rowcount != 1:
            return False
        self._event(conn, task["task_id"], now, current.value, to.value, reason, attempt_no)
        return True

    # -- create ---------------------------------------------------------------------------
    def create(
        self,
        *,
        task_id: str,
        user_id: str,
        workload: str,
        jobspec_yaml: str,
        nnodes: int,
        n_gpus_per_node: int,
        driver_gpus: float,
        now: float,
        priority: int = 500,
        time_limit_s: float = 86400.0,
        pool: str | None = None,
    ) -> None:
        """Insert a QUEUED task and its first event."""
        with self.db.write.begin() as conn:
            conn.execute(
                tasks.insert().values(
                    task_id=task_id,
                    user_id=user_id,
                    workload=workload,
                    state=TaskState.QUEUED.value,
                    jobspec_yaml=jobspec_yaml,
                    nnodes=nnodes,
                    n_gpus_per_node=n_gpus_per_node,
                    driver_gpus=driver_gpus,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                    priority=priority,
                    time_limit_s=time_limit_s,
                    pool=pool,
                )
            )
            self._event(conn, task_id, now, None, TaskState.QUEUED.value, "accepted")

    # -- transitions ----------------------------------------------------------------------
    def transition(
        self,
        task_id: str,
        to: TaskState,
        now: float,
        reason: str | None = None,
        attempt_no: int | None = None,
        **fields: Any,
    ) -> bool:
        """Move the task to `to` if its current state allows it; False otherwise.

        Args:
            fields: other task columns to set in the same UPDATE (failure_cause, …).
        """
        with self.db.write.begin() as conn:
            task = self._locked_task(conn, task_id)
            if task is None:
                return False
            return self._move(conn, task, to, now, reason, attempt_no, fields)

    def record_waits(self, waits: Sequence[tuple[str, str, str, float | None]], now: float) -> int:
        """Why waiting tasks wait: (task_id, code, detail, estimated_start) for each.

        A QUEUED task becomes PENDING_RESOURCES. One transaction for all of them, written in
        bulk and only where something changed: the rows are read (and, on PostgreSQL, locked)
        first, so each UPDATE is still a compare-and-set on the state read. An event is written
        when the state or the reason's code changes. Returns how many changed state. Callers
        that read the rows already pass only the waits that `wait_changed` finds new, so a pass
        that changes nothing opens no write transaction at all.
        """
        if not waits:
            return 0
        by_id = {w[0]: w for w in waits}
        with self.db.write.begin() as conn:
            q = sa.select(
                tasks.c.task_id,
                tasks.c.state,
                tasks.c.pending_code,
                tasks.c.pending_reason,
                tasks.c.estimated_start,
            ).where(
                tasks.c.task_id.in_(list(by_id)),
                tasks.c.state.in_([TaskState.QUEUED.value, TaskState.PENDING_RESOURCES.value]),
            )
            if not self.db.is_sqlite:
                q = q.with_for_update()
            changes, events = [], []
            for r in conn.execute(q).all():
                _, code, detail, est = by_id[r.task_id]
                if not wait_changed(r._mapping, code, detail, est):
                    continue
                if code == "BeginTime" and r.pending_code == code:
                    detail = r.pending_reason  # keep the evidence of the failed start
                changes.append({"tid": r.task_id, "old": r.state, "code": code, "detail": detail, "est": est})
                if r.state != TaskState.PENDING_RESOURCES or r.pending_code != code:
                    events.append(
                        {
                            "task_id": r.task_id,
                            "at": now,
                            "from_state": r.state,
                            "to_state": TaskState.PENDING_RESOURCES.value,
                            "attempt_no": None,
                            "reason": f"{code}: {detail}",
                        }
                    )
            if changes:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.task_id == sa.bindparam("tid"), tasks.c.state == sa.bindparam("old"))
                    .values(
                        state=TaskState.PENDING_RESOURCES.value,
                        pending_code=sa.bindparam("code"),
                        pending_reason=sa.bindparam("detail"),
                        estimated_start=sa.bindparam("est"),
                        updated_at=now,
                    ),
                    changes,
                )
            if events:
                conn.execute(task_events.insert(), events)
            return sum(1 for c in changes if c["old"] == TaskState.QUEUED)

    def set_priority(self, task_id: str, priority: int, now: float, by: str) -> bool:
        """Change a waiting task's priority (with an event); False when it is not waiting."""
        with self.db.write.begin() as conn:
            task = self._locked_task(conn, task_id)
            if task is None or task["state"] not in (TaskState.QUEUED, TaskState.PENDING_RESOURCES):
                return False
            conn.execute(
                tasks.update()
                .where(tasks.c.task_id == task_id, tasks.c.state == task["state"])
                .values(priority=priority, updated_at=now)
            )
            self._event(
                conn,
                task_id,
                now,
                task["state"],
                task["state"],
                f"priority {task['priority']} -> {priority} by {by}",
            )
            return True

    def usage_rows(self, since: float) -> list[dict[str, Any]]:
        """Attempts that ran after `since` (or still run): user, GPUs, start and end."""
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
            return _dicts(conn.execute(q))

    def start_attempt(
        self, task_id: str, expected_attempts: int, job_root: str, placement: dict[str, float], now: float
    ) -> dict[str, Any] | None:
        """Write attempt `expected_attempts + 1` and move the task to SUBMITTED, atomically.

        Returns the attempt row, or None when the task is no longer waiting (cancelled) or
        another attempt was started meanwhile.
        """
        attempt_no = expected_attempts + 1
        sid = attempt_submission_id(task_id, attempt_no)
        with self.db.write.begin() as conn:
            task = self._locked_task(conn, task_id)
            if task is None or task["attempts"] != expected_attempts:
                return None
            if not self._move(
                conn,
                task,
                TaskState.SUBMITTED,
                now,
                f"attempt {attempt_no}",
                attempt_no,
                {
                    "attempts": attempt_no,
                    "pending_reason": None,
                    "next_run_at": None,
                    "failure_cause": None,
                    "error_summary": None,
                    "pending_code": None,
                    "estimated_start": None,
                },
            ):
                return None
            conn.execute(
                attempts.insert().values(
                    task_id=task_id,
                    attempt_no=attempt_no,
                    ray_submission_id=sid,
                    job_root=job_root,
                    placement=json.dumps(placement),
                    created_at=now,
                )
            )
            return _row(conn.execute(sa.select(attempts).where(attempts.c.ray_submission_id == sid)).first())

    def update_attempt(self, ray_submission_id: str, **fields: Any) -> None:
        """Set columns of one attempt (Ray's status, times, failure kind, archive flag)."""
        with self.db.write.begin() as conn:
            conn.execute(attempts.update().where(attempts.c.ray_submission_id == ray_submission_id).values(**fields))

    # -- reads ----------------------------------------------------------------------------
    def get(self, task_id: str) -> dict[str, Any] | None:
        with self.db.read.connect() as conn:
            return _row(conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).first())

    def list(
        self,
        user_id: str | None,
        states: Iterable[str] | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `user_id=None` lists everyone's."""
        q = sa.select(tasks.c[*_SUMMARY]).order_by(tasks.c.seq.desc()).limit(limit)
        if user_id is not None:
            q = q.where(tasks.c.user_id == user_id)
        if states:
            q = q.where(tasks.c.state.in_(list(states)))
        if before_seq is not None:
            q = q.where(tasks.c.seq < before_seq)
        with self.db.read.connect() as conn:
            return _dicts(conn.execute(q))

    def in_states(self, states: Iterable[str], user_id: str | None = None) -> list[dict[str, Any]]:
        """Tasks in `states`, oldest first."""
        q = sa.select(tasks.c[*_SUMMARY]).where(tasks.c.state.in_(list(states))).order_by(tasks.c.seq)
        if user_id is not None:
            q = q.where(tasks.c.user_id == user_id)
        with self.db.read.connect() as conn:
            return _dicts(conn.execute(q))

    def due(self, now: float, limit: int = 1000) -> list[dict[str, Any]]:
        """New and due waiting tasks, oldest first: every QUEUED task, and the
        PENDING_RESOURCES ones whose `next_run_at` (a retry after a failed start) has come.

        Two indexed queries merged by age, rather than one OR that reads every waiting row."""
        queued = (
            sa.select(tasks.c[*_SUMMARY])
            .where(tasks.c.state == TaskState.QUEUED.value)
            .order_by(tasks.c.seq)
            .limit(limit)
        )
        pending = (
            sa.select(tasks.c[*_SUMMARY])
            .where(tasks.c.state == TaskState.PENDING_RESOURCES.value, tasks.c.next_run_at <= now)
            .order_by(tasks.c.seq)
            .limit(limit)
        )
        with self.db.read.connect() as conn:
            rows = _dicts(conn.execute(queued))
            rows += _dicts(conn.execute(pending))
        rows.sort(key=lambda r: r["seq"])
        return rows[:limit]

    def attempts(self, task_id: str) -> list[dict[str, Any]]:
        with self.db.read.connect() as conn:
            rows = conn.execute(
                sa.select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.attempt_no)
            )
            return [dict(r._mapping) for r in rows]

    def attempt(self, task_id: str, attempt_no: int) -> dict[str, Any] | None:
        with self.db.read.connect() as conn:
            return _row(
                conn.execute(
                    sa.select(attempts).where(attempts.c.task_id == task_id, attempts.c.attempt_no == attempt_no)
                ).first()
            )

    def latest_attempts(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The latest attempt of each task that has one."""
        if not task_ids:
            return {}
        if len(task_ids) == 1:  # one task's detail (the hot read): its index, newest first
            q1 = (
                sa.select(attempts)
                .where(attempts.c.task_id == task_ids[0])
                .order_by(attempts.c.attempt_no.desc())
                .limit(1)
            )
            with self.db.read.connect() as conn:
                return {r["task_id"]: r for r in _dicts(conn.execute(q1))}
        latest = (
            sa.select(attempts.c.task_id, sa.func.max(attempts.c.attempt_no).label("n"))
            .where(attempts.c.task_id.in_(list(task_ids)))
            .group_by(attempts.c.task_id)
            .subquery()
        )
        q = sa.select(attempts).join(
            latest, sa.and_(attempts.c.task_id == latest.c.task_id, attempts.c.attempt_no == latest.c.n)
        )
        with self.db.read.connect() as conn:
            return {r["task_id"]: r for r in _dicts(conn.execute(q))}

    def unarchived_final_attempts(self) -> list[dict[str, Any]]:
        """Attempts whose Ray job ended (or was lost with its head), or whose task ended (even
        if Ray never confirmed the submission: a job it did accept is then found and stopped),
        with no archived log."""
        q = (
            sa.select(attempts)
            .join(tasks, tasks.c.task_id == attempts.c.task_id)
            .where(
                attempts.c.log_archived.is_(False),
                sa.or_(
                    tasks.c.state.in_([s.value for s in FINAL_STATES]),
                    sa.and_(
                        attempts.c.submitted_at.is_not(None),
                        attempts.c.ray_status.in_(["SUCCEEDED", "FAILED", "STOPPED", "LOST"]),
                    ),
                ),
            )
        )
        with self.db.read.connect() as conn:
            return _dicts(conn.execute(q))

    def events(self, task_id: str) -> list[dict[str, Any]]:
        with self.db.read.connect() as conn:
            rows = conn.execute(
                sa.select(task_events).where(task_events.c.task_id == task_id).order_by(task_events.c.id)
            )
            return [dict(r._mapping) for r in rows]


_SUMMARY = (
    "seq",
    "task_id",
    "user_id",
    "workload",
    "state",
    "nnodes",
    "n_gpus_per_node",
    "driver_gpus",
    "attempts",
    "failure_cause",
    "error_summary",
    "pending_reason",
    "next_run_at",
    "created_at",
    "updated_at",
    "ended_at",
    "priority",
    "time_limit_s",
    "pending_code",
    "estimated_start",
    "pool",
)
