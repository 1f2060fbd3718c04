"""Tasks, attempts and their events: one named method per change.

Owns every write to `tasks`, `attempts` and `task_events` (the reads, and the rows made records,
are in `argus.store.task_reads`). Invariants:

- every state change is compare-and-set (`UPDATE … WHERE task_id=? AND state=<the state read in
  the same transaction>`), allowed only by `argus.domain.task.ALLOWED_FROM`, and appends a
  `task_events` row in the same transaction; a final state is never left;
- an attempt row (with its Ray submission id) is written, and the task moved to SUBMITTED, in one
  transaction *before* `submit_job` is called (`start_attempt`); `mark_submitted` records Ray's
  acceptance;
- the GPU-hour ledger (`argus.store.ledger`) gets a start row in that transaction, and an end row
  in the transaction that moves a task out of SUBMITTED/RUNNING to any other state;
- no caller names a column: each transition and each attempt update is a method of its own.

Times are epoch seconds passed in by the caller (the clock is never read here).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from argus.domain.failure import FailureCause
from argus.domain.records import Attempt, Dispatch, Task
from argus.domain.resume import ResumePoint
from argus.domain.task import ACTIVE_STATES, ALLOWED_FROM, FINAL_STATES, TaskState, attempt_submission_id
from argus.store.db import Database
from argus.store.ledger import append_end, append_start
from argus.store.schema import attempts, task_events, tasks
from argus.store.task_inserts import InsertBatcher, NewTask, insert_tasks
from argus.store.task_reads import LOST, TASK_COLUMNS, TaskReads, WaitingRow, task_record

__all__ = ["LOST", "TaskStore", "wait_changed"]
_PENDING = TaskState.PENDING_RESOURCES.value  # read once: an enum member's `.value` is slow
_WAITING_NOW = frozenset({TaskState.QUEUED.value, _PENDING})
# `record_waits`'s statements, built once (each pass that parks tasks runs them). The rows are
# found by id alone and their state checked here: with the state in the WHERE clause, SQLite
# chose the state index and read every waiting task (2.6 ms with 17,000 waiting, not 0.1 ms).
_WAIT_ROWS = sa.select(
    tasks.c.task_id, tasks.c.state, tasks.c.pending_code, tasks.c.pending_reason, tasks.c.estimated_start
).where(tasks.c.task_id.in_(sa.bindparam("ids", expanding=True)))
# PostgreSQL finds them by id either way; its state filter keeps rows no longer waiting unlocked.
_WAIT_ROWS_LOCKED = _WAIT_ROWS.where(tasks.c.state.in_(sorted(_WAITING_NOW))).with_for_update()
_PARK = (
    tasks.update()
    .where(tasks.c.task_id == sa.bindparam("tid"), tasks.c.state == sa.bindparam("old"))
    .values(
        state=_PENDING,
        pending_code=sa.bindparam("code"),
        pending_reason=sa.bindparam("detail"),
        estimated_start=sa.bindparam("est"),
        updated_at=sa.bindparam("now"),
    )
)
_INSERT_EVENT = task_events.insert()


def _changed(
    state: str,
    pending_code: str | None,
    pending_reason: str | None,
    estimated: float | None,
    code: str,
    detail: str | None,
    est: float | None,
) -> bool:
    if code == "BeginTime" and pending_code == code:
        detail = pending_reason
    return (state, pending_code, pending_reason, estimated) != (_PENDING, code, detail, est)


def wait_changed(task: Task | WaitingRow, code: str, detail: str, est: float | None) -> bool:
    """Whether recording this wait would change the waiting task's row (its state, reason
    code, detail or estimated start). A retry's BeginTime keeps the evidence it was written
    with, so only its code and estimate count."""
    return _changed(task.state, task.pending_code, task.pending_reason, task.estimated_start, code, detail, est)


class TaskStore(TaskReads):
    """Tasks and attempts in one database: the reads (`TaskReads`) and every write."""

    def __init__(self, db: Database):
        self.db = db
        self.inserts = InsertBatcher(db)  # accepted tasks, grouped (its thread starts on first use)

    # -- helpers --------------------------------------------------------------------------
    def _locked(self, conn: sa.Connection, task_id: str) -> Task | None:
        q = sa.select(*TASK_COLUMNS).where(tasks.c.task_id == task_id)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        r = conn.execute(q).first()
        return None if r is None else task_record(r)

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

    @staticmethod
    def _move(
        conn: sa.Connection,
        task: Task,
        to: TaskState,
        now: float,
        reason: str | None,
        attempt_no: int | None,
        values: Mapping[str, Any],
    ) -> bool:
        """The compare-and-set UPDATE (with `values`, other columns of the same row) and its event."""
        current = task.state
        if current not in ALLOWED_FROM[to]:
            return False
        row = {"state": to.value, "updated_at": now, **values}
        if to in FINAL_STATES:
            row.setdefault("ended_at", now)
        res = conn.execute(
            tasks.update().where(tasks.c.task_id == task.task_id, tasks.c.state == current.value).values(**row)
        )
        if res.rowcount != 1:
            return False
        TaskStore._event(conn, task.task_id, now, current.value, to.value, reason, attempt_no)
        if current in ACTIVE_STATES and to not in ACTIVE_STATES:  # its GPUs are released
            append_end(conn, task, task.attempts, now)
        return True

    def _transition(
        self,
        task_id: str,
        to: TaskState,
        now: float,
        reason: str | None,
        attempt_no: int | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> bool:
        with self.db.write.begin() as conn:
            task = self._locked(conn, task_id)
            return task is not None and self._move(conn, task, to, now, reason, attempt_no, values or {})

    def _set_attempt(self, sid: str, values: Mapping[str, Any], *where: Any) -> None:
        with self.db.write.begin() as conn:
            conn.execute(attempts.update().where(attempts.c.ray_submission_id == sid, *where).values(**values))

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
        preemptible: bool = False,
    ) -> None:
        """Insert a QUEUED task and its first event (`argus.store.task_inserts`)."""
        row = NewTask(
            task_id, user_id, workload, jobspec_yaml, nnodes, n_gpus_per_node, driver_gpus, now, priority,
            time_limit_s, pool, preemptible,
        )  # fmt: skip
        insert_tasks(self.db, [row])

    # -- task transitions (each returns False when the task's state does not allow it) -----
    def mark_running(self, task_id: str, now: float, reason: str | None, attempt_no: int) -> bool:
        """SUBMITTED -> RUNNING: Ray started the attempt's driver."""
        return self._transition(task_id, TaskState.RUNNING, now, reason, attempt_no)

    def finish(
        self,
        task_id: str,
        to: TaskState,
        now: float,
        reason: str | None,
        attempt_no: int | None = None,
        cause: str | None = None,
        summary: str | None = None,
    ) -> bool:
        """End the task in the final state `to` (`ended_at` = now), with its failure cause and
        error summary when given (else those are left as they are).

        Raises:
            ValueError: `to` is not a final state.
        """
        if to not in FINAL_STATES:
            raise ValueError(f"{to} is not a final state")
        values = {} if cause is None else {"failure_cause": cause}
        if summary is not None:
            values["error_summary"] = summary
        return self._transition(task_id, to, now, reason, attempt_no, values)

    def cancel(self, task_id: str, now: float, reason: str) -> bool:
        """Any non-final state -> CANCELED."""
        return self.finish(task_id, TaskState.CANCELED, now, reason)

    def time_out(self, task_id: str, now: float, reason: str, attempt_no: int, summary: str) -> bool:
        """Any non-final state -> TIMEOUT: the task reached its time limit."""
        return self.finish(task_id, TaskState.TIMEOUT, now, reason, attempt_no, summary=summary)

    def requeue(
        self, task_id: str, now: float, reason: str | None, attempt_no: int, cause: str, summary: str | None
    ) -> bool:
        """An active task -> QUEUED: its attempt failed in a way worth another attempt (`cause`,
        with `summary` as the evidence)."""
        values = {"failure_cause": cause, "error_summary": summary}
        return self._transition(task_id, TaskState.QUEUED, now, reason, attempt_no, values)

    def retry_later(
        self, task_id: str, now: float, reason: str | None, attempt_no: int, at: float, detail: str
    ) -> bool:
        """An active task -> PENDING_RESOURCES, due again at `at` (pending code BeginTime):
        its attempt found the GPUs short."""
        values = {"pending_code": "BeginTime", "estimated_start": at, "pending_reason": detail, "next_run_at": at}
        return self._transition(task_id, TaskState.PENDING_RESOURCES, now, reason, attempt_no, values)

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
            q = _WAIT_ROWS if self.db.is_sqlite else _WAIT_ROWS_LOCKED
            changes, events = [], []
            for tid, state, pending_code, pending_reason, estimated in conn.execute(q, {"ids": list(by_id)}).all():
                if state not in _WAITING_NOW:
                    continue
                _, code, detail, est = by_id[tid]
                if not _changed(state, pending_code, pending_reason, estimated, code, detail, est):
                    continue
                if code == "BeginTime" and pending_code == code:
                    detail = pending_reason  # keep the evidence of the failed start
                changes.append({"tid": tid, "old": state, "code": code, "detail": detail, "est": est, "now": now})
                if state != TaskState.PENDING_RESOURCES or pending_code != code:
                    events.append(
                        {
                            "task_id": tid,
                            "at": now,
                            "from_state": state,
                            "to_state": TaskState.PENDING_RESOURCES.value,
                            "attempt_no": None,
                            "reason": f"{code}: {detail}",
                        }
                    )
            if changes:
                conn.execute(_PARK, changes)
            if events:
                conn.execute(_INSERT_EVENT, events)
            return sum(1 for c in changes if c["old"] == TaskState.QUEUED)

    def set_priority(self, task_id: str, priority: int, now: float, by: str) -> bool:
        """Change a waiting task's priority (with an event); False when it is not waiting."""
        with self.db.write.begin() as conn:
            task = self._locked(conn, task_id)
            if task is None or task.state not in (TaskState.QUEUED, TaskState.PENDING_RESOURCES):
                return False
            conn.execute(
                tasks.update()
                .where(tasks.c.task_id == task_id, tasks.c.state == task.state.value)
                .values(priority=priority, updated_at=now)
            )
            self._event(
                conn,
                task_id,
                now,
                task.state.value,
                task.state.value,
                f"priority {task.priority} -> {priority} by {by}",
            )
            return True

    # -- attempts -------------------------------------------------------------------------
    def start_attempt(
        self,
        task_id: str,
        expected_attempts: int,
        job_root: str,
        placement: Mapping[str, float],
        now: float,
        resume: ResumePoint | None = None,
    ) -> Dispatch | None:
        """Write attempt `expected_attempts + 1` and move the task to SUBMITTED, atomically.

        Args:
            resume: the earlier attempt's checkpoint it resumes from (`argus.scheduler.resume`),
                written on the attempt row.

        Returns:
            What submitting it needs (the task as now written, the attempt, the spec text), or
            None when the task is no longer waiting (cancelled) or another attempt was started
            meanwhile.
        """
        attempt_no = expected_attempts + 1
        sid = attempt_submission_id(task_id, attempt_no)
        cleared: dict[str, Any] = {
            "attempts": attempt_no,
            "pending_reason": None,
            "next_run_at": None,
            "failure_cause": None,
            "error_summary": None,
            "pending_code": None,
            "estimated_start": None,
        }
        with self.db.write.begin() as conn:
            task = self._locked(conn, task_id)
            if task is None or task.attempts != expected_attempts:
                return None
            if not self._move(conn, task, TaskState.SUBMITTED, now, f"attempt {attempt_no}", attempt_no, cleared):
                return None
            placed = dict(placement)
            res = conn.execute(
                attempts.insert().values(
                    task_id=task_id,
                    attempt_no=attempt_no,
                    ray_submission_id=sid,
                    job_root=job_root,
                    placement=json.dumps(placed),
                    created_at=now,
                    resumed_from_step=resume.step if resume else None,
                    resumed_from=resume.path if resume else None,
                )
            )
            append_start(conn, task, attempt_no, placed, now)
            text = conn.execute(sa.select(tasks.c.jobspec_yaml).where(tasks.c.task_id == task_id)).scalar_one()
        written = dataclasses.replace(
            task,
            state=TaskState.SUBMITTED,
            updated_at=now,
            attempts=attempt_no,
            pending_reason=None,
            next_run_at=None,
            failure_cause=None,
            error_summary=None,
            pending_code=None,
            estimated_start=None,
        )
        key = res.inserted_primary_key
        assert key is not None  # the INSERT of one row
        attempt = Attempt(
            key[0], task_id, attempt_no, sid, None, None, None, job_root, placed, now, None, None, None, False,
            resumed_from_step=resume.step if resume else None,
            resumed_from=resume.path if resume else None,
        )  # fmt: skip
        return Dispatch(written, attempt, text)

    def mark_submitted(self, sid: str, at: float, ray_status: str | None = None) -> None:
        """Record that Ray accepted the attempt's job at `at` (and its status, when known).
        An attempt already marked keeps its first time."""
        values: dict[str, Any] = {"submitted_at": at}
        if ray_status is not None:
            values["ray_status"] = ray_status
        self._set_attempt(sid, values, attempts.c.submitted_at.is_(None))

    def record_ray_view(
        self,
        sid: str,
        *,
        ray_status: str,
        message: str | None,
        start_time: float | None,
        end_time: float | None,
        failure_kind: str | None,
        driver_node_id: str | None,
        driver_node_ip: str | None,
        driver_node_name: str | None,
    ) -> None:
        """Record what Ray says of the attempt's job: its status, message, times, diagnosed
        failure kind, and the node its driver runs on (Ray's node id and IP, the node's Argus name)."""
        self._set_attempt(
            sid,
            {
                "ray_status": ray_status,
                "message": message,
                "start_time": start_time,
                "end_time": end_time,
                "failure_kind": failure_kind,
                "driver_node_id": driver_node_id,
                "driver_node_ip": driver_node_ip,
                "driver_node_name": driver_node_name,
            },
        )

    def record_gpu_sample(self, sid: str, util_pct: float | None, mem_bytes: float | None) -> None:
        """One GPU sample of the running attempt (`argus.scheduler.gpu_sampler`), in one UPDATE:
        `util_pct` (its GPUs' mean utilisation) joins its running mean, `mem_bytes` (the most
        memory in use on one of its GPUs) raises its peak. None: not reported this time."""
        values: dict[str, Any] = {}
        if util_pct is not None:
            values["gpu_util_sum"] = attempts.c.gpu_util_sum + sa.literal(float(util_pct), sa.Float)
            values["gpu_util_samples"] = attempts.c.gpu_util_samples + 1
        if mem_bytes is not None:
            peak, mem = attempts.c.gpu_mem_peak_bytes, sa.literal(float(mem_bytes), sa.Float)
            values["gpu_mem_peak_bytes"] = sa.case((sa.or_(peak.is_(None), peak < mem), mem), else_=peak)
        if values:
            self._set_attempt(sid, values)

    def mark_lost(self, sid: str, message: str | None, at: float) -> None:
        """Ray no longer knows the attempt's job (its head restarted): LOST at `at`, a PLATFORM failure."""
        values = {"ray_status": LOST, "message": message, "end_time": at, "failure_kind": FailureCause.PLATFORM.value}
        self._set_attempt(sid, values)

    def mark_archived(self, sid: str, ray_status: str | None = None, end_time: float | None = None) -> None:
        """The attempt's driver log is archived (or given up on); with `ray_status`, Ray's final
        status and end time as read when archiving."""
        values: dict[str, Any] = {"log_archived": True}
        if ray_status is not None:
            values.update(ray_status=ray_status, end_time=end_time)
        self._set_attempt(sid, values)
