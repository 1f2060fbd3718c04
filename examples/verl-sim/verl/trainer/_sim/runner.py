"""Owns the flow both entrypoints share: config, checks, Ray, fake steps, rewards, tracking, checkpoints.

Environment knobs:

- ``VERL_SIM_STEP_SECONDS`` (default 0.5): how long each step's tasks sleep.
- ``VERL_SIM_FAIL_AT_STEP`` (unset): step N raises ``RuntimeError("verl-sim: injected failure at step N")``.
- ``VERL_SIM_FAIL_AFTER_STEP`` (unset): a run that did not resume fails right after step N (and
  its checkpoint, when one is due) with ``RuntimeError("NCCL error: verl-sim: injected ...")``, a
  failure Argus retries (NCCL); a resumed run ignores it, so a retry runs to its end.
- ``VERL_SIM_PG_TIMEOUT_S`` (default 120): how long to wait for the GPUs' placement group.
- ``VERL_SIM_CONFIG_DIR`` (unset): config dir to check overrides against (see :mod:`.config`).

Any exception propagates: Python prints the traceback and exits non-zero.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import checkpoints
from .inputs import check_data_files, check_model_path, count_rows, derive_total_steps
from .resume import resume_from
from .settings import Settings

if TYPE_CHECKING:  # heavy imports (omegaconf, hydra, ray) wait until the marker is printed
    from .flavors import Flavor
    from .reward import Scorer
    from .tracking import Tracker

STEP_SECONDS_ENV = "VERL_SIM_STEP_SECONDS"
FAIL_AT_STEP_ENV = "VERL_SIM_FAIL_AT_STEP"
FAIL_AFTER_STEP_ENV = "VERL_SIM_FAIL_AFTER_STEP"
PG_TIMEOUT_ENV = "VERL_SIM_PG_TIMEOUT_S"


def say(line: str) -> None:
    print(line, flush=True)


def read_marker() -> str:
    """``mvp_marker.MARKER`` of the snapshot on the path, or ``<none>``."""
    try:
        return str(importlib.import_module("mvp_marker").MARKER)
    except (ImportError, AttributeError):
        return "<none>"


def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"verl-sim: {name} must be a number, got {raw!r}") from None


def check_inputs(s: Settings) -> tuple[list[Path], list[Path]]:
    """Model paths, then data files (as verl meets them: tokenizer first, then datasets)."""
    for key, path in s.models.items():
        if check_model_path(path):
            say(f"verl-sim: {key}={path} is a local model dir with config.json (weights not loaded)")
        else:
            say(f"verl-sim: {key}={path} looks like a hub id; accepted, not downloaded or loaded")
    return check_data_files(s.train_files), check_data_files(s.val_files)


def plan_steps(s: Settings, train: list[Path]) -> int:
    rows = count_rows(train)
    if rows is None and s.total_training_steps is None:
        say("verl-sim: row count unknown (no pyarrow or not parquet); assuming one batch per epoch")
        rows = s.train_batch_size
    total = derive_total_steps(s.total_training_steps, s.total_epochs, rows or 0, s.train_batch_size)
    say(
        f"verl-sim: train rows={rows if rows is not None else 'unknown'} train_batch_size={s.train_batch_size} "
        f"total_epochs={s.total_epochs} total_training_steps={total}"
    )
    return total


def train(
    flavor: Flavor,
    s: Settings,
    workers: list,
    total: int,
    ckpt_root: Path | None,
    has_val: bool,
    scorer: Scorer | None = None,
    tracker: Tracker | None = None,
    start: int = 0,
) -> None:
    """Run steps ``start + 1`` to ``total`` (``start``: the step of the checkpoint resumed from)."""
    from . import cluster
    from .flavors import metrics_line

    step_seconds = env_number(STEP_SECONDS_ENV, 0.5)
    fail_at_step = int(env_number(FAIL_AT_STEP_ENV, 0)) or None
    fail_after_step = None if start else int(env_number(FAIL_AFTER_STEP_ENV, 0)) or None
    for step in range(start + 1, total + 1):
        started = time.monotonic()
        placed = cluster.run_step(workers, step_seconds)
        elapsed = time.monotonic() - started
        if step == start + 1:
            for i, (node_id, visible) in enumerate(placed):
                say(f"verl-sim: bundle {i} ran on node {node_id} with CUDA_VISIBLE_DEVICES={visible}")
        if step == fail_at_step:
            raise RuntimeError(f"verl-sim: injected failure at step {step}")
        metrics = flavor.step_metrics(s, step)
        if scorer is not None:
            metrics.append(("reward/mean", f"{cluster.score_step(workers, scorer, step):.6g}"))
        metrics.append(("timing_s/step", f"{round(elapsed, 2)}"))
        say(metrics_line(step, metrics))
        if tracker is not None:
            tracker.log(step, metrics)
        if has_val and s.test_freq > 0 and (step % s.test_freq == 0 or step == total):
            val = flavor.val_metrics(s, step)
            say(metrics_line(step, val))
            if tracker is not None:
                tracker.log(step, val)
        if ckpt_root is not None and checkpoints.should_save(step, s.save_freq, total):
            step_dir, removed = checkpoints.save(ckpt_root, step, flavor.checkpoint_files(s, step), s.keep)
            say(f"verl-sim: saved checkpoint {step_dir}")
            for path in removed:
                say(f"verl-sim: removed old checkpoint {path}")
        if step == fail_after_step:
            raise RuntimeError(f"NCCL error: verl-sim: injected communicator failure after step {step}")


def run(flavor_name: str, overrides: Sequence[str]) -> None:
    """Run the ``"ppo"`` (PPO/GRPO) or ``"sft"`` flavour with these Hydra overrides."""
    say(f"MARKER {read_marker()}")
    from verl import __version__

    say(f"verl-sim {__version__}: CPU stand-in for verl, python {sys.executable}")
    from .config import load_config
    from .flavors import FLAVORS

    flavor = FLAVORS[flavor_name]
    say(f"verl-sim: entrypoint {flavor.entrypoint}")

    cfg, how = load_config(overrides, flavor.config_name, flavor.fallback_defaults)
    say(f"verl-sim: {how}")
    s = flavor.read_settings(cfg)
    say(
        f"verl-sim: trainer={s.trainer} experiment_name={s.experiment_name} trainer.device={s.device} "
        f"nnodes={s.nnodes} n_gpus_per_node={s.n_gpus_per_node}"
        + (f" rollout.n={s.rollout_n}" if s.rollout_n is not None else "")
    )
    train_files, val_files = check_inputs(s)
    total = plan_steps(s, train_files)
    start, resumed = resume_from(flavor_name, s.resume_mode, s.resume_from_path, s.default_local_dir)
    ckpt_root = checkpoints.checkpoint_root(s.default_local_dir) if s.save_freq > 0 else None
    from .reward import Scorer
    from .tracking import Tracker

    scorer = Scorer.from_config(cfg, train_files, s.train_batch_size, say) if flavor_name == "ppo" else None

    from . import cluster

    say(f"verl-sim: connected to Ray; driver node id {cluster.connect()}")
    cluster.check_resource_available(s.nnodes, s.n_gpus_per_node)
    timeout_s = env_number(PG_TIMEOUT_ENV, 120.0)
    pg = cluster.acquire_gpus(s.nnodes, s.n_gpus_per_node, timeout_s)
    say(f"verl-sim: placement group ready: {s.nnodes} x {{'GPU': {s.n_gpus_per_node}}}")
    tracker = None
    try:
        tracker = Tracker.open(cfg, asdict(s), say)
        workers = cluster.start_workers(pg, s.nnodes, s.n_gpus_per_node)
        if resumed is not None:
            say(f"resumed from {resumed}")
        train(flavor, s, workers, total, ckpt_root, bool(val_files), scorer, tracker, start)
        tracker.finish(0)
    finally:
        if tracker is not None:
            tracker.finish(1)  # only when training raised: a finished tracker does nothing
        cluster.release(pg)
    say(f"verl-sim: training finished after {total} steps" + (f" (resumed after step {start})" if start else ""))
