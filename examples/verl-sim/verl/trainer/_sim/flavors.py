"""Owns what differs between the two entrypoints (PPO/GRPO vs SFT).

A :class:`Flavor` says which verl config to check against, how to read the
:class:`~.settings.Settings` from it, which fake metrics a step prints and what
a checkpoint contains.  The metric values are fake, deterministic and improve
with the step number; only their names follow verl's console logger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from .config import value
from .settings import Settings, as_files, as_int, as_optional_int

Metrics = list[tuple[str, str]]  # (name, formatted value), printed in order


@dataclass(frozen=True)
class Flavor:
    entrypoint: str
    config_name: str  # verl config the overrides are composed with
    fallback_defaults: dict[str, Any]  # used only when no verl config is available
    read_settings: Callable[[DictConfig], Settings]
    step_metrics: Callable[[Settings, int], Metrics]
    val_metrics: Callable[[Settings, int], Metrics]
    checkpoint_files: Callable[[Settings, int], dict[str, str]]


def metrics_line(step: int, metrics: Metrics) -> str:
    """verl's console format: ``step:3 - name:value - name:value``."""
    return " - ".join([f"step:{step}", *(f"{name}:{val}" for name, val in metrics)])


def _required_path(cfg: DictConfig, key: str) -> str:
    raw = value(cfg, key)
    if not raw:
        raise ValueError(f"verl-sim: {key} is not set")
    return str(raw)


def _common(cfg: DictConfig) -> dict[str, Any]:
    """The trainer/data keys both flavours read."""
    train_files = as_files(value(cfg, "data.train_files"))
    if not train_files:
        raise ValueError("verl-sim: data.train_files is not set")
    return {
        "nnodes": as_int(value(cfg, "trainer.nnodes"), "trainer.nnodes"),
        "n_gpus_per_node": as_int(value(cfg, "trainer.n_gpus_per_node"), "trainer.n_gpus_per_node"),
        "total_epochs": as_int(value(cfg, "trainer.total_epochs"), "trainer.total_epochs"),
        "total_training_steps": as_optional_int(value(cfg, "trainer.total_training_steps")),
        "save_freq": as_int(value(cfg, "trainer.save_freq", -1), "trainer.save_freq"),
        "test_freq": as_int(value(cfg, "trainer.test_freq", -1), "trainer.test_freq"),
        "default_local_dir": value(cfg, "trainer.default_local_dir"),
        "train_files": train_files,
        "val_files": as_files(value(cfg, "data.val_files")),
        "train_batch_size": as_int(value(cfg, "data.train_batch_size"), "data.train_batch_size"),
        "experiment_name": value(cfg, "trainer.experiment_name"),
        "device": value(cfg, "trainer.device"),
        "resume_mode": value(cfg, "trainer.resume_mode", "auto"),
        "resume_from_path": value(cfg, "trainer.resume_from_path"),
    }


def _checkpoint_text(s: Settings, step: int, role: str) -> str:
    return (
        "verl-sim fake checkpoint (no weights)\n"
        f"trainer={s.trainer}\nrole={role or 'model'}\nglobal_step={step}\nexperiment={s.experiment_name}\n"
    )


# ---------------------------------------------------------------- PPO / GRPO


def read_ppo_settings(cfg: DictConfig) -> Settings:
    estimator = str(value(cfg, "algorithm.adv_estimator", "gae"))
    enable = value(cfg, "critic.enable")  # verl: critic.enable wins, else critic iff gae
    use_critic = bool(enable) if enable is not None else estimator == "gae"
    actor_model = _required_path(cfg, "actor_rollout_ref.model.path")
    models = {"actor_rollout_ref.model.path": actor_model}
    keep = {"actor": as_optional_int(value(cfg, "trainer.max_actor_ckpt_to_keep"))}
    if use_critic:
        models["critic.model.path"] = str(value(cfg, "critic.model.path") or actor_model)
        keep["critic"] = as_optional_int(value(cfg, "trainer.max_critic_ckpt_to_keep"))
    trainer = "ppo" if estimator == "gae" and use_critic else estimator + ("+critic" if use_critic else "")
    return Settings(
        trainer=trainer,
        models=models,
        keep=keep,
        use_critic=use_critic,
        adv_estimator=estimator,
        rollout_n=as_optional_int(value(cfg, "actor_rollout_ref.rollout.n")),
        **_common(cfg),
    )


def ppo_step_metrics(s: Settings, step: int) -> Metrics:
    metrics = [("actor/pg_loss", f"{0.5 * 0.92**step:.3f}")]
    if s.use_critic:
        metrics.append(("critic/vf_loss", f"{0.3 * 0.9**step:.3f}"))
    metrics.append(("response_length/mean", f"{32.0 - 0.5 * min(step, 40):.1f}"))
    return metrics


def ppo_val_metrics(s: Settings, step: int) -> Metrics:
    return [("val-core/sim/reward/mean@1", f"{0.2 + 0.6 * (1 - 0.9**step):.3f}")]


def ppo_checkpoint_files(s: Settings, step: int) -> dict[str, str]:
    return {f"{role}/model.txt": _checkpoint_text(s, step, role) for role in s.keep}


PPO = Flavor(
    entrypoint="verl.trainer.main_ppo",
    config_name="ppo_trainer",
    fallback_defaults={
        "algorithm": {"adv_estimator": "gae"},
        "critic": {"enable": None},
        "actor_rollout_ref": {"rollout": {"n": 1}},
        "data": {"train_batch_size": 1024, "val_files": None},
        "trainer": {
            "nnodes": 1,
            "n_gpus_per_node": 8,
            "total_epochs": 30,
            "total_training_steps": None,
            "save_freq": -1,
            "test_freq": -1,
            "default_local_dir": None,
            "max_actor_ckpt_to_keep": None,
            "max_critic_ckpt_to_keep": None,
            "experiment_name": "verl-sim",
            "device": "cuda",
            "resume_mode": "auto",
            "resume_from_path": None,
        },
    },
    read_settings=read_ppo_settings,
    step_metrics=ppo_step_metrics,
    val_metrics=ppo_val_metrics,
    checkpoint_files=ppo_checkpoint_files,
)


# ---------------------------------------------------------------- SFT


def read_sft_settings(cfg: DictConfig) -> Settings:
    lr = value(cfg, "optim.lr")
    return Settings(
        trainer="sft",
        models={"model.path": _required_path(cfg, "model.path")},
        keep={"": as_optional_int(value(cfg, "trainer.max_ckpt_to_keep"))},
        lr=None if lr is None else float(lr),
        **_common(cfg),
    )


def sft_step_metrics(s: Settings, step: int) -> Metrics:
    lr = s.lr if s.lr is not None else 1e-5
    return [("train/loss", f"{2.0 * 0.95**step:.3f}"), ("train/lr", f"{lr:g}")]


def sft_val_metrics(s: Settings, step: int) -> Metrics:
    return [("val/loss", f"{2.05 * 0.95**step:.3f}")]


def sft_checkpoint_files(s: Settings, step: int) -> dict[str, str]:
    return {"model.txt": _checkpoint_text(s, step, "")}


SFT = Flavor(
    entrypoint="verl.trainer.sft_trainer_ray",
    config_name="sft_trainer_engine",
    fallback_defaults={
        "optim": {"lr": 1e-5},
        "data": {"train_batch_size": 256, "val_files": None},
        "trainer": {
            "nnodes": 1,
            "n_gpus_per_node": 1,
            "total_epochs": 4,
            "total_training_steps": None,
            "save_freq": -1,
            "test_freq": -1,
            "default_local_dir": None,
            "max_ckpt_to_keep": None,
            "experiment_name": "verl-sim",
            "device": "cuda",
            "resume_mode": "auto",
            "resume_from_path": None,
        },
    },
    read_settings=read_sft_settings,
    step_metrics=sft_step_metrics,
    val_metrics=sft_val_metrics,
    checkpoint_files=sft_checkpoint_files,
)


FLAVORS = {"ppo": PPO, "sft": SFT}
