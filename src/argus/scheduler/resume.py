"""A retried attempt continues from the checkpoints of the attempts before it (issue 16, item 1).

Owns two steps of the scheduler's dispatch:

- `resume_point`, when attempt k > 1 is started: the newest earlier attempt (highest attempt
  number first) whose `checkpoints/` holds a complete save gives its latest one (verl's tracker
  file names it and its `global_step_N/` exists: `argus.domain.resume`). Nothing for a first
  attempt, for a task whose own overrides set `trainer.resume_mode` / `trainer.resume_from_path`
  (the user wins), or when no earlier attempt saved. The point is written with the attempt row
  (`TaskStore.start_attempt`), so a resubmission after a crash resumes from the same one;
- `with_resume`, when the attempt is submitted: the recorded point's overrides
  (`trainer.resume_mode=resume_path`, `trainer.resume_from_path=<dir>/global_step_N`) are added
  after the spec's, and the entrypoint is rebuilt with them.

Every attempt still writes its own `checkpoints/` (`trainer.default_local_dir`); verl's retention
(`max_*ckpt_to_keep`) prunes only the saves of its own run, so the checkpoint an attempt resumed
from, in the earlier attempt's directory, is never removed by it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import PurePosixPath

from argus.domain.paths import checkpoints_dir
from argus.domain.records import Attempt, Task
from argus.domain.resume import (
    TRACKER_FILE,
    ResumePoint,
    resume_overrides,
    step_dir_name,
    tracker_step,
    user_sets_resume,
)
from argus.spec.entrypoint import build_entrypoint
from argus.spec.errors import SpecError
from argus.spec.loader import load_yaml_mapping
from argus.spec.render import Rendered
from argus.spec.taskspec import TaskSpec
from argus.store.task_reads import TaskReads

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
    return ResumePoint(step, str(path)) if os.path.isdir(path) else None


def latest_checkpoint(job_roots: Iterable[str]) -> ResumePoint | None:
    """The checkpoint of the first of `job_roots` (newest attempt first) that has a complete one."""
    for root in job_roots:
        found = attempt_checkpoint(root)
        if found is not None:
            return found
    return None


def _spec_overrides(text: str) -> list[str]:
    """The `overrides` of a TaskSpec's YAML text (validated when the task was accepted)."""
    try:
        raw = load_yaml_mapping(text, "task spec").get("overrides")
    except SpecError:
        return []
    return [str(o) for o in raw] if isinstance(raw, list) else []


def resume_point(store: TaskReads, task: Task) -> ResumePoint | None:
    """Where the task's next attempt resumes from (see the module docstring), or None.

    Args:
        store: the task's earlier attempts and its TaskSpec text are read here.
        task: the task as admitted (`task.attempts` attempts so far).
    """
    if task.attempts < 1:
        return None
    text = store.spec_text(task.task_id)
    if text is None or user_sets_resume(_spec_overrides(text)):
        return None
    earlier = sorted(store.attempts(task.task_id), key=lambda a: a.attempt_no, reverse=True)
    found = latest_checkpoint(a.job_root for a in earlier if a.attempt_no <= task.attempts)
    if found is not None:
        log.info("%s attempt %d resumes from %s", task.task_id, task.attempts + 1, found.path)
    return found


def with_resume(spec: TaskSpec, rendered: Rendered, attempt: Attempt) -> Rendered:
    """`rendered` with the attempt's recorded resume overrides added (unchanged without one)."""
    if attempt.resumed_from is None or attempt.resumed_from_step is None:
        return rendered
    extra = resume_overrides(ResumePoint(attempt.resumed_from_step, attempt.resumed_from))
    overrides = [*rendered.overrides, *extra]
    entry = build_entrypoint(spec, rendered.submission_id, rendered.job_root, overrides=overrides)
    request = dataclasses.replace(rendered.request, entrypoint=entry)
    return dataclasses.replace(rendered, request=request, overrides=overrides)
