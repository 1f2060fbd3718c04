"""Owns where a run resumes from, with verl 0.9.1's rules for ``trainer.resume_mode``.

PPO/GRPO (``RayPPOTrainer._load_checkpoint``):

- ``disable``: from scratch;
- ``auto``: the step named by ``<default_local_dir>/latest_checkpointed_iteration.txt`` if its
  ``global_step_<N>`` exists (``find_latest_ckpt_path``), else from scratch;
  ``resume_from_path`` is ignored;
- ``resume_path``: ``resume_from_path`` must be a string containing ``global_step_``
  (``AssertionError: resume ckpt must specify the global_steps``); a relative one is joined to
  the working directory; the step is ``int(path.split("global_step_")[-1])``.

SFT (``CheckpointHandler._determine_resume_path``):

- ``disable``: from scratch;
- ``auto``: ``resume_from_path`` when set (it must exist and contain ``global_step_``), else the
  tracker's checkpoint as above;
- ``resume_path``: ``resume_from_path`` must exist and contain ``global_step_``;
- anything else: ``ValueError: Invalid resume_mode``; the step is the first
  ``global_step_(\\d+)`` in the path (none: from scratch, with verl's warning).

A checkpoint that is loaded must exist (verl's workers fail to load a missing one): a missing
directory is a ``FileNotFoundError``. The run then continues at step N+1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .checkpoints import LATEST_FILE

_STEP = re.compile(r"global_step_(\d+)")


def find_latest(default_local_dir: str | None) -> str | None:
    """verl's ``find_latest_ckpt_path``: the tracker's ``global_step_<N>``, if it exists."""
    if not default_local_dir:
        return None
    root = Path(default_local_dir).expanduser()
    tracker = root / LATEST_FILE
    if not tracker.is_file():
        return None
    path = root / f"global_step_{int(tracker.read_text())}"
    return str(path) if path.exists() else None


def _ppo(mode: str, from_path: object, default_local_dir: str | None) -> tuple[int, str | None]:
    if mode == "disable":
        return 0, None
    found = find_latest(default_local_dir)
    if mode == "auto":
        if found is None:
            return 0, None
    elif mode == "resume_path":
        assert isinstance(from_path, str), "resume ckpt must be str type"
        assert "global_step_" in from_path, "resume ckpt must specify the global_steps"
        found = from_path if os.path.isabs(from_path) else os.path.join(os.getcwd(), from_path)
    if found is None:  # verl: another mode without a tracker reaches `None.split(...)`
        raise AttributeError("'NoneType' object has no attribute 'split'")
    return int(found.split("global_step_")[-1]), found


def _sft(mode: str, from_path: object, default_local_dir: str | None) -> tuple[int, str | None]:
    if mode == "disable":
        return 0, None
    if mode == "auto":
        if from_path is None:
            found = find_latest(default_local_dir)
            if found is None:
                return 0, None
        else:
            assert os.path.exists(str(from_path)), (
                "resume_from_path must be null or an existing path when resume_mode is 'auto'"
            )
            assert "global_step_" in str(from_path), "resume_from_path must specify the global_steps"
            found = str(from_path)
    elif mode == "resume_path":
        assert from_path is not None and os.path.exists(str(from_path)), (
            "resume_from_path must be an existing path when resume_mode is 'resume_path'"
        )
        assert "global_step_" in str(from_path), "resume_from_path must specify the global_steps"
        found = str(from_path)
    else:
        raise ValueError(f"Invalid resume_mode: {mode}. Must be 'auto', 'disable', or 'resume_path'")
    match = _STEP.search(found)
    if match is None:
        print(f"Warning: Could not extract step number from {found}, starting from step 0", flush=True)
        return 0, None
    return int(match.group(1)), found


def resume_from(
    flavor: str, mode: str | None, from_path: object, default_local_dir: str | None
) -> tuple[int, str | None]:
    """The step the run resumes after and the checkpoint it loads (``(0, None)``: from scratch).

    Args:
        flavor: ``"ppo"`` (PPO/GRPO) or ``"sft"``.
        mode: ``trainer.resume_mode`` (verl's default: ``auto``).
        from_path: ``trainer.resume_from_path``.
        default_local_dir: ``trainer.default_local_dir``.

    Raises:
        AssertionError, ValueError: verl's checks of the two keys.
        FileNotFoundError: the checkpoint to load does not exist.
    """
    pick = _sft if flavor == "sft" else _ppo
    step, path = pick(mode or "auto", from_path, default_local_dir)
    if path is not None and not os.path.isdir(path):
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{path}'")
    return step, path
