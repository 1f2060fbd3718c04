"""Where a task's inputs may come from (seed 004 §M3), checked at submit and again at dispatch.

Owns the check of every path a user hands in against the roots that user may read,
`<shared_root>/common/` and the user's own `<shared_root>/users/<user>/` (code snapshots,
datasets, models; common/ only when there is no user, as for the job tool):
- `code_path`, `train_file`, `val_file`, the reward file (`reward.path`), and `model_id` /
  `critic_model_id` when they are paths (a hub id such as `Qwen/Qwen2.5-0.5B` is not);
- every absolute path named by an override's value (any key, `+key=` and `++key=` included);
- every path in an `env_vars` value (`HF_HOME=/...`, or a ':'-separated list): the same roots.
A path is resolved as the kernel would open it (`os.path.realpath` of the raw path: symlinks
followed, each `..` applied to where the link led) before it is compared with a root, so
neither `..` nor a symlink can lead out. The message names the roots the user may read and
nothing else, so it never tells whether a path under another user's directory exists. Reads
the filesystem (realpath), so a link re-pointed after submit is caught when the scheduler
checks again right before submission.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from argus.spec.errors import Problem, SpecError
from argus.spec.overrides import REMOTE_SCHEMES, SCHEME, override_paths, value_path
from argus.spec.taskspec import TaskSpec

INPUT_FIELDS = ("code_path", "train_file", "val_file", "model_id", "critic_model_id")


Resolve = Callable[[str], str]


class ResolveCache:
    """`os.path.realpath` remembered for `max_age_s` (bounded, thread-safe): the accept path
    resolves the same few inputs for every submit, and each resolution is a system call per
    path component. The scheduler's check right before submission never uses it."""

    def __init__(self, max_age_s: float = 2.0, size: int = 4096, clock: Callable[[], float] = time.monotonic):
        self.max_age_s = max_age_s
        self.size = size
        self.clock = clock
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, path: str) -> str:
        now = self.clock()
        with self._lock:
            hit = self._seen.get(path)
            if hit is not None and now - hit[0] <= self.max_age_s:
                return hit[1]
        real = os.path.realpath(path)
        with self._lock:
            self._seen[path] = (now, real)
            self._seen.move_to_end(path)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
        return real


def is_under(path: str, root: str, resolve: Resolve = os.path.realpath) -> bool:
    """Whether `path`, resolved as the kernel would open it, lies inside `root` (resolved too).

    `path` is not normalised first: `a/link/../x` is `x` next to the link's target, not `a/x`.
    """
    real_root = resolve(root)
    real = resolve(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def readable_roots(shared_root: str, user: str | None) -> list[str]:
    """The roots `user` may read inputs from: common/, and their own users/<user>/ if any."""
    roots = [os.path.join(shared_root, "common")]
    if user:
        roots.append(os.path.join(shared_root, "users", user))
    return roots


def input_problems(
    spec: TaskSpec, shared_root: str, user: str | None = None, resolve: Resolve = os.path.realpath
) -> list[Problem]:
    """One problem per input path outside the roots it may come from.

    Args:
        spec: a parsed TaskSpec (its overrides already passed `argus.spec.overrides`).
        shared_root: the shared storage root.
        user: the submitting user, whose own directory overrides may name; None: common/ only.
        resolve: how a path is resolved (`ResolveCache` on the accept path).
    Returns:
        Problems naming the field (`train_file`, `overrides[2]`, ...), or [].
    """
    problems: list[Problem] = []
    roots = readable_roots(shared_root, user)
    shown = " or ".join(f"{r}/" for r in roots)
    fields = [(name, getattr(spec, name)) for name in INPUT_FIELDS]
    if spec.reward is not None:
        fields.append(("reward.path", spec.reward.path))
    for name, value in fields:
        if value is None:
            continue
        if name in ("model_id", "critic_model_id") and not value.startswith(("/", ".", "~")):
            continue  # a model hub id, not a path
        if not value.startswith("/"):
            problems.append(Problem(name, "must be an absolute path"))
        elif not any(is_under(value, root, resolve) for root in roots):
            problems.append(Problem(name, f"must lie under {shown} (after resolving '..' and symlinks)"))
    for index, item in enumerate(spec.overrides):
        for path in override_paths(item):
            if not any(is_under(path, root, resolve) for root in roots):
                problems.append(
                    Problem(
                        f"overrides[{index}]",
                        f"'{path}' must lie under {shown} (after resolving '..' and symlinks)",
                    )
                )
                break
    for name, value in spec.env_vars.items():
        outside = env_path_outside(str(value), roots, resolve)
        if outside is not None:
            problems.append(
                Problem(f"env_vars.{name}", f"'{outside}' must lie under {shown} (after resolving '..' and symlinks)")
            )
    return problems


def env_path_outside(value: str, roots: list[str], resolve: Resolve = os.path.realpath) -> str | None:
    """The first path in an environment variable's value (one path, or a ':'-separated list,
    as tools read it) that is relative with `..`, under a home (`~`), or outside `roots`;
    None when there is none. A single remote URI (`https://host:port/x`) names no path."""
    text = value.strip()
    uri = SCHEME.match(text)
    if (
        uri
        and uri.group(1).lower() in REMOTE_SCHEMES
        and uri.group(2).startswith("//")
        and ":/" not in uri.group(2)
        and "::" not in text
    ):
        return None
    for part in text.split(os.pathsep):
        part = part.strip()
        if not part:
            continue
        path, why = value_path(part)
        if why or (path is not None and not any(is_under(path, root, resolve) for root in roots)):
            return part
    return None


def check_inputs(spec: TaskSpec, shared_root: str, user: str | None = None, source: str = "task spec") -> None:
    """Raise when an input of `spec` lies outside the roots `user` may read.

    Raises:
        SpecError: one problem per input found outside (see `input_problems`).
    """
    problems = input_problems(spec, shared_root, user)
    if problems:
        raise SpecError(source, problems)
