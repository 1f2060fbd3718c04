"""Owns the experiment tracker: W&B when ``trainer.logger`` names ``wandb``, as verl's ``Tracking``.

:meth:`Tracker.open` calls ``wandb.init(project=trainer.project_name,
name=trainer.experiment_name, id=$WANDB_RUN_ID, resume=$WANDB_RESUME, entity=$WANDB_ENTITY,
config=...)``; wandb itself reads ``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_BASE_URL`` and
``WANDB_API_KEY`` from the environment. Each step's numeric metrics go to ``wandb.log(...,
step=N)``; :meth:`Tracker.finish` ends the run with the process's exit code. Without the
``wandb`` package one line says so and nothing is logged (the console lines are printed anyway).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig

from .config import value


def loggers(cfg: DictConfig) -> list[str]:
    """``trainer.logger`` as a list (verl accepts one name or a list)."""
    raw = value(cfg, "trainer.logger")
    if raw is None:
        return []
    return [str(raw)] if isinstance(raw, str) else [str(x) for x in raw]


def numeric(metrics: Iterable[tuple[str, str]]) -> dict[str, float]:
    """The metrics whose printed value is a number, as floats."""
    out = {}
    for name, raw in metrics:
        try:
            out[name] = float(raw)
        except (TypeError, ValueError):
            continue
    return out


class Tracker:
    """Where a run's metrics go besides the console."""

    def __init__(self, wandb: Any = None):
        self.wandb = wandb

    @classmethod
    def open(cls, cfg: DictConfig, run_config: dict[str, Any], say: Callable[[str], None]) -> Tracker:
        if "wandb" not in loggers(cfg):
            return cls()
        try:
            import wandb
        except ImportError:
            say("verl-sim: trainer.logger has wandb but the wandb package is not importable; console only")
            return cls()
        run = wandb.init(
            project=value(cfg, "trainer.project_name"),
            name=value(cfg, "trainer.experiment_name"),
            id=os.environ.get("WANDB_RUN_ID") or None,
            resume=os.environ.get("WANDB_RESUME") or None,
            entity=os.environ.get("WANDB_ENTITY") or None,
            config=run_config,
        )
        say(f"verl-sim: wandb run {run.id} ({os.environ.get('WANDB_MODE') or 'online'}) in {run.dir}")
        return cls(wandb)

    def log(self, step: int, metrics: Iterable[tuple[str, str]]) -> None:
        if self.wandb is not None:
            data = numeric(metrics)
            if data:
                self.wandb.log(data, step=step)

    def finish(self, exit_code: int = 0) -> None:
        if self.wandb is not None:
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None
