"""Where a task's inputs may come from (seed 004 §M3), checked at submit and again at dispatch.

Owns the check of every path a user hands in against the roots that user may read:
- `code_path`, `train_file`, `val_file`, and `model_id` / `critic_model_id` when they are paths
  (a hub id such as `Qwen/Qwen2.5-0.5B` is not): under `<shared_root>/common/` only;
- every absolute path named by an override's value (any key, `+key=` and `++key=` included):
  under `<shared_root>/common/` or the user's own `<shared_root>/users/<user>/` (common/ only
  when there is no user, as for the job tool).
A path is resolved as the kernel would open it (`os.path.realpath` of the raw path: symlinks
followed, each `..` applied to where the link led) before it is compared with a root, so
neither `..` nor a symlink can lead out. Reads the filesystem (realpath), so a link re-pointed
after submit is caught when the scheduler checks again right before submission.
"""

from __future__ import annotations

import os

from argus.spec.errors import Problem, SpecError
from argus.spec.overrides import override_paths
from argus.spec.taskspec import TaskSpec

INPUT_FIELDS = ("code_path", "train_file", "val_file", "model_id", "critic_model_id")


def is_under(path: str, root: str) -> bool:
    """Whether `path`, resolved as the kernel would open it, lies inside `root` (resolved too).

    `path` is not normalised first: `a/link/../x` is `x` next to the link's target, not `a/x`.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def readable_roots(shared_root: str, user: str | None) -> list[str]:
    """The roots `user` may read inputs from: common/, and their own users/<user>/ if any."""
    roots = [os.path.join(shared_root, "common")]
    if user:
        roots.append(os.path.join(shared_root, "users", user))
    return roots


def input_problems(spec: TaskSpec, shared_root: str, user: str | None = None) -> list[Problem]:
    """One problem per input path outside the roots it may come from.

    Args:
        spec: a parsed TaskSpec (its overrides already passed `argus.spec.overrides`).
        shared_root: the shared storage root.
        user: the submitting user, whose own directory overrides may name; None: common/ only.
    Returns:
        Problems naming the field (`train_file`, `overrides[2]`, ...), or [].
    """
    common = os.path.join(shared_root, "common")
    problems: list[Problem] = []
    for name in INPUT_FIELDS:
        value = getattr(spec, name)
        if value is None:
            continue
        if name in ("model_id", "critic_model_id") and not value.startswith(("/", ".", "~")):
            continue  # a model hub id, not a path
        if not value.startswith("/"):
            problems.append(Problem(name, "must be an absolute path"))
        elif not is_under(value, common):
            problems.append(Problem(name, f"must lie under {common}/ (after resolving '..' and symlinks)"))
    roots = readable_roots(shared_root, user)
    shown = " or ".join(f"{r}/" for r in roots)
    for index, item in enumerate(spec.overrides):
        for path in override_paths(item):
            if not any(is_under(path, root) for root in roots):
                problems.append(Problem(
                    f"overrides[{index}]",
                    f"'{path}' must lie under {shown} (after resolving '..' and symlinks)"))
                break
    return problems


def check_inputs(spec: TaskSpec, shared_root: str, user: str | None = None,
                 source: str = "task spec") -> None:
    """Raise when an input of `spec` lies outside the roots `user` may read.

    Raises:
        SpecError: one problem per input found outside (see `input_problems`).
    """
    problems = input_problems(spec, shared_root, user)
    if problems:
        raise SpecError(source, problems)
