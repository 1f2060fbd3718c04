"""Where a task's inputs may come from (seed 004 §M3): under `<shared_root>/common/` only.

Owns the check of every path a user hands in: `code_path`, `train_file`, `val_file`, and
`model_id` / `critic_model_id` when they are paths (a hub id such as `Qwen/Qwen2.5-0.5B` is not).
A path is normalised (`..` removed) and its symlinks resolved before it is compared with the
allowed root, so neither `..` nor a symlink can lead out of it. Reads the filesystem (realpath).
"""

from __future__ import annotations

import os

from argus.spec.errors import Problem
from argus.spec.taskspec import TaskSpec

INPUT_FIELDS = ("code_path", "train_file", "val_file", "model_id", "critic_model_id")


def is_under(path: str, root: str) -> bool:
    """Whether `path`, normalised and with symlinks resolved, lies inside `root`."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.normpath(path))
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def input_problems(spec: TaskSpec, shared_root: str) -> list[Problem]:
    """One problem per input path outside `<shared_root>/common/`."""
    common = os.path.join(shared_root, "common")
    problems: list[Problem] = []
    for name in INPUT_FIELDS:
        value = getattr(spec, name)
        if value is None:
            continue
        if name in ("model_id", "critic_model_id") and not value.startswith(("/", ".")):
            continue  # a model hub id, not a path
        if not value.startswith("/"):
            problems.append(Problem(name, "must be an absolute path"))
        elif not is_under(value, common):
            problems.append(Problem(name, f"must lie under {common}/ (after resolving '..' and symlinks)"))
    return problems
