"""RayConfig: the stable, reusable half of a submission (seed 000 §3.1).

Owns where the cluster is (`address`), where shared storage is (`shared_root`), and how the
driver is forced onto a worker (`entrypoint_num_cpus`, `entrypoint_resources`, default
`{"worker_node": 1}`, a resource only worker nodes offer). `${shared_root}` expands inside
values. Unknown keys are refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from argus.spec.loader import expand_vars, load_yaml_mapping, parse_model, read_text

DEFAULT_SHARED_ROOT_ENV = "ARGUS_SHARED_ROOT"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The default `entrypoint_resources`: a resource only worker nodes offer (seed 000 §3.1).
WORKER_NODE_RESOURCE: dict[str, float] = {"worker_node": 1}


def default_shared_root() -> str:
    """`$ARGUS_SHARED_ROOT`, else `~/.argus/shared` (production sets `/private`)."""
    return os.environ.get(DEFAULT_SHARED_ROOT_ENV) or str(Path.home() / ".argus" / "shared")


class StrictModel(BaseModel):
    """Base of every input model: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_env_vars(value: dict[str, Any]) -> dict[str, str]:
    """Environment variable names must be identifiers and values scalars (kept as strings)."""
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"'{key}' is not a valid environment variable name")
        if isinstance(val, (dict, list)) or val is None:
            raise ValueError(f"value of '{key}' must be a string or number")
        out[key] = str(val).lower() if isinstance(val, bool) else str(val)
    return out


class RuntimeEnvConfig(StrictModel):
    env_vars: dict[str, Any] = Field(default_factory=dict)

    @field_validator("env_vars")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, str]:
        return check_env_vars(v)


class RayConfig(StrictModel):
    """How to reach the cluster and where the driver may run."""

    address: str = "http://127.0.0.1:8265"
    # When set, the head is found through `<shared_root>/ray/discovery/<cluster_name>/head.json`
    # (seed 004 §M4) at each use, and `address` is only the fallback for tools that need one.
    cluster_name: str | None = None
    shared_root: str = Field(default_factory=default_shared_root)
    entrypoint_num_cpus: float = Field(default=1, ge=0)
    entrypoint_resources: dict[str, float] = Field(default_factory=lambda: dict(WORKER_NODE_RESOURCE))
    runtime_env: RuntimeEnvConfig = Field(default_factory=RuntimeEnvConfig)
    user_code_path: str = "${shared_root}/user/code"

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^/\s:]+(:\d+)?/?", v):
            raise ValueError("must be the dashboard URL, e.g. http://127.0.0.1:8265")
        return v.rstrip("/")

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("shared_root")
    @classmethod
    def _shared_root(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path")
        return os.path.normpath(v)

    @field_validator("entrypoint_resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if amount <= 0:
                raise ValueError(f"'{name}' must be positive")
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"'{name}' is not a custom resource; use entrypoint_num_cpus")
        return v


def parse_ray_config(data: dict[str, Any], source: str = "ray config") -> RayConfig:
    """Validate a RayConfig mapping, expanding `${shared_root}` in its values."""
    raw = dict(data)
    raw.setdefault("user_code_path", RayConfig.model_fields["user_code_path"].default)
    root = raw.get("shared_root")
    if root is None:
        root = default_shared_root()
    if isinstance(root, str):
        if root.startswith("/"):
            root = os.path.normpath(root)
        raw = expand_vars(raw, {"shared_root": root})
    return parse_model(RayConfig, raw, source)


def load_ray_config(path: str | Path | None) -> tuple[RayConfig, str]:
    """Load a RayConfig file (or the defaults when `path` is None); returns (config, text)."""
    if path is None:
        return parse_ray_config({}, "default ray config"), ""
    text = read_text(path)
    return parse_ray_config(load_yaml_mapping(text, str(path)), str(path)), text
