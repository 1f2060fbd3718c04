"""What a Ray job's status means for its task (pure).

`decide_outcome` maps one attempt's Ray view to the task's next state, its failure cause and
the evidence, and decides retries:

- INSUFFICIENT_RESOURCES (verl's GPU message, an unplaceable group) is worth waiting for: the
  task goes back to PENDING_RESOURCES and is tried again;
- PLATFORM, NCCL and NODE_LOST failures, and a job Ray no longer knows (its head was restarted), are worth
  another attempt while attempts remain: back to QUEUED;
- anything else (CONFIG, DATA, MODEL, OOM, USER_CODE, UNKNOWN) ends the task FAILED.

Only attempts that failed in a way worth retrying use up `max_attempts` (`attempts_used`): an
attempt the scheduler stopped to make room (PREEMPTED), or one that waited for GPUs, never does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from argus.domain.failure import FailureCause
from argus.domain.task import RAY_STATUS_TO_STATE, TaskState

RETRYABLE = frozenset({FailureCause.PLATFORM, FailureCause.NCCL, FailureCause.NODE_LOST})
_COUNTED = frozenset(c.value for c in RETRYABLE)  # PREEMPTED is not: it was no failure of the task


def attempts_used(earlier_kinds: Iterable[str | None]) -> int:
    """Attempts that count against `max_attempts`, the one being decided included.

    Args:
        earlier_kinds: the failure kinds of the task's attempts before this one.

    Returns:
        1 + the earlier attempts that failed in a way worth retrying (`RETRYABLE`); PREEMPTED
        attempts, and any other, do not count.
    """
    return 1 + sum(1 for kind in earlier_kinds if kind in _COUNTED)


@dataclass(frozen=True)
class Outcome:
    state: TaskState
    cause: FailureCause | None = None
    evidence: str | None = None
    reason: str | None = None  # for the event row


def decide_outcome(view: Any, attempts: int, max_attempts: int) -> Outcome:
    """The task state that one attempt's Ray view calls for.

    Args:
        view: the attempt's `JobView` (status, message, diagnosis), or None when Ray does not
            know the submission id although it accepted it earlier.
        attempts: attempts made so far (including this one).
        max_attempts: the most attempts for a retryable failure.
    """
    if view is None:
        cause, evidence = FailureCause.PLATFORM, "Ray no longer knows this job (was its head restarted?)"
    elif view.status == "FAILED":
        diag = view.diagnosis
        cause = diag.cause if diag else FailureCause.UNKNOWN
        evidence = diag.evidence if diag else (view.message or "the job failed")
    elif view.status == "STOPPED":
        return Outcome(TaskState.CANCELED, reason="stopped in Ray")
    else:
        state = RAY_STATUS_TO_STATE.get(view.status, TaskState.SUBMITTED)
        return Outcome(state, reason=f"Ray: {view.status}")
    if cause == FailureCause.INSUFFICIENT_RESOURCES:
        return Outcome(TaskState.PENDING_RESOURCES, None, evidence, f"{cause.value}: {evidence}")
    if cause in RETRYABLE and attempts < max_attempts:
        return Outcome(
            TaskState.QUEUED,
            cause,
            evidence,
            f"{cause.value}, retrying (attempt {attempts} of {max_attempts}): {evidence}",
        )
    return Outcome(TaskState.FAILED, cause, evidence, f"{cause.value}: {evidence}")
