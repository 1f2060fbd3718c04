"""Owns turning the command line's Hydra overrides into a config.

When the real verl is installed (found through package metadata, never through
``import verl``, which resolves to this stand-in), the overrides are composed
with Hydra against verl's own config, so a misspelled key fails exactly as it
fails in verl (``ConfigCompositionException: Could not override '...'``).
``VERL_SIM_CONFIG_DIR`` may point to another config directory.  Without any
config the overrides are only parsed (Hydra's override grammar) and laid over a
few defaults.

Values are read with :func:`value`, which selects single keys and never
resolves the whole config (verl's config uses resolvers this process may lack).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR_ENV = "VERL_SIM_CONFIG_DIR"


def find_verl_config_dir() -> Path | None:
    """The config directory to check overrides against, or None if there is none."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{CONFIG_DIR_ENV}={override!r} is not a directory")
        return path.resolve()
    try:
        dist = importlib.metadata.distribution("verl")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("verl/trainer/config")))
    return path.resolve() if path.is_dir() else None


def compose_config(overrides: Sequence[str], config_name: str, config_dir: Path | str) -> DictConfig:
    """Compose ``config_name`` from ``config_dir`` with the overrides, as verl's ``@hydra.main`` does.

    Hydra's exceptions (e.g. ``ConfigCompositionException``) propagate unchanged.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Parse override strings with Hydra's grammar into a nested dict (no config to check against)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    tree: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override():
            raise ValueError(f"verl-sim: sweep overrides are not supported: {override.input_line}")
        *parents, leaf = override.key_or_group.split(".")
        node = tree
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if override.is_delete():
            node.pop(leaf, None)
        else:
            node[leaf] = override.value()
    return tree


def load_config(
    overrides: Sequence[str], config_name: str, fallback_defaults: Mapping[str, Any]
) -> tuple[DictConfig, str]:
    """The config for this run and a sentence saying how the overrides were checked."""
    config_dir = find_verl_config_dir()
    if config_dir is not None and (config_dir / f"{config_name}.yaml").is_file():
        cfg = compose_config(overrides, config_name, config_dir)
        return cfg, f"overrides checked against {config_dir / (config_name + '.yaml')}"
    parsed = OmegaConf.create(parse_overrides(overrides))
    cfg = OmegaConf.merge(OmegaConf.create(dict(fallback_defaults)), parsed)
    where = f"{config_dir} has no {config_name}.yaml" if config_dir else "no verl config found"
    return cfg, f"overrides were NOT checked against a verl config ({where}); parsed only"


def value(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """The plain-Python value at dotted ``key`` (``default`` if absent; None stays None)."""
    try:
        found = OmegaConf.select(cfg, key, default=default)
    except Exception:  # an interpolation needing a resolver that is not registered here
        found = OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
    if OmegaConf.is_config(found):
        return OmegaConf.to_container(found, resolve=True)
    return found
