"""The platform's side of a job's secrets: the per-attempt file, written before submission and
removed when the attempt ends.

Owns `JobSecrets`, which the scheduler calls right after an attempt is written and before it is
submitted (`write`: the values of the secrets the task names, decrypted from the store, into
`argus.domain.paths.secrets_file`, 0600 in a 0700 directory, and the job-side shim that reads it
into every process of the job, `argus.runtime.pool_shim`), and the removal of that file, by
`JobSecrets.remove` or by `remove_attempt_secrets` for an ended attempt (what the log archiver
calls, `argus.scheduler.archive`). Invariants: the values go to that file only, never to a log
line or an exception's text; removing a file that is not there is not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from argus.cluster.secret_files import remove_secrets_file, write_secrets_file
from argus.domain.paths import secrets_file
from argus.domain.records import Attempt
from argus.runtime.pool_shim import ensure_shim
from argus.store.secrets import SecretStore

__all__ = ["JobSecrets", "attempt_user", "remove_attempt_secrets"]


class JobSecrets:
    """Writes and removes the per-attempt secrets files under `shared_root`.

    Args:
        shared_root: the shared root as this server sees it (where the job directories are).
        store: the users' secrets.
    """

    def __init__(self, shared_root: str, store: SecretStore):
        self.shared_root = shared_root
        self.store = store

    def path(self, user_id: str, submission_id: str) -> PurePosixPath:
        """The attempt's secrets file (`<shared_root>/users/<user>/.secrets/<submission_id>.json`).

        Raises:
            ValueError: an invalid user id or submission id.
        """
        return secrets_file(self.shared_root, user_id, submission_id)

    def write(self, user_id: str, submission_id: str, names: Sequence[str]) -> None:
        """Write the values of the user's secrets `names` to the attempt's file (replacing an
        older one), and make sure the job-side shim that reads it is on shared storage. With no
        names nothing is written.

        Raises:
            KeyError: the user has no secret of that name (any more): the error's argument.
            argus.store.secrets.SecretsDisabled: the server has no secrets key.
            argus.store.secrets.SecretUnreadable: a secret cannot be decrypted with the key.
            ValueError: an invalid user id or submission id.
            OSError: the file or the shim could not be written.
        """
        if not names:
            return
        path = self.path(user_id, submission_id)
        values = self.store.values(user_id, list(names))
        write_secrets_file(path, values)
        ensure_shim(self.shared_root)

    def remove(self, user_id: str, submission_id: str) -> None:
        """Remove the attempt's file (nothing happens when it is not there).

        Raises:
            OSError: it is there but could not be removed.
        """
        remove_secrets_file(self.path(user_id, submission_id))


def attempt_user(attempt: Attempt) -> str | None:
    """The user of an attempt, read off its job directory `<shared_root>/users/<user>/jobs/<sid>`;
    None for a job directory outside `users/` (a job with no user has no secrets)."""
    root = PurePosixPath(attempt.job_root)
    if root.parent.name == "jobs" and root.parent.parent.parent.name == "users":
        return root.parent.parent.name
    return None


def remove_attempt_secrets(shared_root: str, attempt: Attempt) -> bool:
    """Remove an ended attempt's secrets file.

    Returns:
        Whether a file was there (and is gone now).
    Raises:
        OSError: it is there but could not be removed.
    """
    user = attempt_user(attempt)
    if user is None:
        return False
    try:
        path = secrets_file(shared_root, user, attempt.ray_submission_id)
    except ValueError:
        return False
    return remove_secrets_file(path)
