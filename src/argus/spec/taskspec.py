"""TaskSpec: one training run (seed 000 §3.2), the YAML users hand to Argus.

Owns the seeds' fields exactly (`workload`, `submission_id`, `code_path`, `model_id`,
`train_file`, `val_file`, `nnodes`, `n_gpus_per_node`, `total_epochs`, `total_training_steps`,
`save_freq`, `test_freq`, `trainer_device`) plus what real verl needs that the seeds leave out:
`rollout_engine`, `rollout_n`, `critic_model_id`, `max_ckpt_to_keep`, `experiment_name`,
`wandb`, `overrides` and `env_vars`; the seed's custom reward (`reward`, alias `reward_fn_path`,
`argus.spec.reward`), the service's `code` (a pushed snapshot's name or sha256 prefix, resolved to
`code_path` by the server) and `secrets` (names of the user's secrets the job gets in its
environment); and for the service's scheduler `priority` (0-1000,
default 500), `time_limit` (`90m`, `2h`, … ), `pool` (the node pool to run in), `resume_from`
(an ended task of the same user whose latest checkpoint the new task starts from) and
`preemptible` (it may be stopped for a higher-priority task, then resumed).
Invariants: paths are absolute, free text is safe to quote
for Hydra, `save_freq` defaults to the seeds' disk rule (10), `overrides` never touch the
keys that Argus manages (the job's own directory, the gang shape) nor escape the run
(`argus.spec.overrides`), a model id is a hub id or an absolute path, and `env_vars` never
set the loader, the interpreter, the shell, the GPUs or Ray's hooks. Where the seeds' examples
write an empty value (`submission_id: ""`, `trainer_device: null`, `val_file: null`), it means
exactly what leaving the key out means. Paths are compared with
the roots the user may read by `argus.spec.inputs` (that needs the filesystem).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from argus.domain.durations import parse_duration
from argus.domain.task import parse_task_id
from argus.spec.config import StrictModel, check_env_vars
from argus.spec.errors import Problem, SpecError
from argus.spec.job_env import (
    DENIED_ENV_PREFIXES,
    DENIED_ENV_VARS,
    RESERVED_ENV_VARS,
    WANDB_KEY,
    check_env_name,
    check_free_text,
    check_secret_name,
    secret_like,
)
from argus.spec.loader import expand_vars, load_yaml_mapping, parse_model, read_text
from argus.spec.overrides import MANAGED_KEYS, check_model_id, check_override
from argus.spec.reward import RewardSpec, anchor_reward, apply_alias

__all__ = [
    "DENIED_ENV_PREFIXES",
    "DENIED_ENV_VARS",
    "MANAGED_KEYS",
    "RESERVED_ENV_VARS",
    "WANDB_KEY",
    "RewardSpec",
    "TaskSpec",
    "WandbSpec",
    "check_env_name",
    "check_free_text",
    "check_secret_name",
    "load_task_spec",
    "parse_task_spec",
    "secret_like",
]

Workload = Literal["ppo", "grpo", "sft"]
TrainerDevice = Literal["cuda", "cpu", "npu"]
# `trainer.device` when the spec leaves it out or gives `null` (seed 003 §3 writes
# `trainer_device: null`): the workload's default, verl's own for every workload (`ppo_trainer`
# and `sft_trainer_engine` both say `cuda`; 0.9.1 resets an SFT `cpu` to the accelerator anyway).
DEFAULT_TRAINER_DEVICE: TrainerDevice = "cuda"
SUBMISSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_SAVE_FREQ = 10
DEFAULT_PRIORITY = 500
# The node label that names a node's pool, and what its values may be (Ray label values).
POOL_LABEL = "pool"
POOL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _check_path(value: str) -> str:
    check_free_text(value)
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


class WandbSpec(StrictModel):
    """Report to Weights & Biases. The run id is the task id (`WANDB_RESUME=allow`: a retried
    attempt continues the same run); the API key is the user's secret `WANDB_API_KEY`."""

    project: str = "argus"
    run_name: str | None = None
    entity: str | None = None
    base_url: str | None = None
    mode: Literal["online", "offline"] = "online"

    @field_validator("project", "run_name", "entity")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else check_free_text(v)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and (not re.fullmatch(r"https?://[^\s'\\$]+", v)):
            raise ValueError("must be an http(s) URL")
        return v


MAX_OVERRIDES = 128
MAX_OVERRIDES_CHARS = 8192


def _override_item(value: str) -> str:
    check_override(value)
    return value


class TaskSpec(StrictModel):
    """One verl PPO, GRPO or SFT run."""

    workload: Workload
    submission_id: str | None = None
    code_path: str
    # The snapshot `code_path` was resolved from (the server's `code:` shorthand), as written.
    code: str | None = None
    model_id: str
    train_file: str
    val_file: str | None = None
    nnodes: int = Field(default=1, ge=1, le=1024)
    n_gpus_per_node: int = Field(default=1, ge=1, le=64)
    total_epochs: int = Field(default=1, ge=1)
    total_training_steps: int | None = Field(default=None, ge=1)
    save_freq: int = DEFAULT_SAVE_FREQ
    test_freq: int = -1
    # null (seed 003 §3) is the workload's default, exactly as when the key is left out.
    trainer_device: TrainerDevice = DEFAULT_TRAINER_DEVICE
    rollout_engine: Literal["vllm", "sglang", "trtllm"] = "vllm"
    rollout_n: int | None = Field(default=None, ge=1)
    critic_model_id: str | None = None
    max_ckpt_to_keep: int = Field(default=3, ge=1)
    experiment_name: str | None = None
    wandb: WandbSpec | None = None
    overrides: list[Annotated[str, AfterValidator(_override_item)]] = Field(default_factory=list)
    env_vars: dict[Annotated[str, AfterValidator(check_env_name)], Any] = Field(default_factory=dict)
    reward: RewardSpec | None = None
    secrets: list[Annotated[str, AfterValidator(check_secret_name)]] = Field(default_factory=list, max_length=64)
    # Scheduling (the service): higher starts first among waiting tasks; the run is stopped
    # (TIMEOUT) at its time limit, default and maximum set by the server's config.
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=1000)
    time_limit: str | int | None = None
    # The pool (nodes labelled `pool=<name>`) the whole task runs in; None: any worker node.
    pool: str | None = None
    # An ended task (the same user's, checked at acceptance) whose latest complete checkpoint
    # the first attempt starts from (`argus.scheduler.resume`).
    resume_from: str | None = None
    # The scheduler may stop it for a waiting task of higher priority when the server's
    # `scheduler.preemption` is `priority` (it is requeued and resumes from its checkpoint).
    preemptible: bool = False

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides_size(cls, v: Any) -> Any:
        """Bounded before any is parsed: Hydra's parser is slow on long lists."""
        if isinstance(v, list):
            if len(v) > MAX_OVERRIDES:
                raise ValueError(f"has {len(v)} items; a task may have at most {MAX_OVERRIDES}")
            total = sum(len(item) for item in v if isinstance(item, str))
            if total > MAX_OVERRIDES_CHARS:
                raise ValueError(f"are {total} characters together; at most {MAX_OVERRIDES_CHARS}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _reward_alias(cls, data: Any) -> Any:
        """The seed's `reward_fn_path: <file>[:<function>]` is `reward: {path, name}`."""
        return anchor_reward(apply_alias(data)) if isinstance(data, dict) else data

    @field_validator("reward")
    @classmethod
    def _reward(cls, v: RewardSpec | None, info: ValidationInfo) -> RewardSpec | None:
        if v is not None and info.data.get("workload") == "sft":
            raise ValueError("SFT has no reward function")
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str], info: ValidationInfo) -> list[str]:
        seen = [n for i, n in enumerate(v) if n in v[:i]]
        if seen:
            raise ValueError(f"'{seen[0]}' is listed twice")
        clash = [n for n in v if n in (info.data.get("env_vars") or {})]
        if clash:
            raise ValueError(f"'{clash[0]}' is also in env_vars; a secret is set from the user's secrets only")
        return v

    @field_validator("trainer_device", mode="before")
    @classmethod
    def _trainer_device(cls, v: Any) -> Any:
        """`null` is the default device; anything else is checked against the literal."""
        return DEFAULT_TRAINER_DEVICE if v is None else v

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        if v is not None and not POOL_RE.fullmatch(v):
            raise ValueError(
                "must be 1-63 letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit (a Ray node label value)"
            )
        return v

    @field_validator("resume_from")
    @classmethod
    def _resume_from(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if parse_task_id(v) is None:
            raise ValueError("must be a task id (mvp2-<user>-<workload>-<YYYYMMDD>-<HHMMSS>-<4 hex>)")
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
                "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
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
        check_free_text(v)
        return v

    @field_validator("model_id", "critic_model_id")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        return None if v is None else check_model_id(v)

    @field_validator("save_freq", "test_freq")
    @classmethod
    def _freq(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be -1 (never) or a positive number of steps")
        return v

    @field_validator("env_vars")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return check_env_vars(v)  # each name was checked by check_env_name (env_vars.<NAME>)

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

    @property
    def secret_names(self) -> list[str]:
        """The secrets the job gets: those listed, and `WANDB_API_KEY` for W&B online."""
        names = list(self.secrets)
        if self.wandb is not None and self.wandb.mode == "online" and WANDB_KEY not in names:
            names.append(WANDB_KEY)
        return names

    @property
    def secret_like_env(self) -> list[str]:
        """env_vars names that look like credentials (a warning points to `secrets`)."""
        return [name for name in self.env_vars if secret_like(name)]


ResolveCode = Callable[[str], str]


def _resolve_code(data: dict[str, Any], resolve_code: ResolveCode | None, source: str) -> dict[str, Any]:
    """`code: <ref>` to `code_path` (by `resolve_code`); `data` itself when there is no `code`."""
    ref = data.get("code")
    if ref is None:
        return data
    problem = None
    if not isinstance(ref, str) or not ref:
        problem = "must be a snapshot name or a sha256 prefix"
    elif data.get("code_path") is not None:
        problem = "give code or code_path, not both"
    elif resolve_code is None:
        problem = "names a snapshot pushed with `argus code push`: only the Argus server resolves it"
    else:
        try:
            return {**data, "code_path": resolve_code(ref)}
        except ValueError as exc:
            problem = str(exc)
    raise SpecError(source, [Problem("code", problem)])


def parse_task_spec(
    data: dict[str, Any], shared_root: str, source: str = "task spec", resolve_code: ResolveCode | None = None
) -> TaskSpec:
    """Validate a TaskSpec mapping, expanding `${shared_root}` in its values.

    Args:
        resolve_code: the snapshot path of a `code:` reference (raises ValueError with the
            reason); None: `code:` is refused (there is no server to resolve it).
    """
    expanded = expand_vars(dict(data), {"shared_root": shared_root})
    return parse_model(TaskSpec, _resolve_code(expanded, resolve_code, source), source)


def load_task_spec(path: str | Path, shared_root: str) -> tuple[TaskSpec, str]:
    """Load a TaskSpec file; returns (spec, the YAML text as written)."""
    text = read_text(path)
    return parse_task_spec(load_yaml_mapping(text, str(path)), shared_root, str(path)), text
