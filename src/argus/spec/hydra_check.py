"""Offline check of a run's Hydra overrides against the verl config the job will run.

Owns finding that config (`<code_path>/verl/trainer/config` when the snapshot has one, else
the installed verl's, found through package metadata so a stand-in on `sys.path` does not
shadow it) and composing it with Hydra. A misspelled key fails with verl's own Hydra message.
Hydra does not type-check values, so values of keys that compose are compared with the
default's type (an int key given `abc` is refused). Nothing here imports verl or torch.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from argus.spec.errors import Problem

HYDRA_LOCK = threading.Lock()  # Hydra's GlobalHydra is process-wide.
CONFIG_DIR_ENV = "ARGUS_VERL_CONFIG_DIR"


def installed_verl_config_dir() -> Path | None:
    """The config dir of the verl distribution installed in this environment, if any."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override) if Path(override).is_dir() else None
    return _metadata_config_dir()


@functools.lru_cache(maxsize=1)
def _metadata_config_dir() -> Path | None:
    """Read once per process: scanning package metadata costs milliseconds."""
    try:
        dist = importlib.metadata.distribution("verl")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("verl/trainer/config")))
    return path if path.is_dir() else None


def find_verl_config_dir(code_path: str | None) -> Path | None:
    """`<code_path>/verl/trainer/config` when it exists, else the installed verl's."""
    if code_path:
        candidate = os.path.join(code_path, "verl", "trainer", "config")  # per submission: no Path
        if os.path.isdir(candidate):
            return Path(candidate)
    return installed_verl_config_dir()


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _type_problems(base, composed, overrides: list[str]) -> list[Problem]:
    from omegaconf import OmegaConf

    problems = []
    for ov in overrides:
        key = _override_key(ov)
        try:
            before = OmegaConf.select(base, key, default=None, throw_on_missing=False)
            after = OmegaConf.select(composed, key, default=None, throw_on_missing=False)
        except Exception:  # interpolation in a value we do not resolve
            continue
        if isinstance(before, bool) and not isinstance(after, bool) and after is not None:
            problems.append(Problem(f"overrides[{key}]", f"expects true or false, got {after!r}"))
        elif isinstance(before, (int, float)) and not isinstance(before, bool) and isinstance(after, str):
            problems.append(Problem(f"overrides[{key}]", f"expects a number, got {after!r}"))
    return problems


def check_overrides(
    config_name: str, overrides: list[str], config_dir: Path, user_overrides: Sequence[str] = ()
) -> list[Problem]:
    """Compose `config_name` in `config_dir` with `overrides`; problems found, or [].

    Args:
        config_name: ppo_trainer or sft_trainer_engine.
        overrides: every override of the run, unquoted (as the driver's argv has them).
        config_dir: a verl `trainer/config` directory.
        user_overrides: the subset given by the user, whose values are type-checked.
    """
    from hydra import compose, initialize_config_dir

    with HYDRA_LOCK:
        try:
            with initialize_config_dir(config_dir=str(config_dir), version_base=None):
                composed = compose(config_name=config_name, overrides=list(overrides))
                if not user_overrides:
                    return []
                base = compose(
                    config_name=config_name,
                    overrides=[o for o in overrides if o not in set(user_overrides)],
                )
        except Exception as exc:  # Hydra raises several types; all mean "does not compose"
            text = str(exc).strip() or type(exc).__name__
            return [Problem("overrides", f"{text} (checked against {config_dir})")]
    return _type_problems(base, composed, list(user_overrides))
