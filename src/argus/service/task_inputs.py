"""What a task brings along at accept: its code snapshot, its secrets and its reward function.

Owns, for `TaskService`:
- resolving a TaskSpec's `code:` shorthand to the user's snapshot (a name means its newest
  push, else a sha256 prefix), and recording which of the user's snapshots the accepted task
  reads (its code, reward file, data, model, or a path in an override or an env var under one)
  while holding them against deletion, so that a snapshot in use cannot be deleted; at dispatch
  the scheduler uses the snapshot pinned here, not the name's newest;
- refusing a task that names a secret the user does not have (`secrets[i]`, or `wandb` for the
  W&B key of an online run);
- the reward function's check (`argus.ports.RewardChecker`: where user code runs, never in the
  server), a refusal carrying the traceback's last lines; a passing verdict is remembered for a
  while per (user, code, reward file content, function, train file, environment), so a
  resubmission does not run the check again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from argus.domain.errors import Invalid, NotFound
from argus.domain.paths import snapshot_dir, snapshot_of
from argus.domain.reward import RewardCheck, RewardVerdict
from argus.ports import RewardChecker
from argus.spec.errors import Problem, SpecError
from argus.spec.job_env import WANDB_KEY
from argus.spec.overrides import override_paths
from argus.spec.taskspec import TaskSpec
from argus.store.secrets import SecretsDisabled, SecretUnreadable

VERDICT_TTL_S = 600.0
VERDICTS_KEPT = 1024


class SnapshotRef(Protocol):
    @property
    def sha256(self) -> str: ...


class Snapshots(Protocol):
    """The part of `argus.service.code_service.CodeService` acceptance uses."""

    def resolve(self, user_id: str, ref: str) -> SnapshotRef: ...


class SnapshotUses(Protocol):
    """The part of `argus.service.code_service.CodeService` storing a task uses."""

    def holding(self, user_id: str, shas: list[str]) -> AbstractContextManager[Callable[[str, str | None], None]]: ...


class SecretNames(Protocol):
    """The part of `argus.store.secrets.SecretStore` acceptance uses."""

    @property
    def enabled(self) -> bool: ...

    def missing(self, user_id: str, names: list[str]) -> list[str]: ...

    def values(self, user_id: str, names: list[str]) -> dict[str, str]: ...


def _file_stamp(path: str) -> tuple[str, int, float]:
    """The resolved path, size and mtime of a file (a missing file stamps as such)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return real, st.st_size, st.st_mtime
    except OSError:
        return real, -1, -1.0


def _content_hash(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(4 * 1024 * 1024)).hexdigest()
    except OSError:
        return "missing"


class TaskInputs:
    """Code, secrets and reward checks of a TaskSpec being accepted."""

    def __init__(
        self,
        shared_root: str,
        snapshots: Snapshots | None,
        uses: SnapshotUses | None,
        secrets: SecretNames | None,
        rewards: RewardChecker | None,
        reward_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        resolve: Callable[[str], str] = os.path.realpath,
    ):
        """Args:
        resolve: how a path is resolved (the accept path's `argus.spec.inputs.ResolveCache`).
        """
        self.shared_root = shared_root
        self.snapshots = snapshots
        self.uses = uses
        self.secrets = secrets
        self.rewards = rewards
        self.reward_timeout_s = reward_timeout_s
        self.clock = clock
        self.resolve = resolve
        self._passed: OrderedDict[tuple, float] = OrderedDict()
        self._lock = threading.Lock()

    # -- code -----------------------------------------------------------------------------
    def resolver(self, user: str | None) -> Callable[[str], str] | None:
        """`code: <ref>` to the user's snapshot directory (raises ValueError with the reason)."""
        if self.snapshots is None or user is None:
            return None
        snapshots = self.snapshots

        def resolve(ref: str) -> str:
            try:
                found = snapshots.resolve(user, ref)
            except (NotFound, Invalid) as exc:
                raise ValueError(exc.message) from None
            return str(snapshot_dir(self.shared_root, user, found.sha256))

        return resolve

    def _shas(self, user: str, spec: TaskSpec) -> list[str]:
        """The user's snapshots the task reads: its code, data, model, reward, and any path in an
        override or an env var's value that lies in one."""
        paths = [spec.code_path, spec.train_file, spec.val_file, spec.model_id, spec.critic_model_id]
        if spec.reward is not None:
            paths.append(spec.reward.path)
        paths += [p for item in spec.overrides for p in override_paths(item)]
        paths += [part for value in spec.env_vars.values() for part in str(value).split(os.pathsep)]
        root = self.resolve(self.shared_root)
        shas: list[str] = []
        for path in paths:
            if path and path.startswith("/"):
                sha = snapshot_of(self.resolve(path), root, user)
                if sha and sha not in shas:
                    shas.append(sha)
        return shas

    def reads_snapshots(self, user: str, spec: TaskSpec) -> bool:
        """Whether storing the task must hold snapshots (`storing` then does database work)."""
        return self.uses is not None and bool(self._shas(user, spec))

    @contextmanager
    def storing(self, user: str, spec: TaskSpec) -> Iterator[Callable[[str], None]]:
        """Around storing an accepted task: its snapshots are held against deletion, and the
        yielded `record(task_id)` notes the task's uses (and pins its `code:` snapshot).

        Raises:
            Conflict: a snapshot the task reads was deleted while it was being accepted.
        """
        shas = self._shas(user, spec) if self.uses is not None else []
        if not shas or self.uses is None:
            yield lambda _task_id: None
            return
        root = self.resolve(self.shared_root)
        code_sha = snapshot_of(self.resolve(spec.code_path), root, user) if spec.code else None
        with self.uses.holding(user, shas) as record:
            yield lambda task_id: record(task_id, code_sha)

    # -- secrets --------------------------------------------------------------------------
    def check_secrets(self, user: str, spec: TaskSpec) -> None:
        """Raises SpecError naming each secret the user does not have."""
        names = spec.secret_names
        if not names:
            return
        if self.secrets is None or not self.secrets.enabled:
            raise SpecError(
                "task spec",
                [Problem("secrets", "this server keeps no secrets (it was started without a secrets key)")],
            )
        missing = set(self.secrets.missing(user, names))
        problems = []
        for index, name in enumerate(spec.secrets):
            if name in missing:
                why = f"you have no secret '{name}' (`argus secrets set {name}`)"
                problems.append(Problem(f"secrets[{index}]", why))
        if WANDB_KEY in missing and WANDB_KEY not in spec.secrets:
            problems.append(
                Problem(
                    "wandb",
                    f"an online W&B run needs your secret {WANDB_KEY} (`argus secrets set {WANDB_KEY}`), "
                    "or mode: offline",
                )
            )
        if problems:
            raise SpecError("task spec", problems)

    def _values(self, user: str, spec: TaskSpec) -> dict[str, str]:
        """The values of the spec's secrets (for the reward check).

        Raises:
            SpecError: a secret was deleted meanwhile, or cannot be decrypted.
        """
        assert self.secrets is not None
        try:
            return self.secrets.values(user, spec.secret_names)
        except KeyError as exc:
            raise SpecError("task spec", [Problem("secrets", f"you have no secret '{exc.args[0]}'")]) from None
        except (SecretsDisabled, SecretUnreadable) as exc:
            raise SpecError("task spec", [Problem("secrets", str(exc))]) from None

    # -- reward ---------------------------------------------------------------------------
    def _key(self, user: str, spec: TaskSpec) -> tuple:
        assert spec.reward is not None
        return (
            user,
            _file_stamp(spec.code_path)[0],
            _content_hash(spec.reward.path),
            spec.reward.path,
            spec.reward.name,
            _file_stamp(spec.train_file),
            tuple(sorted(spec.env_vars.items())),
            tuple(spec.secret_names),
            spec.pool,
        )

    def check_reward(self, user: str, spec: TaskSpec) -> RewardVerdict | None:
        """Run the reward function's check (blocking: up to `reward_timeout_s`).

        Raises:
            SpecError: the function failed the check (`reward`, with the traceback's last lines).
            Unavailable: the check could not be run.
        """
        if spec.reward is None or self.rewards is None:
            return None
        key = self._key(user, spec)
        now = self.clock()
        with self._lock:
            at = self._passed.get(key)
            if at is not None and now - at <= VERDICT_TTL_S:
                return RewardVerdict(ok=True)
        values = self._values(user, spec) if self.secrets is not None and spec.secret_names else {}
        request = RewardCheck(
            user_id=user,
            code_path=spec.code_path,
            reward_path=spec.reward.path,
            function=spec.reward.name,
            train_file=spec.train_file,
            env_vars=dict(spec.env_vars),
            secrets=values,
            pool=spec.pool,
        )
        verdict = self.rewards.check(request, self.reward_timeout_s)
        if not verdict.ok:
            raise SpecError(
                "task spec",
                [Problem("reward", f"{spec.reward.name} in {spec.reward.path} failed its check:\n{verdict.error}")],
            )
        with self._lock:
            self._passed[key] = now
            self._passed.move_to_end(key)
            while len(self._passed) > VERDICTS_KEPT:
                self._passed.popitem(last=False)
        return verdict
