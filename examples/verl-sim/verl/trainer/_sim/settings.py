"""Owns the run settings: the handful of config values the stand-in acts on.

``Settings`` is built by the flavours (PPO/GRPO or SFT) from the composed config;
this module holds the dataclass and small coercion helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Settings:
    """What one run does; every field comes from a verl config key (see the flavours)."""

    trainer: str  # "ppo", "grpo" (or another critic-less estimator), "sft"
    nnodes: int
    n_gpus_per_node: int
    total_epochs: int
    total_training_steps: int | None
    save_freq: int
    test_freq: int
    default_local_dir: str | None
    train_files: list[str]
    val_files: list[str]
    train_batch_size: int
    # config key -> model path, e.g. {"actor_rollout_ref.model.path": "/m"}
    models: dict[str, str]
    # checkpoint role -> max to keep; role "" means the whole global_step_N dir
    keep: dict[str, int | None] = field(default_factory=dict)
    use_critic: bool = False
    adv_estimator: str | None = None
    rollout_n: int | None = None
    lr: float | None = None
    experiment_name: str | None = None
    device: str | None = None
    resume_mode: str | None = "auto"  # trainer.resume_mode (see :mod:`.resume`)
    resume_from_path: str | None = None  # trainer.resume_from_path


def as_files(raw: Any) -> list[str]:
    """``data.*_files`` may be null, one path or a list of paths."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    return [str(item) for item in raw]


def as_int(raw: Any, key: str) -> int:
    """An int config value; a clear error when it is null or not a number."""
    if raw is None or isinstance(raw, bool):
        raise ValueError(f"verl-sim: {key} must be an integer, got {raw!r}")
    return int(raw)


def as_optional_int(raw: Any) -> int | None:
    return None if raw is None else int(raw)
