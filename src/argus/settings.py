"""The server's one YAML config: `ray`, `service`, `scheduler` and `nodes` sections.

Owns the shape of the file `argus server --config FILE` reads, its defaults, and the
environment overrides: `ARGUS_<SECTION>_<KEY>` (for example `ARGUS_SERVICE_PORT=9000`,
`ARGUS_SCHEDULER_RETRY_INTERVAL_S=5`, `ARGUS_RAY_ADDRESS=http://10.0.0.1:8265`) replaces that key,
parsed as YAML scalars. The `ray` section is the foundation's RayConfig. Unknown keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator

from argus.domain.durations import parse_duration
from argus.spec.config import RayConfig, StrictModel, default_shared_root, parse_ray_config
from argus.spec.errors import Problem, SpecError
from argus.spec.loader import expand_vars, load_yaml_mapping, parse_model, read_text

ENV_PREFIX = "ARGUS_"
SECTIONS = ("ray", "service", "scheduler", "nodes")


class ServiceSettings(StrictModel):
    """The HTTP side: where it listens, its database, its limits and the admin token."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # None: SQLite at <shared_root>/common/db/argus.sqlite3.
    db_url: str | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    admin_token_env: str = "MVP_INTERNAL_TOKEN"
    # A token that may read `/metrics` and the Ray targets for Prometheus, and nothing else (optional).
    metrics_token_env: str = "ARGUS_METRICS_TOKEN"
    log_level: str = "warning"
    # Per user (the admin is not limited): submissions a second, and how many may come at once
    # after a pause; past it, 429 with Retry-After. None: no limit.
    submit_rate_per_s: float | None = Field(default=20.0, gt=0)
    submit_burst: int = Field(default=40, ge=1)
    # Uncached verl checks (a Hydra compose each): worker processes, and how many checks a
    # user may have waiting before submissions get 429.
    check_workers: int = Field(default=2, ge=1, le=64)
    # Threads that parse and store submissions, and threads that serve the other (synchronous)
    # routes: the two share one interpreter, so under a burst these counts set their shares.
    accept_threads: int = Field(default=6, ge=1, le=64)
    read_threads: int = Field(default=2, ge=1, le=64)
    # Threads for the routes that may wait on Ray or SSH (logs, queue, nodes, cancel), apart from both.
    ray_threads: int = Field(default=8, ge=1, le=64)
    check_queue_per_user: int = Field(default=64, ge=1)
    # SQLite: a write-ahead log past this size is checkpointed and truncated.
    sqlite_wal_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    # Code snapshots (`argus code push`): the most one may hold, unpacked (and uploaded).
    code_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    # The environment variable holding the key users' secrets are encrypted with (a Fernet key);
    # unset: the secrets routes answer 503 and tasks that name secrets are refused.
    secrets_key_env: str = "ARGUS_SECRETS_KEY"
    # A reward function's check at submit: the whole check (its job's start included).
    reward_check_timeout_s: float = Field(default=90.0, gt=0)
    # The web console (`/ui`): how long a login lasts, and the environment variable holding the
    # key its session cookies are signed with (unset: a random key per server start, so
    # console logins end when the server restarts).
    ui_session_ttl_h: float = Field(default=12.0, gt=0)
    ui_session_key_env: str = "ARGUS_UI_SESSION_KEY"
    # The console's cookies carry `Secure`: true, false, or null (when the request came over https;
    # set true behind a TLS proxy that uvicorn is not told about).
    ui_cookie_secure: bool | None = None
    # Processes that serve the API (`argus.service.api_processes`): one address, a socket each
    # (SO_REUSEPORT: the kernel spreads new connections over them); the rate limit, token
    # revocation, console logins and request metrics are shared. More than one needs
    # `scheduler.own_process`.
    api_processes: int = Field(default=1, ge=1, le=32)


class SchedulerSettings(StrictModel):
    """The scheduler loop's pacing and retry policy."""

    enabled: bool = True
    # `argus server` runs the scheduler loop and the GPU sampler in a child process of their own
    # (`argus.service.scheduler_process`), so their passes never hold the API's interpreter;
    # false: threads of the server process.
    own_process: bool = True
    interval_s: float = Field(default=2.0, gt=0)
    # Passes that nudges start are at least this far apart (bursts are served together).
    min_tick_gap_s: float = Field(default=0.05, ge=0)
    # Full passes (sync with Ray, plan the whole queue) take at most this share of a core: one
    # that took c seconds of CPU (waits on Ray not counted) is followed by the next after
    # c / full_pass_share instead of interval_s, at most 5 intervals later. It matters only when
    # a queue of tens of thousands makes a full pass long; null: no bound.
    full_pass_share: float | None = Field(default=0.1, gt=0, le=1)
    retry_interval_s: float = Field(default=30.0, ge=0)
    # None: bounded by GPUs only (the seeds' v2.0 default was 1).
    max_running_tasks: int | None = Field(default=None, ge=1)
    # Attempts for a failure worth retrying (PLATFORM, NCCL, NODE_LOST); other causes end the task at once.
    max_attempts: int = Field(default=3, ge=1)
    # fifo (the seeds'), easy (FIFO + EASY backfill) or default (priority, fair share, backfill).
    policy: Literal["fifo", "easy", "default"] = "default"
    # A task without `time_limit` gets the default; none may ask for more than the maximum.
    default_time_limit: str | int = "24h"
    max_time_limit: str | int = "7d"
    # Per user: GPUs held at once, and GPU-hours over the last 24 hours (None: no limit).
    user_max_gpus: float | None = Field(default=None, gt=0)
    user_gpu_hours_per_day: float | None = Field(default=None, gt=0)
    # Fair share: GPU-hours used count half as much after this many hours.
    fair_share_half_life_h: float = Field(default=168.0, gt=0)
    # GPU utilisation and memory of running attempts, read from Ray's metrics agents this often
    # (`argus.scheduler.gpu_sampler`; only nodes with real GPUs report them). 0: never.
    gpu_sample_interval_s: float = Field(default=30.0, ge=0)
    # priority: a waiting task whose gang cannot fit may stop running `preemptible` tasks of lower
    # priority (`argus.scheduler.preempt`); a task preempted before is not preempted again until
    # its attempt has run `min_run_before_preempt`.
    preemption: Literal["off", "priority"] = "off"
    min_run_before_preempt: str | int = "10m"

    @field_validator("preemption", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        """YAML reads a bare `off` as false: that is `off` here."""
        return "off" if v is False else v

    @field_validator("preemption")
    @classmethod
    def _needs_priority_order(cls, v: str, info: ValidationInfo) -> str:
        """Preemption needs an order that puts the higher priority first (`default`)."""
        if v == "priority" and info.data.get("policy") != "default":
            raise ValueError(
                "needs policy: default (fifo and easy go by submission time, so a preempted task "
                "would start again ahead of the task it made room for)"
            )
        return v

    @field_validator("default_time_limit", "max_time_limit", "min_run_before_preempt")
    @classmethod
    def _duration(cls, v: str | int) -> str | int:
        parse_duration(v)
        return v

    @property
    def default_time_limit_s(self) -> float:
        return parse_duration(self.default_time_limit)

    @property
    def max_time_limit_s(self) -> float:
        return parse_duration(self.max_time_limit)

    @property
    def min_run_before_preempt_s(self) -> float:
        return parse_duration(self.min_run_before_preempt)


class NodesSettings(StrictModel):
    """Managed nodes: how Argus reaches them over SSH and starts their node agent."""

    # The command that runs Argus on a node (`<agent_command> node-agent …`); a path or a word.
    agent_command: str = Field(default="argus", min_length=1)
    # The shared root as the nodes see it; None: the same path as `ray.shared_root`.
    shared_root: str | None = None
    # Where the private keys that registrations name live (and `known_hosts`).
    key_dir: str = "~/.argus/keys"
    ssh_connect_timeout_s: float = Field(default=10.0, gt=0)
    # A started agent whose node has not joined Ray by then fails the node.
    join_timeout_s: float = Field(default=120.0, gt=0)
    reconcile_interval_s: float = Field(default=2.0, gt=0)
    # How long `offline` waits for the agent to exit after SIGTERM.
    agent_stop_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("shared_root")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path")
        return v


class ArgusSettings(StrictModel):
    ray: RayConfig = Field(default_factory=RayConfig)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    nodes: NodesSettings = Field(default_factory=NodesSettings)

    @field_validator("ray", mode="before")
    @classmethod
    def _ray(cls, v: Any) -> Any:
        return parse_ray_config(v, "ray") if isinstance(v, dict) else v

    @property
    def shared_root(self) -> str:
        return self.ray.shared_root

    @property
    def cluster_name(self) -> str:
        """The Ray cluster's name (head discovery, hold files); `argus` when not configured."""
        return self.ray.cluster_name or "argus"

    @property
    def nodes_shared_root(self) -> str:
        """The shared root as the nodes see it."""
        return self.nodes.shared_root or self.ray.shared_root

    @property
    def db_url(self) -> str:
        """The configured URL, else SQLite under `<shared_root>/common/db/`."""
        if self.service.db_url:
            return self.service.db_url
        return f"sqlite:///{Path(self.shared_root) / 'common' / 'db' / 'argus.sqlite3'}"

    def admin_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if environ is None else environ
        return env.get(self.service.admin_token_env) or None

    def metrics_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The metrics-only token, from `service.metrics_token_env` (None when unset)."""
        env = os.environ if environ is None else environ
        return env.get(self.service.metrics_token_env) or None

    def ui_session_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key console session cookies are signed with, from `service.ui_session_key_env`."""
        env = os.environ if environ is None else environ
        return env.get(self.service.ui_session_key_env) or None

    def secrets_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key users' secrets are encrypted with, from `service.secrets_key_env`."""
        env = os.environ if environ is None else environ
        return env.get(self.service.secrets_key_env) or None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                models: dict[str, type[StrictModel]] = {
                    "ray": RayConfig,
                    "service": ServiceSettings,
                    "scheduler": SchedulerSettings,
                    "nodes": NodesSettings,
                }
                model = models[section]
                if key in model.model_fields:
                    try:
                        value = yaml.safe_load(raw) if raw != "" else None
                    except yaml.YAMLError:
                        value = raw
                    field = model.model_fields[key]
                    if field.annotation in (str, str | None) and value is not None:
                        value = raw
                    out.setdefault(section, {})[key] = value
                break
    return out


def parse_settings(
    data: Mapping[str, Any], source: str = "server config", environ: Mapping[str, str] | None = None
) -> ArgusSettings:
    """Validate a server config mapping, with environment overrides applied on top.

    Raises:
        SpecError: a section or key is unknown, or a value is invalid.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, values in _env_overrides(env).items():
        current = raw.get(section) or {}
        if not isinstance(current, dict):
            raise SpecError(source, [Problem(section, "must be a mapping")])
        raw[section] = {**current, **values}
    ray = raw.get("ray") or {}
    if isinstance(ray, dict):
        ray = dict(ray)
        root = ray.get("shared_root") or default_shared_root()
        ray.setdefault("shared_root", root)
        raw["ray"] = ray
        if isinstance(root, str):
            for section in ("service", "nodes"):
                if isinstance(raw.get(section), dict):
                    raw[section] = expand_vars(raw[section], {"shared_root": root})
    settings = parse_model(ArgusSettings, raw, source)
    if settings.service.api_processes > 1 and settings.scheduler.enabled and not settings.scheduler.own_process:
        raise SpecError(
            source,
            [
                Problem(
                    "service.api_processes",
                    "more than 1 needs scheduler.own_process: true (the other API processes "
                    "cannot reach a scheduler that runs as a thread of the first)",
                )
            ],
        )
    return settings


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> ArgusSettings:
    """Read the server config file (defaults when `path` is None)."""
    if path is None:
        return parse_settings({}, "default server config", environ)
    text = read_text(path)
    return parse_settings(load_yaml_mapping(text, str(path)), str(path), environ)


def dump_settings(settings: ArgusSettings) -> str:
    """The config as YAML (what `argus up` writes for the server it starts)."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
