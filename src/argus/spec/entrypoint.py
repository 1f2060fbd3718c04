"""From RayConfig + TaskSpec to what is handed to Ray's `submit_job` (seed 000 §4.1).

Owns the verl entrypoints (facts checked against verl 0.9.1):
- PPO and GRPO: `python3 -m verl.trainer.main_ppo` (Hydra config `ppo_trainer`);
- SFT: `python3 -m verl.trainer.sft_trainer_ray` (Hydra config `sft_trainer_engine`);
as Hydra overrides in the seeds' style, each shell-quoted, free text and paths quoted for Hydra.
Also owns the runtime env (config env vars, then the spec's, then W&B's run identity, then
`PYTHONSAFEPATH=1` and `PYTHONPATH=<code_path>`: a job imports its own code first, never its
working directory's; for a pool task or one with secrets the job shim follows on the path, and
`ARGUS_SECRETS_FILE` names the attempt's secrets file, never a value), the custom reward's keys
(`reward_key`, decided by `argus.spec.reward`) and the driver placement (`entrypoint_num_cpus`,
`entrypoint_resources` from the config). Pure: no Ray, no I/O.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from argus.domain.paths import checkpoints_dir, secrets_file
from argus.domain.task import parse_submission_id
from argus.runtime.pool_shim import POOL_ENV, shim_dir
from argus.spec.config import RayConfig
from argus.spec.reward import REWARD_KEY
from argus.spec.taskspec import POOL_LABEL, TaskSpec

SECRETS_FILE_ENV = "ARGUS_SECRETS_FILE"  # read by the job shim (argus.runtime.pool_shim)

PPO_MODULE = "verl.trainer.main_ppo"
SFT_MODULE = "verl.trainer.sft_trainer_ray"
CONFIG_NAMES = {"ppo": "ppo_trainer", "grpo": "ppo_trainer", "sft": "sft_trainer_engine"}
PROJECT_NAME = "argus"


def hydra_str(value: str) -> str:
    """Quote free text for Hydra's override grammar (the spec refuses ', \\ and $)."""
    return f"'{value}'"


def _common_trainer(spec: TaskSpec, submission_id: str, ckpt_dir: PurePosixPath) -> list[str]:
    loggers = "['console','wandb']" if spec.wandb else "['console']"
    project = spec.wandb.project if spec.wandb else PROJECT_NAME
    experiment = (spec.wandb.run_name if spec.wandb else None) or spec.experiment_name or submission_id
    out = [
        f"trainer.logger={loggers}",
        f"trainer.project_name={hydra_str(project)}",
        f"trainer.experiment_name={hydra_str(experiment)}",
        f"trainer.nnodes={spec.nnodes}",
        f"trainer.n_gpus_per_node={spec.n_gpus_per_node}",
        f"trainer.total_epochs={spec.total_epochs}",
    ]
    if spec.total_training_steps is not None:
        out.append(f"trainer.total_training_steps={spec.total_training_steps}")
    out += [
        f"trainer.save_freq={spec.save_freq}",
        f"trainer.test_freq={spec.test_freq}",
        f"trainer.default_local_dir={hydra_str(str(ckpt_dir))}",
        f"trainer.device={spec.trainer_device}",
    ]
    return out


def build_overrides(
    spec: TaskSpec, submission_id: str, job_root: PurePosixPath, reward_key: str = REWARD_KEY
) -> list[str]:
    """The Hydra overrides of the run, Argus's first, then the spec's `overrides`.

    Args:
        reward_key: where the run's verl reads a custom reward function
            (`argus.spec.reward.reward_key`).
    """
    ckpt = checkpoints_dir(job_root)
    val = spec.val_file or spec.train_file
    if spec.workload == "sft":
        out = [
            f"model.path={hydra_str(spec.model_id)}",
            f"data.train_files={hydra_str(spec.train_file)}",
            f"data.val_files={hydra_str(spec.val_file)}" if spec.val_file else "data.val_files=null",
            *_common_trainer(spec, submission_id, ckpt),
            f"trainer.max_ckpt_to_keep={spec.max_ckpt_to_keep}",
        ]
        return out + list(spec.overrides)
    out = [
        f"algorithm.adv_estimator={'grpo' if spec.workload == 'grpo' else 'gae'}",
        f"data.train_files={hydra_str(spec.train_file)}",
        f"data.val_files={hydra_str(val)}",
        f"actor_rollout_ref.model.path={hydra_str(spec.model_id)}",
        f"actor_rollout_ref.rollout.name={spec.rollout_engine}",
        f"actor_rollout_ref.rollout.n={spec.effective_rollout_n}",
    ]
    if spec.workload == "ppo":
        out.append(f"critic.model.path={hydra_str(spec.effective_critic_model)}")
    if spec.reward is not None:
        out.append(f"{reward_key}.path={hydra_str(spec.reward.path)}")
        out.append(f"{reward_key}.name={spec.reward.name}")
    out += _common_trainer(spec, submission_id, ckpt)
    out.append(f"trainer.max_actor_ckpt_to_keep={spec.max_ckpt_to_keep}")
    if spec.workload == "ppo":
        out.append(f"trainer.max_critic_ckpt_to_keep={spec.max_ckpt_to_keep}")
    return out + list(spec.overrides)


_DOUBLE_QUOTE_UNSAFE = set('"$`\\!')


def shell_quote(arg: str) -> str:
    """Quote one argument for the shell, readably.

    `key='text'` (Hydra-quoted free text) is wrapped in double quotes when nothing inside
    would expand there; anything else gets `shlex.quote`.
    """
    quoted = shlex.quote(arg)
    if quoted == arg or "'" not in arg or _DOUBLE_QUOTE_UNSAFE & set(arg):
        return quoted
    return f'"{arg}"'


def build_entrypoint(
    spec: TaskSpec,
    submission_id: str,
    job_root: PurePosixPath,
    reward_key: str = REWARD_KEY,
    overrides: list[str] | None = None,
) -> str:
    """The shell command of the driver; every override is shell-quoted.

    Args:
        overrides: `build_overrides(spec, submission_id, job_root, reward_key)`, when the caller
            has it already.
    """
    module = SFT_MODULE if spec.workload == "sft" else PPO_MODULE
    args = overrides if overrides is not None else build_overrides(spec, submission_id, job_root, reward_key)
    return " ".join(["python3", "-m", module, *(shell_quote(a) for a in args)])


SAFE_PATH_ENV = "PYTHONSAFEPATH"


def wandb_env(spec: TaskSpec, submission_id: str, job_root: PurePosixPath) -> dict[str, str]:
    """W&B's run identity: the task id as the run id (a retried attempt resumes the same run),
    the mode, and the run directory inside the job's own directory."""
    if spec.wandb is None:
        return {}
    parsed = parse_submission_id(submission_id)
    env = {
        "WANDB_RUN_ID": parsed[0] if parsed else submission_id,
        "WANDB_RESUME": "allow",
        "WANDB_MODE": spec.wandb.mode,
        "WANDB_DIR": str(job_root),
    }
    if spec.wandb.entity:
        env["WANDB_ENTITY"] = spec.wandb.entity
    if spec.wandb.base_url:
        env["WANDB_BASE_URL"] = spec.wandb.base_url
    return env


def build_runtime_env(
    config: RayConfig,
    spec: TaskSpec,
    submission_id: str | None = None,
    job_root: PurePosixPath | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """env_vars: the config's, then the spec's, then W&B's, then what makes the job import only
    what it was given: `PYTHONSAFEPATH=1` (Python 3.11: no working directory or script
    directory is put on `sys.path`) and `PYTHONPATH=<code_path>` (then the job shim for a pool
    task or one with secrets), so `sys.path[0]` is the job's `code_path` in the driver and in
    every process it starts. The node's own PYTHONPATH is not appended: unset there (the node's
    environment is an allow-list), `${PYTHONPATH}` would leave an empty entry, which Python
    reads as the working directory. A task with secrets gets `ARGUS_SECRETS_FILE`, the path of
    its attempt's secrets file (the service's; the values never appear here)."""
    env = dict(config.runtime_env.env_vars)
    env.update(spec.env_vars)
    if submission_id is not None and job_root is not None:
        env.update(wandb_env(spec, submission_id, job_root))
    env[SAFE_PATH_ENV] = "1"
    shim = False
    if spec.pool:
        # The job's own placement groups stay in the pool too (argus.runtime.pool_shim).
        env[POOL_ENV] = spec.pool
        shim = True
    if spec.secret_names and user is not None and submission_id is not None:
        env[SECRETS_FILE_ENV] = str(secrets_file(config.shared_root, user, submission_id))
        shim = True
    env["PYTHONPATH"] = f"{spec.code_path}:{shim_dir(config.shared_root)}" if shim else spec.code_path
    return {"env_vars": env}


@dataclass(frozen=True)
class SubmissionRequest:
    """Exactly the keyword arguments given to `JobSubmissionClient.submit_job`."""

    entrypoint: str
    submission_id: str
    runtime_env: dict[str, Any]
    entrypoint_num_cpus: float
    entrypoint_resources: dict[str, float]
    entrypoint_num_gpus: float = 0
    metadata: dict[str, str] = field(default_factory=dict)
    # {"pool": <name>} for a task that names a pool: the driver starts inside it.
    entrypoint_label_selector: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def driver_gpus(spec: TaskSpec) -> float:
    """GPUs the driver itself needs.

    verl 0.9.1's SFT driver puts tensors on `trainer.device` and resets `cpu` to the node's
    accelerator, so on a GPU node it needs a GPU of its own; PPO/GRPO drivers need none.
    """
    return 1 if spec.workload == "sft" and spec.trainer_device != "cpu" else 0


def build_submission(
    config: RayConfig,
    spec: TaskSpec,
    submission_id: str,
    job_root: PurePosixPath,
    user: str | None = None,
    reward_key: str = REWARD_KEY,
    overrides: list[str] | None = None,
) -> SubmissionRequest:
    """Everything `submit_job` gets for this run; the driver is pinned to a worker.

    Args:
        user: the submitting user (the service's); their secrets file is named in the env.
        reward_key: where this verl reads a custom reward (`argus.spec.reward.reward_key`).
        overrides: the run's overrides, when the caller has built them (`build_overrides`).
    """
    return SubmissionRequest(
        entrypoint=build_entrypoint(spec, submission_id, job_root, reward_key, overrides),
        submission_id=submission_id,
        runtime_env=build_runtime_env(config, spec, submission_id, job_root, user),
        entrypoint_num_cpus=config.entrypoint_num_cpus,
        entrypoint_resources=dict(config.entrypoint_resources),
        entrypoint_num_gpus=driver_gpus(spec),
        entrypoint_label_selector={POOL_LABEL: spec.pool} if spec.pool else None,
        metadata={
            "argus.workload": spec.workload,
            "argus.job_root": str(job_root),
            "argus.code_path": spec.code_path,
        },
    )
