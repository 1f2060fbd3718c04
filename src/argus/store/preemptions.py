"""Preemptions in the store: victims requeued with their attempts ended PREEMPTED, in one
transaction, and the reads the scheduler's preemption needs (`argus.scheduler.preempt`).

Owns the writes and reads of a preemption; the transition itself is `TaskStore`'s compare-and-set
(`_move`: SUBMITTED or RUNNING -> QUEUED, with its event and the ledger's end row). Invariants:

- a victim is requeued only while its task is still active on the attempt that was chosen (a
  task that ended, or moved on, meanwhile is skipped), and in the same transaction its attempt
  gets `failure_kind` PREEMPTED, its end time and `ray_status` STOPPED (its Ray job is stopped
  right after by the caller; the archive pass stops it again if it still lives, then archives
  its log). The task is no longer active, so no later sync reads that Ray job back into it;
- the head gets one event naming how many tasks it preempts, in the same transaction; a head
  that no longer waits (cancelled meanwhile) preempts nobody.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from argus.domain.failure import FailureCause
from argus.domain.task import ACTIVE_STATES, WAITING_STATES, TaskState
from argus.store.schema import attempts, tasks
from argus.store.tasks import TaskStore

PREEMPTED = FailureCause.PREEMPTED.value


@dataclass(frozen=True, slots=True)
class Preemption:
    """One victim as the scheduler chose it: its task, the attempt to end, and the words.

    Attributes:
        task_id: the victim.
        attempt_no: its attempt that runs now (a task on another attempt is skipped).
        reason: its event's reason (never naming another user's task).
        summary: the evidence kept on the task (`error_summary`) and the attempt (`message`).
    """

    task_id: str
    attempt_no: int
    reason: str
    summary: str


def preempt(store: TaskStore, head_id: str, head_reason: str, victims: Sequence[Preemption], now: float) -> list[str]:
    """Requeue `victims` (each still active on its chosen attempt) with their attempts ended
    PREEMPTED, and write the head's event, all in one transaction (nothing when the head no
    longer waits).

    Returns:
        The task ids requeued (the head's event is written only when there is one).
    """
    done: list[str] = []
    with store.db.write.begin() as conn:
        head = store._locked(conn, head_id)
        if head is None or head.state not in WAITING_STATES:  # cancelled meanwhile: nobody is stopped
            return done
        for v in victims:
            task = store._locked(conn, v.task_id)
            if task is None or task.state not in ACTIVE_STATES or task.attempts != v.attempt_no:
                continue
            values = {"failure_cause": PREEMPTED, "error_summary": v.summary}
            if not store._move(conn, task, TaskState.QUEUED, now, v.reason, v.attempt_no, values):
                continue
            conn.execute(
                attempts.update()
                .where(attempts.c.task_id == v.task_id, attempts.c.attempt_no == v.attempt_no)
                .values(failure_kind=PREEMPTED, message=v.summary, end_time=now, ray_status="STOPPED")
            )
            done.append(v.task_id)
        if done:
            state = head.state.value
            store._event(conn, head_id, now, state, state, head_reason.format(n=len(done)))
    return done


def preempted_before(store: TaskStore, task_ids: Iterable[str]) -> set[str]:
    """Those of `task_ids` that have an attempt ended PREEMPTED."""
    ids = list(task_ids)
    if not ids:
        return set()
    q = sa.select(attempts.c.task_id).where(attempts.c.task_id.in_(ids), attempts.c.failure_kind == PREEMPTED)
    with store.db.read.connect() as conn:
        return set(conn.execute(q.distinct()).scalars())


def releasing(store: TaskStore, since: float) -> list[Mapping[str, float]]:
    """The GPUs (placements) of preempted attempts that may still hold them in Ray: their task
    still waits on that attempt, and Ray has not been seen to end the job (its log is not
    archived yet) or it ended after `since`."""
    q = (
        sa.select(attempts.c.placement)
        .join(tasks, tasks.c.task_id == attempts.c.task_id)
        .where(
            attempts.c.failure_kind == PREEMPTED,
            attempts.c.attempt_no == tasks.c.attempts,
            tasks.c.state.in_([s.value for s in WAITING_STATES]),
            sa.or_(attempts.c.log_archived.is_(False), attempts.c.end_time >= since),
        )
    )
    with store.db.read.connect() as conn:
        return [json.loads(p) for p in conn.execute(q).scalars()]
