"""Where a job's artifacts live on shared storage (seed 000 §4.1, principle 5).

The one function that computes a job's root. Jobs submitted with the job tool live under
`<shared_root>/jobs/<submission_id>/`; the service passes the user, which moves them under
`<shared_root>/users/<user>/jobs/<submission_id>/`.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

JOB_SUBDIRS = ("config", "logs", "checkpoints", "debug")
# User ids: lower-case letters, digits and '_', starting with a letter.
_USER_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def job_root(shared_root: str, submission_id: str, user: str | None = None) -> PurePosixPath:
    """The job's own directory; every artifact of the job is below it."""
    if not submission_id or "/" in submission_id or submission_id in (".", ".."):
        raise ValueError(f"invalid submission id {submission_id!r}")
    root = PurePosixPath(shared_root)
    if user is not None and not _USER_RE.fullmatch(user):
        raise ValueError(f"invalid user id {user!r}")
    if user is None:
        return root / "jobs" / submission_id
    return root / "users" / user / "jobs" / submission_id


def checkpoints_dir(root: PurePosixPath) -> PurePosixPath:
    """Where verl writes `global_step_N/` (`trainer.default_local_dir`)."""
    return root / "checkpoints"
