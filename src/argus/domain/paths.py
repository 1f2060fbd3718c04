"""Where a job's artifacts live on shared storage (seed 000 §4.1, principle 5).

The one function that computes a job's root. Jobs submitted with the job tool live under
`<shared_root>/jobs/<submission_id>/`; the service passes the user, which moves them under
`<shared_root>/users/<user>/jobs/<submission_id>/`. Also where a user's own tree, code snapshots
(`users/<user>/code/<sha256>/`) and per-attempt secrets files (`users/<user>/.secrets/`) are.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import PurePosixPath

JOB_SUBDIRS = ("config", "logs", "checkpoints", "debug")
# User ids: lower-case letters, digits and '_', starting with a letter.
_USER_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def job_root(shared_root: str, submission_id: str, user: str | None = None) -> PurePosixPath:
    """The job's own directory; every artifact of the job is below it."""
    if not submission_id or "/" in submission_id or submission_id in (".", ".."):
        raise ValueError(f"invalid submission id {submission_id!r}")
    if user is not None and not _USER_RE.fullmatch(user):
        raise ValueError(f"invalid user id {user!r}")
    # One path built from all its parts (each `/` parses the whole path again; per submission).
    if user is None:
        return PurePosixPath(shared_root, "jobs", submission_id)
    return PurePosixPath(shared_root, "users", user, "jobs", submission_id)


def checkpoints_dir(root: PurePosixPath) -> PurePosixPath:
    """Where verl writes `global_step_N/` (`trainer.default_local_dir`)."""
    return root / "checkpoints"


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def user_root(shared_root: str, user: str) -> PurePosixPath:
    """`<shared_root>/users/<user>/`: the user's own code, datasets, models and jobs."""
    if not _USER_RE.fullmatch(user):
        raise ValueError(f"invalid user id {user!r}")
    return PurePosixPath(shared_root) / "users" / user


def code_root(shared_root: str, user: str) -> PurePosixPath:
    """Where the user's code snapshots live: `<shared_root>/users/<user>/code/`."""
    return user_root(shared_root, user) / "code"


def snapshot_dir(shared_root: str, user: str, sha256: str) -> PurePosixPath:
    """One immutable snapshot: `<shared_root>/users/<user>/code/<sha256>/`."""
    if not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"invalid snapshot hash {sha256!r}")
    return code_root(shared_root, user) / sha256


def snapshot_of(path: str, shared_root: str, user: str) -> str | None:
    """The sha256 of the user's snapshot that `path` lies in, else None (`path` and `shared_root`
    already resolved: the test is on their text)."""
    base = _code_base(shared_root, user)
    if not path.startswith(base):
        return None
    head = path[len(base) :].partition("/")[0]
    return head if _SHA256_RE.fullmatch(head) else None


@lru_cache(maxsize=1024)
def _code_base(shared_root: str, user: str) -> str:
    return f"{code_root(shared_root, user)}/"


def secrets_file(shared_root: str, user: str, submission_id: str) -> PurePosixPath:
    """The per-attempt file that hands a job its secrets (mode 0600, in a 0700 directory, outside
    the job directory), written by the platform right before submission and removed when the
    attempt ends: `<shared_root>/users/<user>/.secrets/<submission_id>.json`."""
    if not submission_id or "/" in submission_id or submission_id in (".", ".."):
        raise ValueError(f"invalid submission id {submission_id!r}")
    return user_root(shared_root, user) / ".secrets" / f"{submission_id}.json"
