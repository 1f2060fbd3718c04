"""Continuing an ended task as a new one (issue 16): `resume_from` at acceptance, and resubmission.

Owns two rules of the service:

- `check_resume_from`: a TaskSpec's `resume_from` must name one of the caller's own tasks (the
  admin's too: a task's checkpoints lie in its owner's directory), in a final state. Another
  user's task and a missing one get the same answer ("no such task of yours"); a task still
  waiting or running is refused until it ends, and one of another workload (its checkpoints
  are another trainer's). Each is 400 on `resume_from`, nothing stored;
- `resubmit_text`: the TaskSpec of a new task continuing `task_id`: the old task's text as stored
  (verbatim, its `env_vars` values included: the API shows them redacted, so a client could not
  rebuild it), with `resume_from: <task_id>` and the caller's new `time_limit` / `priority` set.
  It is then accepted like any submission (`TaskService.accept`).

Final states stay final: the old task is never changed.
"""

from __future__ import annotations

from typing import Any

import yaml

from argus.domain.errors import Invalid, NotFound
from argus.domain.task import FINAL_STATES
from argus.service.auth import Identity
from argus.spec.errors import Problem, SpecError
from argus.spec.loader import load_yaml_mapping
from argus.spec.taskspec import TaskSpec
from argus.store.task_reads import TaskReads

RESUBMIT_KEYS = frozenset({"time_limit", "priority"})


def check_resume_from(store: TaskReads, who: Identity, spec: TaskSpec) -> None:
    """Refuse a `resume_from` that names no ended task of the caller's.

    Raises:
        SpecError: on `resume_from` (400): not the caller's task or no such task; not ended yet.
    """
    if spec.resume_from is None:
        return
    old = store.get(spec.resume_from)
    if old is None or old.user_id != who.user_id:
        raise SpecError("task spec", [Problem("resume_from", f"no such task of yours: {spec.resume_from}")])
    if old.state not in FINAL_STATES:
        raise SpecError(
            "task spec",
            [Problem("resume_from", f"task {old.task_id} is still {old.state.value}: cancel it first or wait")],
        )
    if old.workload != spec.workload:
        raise SpecError(
            "task spec",
            [
                Problem(
                    "resume_from",
                    f"task {old.task_id} is a {old.workload} task: its checkpoints fit {old.workload} only",
                )
            ],
        )


def resubmit_options(body: Any) -> dict[str, Any]:
    """The options of `POST /api/v2/tasks/{id}:resubmit`: an optional JSON object with
    `time_limit` (a duration such as `12h`, or seconds) and `priority` (0-1000).

    Raises:
        Invalid: not an object, an unknown key, or a value of the wrong type (400).
    """
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Invalid("invalid resubmission", [("<body>", "must be a JSON object")])
    unknown = sorted(set(body) - RESUBMIT_KEYS)
    if unknown:
        raise Invalid("invalid resubmission", [(unknown[0], "is not an option; use time_limit or priority")])
    limit, priority = body.get("time_limit"), body.get("priority")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, str | int)):
        raise Invalid("invalid resubmission", [("time_limit", "must be a duration such as 12h, or seconds")])
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise Invalid("invalid resubmission", [("priority", "must be an integer from 0 to 1000")])
    return {k: v for k, v in (("time_limit", limit), ("priority", priority)) if v is not None}


def resubmit_text(store: TaskReads, who: Identity, task_id: str, options: dict[str, Any]) -> str:
    """The TaskSpec YAML of a new task that continues `task_id` (see the module docstring).

    Args:
        options: `resubmit_options`' result: `time_limit` and `priority` to set.
    Raises:
        NotFound: no such task of the caller's (404, as for any task route).
    """
    found = store.get_with_spec(task_id)
    if found is None or found[0].user_id != who.user_id:
        raise NotFound(f"no such task of yours: {task_id}")
    data = load_yaml_mapping(found[1], "task spec")
    data.update(options)
    data["resume_from"] = task_id
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
