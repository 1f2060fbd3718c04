"""A TaskSpec's custom reward function (seed 001 §6, v3.1) and where verl reads it.

Owns `RewardSpec` (`reward: {path, name}`, name default `compute_score`), the seed's alias
`reward_fn_path: <file>[:<function>]`, and which config keys the run's verl version takes the
function from, decided by composing that version's own config: `reward.custom_reward_function`
where the config has it (verl 0.9.1), else the top-level `custom_reward_function` of older
verl. The decision is made once per config directory and process (a compose costs about a
second) and remembered (the last `KEYS_KEPT`); a config directory whose YAML is larger than
`MAX_CONFIG_BYTES` (a real verl's is about 100 KiB) is not composed in this process, and gets
the current key.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import field_validator

from argus.spec.config import StrictModel

DEFAULT_FUNCTION = "compute_score"
ALIAS = "reward_fn_path"
# verl 0.9.1 (`reward@reward: reward`), and older verl (a top-level group).
REWARD_KEY = "reward.custom_reward_function"
LEGACY_REWARD_KEY = "custom_reward_function"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_UNSAFE = ("'", "\\", "$", ":")


class RewardSpec(StrictModel):
    """The file that defines the function (absolute, or relative to the task's `code_path`,
    as given or resolved from `code:`), and the function's name."""

    path: str
    name: str = DEFAULT_FUNCTION

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        bad = [c for c in _UNSAFE if c in v]
        if bad:
            raise ValueError(f"must not contain {' '.join(repr(c) for c in bad)}")
        if any(ord(c) < 32 for c in v):
            raise ValueError("must not contain control characters")
        if v.startswith("~"):
            raise ValueError("must be an absolute path, or relative to the task's code")
        if not v.endswith(".py"):
            raise ValueError("must be a Python file (.py)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _IDENT.fullmatch(v):
            raise ValueError("must be a Python function name")
        return v


def anchor_reward(data: dict[str, Any]) -> dict[str, Any]:
    """A relative `reward.path` joined to the task's `code_path` (a copy of `data`)."""
    reward, code = data.get("reward"), data.get("code_path")
    if not isinstance(reward, dict) or not isinstance(code, str) or not isinstance(reward.get("path"), str):
        return data
    path = reward["path"]
    if path.startswith(("/", "~")) or not path:
        return data
    return {**data, "reward": {**reward, "path": code.rstrip("/") + "/" + path}}


def apply_alias(data: dict[str, Any]) -> dict[str, Any]:
    """`reward_fn_path: <file>[:<function>]` as `reward: {path, name}` (a copy of `data`).

    Raises:
        ValueError: both `reward` and the alias are given, or the alias is not a string; the
            message starts with the field it names.
    """
    if ALIAS not in data:
        return data
    out = dict(data)
    raw = out.pop(ALIAS)
    if raw is None or raw == "":
        return out
    if "reward" in out and out["reward"] is not None:
        raise ValueError(f"{ALIAS}: give reward or {ALIAS}, not both")
    if not isinstance(raw, str):
        raise ValueError(f"{ALIAS}: must be '<file>[:<function>]'")
    path, _, name = raw.partition(":")
    out["reward"] = {"path": path, "name": name} if name else {"path": path}
    return out


_LOCK = threading.Lock()
_KEYS: OrderedDict[tuple[str, str, float], str] = OrderedDict()
KEYS_KEPT = 256
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def reward_key(config_dir: Path | None, config_name: str) -> str:
    """The config key verl reads the custom reward function from, for the verl whose config is
    in `config_dir`: `reward.custom_reward_function` when composing `config_name` there has it,
    else `custom_reward_function`. Without a config (nothing to compose) the current verl's key.
    """
    if config_dir is None:
        return REWARD_KEY
    main = config_dir / f"{config_name}.yaml"
    try:
        stamp = main.stat().st_mtime
    except OSError:
        return REWARD_KEY
    cache_key = (str(config_dir), config_name, stamp)
    with _LOCK:
        known = _KEYS.get(cache_key)
    if known is None:
        known = _compose_key(config_dir, config_name) if _config_bytes(config_dir) <= MAX_CONFIG_BYTES else REWARD_KEY
        with _LOCK:
            _KEYS[cache_key] = known
            while len(_KEYS) > KEYS_KEPT:
                _KEYS.popitem(last=False)
    return known


def _config_bytes(config_dir: Path) -> int:
    """The size of the YAML files under `config_dir` (stops counting past the limit)."""
    total = 0
    for path in config_dir.rglob("*.yaml"):
        try:
            total += path.stat().st_size
        except OSError:
            continue
        if total > MAX_CONFIG_BYTES:
            break
    return total


def _compose_key(config_dir: Path, config_name: str) -> str:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from argus.spec.hydra_check import HYDRA_LOCK

    with HYDRA_LOCK:
        try:
            with initialize_config_dir(config_dir=str(config_dir), version_base=None):
                cfg = compose(config_name=config_name)
        except Exception:  # does not compose: the overrides' own check will say why
            return REWARD_KEY
    if OmegaConf.select(cfg, REWARD_KEY, default=None, throw_on_missing=False) is not None:
        return REWARD_KEY
    if OmegaConf.select(cfg, LEGACY_REWARD_KEY, default=None, throw_on_missing=False) is not None:
        return LEGACY_REWARD_KEY
    return REWARD_KEY
