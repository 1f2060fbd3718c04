"""What an attempt gets right before its submission, besides its rendered TaskSpec.

Owns two things the scheduler does between rendering an attempt and handing it to Ray:
- a `code:` shorthand means the snapshot the task was accepted with (pinned at accept in
  `task_code`), not whatever that name means now;
- the attempt's secrets file is written (`argus.scheduler.secrets.JobSecrets`); a secret the
  user deleted since accept, or a server without a secrets key, is a `SpecError`, which the
  scheduler records as a CONFIG failure of the task, and nothing is submitted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from argus.domain.paths import snapshot_dir
from argus.domain.records import Task
from argus.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    from argus.scheduler.secrets import JobSecrets
    from argus.store.code import CodeStore


class DispatchInputs:
    """Code pins and secrets files for the scheduler's submissions."""

    def __init__(self, shared_root: str, code: CodeStore | None = None, secrets: JobSecrets | None = None):
        self.shared_root = shared_root
        self.code = code
        self.secrets = secrets

    def pinned_code(self, task: Task) -> Callable[[str], str] | None:
        """The resolver of the task's `code:` shorthand: its pinned snapshot (None: none pinned).

        Raises:
            SpecError: the pinned snapshot is gone.
        """
        sha = self.code.pinned_code(task.task_id) if self.code is not None else None
        if sha is None:
            return None
        path = str(snapshot_dir(self.shared_root, task.user_id, sha))
        if not os.path.isdir(path):
            raise SpecError(task.task_id, [Problem("code", f"the snapshot {sha[:12]} was deleted")])
        return lambda _ref: path

    def hand_secrets(self, task: Task, submission_id: str, names: list[str]) -> None:
        """Write the attempt's secrets file.

        Raises:
            SpecError: a secret no longer exists, or the server has no secrets key.
        """
        try:
            if self.secrets is None:
                raise KeyError("the server has no secrets key")
            self.secrets.write(task.user_id, submission_id, names)
        except KeyError as exc:
            raise SpecError(task.task_id, [Problem("secrets", f"cannot be handed over: {exc.args[0]}")]) from None
