"""Tasks and attempts: states, the transition table, ids, and the mapping from Ray's job status.

Pure. A task is what a user hands in (a TaskSpec); an attempt is one Ray job of it, with the
submission id `<task_id>--a<NN>`. Invariants:

- a final state (SUCCEEDED, FAILED, CANCELED, TIMEOUT) is never left;
- every transition named in `ALLOWED_FROM` is the only way into a state (the store enforces it
  with compare-and-set);
- the failure cause is a separate field from the state (`argus.domain.failure.FailureCause`).
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from enum import StrEnum

from argus.domain.paths import _USER_RE


class TaskState(StrEnum):
    QUEUED = "QUEUED"
    PENDING_RESOURCES = "PENDING_RESOURCES"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TIMEOUT = "TIMEOUT"


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELED, TaskState.TIMEOUT})
WAITING_STATES = frozenset({TaskState.QUEUED, TaskState.PENDING_RESOURCES})
ACTIVE_STATES = frozenset({TaskState.SUBMITTED, TaskState.RUNNING})
NON_FINAL_STATES = WAITING_STATES | ACTIVE_STATES

# target state -> the states it may be entered from.
ALLOWED_FROM: dict[TaskState, frozenset[TaskState]] = {
    # back in line: a retry after a failure worth retrying
    TaskState.QUEUED: frozenset({TaskState.SUBMITTED, TaskState.RUNNING}),
    # GPUs short before submission, or verl's GPU message after it; also a new next_run_at
    TaskState.PENDING_RESOURCES: frozenset(
        {TaskState.QUEUED, TaskState.PENDING_RESOURCES, TaskState.SUBMITTED, TaskState.RUNNING}
    ),
    TaskState.SUBMITTED: WAITING_STATES,
    TaskState.RUNNING: frozenset({TaskState.SUBMITTED}),
    TaskState.SUCCEEDED: ACTIVE_STATES,
    TaskState.FAILED: NON_FINAL_STATES,
    TaskState.CANCELED: NON_FINAL_STATES,
    TaskState.TIMEOUT: NON_FINAL_STATES,
}


def can_transition(current: TaskState, target: TaskState) -> bool:
    """Whether `current -> target` is allowed (a final state is never left)."""
    return current in ALLOWED_FROM[target]


# Ray's JobStatus -> the task state it means for a submitted attempt.
RAY_STATUS_TO_STATE: dict[str, TaskState] = {
    "PENDING": TaskState.SUBMITTED,
    "RUNNING": TaskState.RUNNING,
    "SUCCEEDED": TaskState.SUCCEEDED,
    "FAILED": TaskState.FAILED,
    "STOPPED": TaskState.CANCELED,
}
RAY_FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

USER_ID_MAX = 32
_TASK_ID_RE = re.compile(r"^mvp2-([a-z][a-z0-9_]*)-(ppo|grpo|sft)-(\d{8})-(\d{6})-([0-9a-f]{4})$")
_ATTEMPT_RE = re.compile(r"^(.+)--a(\d{2,})$")


def check_user_id(user_id: str) -> str:
    """Lower-case letters, digits and '_', starting with a letter, at most 32 characters.

    Raises:
        ValueError: with the reason.
    """
    if not isinstance(user_id, str) or not _USER_RE.fullmatch(user_id) or len(user_id) > USER_ID_MAX:
        raise ValueError(f"must be 1-{USER_ID_MAX} lower-case letters, digits or '_', starting with a letter")
    return user_id


def new_task_id(user_id: str, workload: str, now: datetime, suffix: str | None = None) -> str:
    """`mvp2-<user>-<workload>-<YYYYMMDD>-<HHMMSS>-<4 hex>` (seed 004).

    Args:
        user_id: the owner (already checked; it has no '-', so the id splits unambiguously).
        workload: ppo, grpo or sft.
        now: the acceptance time (UTC), passed in.
        suffix: 4 hex characters; random when None (a taken id is drawn again by the caller, so
            it needs no secret randomness: `random`, not an `os.urandom` system call per task).
    """
    tail = suffix if suffix is not None else f"{random.getrandbits(16):04x}"
    return f"mvp2-{user_id}-{workload}-{now:%Y%m%d-%H%M%S}-{tail}"


def parse_task_id(task_id: str) -> tuple[str, str] | None:
    """(user, workload) of a well-formed task id, else None."""
    m = _TASK_ID_RE.fullmatch(task_id)
    return (m.group(1), m.group(2)) if m else None


def attempt_submission_id(task_id: str, attempt_no: int) -> str:
    """`<task_id>--a<NN>`, the Ray submission id of attempt `attempt_no` (from 1)."""
    if attempt_no < 1:
        raise ValueError("attempt numbers start at 1")
    return f"{task_id}--a{attempt_no:02d}"


def parse_submission_id(submission_id: str) -> tuple[str, int] | None:
    """(task_id, attempt_no) of an attempt's Ray submission id, else None."""
    m = _ATTEMPT_RE.fullmatch(submission_id)
    return (m.group(1), int(m.group(2))) if m else None
