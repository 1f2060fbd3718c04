"""Which checkpoint a retried attempt resumes from, and how verl is told (issue 16).

Owns the pure rules; `argus.scheduler.resume` reads the job directories. Facts of verl 0.9.1:

- a save ends by writing `<trainer.default_local_dir>/latest_checkpointed_iteration.txt`
  holding N, after `global_step_N/` is complete (`RayPPOTrainer._save_checkpoint`,
  `CheckpointHandler.save_checkpoint` for SFT); verl itself trusts that file only when
  `global_step_N/` exists (`find_latest_ckpt_path`), and so does Argus;
- `trainer.resume_mode=resume_path` with `trainer.resume_from_path=<dir>/global_step_N` makes
  both trainers (PPO/GRPO's `_load_checkpoint`, SFT's `_determine_resume_path`) load that
  directory and continue at step N+1.

A TaskSpec whose own overrides name `trainer.resume_mode` or `trainer.resume_from_path` gets
nothing added: the user's choice wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TRACKER_FILE = "latest_checkpointed_iteration.txt"  # verl's `get_checkpoint_tracker_filename`
RESUME_MODE_KEY = "trainer.resume_mode"
RESUME_PATH_KEY = "trainer.resume_from_path"
RESUME_KEYS = frozenset({RESUME_MODE_KEY, RESUME_PATH_KEY})


@dataclass(frozen=True)
class ResumePoint:
    """A complete checkpoint of an earlier attempt: its step and its `global_step_N` path."""

    step: int
    path: str


def step_dir_name(step: int) -> str:
    """`global_step_<step>`, as verl names a checkpoint directory."""
    return f"global_step_{step}"


def tracker_step(text: str) -> int | None:
    """The step a tracker file names (verl: `int(f.read().decode())`), None if it names none."""
    try:
        step = int(text.strip())
    except ValueError:
        return None
    return step if step >= 0 else None


def override_key(override: str) -> str:
    """The dotted key of a Hydra override (`+`, `++` and `~` prefixes dropped)."""
    key = override.split("=", 1)[0].strip()
    return key.lstrip("~+").strip()


def user_sets_resume(overrides: Iterable[str]) -> bool:
    """Whether the user's own overrides choose how verl resumes (then Argus adds nothing)."""
    return any(override_key(o) in RESUME_KEYS for o in overrides)


def resume_overrides(point: ResumePoint) -> list[str]:
    """The two overrides that make verl resume from `point` (the path quoted for Hydra)."""
    return [f"{RESUME_MODE_KEY}=resume_path", f"{RESUME_PATH_KEY}='{point.path}'"]
