"""Owns the rewards of PPO/GRPO steps: which function scores, which rows, which responses.

- :func:`reward_fn_config`: ``reward.custom_reward_function`` (verl 0.9.1) or the top-level
  ``custom_reward_function`` (older verl; 0.9.1 migrates it over the new one when any of its
  values is set), ``path`` and ``name`` (default ``compute_score``).
- :func:`load_reward_fn`: verl 0.9.1's loader (``verl.utils.import_utils.load_module`` and
  ``load_extern_object``) with its errors: ``FileNotFoundError: Custom module file not found``,
  ``RuntimeError: Error loading module from ...``, ``AttributeError: Object not found in module``.
- :func:`default_score`: the built-in scorer, like verl's gsm8k one: 1.0 when the last number of
  the response equals the ground truth, else 0.0.
- :class:`Scorer`: each step scores ``data.train_batch_size`` rows of the train file, cycling
  through it; each row gets a deterministic fake response (:func:`fake_response`, right more
  often as steps go on) and the function is called as verl's reward managers call it, with
  keywords ``data_source``, ``solution_str``, ``ground_truth`` (``reward_model.ground_truth``)
  and ``extra_info`` (the row's, or ``{}``). A dict result gives its ``"score"``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .config import value

DEFAULT_NAME = "compute_score"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def reward_fn_config(cfg: DictConfig) -> tuple[str | None, str]:
    """The reward file and function name configured, ``(None, ...)`` when none is."""
    legacy = value(cfg, "custom_reward_function") or {}
    current = value(cfg, "reward.custom_reward_function") or {}
    chosen = legacy if any(v is not None for v in legacy.values()) else current
    return chosen.get("path") or None, chosen.get("name") or DEFAULT_NAME


_PKG, _FILE = "pkg://", "file://"


def load_module(module_path: str) -> Any:
    """A module by the path verl's config gives: ``pkg://a/b`` imports ``a.b``; a file (with or
    without ``file://``) is loaded as a module of its own, named after its absolute path. Errors
    carry verl 0.9.1's texts, so a run fails here as it would under verl."""
    if module_path.startswith(_PKG):
        return importlib.import_module(module_path.removeprefix(_PKG).replace("/", "."))
    path = module_path.removeprefix(_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Custom module file not found: module_path={path!r}")
    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(os.path.abspath(path))}", path)
    loader = spec.loader if spec is not None else None
    if spec is None or loader is None:
        raise ImportError(f"Could not load module from module_path={path!r}")
    module = importlib.util.module_from_spec(spec)
    try:
        loader.exec_module(module)
    except Exception as exc:
        raise RuntimeError(f"Error loading module from module_path={path!r}") from exc
    return module


def load_reward_fn(module_path: str, object_name: str) -> Callable[..., Any]:
    """verl 0.9.1's ``load_extern_object``."""
    module = load_module(module_path)
    if not hasattr(module, object_name):
        raise AttributeError(f"Object not found in module: {object_name=}, {module_path=}.")
    return getattr(module, object_name)


def default_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None) -> float:
    """1.0 when the response's last number is the ground truth, else 0.0."""
    numbers = _NUMBER.findall(solution_str.replace(",", ""))
    return 1.0 if numbers and numbers[-1] == str(ground_truth).replace(",", "").strip() else 0.0


def fake_response(step: int, index: int, ground_truth: Any) -> str:
    """The made-up response to row ``index`` at ``step``: right for ``min(9, step + 1)`` rows in 10."""
    truth = str(ground_truth)
    answer = truth if index % 10 < min(9, step + 1) else ("0" if truth != "0" else "1")
    return f"Let me think step by step. The answer is {answer}. #### {answer}"


def read_rows(files: Sequence[Path]) -> list[dict[str, Any]] | None:
    """The rows of the train files (parquet, or JSON lines); None when they cannot be read here."""
    rows: list[dict[str, Any]] = []
    for path in files:
        if path.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                return None
            pf = pq.ParquetFile(path)
            wanted = [c for c in ("data_source", "reward_model", "extra_info", "prompt") if c in pf.schema_arrow.names]
            rows.extend(pf.read(columns=wanted).to_pylist())
        elif path.suffix in (".jsonl", ".json"):
            text = path.read_text()
            if text.lstrip().startswith("["):
                rows.extend(json.loads(text))
            else:
                rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
        else:
            return None
    return rows


def _has_truth(row: dict[str, Any]) -> bool:
    rm = row.get("reward_model")
    return "data_source" in row and isinstance(rm, dict) and "ground_truth" in rm


class Scorer:
    """Scores each step's rows with the configured (or the default) reward function."""

    def __init__(
        self, fn: Callable[..., Any], rows: list[dict[str, Any]], batch_size: int, name: str, path: str | None = None
    ):
        """``path``: the custom function's file (a worker loads it from there); None: the default."""
        self.fn = fn
        self.rows = rows
        self.batch_size = batch_size
        self.name = name
        self.path = path

    @classmethod
    def from_config(
        cls, cfg: DictConfig, train_files: Sequence[Path], batch_size: int, say: Callable[[str], None]
    ) -> Scorer | None:
        """The run's scorer, or None (and a line saying why) when the default one has no data."""
        path, name = reward_fn_config(cfg)
        rows = read_rows(train_files)
        if path is not None:
            fn = load_reward_fn(path, name)
            say(f"verl-sim: reward function {name} from {path}")
            if rows is None:
                raise ValueError("verl-sim: cannot read the train rows for the reward (pyarrow, parquet or jsonl)")
            return cls(fn, rows, batch_size, name, path)
        if not rows or not all(_has_truth(r) for r in rows):
            say("verl-sim: no custom reward function and no data_source/reward_model.ground_truth rows; no reward/mean")
            return None
        say("verl-sim: reward function: built-in default (last number vs reward_model.ground_truth)")
        return cls(default_score, rows, batch_size, "default")

    def step_rows(self, step: int) -> list[tuple[int, dict[str, Any]]]:
        """``(row index, row)`` of the ``batch_size`` rows of ``step`` (1-based), cycling."""
        n = len(self.rows)
        start = (step - 1) * self.batch_size
        return [((start + i) % n, self.rows[(start + i) % n]) for i in range(self.batch_size)] if n else []

    def step_calls(self, step: int) -> list[dict[str, Any]]:
        """The keyword arguments of each call of the step; a row without verl's columns raises
        ``KeyError`` as in verl."""
        calls = []
        for index, row in self.step_rows(step):
            ground_truth = row["reward_model"]["ground_truth"]
            extra = row.get("extra_info")
            calls.append(
                {
                    "data_source": row["data_source"],
                    "solution_str": fake_response(step, index, ground_truth),
                    "ground_truth": ground_truth,
                    "extra_info": dict(extra) if isinstance(extra, dict) else {},
                }
            )
        return calls

    def step_mean(self, step: int) -> float:
        """The mean score of the step's rows, computed in this process."""
        return mean_score(self.fn, self.step_calls(step))


def call_score(fn: Callable[..., Any], kwargs: dict[str, Any]) -> float:
    """One call as verl's reward managers make it: awaited when async; a dict gives its ``"score"``."""
    result = asyncio.run(fn(**kwargs)) if inspect.iscoroutinefunction(fn) else fn(**kwargs)
    return float(result["score"] if isinstance(result, dict) else result)


def mean_score(fn: Callable[..., Any], calls: list[dict[str, Any]]) -> float:
    scores = [call_score(fn, kwargs) for kwargs in calls]
    return sum(scores) / len(scores) if scores else 0.0
