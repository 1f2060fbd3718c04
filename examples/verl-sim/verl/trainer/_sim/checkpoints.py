"""Owns the checkpoint layout and retention, as verl lays checkpoints out.

``<default_local_dir>/global_step_<N>/`` holds one subdirectory per role
(PPO/GRPO: ``actor/``, ``critic/``) or the files directly (SFT, role ``""``),
and ``<default_local_dir>/latest_checkpointed_iteration.txt`` holds N.
Retention keeps the newest K checkpoints of each role (K null or <= 0: all);
a ``global_step_<N>`` directory left empty is removed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

LATEST_FILE = "latest_checkpointed_iteration.txt"
_STEP_DIR = re.compile(r"^global_step_(\d+)$")


def checkpoint_root(default_local_dir: str | None) -> Path:
    """``trainer.default_local_dir`` as an absolute path (``~`` expanded); created."""
    if not default_local_dir:
        raise ValueError("verl-sim: trainer.default_local_dir is not set")
    root = Path(default_local_dir).expanduser()
    if not root.is_absolute():
        raise ValueError(f"verl-sim: trainer.default_local_dir must be an absolute path, got '{default_local_dir}'")
    root.mkdir(parents=True, exist_ok=True)
    return root


def should_save(step: int, save_freq: int, last_step: int) -> bool:
    """verl's rule: every ``save_freq`` steps and at the last step; never when save_freq <= 0."""
    return save_freq > 0 and (step % save_freq == 0 or step == last_step)


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """The ``global_step_<N>`` directories under root, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def prune(root: Path, role: str, keep: int | None) -> list[Path]:
    """Keep the newest ``keep`` checkpoints of ``role``; returns what was removed."""
    if keep is None or keep <= 0:
        return []
    holders = [(n, p) for n, p in step_dirs(root) if (p / role).exists()] if role else step_dirs(root)
    removed = []
    for _, step_dir in holders[: max(len(holders) - keep, 0)]:
        target = step_dir / role if role else step_dir
        shutil.rmtree(target)
        removed.append(target)
        if role and step_dir.is_dir() and not any(step_dir.iterdir()):
            step_dir.rmdir()
    return removed


def save(root: Path, step: int, files: Mapping[str, str], keep: Mapping[str, int | None]) -> tuple[Path, list[Path]]:
    """Write ``global_step_<step>/<relpath>`` for each file, the latest file, then apply retention.

    ``files`` maps a path relative to the step dir (``actor/model.txt``) to its text.
    Returns the step dir and the paths removed by retention.
    """
    step_dir = root / f"global_step_{step}"
    for rel, text in files.items():
        target = step_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    step_dir.mkdir(parents=True, exist_ok=True)
    (root / LATEST_FILE).write_text(str(step))
    removed: list[Path] = []
    for role, k in keep.items():
        removed.extend(prune(root, role, k))
    return step_dir, removed
