"""What an attempt gets right before its submission, besides its rendered TaskSpec.

Owns two things the scheduler does between rendering an attempt and handing it to Ray:
- a `code:` shorthand means the snapshot the task was accepted with (pinned at accept in
  `task_code`), not whatever that name means now (a pass that falls between the task's insert
  and its pin, milliseconds apart, resolves the name as the accept did);
- the attempt's secrets file is written (`argus.scheduler.secrets.JobSecrets`); a secret the
  user deleted since accept, one the server's key cannot decrypt (the key changed), or a server
  without a secrets key, is a `SpecError` naming the secret (never its value), which the
  scheduler records as a CONFIG failure of the task, and nothing is submitted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from argus.domain.paths import snapshot_dir
from argus.domain.records import Task
from argus.spec.errors import Problem, SpecError
from argus.store.code import AmbiguousPrefix, CodeStore
from argus.store.secrets import SecretsDisabled, SecretUnreadable

if TYPE_CHECKING:
    from argus.scheduler.secrets import JobSecrets


class DispatchInputs:
    """Code pins and secrets files for the scheduler's submissions."""

    def __init__(self, shared_root: str, code: CodeStore | None = None, secrets: JobSecrets | None = None):
        self.shared_root = shared_root
        self.code = code
        self.secrets = secrets

    def pinned_code(self, task: Task) -> Callable[[str], str] | None:
        """The resolver of the task's `code:` shorthand: its pinned snapshot.

        Raises:
            SpecError: the pinned snapshot is gone (raised when the resolver is called).
        """
        code = self.code
        if code is None:
            return None
        sha = code.pinned_code(task.task_id)

        def resolve(ref: str) -> str:
            found = sha or self._by_ref(code, task.user_id, ref)
            path = str(snapshot_dir(self.shared_root, task.user_id, found)) if found else ""
            if not found or not os.path.isdir(path):
                raise ValueError(f"the snapshot {(found or ref)[:12]} was deleted")
            return path

        return resolve

    @staticmethod
    def _by_ref(code: CodeStore, user: str, ref: str) -> str | None:
        """A name's newest snapshot, else the one a hash prefix names (as the accept does)."""
        named = code.newest_named(user, ref)
        if named is not None:
            return named.sha256
        try:
            prefixed = code.by_prefix(user, ref) if len(ref) >= 8 else None
        except AmbiguousPrefix:
            return None
        return prefixed.sha256 if prefixed is not None else None

    def hand_secrets(self, task: Task, submission_id: str, names: list[str]) -> None:
        """Write the attempt's secrets file.

        Raises:
            SpecError: a secret no longer exists or cannot be decrypted, or the server has no
                secrets key.
        """
        try:
            if self.secrets is None:
                raise SecretsDisabled()
            self.secrets.write(task.user_id, submission_id, names)
        except KeyError as exc:
            why = f"cannot be handed over: you have no secret '{exc.args[0]}' any more"
            raise SpecError(task.task_id, [Problem("secrets", why)]) from None
        except (SecretsDisabled, SecretUnreadable) as exc:
            why = f"{', '.join(names)} cannot be handed over: {exc}"
            raise SpecError(task.task_id, [Problem("secrets", why)]) from None
