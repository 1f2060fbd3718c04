"""A retried attempt continues from the checkpoints of the attempts before it (issue 16, items 1 and 3).

Owns three steps of the scheduler's dispatch:

- `resume_point`, when attempt k > 1 is started: the newest earlier attempt (highest attempt
  number first) whose `checkpoints/` holds a complete save gives its latest one (verl's tracker
  file names it and its `global_step_N/` exists: `argus.domain.resume`). Nothing for a first
  attempt (unless its task names `resume_from`, below), for a task whose own overrides set
  `trainer.resume_mode` / `trainer.resume_from_path` (the user wins), or when no earlier
  attempt saved. The point is written with the attempt row (`TaskStore.start_attempt`), so a
  resubmission after a crash resumes from the same one;
- `start_resuming`, which writes the attempt with its point (and `note_resume`'s event);
- `with_resume`, when the attempt is submitted: the recorded point's overrides
  (`trainer.resume_mode=resume_path`, `trainer.resume_from_path=<dir>/global_step_N`) are added
  after the spec's, and the entrypoint is rebuilt with them.

A task whose TaskSpec names `resume_from: <task id>` (an ended task of the same user, checked
at acceptance: `argus.service.resume_from`) starts its first attempt from that task's latest
complete checkpoint (its attempts newest first); a later attempt of it prefers its own attempts'
checkpoints and falls back to the old task's. The first attempt's events say which
(`note_resume`: "resumes from task X at step N").

`checkpoint_time` tells the scheduler's preemption (`argus.scheduler.preempt`) when a running
attempt last completed a save: the work since then is what stopping it loses.

Every attempt still writes its own `checkpoints/` (`trainer.default_local_dir`); verl's retention
(`max_*ckpt_to_keep`) prunes only the saves of its own run, so the checkpoint an attempt resumed
from, in the earlier attempt's directory, is never removed by it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

from argus.domain.paths import checkpoints_dir
from argus.domain.records import Attempt, Dispatch, Task
from argus.domain.resume import (
    TRACKER_FILE,
    ResumePoint,
    resume_overrides,
    step_dir_name,
    tracker_step,
    user_sets_resume,
)
from argus.domain.task import TaskState
from argus.spec.entrypoint import build_entrypoint
from argus.spec.errors import SpecError
from argus.spec.loader import load_yaml_mapping
from argus.spec.render import Rendered
from argus.spec.taskspec import TaskSpec
from argus.store.schema import task_events
from argus.store.task_reads import TaskReads
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.scheduler")


def attempt_checkpoint(job_root: str) -> ResumePoint | None:
    """The latest complete checkpoint in one attempt's `checkpoints/`, as verl finds it
    (`find_latest_ckpt_path`: the tracker file's step, if its `global_step_N/` exists)."""
    ckpt = checkpoints_dir(PurePosixPath(job_root))
    try:
        with open(ckpt / TRACKER_FILE, encoding="utf-8", errors="replace") as f:
            step = tracker_step(f.read(64))
    except OSError:
        return None
    if step is None:
        return None
    path = ckpt / step_dir_name(step)
    # Only a directory that really lies in this attempt's `checkpoints/`: a link written by the
    # job (user code) to anywhere else, another user's checkpoint say, is never resumed from.
    real, base = os.path.realpath(path), os.path.realpath(ckpt)
    if not real.startswith(base + os.sep) or not os.path.isdir(real):
        return None
    return ResumePoint(step, str(path))


def checkpoint_time(job_root: str) -> float | None:
    """When the attempt's latest complete checkpoint was written (its tracker file's mtime,
    written last in a save), or None when it has none (preemption's lost work counts from it)."""
    if attempt_checkpoint(job_root) is None:
        return None
    try:
        return os.stat(checkpoints_dir(PurePosixPath(job_root)) / TRACKER_FILE).st_mtime
    except OSError:
        return None


def latest_checkpoint(job_roots: Iterable[str]) -> ResumePoint | None:
    """The checkpoint of the first of `job_roots` (newest attempt first) that has a complete one."""
    for root in job_roots:
        found = attempt_checkpoint(root)
        if found is not None:
            return found
    return None


def _spec_fields(text: str) -> tuple[list[str], str | None]:
    """The `overrides` and `resume_from` of a TaskSpec's YAML text (validated at acceptance).

    A text without the word `resume` names neither `resume_from` nor a `trainer.resume_*`
    override, so the common spec is not parsed again at every admission."""
    if "resume" not in text:
        return [], None
    try:
        data = load_yaml_mapping(text, "task spec")
    except SpecError:
        return [], None
    raw, other = data.get("overrides"), data.get("resume_from")
    overrides = [str(o) for o in raw] if isinstance(raw, list) else []
    return overrides, (str(other) if other else None)


def _newest_first(store: TaskReads, task_id: str, up_to: int | None = None) -> list[str]:
    """The job roots of a task's attempts (those numbered up to `up_to`), newest first."""
    rows = sorted(store.attempts(task_id), key=lambda a: a.attempt_no, reverse=True)
    return [a.job_root for a in rows if up_to is None or a.attempt_no <= up_to]


def resume_point(
    store: TaskReads, task: Task, fields: tuple[list[str], str | None] | None = None
) -> ResumePoint | None:
    """Where the task's next attempt resumes from (see the module docstring), or None.

    Args:
        store: the task's earlier attempts (and those of the task its `resume_from` names), and
            its TaskSpec text when `fields` are not given, are read here.
        task: the task as admitted (`task.attempts` attempts so far).
        fields: its spec's `_spec_fields`, when the caller has them.
    """
    if fields is None:
        text = store.spec_text(task.task_id)
        if text is None:
            return None
        fields = _spec_fields(text)
    overrides, other = fields
    if user_sets_resume(overrides) or (task.attempts < 1 and other is None):
        return None
    found = latest_checkpoint(_newest_first(store, task.task_id, task.attempts)) if task.attempts else None
    if found is None and other is not None:
        found = latest_checkpoint(_newest_first(store, other))
    if found is not None:
        log.info("%s attempt %d resumes from %s", task.task_id, task.attempts + 1, found.path)
    return found


def start_resuming(
    store: TaskStore, task: Task, job_root: str, placement: Mapping[str, float], now: float
) -> Dispatch | None:
    """`TaskStore.start_attempt` with the attempt's `resume_point`, and for the first attempt of
    a task with `resume_from` the event that links it to the old task (`note_resume`)."""
    fields = _spec_fields(store.spec_text(task.task_id) or "")  # read and parsed once
    point = resume_point(store, task, fields)
    dispatch = store.start_attempt(task.task_id, task.attempts, job_root, placement, now, point)
    overrides, other = fields
    first = dispatch is not None and dispatch.attempt.attempt_no == 1
    if dispatch is not None and first and other is not None and not user_sets_resume(overrides):
        note_resume(store, dispatch.attempt, other, now)  # (the user's own overrides choose otherwise)
    return dispatch


def note_resume(store: TaskStore, attempt: Attempt, other: str, now: float) -> None:
    """Add to `attempt` the event that links it to the task `other` it continues: "resumes from
    task X at step N (path)", or that X left no complete checkpoint."""
    if attempt.resumed_from is not None:
        reason = f"resumes from task {other} at step {attempt.resumed_from_step} ({attempt.resumed_from})"
    else:
        reason = f"resumes from task {other}: it left no complete checkpoint, so it starts from scratch"
    with store.db.write.begin() as conn:
        state = TaskState.SUBMITTED.value
        conn.execute(
            task_events.insert().values(
                task_id=attempt.task_id, at=now, from_state=state, to_state=state, attempt_no=1, reason=reason
            )
        )


def with_resume(spec: TaskSpec, rendered: Rendered, attempt: Attempt) -> Rendered:
    """`rendered` with the attempt's recorded resume overrides added (unchanged without one)."""
    if attempt.resumed_from is None or attempt.resumed_from_step is None:
        return rendered
    extra = resume_overrides(ResumePoint(attempt.resumed_from_step, attempt.resumed_from))
    overrides = [*rendered.overrides, *extra]
    entry = build_entrypoint(spec, rendered.submission_id, rendered.job_root, overrides=overrides)
    request = dataclasses.replace(rendered.request, entrypoint=entry)
    return dataclasses.replace(rendered, overrides=overrides, build=lambda: request)
