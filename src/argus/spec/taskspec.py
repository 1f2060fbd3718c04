"""TaskSpec: one training run (seed 000 §3.2), the YAML users hand to Argus.

Owns the seeds' fields exactly (`workload`, `submission_id`, `code_path`, `model_id`,
`train_file`, `val_file`, `nnodes`, `n_gpus_per_node`, `total_epochs`, `total_training_steps`,
`save_freq`, `test_freq`, `trainer_device`) plus what real verl needs that the seeds leave out:
`rollout_engine`, `rollout_n`, `critic_model_id`, `max_ckpt_to_keep`, `experiment_name`,
`wandb`, `overrides` and `env_vars`, and for the service's scheduler `priority` (0-1000,
default 500), `time_limit` (`90m`, `2h`, … ) and `pool` (the node pool to run in). Invariants: paths are absolute, free text is safe to quote
for Hydra, `save_freq` defaults to the seeds' disk rule (10), and `overrides` never touch the
keys that Argus manages (the job's own directory, the gang shape).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from argus.domain.durations import parse_duration
from argus.spec.config import StrictModel, check_env_vars
from argus.spec.loader import expand_vars, load_yaml_mapping, parse_model, read_text

Workload = Literal["ppo", "grpo", "sft"]
SUBMISSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_SAVE_FREQ = 10
DEFAULT_PRIORITY = 500
# The node label that names a node's pool, and what its values may be (Ray label values).
POOL_LABEL = "pool"
POOL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
# Free text goes to Hydra inside single quotes: these would end the quote or interpolate.
_UNSAFE_TEXT = ("'", "\\", "$")
# Environment variables that Argus or verl itself sets; Ray refuses a conflicting merge.
RESERVED_ENV_VARS = {
    "PYTHONPATH": "set by Argus from code_path",
    "ARGUS_POOL": "set by Argus from pool",
    "RAY_ADDRESS": "set by Ray for the job driver",
    "VERL_FULL_DETERMINISM": "set by verl in ray.init; a conflicting value makes Ray refuse the job",
    "PYTHONHASHSEED": "set by verl in ray.init; a conflicting value makes Ray refuse the job",
}
# Hydra keys that Argus derives from the TaskSpec and the job root; overriding them would
# break isolation (outputs) or the gang the scheduler admitted.
MANAGED_KEYS = (
    "trainer.default_local_dir",
    "trainer.nnodes",
    "trainer.n_gpus_per_node",
    "trainer.device",
    "trainer.logger",
)


def check_free_text(value: str) -> str:
    """Refuse characters that cannot be quoted safely for Hydra."""
    bad = [c for c in _UNSAFE_TEXT if c in value]
    if bad:
        raise ValueError(f"must not contain {' '.join(repr(c) for c in bad)}")
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _check_path(value: str) -> str:
    check_free_text(value)
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


class WandbSpec(StrictModel):
    """Report to Weights & Biases (the API key stays in env_vars, never in overrides)."""

    project: str = "argus"
    run_name: str | None = None

    @field_validator("project", "run_name")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else check_free_text(v)


class TaskSpec(StrictModel):
    """One verl PPO, GRPO or SFT run."""

    workload: Workload
    submission_id: str | None = None
    code_path: str
    model_id: str
    train_file: str
    val_file: str | None = None
    nnodes: int = Field(default=1, ge=1, le=1024)
    n_gpus_per_node: int = Field(default=1, ge=1, le=64)
    total_epochs: int = Field(default=1, ge=1)
    total_training_steps: int | None = Field(default=None, ge=1)
    save_freq: int = DEFAULT_SAVE_FREQ
    test_freq: int = -1
    trainer_device: Literal["cuda", "cpu", "npu"] = "cuda"
    rollout_engine: Literal["vllm", "sglang", "trtllm"] = "vllm"
    rollout_n: int | None = Field(default=None, ge=1)
    critic_model_id: str | None = None
    max_ckpt_to_keep: int = Field(default=3, ge=1)
    experiment_name: str | None = None
    wandb: WandbSpec | None = None
    overrides: list[str] = Field(default_factory=list)
    env_vars: dict[str, Any] = Field(default_factory=dict)
    # Scheduling (the service): higher starts first among waiting tasks; the run is stopped
    # (TIMEOUT) at its time limit, default and maximum set by the server's config.
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=1000)
    time_limit: str | int | None = None
    # The pool (nodes labelled `pool=<name>`) the whole task runs in; None: any worker node.
    pool: str | None = None

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        if v is not None and not POOL_RE.fullmatch(v):
            raise ValueError("must be 1-63 letters, digits, '-', '_' or '.', starting and ending "
                             "with a letter or digit (a Ray node label value)")
        return v

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_duration(v)
        return v

    @property
    def time_limit_s(self) -> float | None:
        return None if self.time_limit is None else parse_duration(self.time_limit)

    @field_validator("submission_id")
    @classmethod
    def _sid(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not SUBMISSION_ID_RE.fullmatch(v):
            raise ValueError(
                "must be 1-128 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("code_path", "train_file", "val_file")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else _check_path(v)

    @field_validator("model_id", "critic_model_id", "experiment_name")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not v.strip():
            raise ValueError("must not be empty")
        return check_free_text(v)

    @field_validator("save_freq", "test_freq")
    @classmethod
    def _freq(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be -1 (never) or a positive number of steps")
        return v

    @field_validator("env_vars")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        out = check_env_vars(v)
        for key in out:
            if key in RESERVED_ENV_VARS:
                raise ValueError(f"'{key}' cannot be set: {RESERVED_ENV_VARS[key]}")
        return out

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v: list[str]) -> list[str]:
        for item in v:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"'{item}' is not a Hydra override of the form key=value")
            key = item.split("=", 1)[0].lstrip("+~")
            hit = next((m for m in MANAGED_KEYS if key == m or m.startswith(key + ".")), None)
            if hit == key:
                raise ValueError(f"'{key}' is set by Argus and cannot be overridden")
            if hit:
                raise ValueError(f"'{key}' would change '{hit}', which is set by Argus")
            if any(ord(c) < 32 for c in item):
                raise ValueError(f"'{item}' contains control characters")
        return v

    @field_validator("rollout_n")
    @classmethod
    def _rollout_n(cls, v: int | None, info: ValidationInfo) -> int | None:
        workload = info.data.get("workload")
        if v is not None and workload == "sft":
            raise ValueError("SFT has no rollout")
        if v is not None and workload == "grpo" and v < 2:
            raise ValueError("GRPO needs at least 2 responses per prompt")
        return v

    @field_validator("critic_model_id")
    @classmethod
    def _critic(cls, v: str | None, info: ValidationInfo) -> str | None:
        workload = info.data.get("workload")
        if v is not None and workload in ("grpo", "sft"):
            raise ValueError(f"only PPO has a critic, not {workload}")
        return v

    @property
    def total_gpus(self) -> int:
        return self.nnodes * self.n_gpus_per_node

    @property
    def effective_rollout_n(self) -> int:
        """Responses per prompt: as given, else 5 for GRPO and 1 for PPO."""
        if self.rollout_n is not None:
            return self.rollout_n
        return 5 if self.workload == "grpo" else 1

    @property
    def effective_critic_model(self) -> str:
        return self.critic_model_id or self.model_id


def parse_task_spec(data: dict[str, Any], shared_root: str, source: str = "task spec") -> TaskSpec:
    """Validate a TaskSpec mapping, expanding `${shared_root}` in its values."""
    return parse_model(TaskSpec, expand_vars(dict(data), {"shared_root": shared_root}), source)


def load_task_spec(path: str | Path, shared_root: str) -> tuple[TaskSpec, str]:
    """Load a TaskSpec file; returns (spec, the YAML text as written)."""
    text = read_text(path)
    return parse_task_spec(load_yaml_mapping(text, str(path)), shared_root, str(path)), text
