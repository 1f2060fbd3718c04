"""Render and check a run without submitting it (`argus spec render|validate`, and submit).

Owns choosing the submission id (the spec's, else a generated one), the job root, and the
offline Hydra check of the rendered overrides. Pure except for reading the verl config files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, partial
from pathlib import Path, PurePosixPath

from argus.domain.ids import new_submission_id
from argus.domain.paths import job_root as compute_job_root
from argus.spec.config import RayConfig
from argus.spec.entrypoint import CONFIG_NAMES, SubmissionRequest, build_overrides, build_submission
from argus.spec.errors import Problem, SpecError
from argus.spec.hydra_check import check_overrides, find_verl_config_dir
from argus.spec.loader import load_yaml_mapping
from argus.spec.reward import REWARD_KEY, reward_key
from argus.spec.taskspec import ResolveCode, TaskSpec, parse_task_spec


@dataclass(frozen=True)
class Rendered:
    """A rendered run. Its `request` (entrypoint, runtime env) is built when first read: the
    checks of an accepted task need only the overrides, and it is built at dispatch."""

    submission_id: str
    job_root: PurePosixPath
    overrides: list[str]
    config_dir: Path | None
    warnings: list[str]
    build: Callable[[], SubmissionRequest] = field(repr=False, compare=False)

    @cached_property
    def request(self) -> SubmissionRequest:
        return self.build()


def render(
    config: RayConfig,
    spec: TaskSpec,
    now: datetime,
    submission_id: str | None = None,
    user: str | None = None,
) -> Rendered:
    """What would be submitted for `spec`; nothing is checked against verl yet."""
    sid = submission_id or spec.submission_id or new_submission_id(spec.workload, now)
    root = compute_job_root(config.shared_root, sid, user)
    config_dir = find_verl_config_dir(spec.code_path)
    key = reward_key(config_dir, CONFIG_NAMES[spec.workload]) if spec.reward is not None else REWARD_KEY
    overrides = build_overrides(spec, sid, root, key)
    warnings = []
    if config_dir is None:
        warnings.append(
            "no verl config found (neither <code_path>/verl/trainer/config nor an installed "
            "verl): overrides were not checked"
        )
    if spec.secret_names and user is None:
        warnings.append(
            f"secrets ({', '.join(spec.secret_names)}) are handed to a job only by the Argus server "
            "(`argus secrets set`); this submission gets none"
        )
    for name in spec.secret_like_env:
        warnings.append(
            f"env_vars.{name} looks like a credential: its value is stored with the task and shown to Ray; "
            f"keep it as a secret instead (`argus secrets set {name}`, then `secrets: [{name}]`)"
        )
    build = partial(build_submission, config, spec, sid, root, user, key, overrides)
    return Rendered(sid, root, overrides, config_dir, warnings, build)


def check(spec: TaskSpec, rendered: Rendered, source: str = "task spec") -> None:
    """Compose the rendered overrides against verl's config.

    Raises:
        SpecError: a key does not exist in verl's config, or a value has the wrong type.
    """
    if rendered.config_dir is None:
        return
    problems: list[Problem] = check_overrides(
        CONFIG_NAMES[spec.workload], rendered.overrides, rendered.config_dir, spec.overrides
    )
    if problems:
        raise SpecError(source, problems)


def prepare_submission(
    config: RayConfig,
    text: str,
    now: datetime,
    source: str = "task spec",
    submission_id: str | None = None,
    user: str | None = None,
    validate: bool = True,
    resolve_code: ResolveCode | None = None,
) -> tuple[TaskSpec, Rendered]:
    """TaskSpec YAML text to a checked submission: parse, render, compose against verl.

    The one path from a user's YAML to what Ray gets, for the CLI, the demo and the tests.

    Args:
        resolve_code: resolves a `code:` snapshot reference (the server's); None refuses one.

    Raises:
        SpecError: the YAML, a field, or an override is invalid.
    """
    spec = parse_task_spec(load_yaml_mapping(text, source), config.shared_root, source, resolve_code)
    rendered = render(config, spec, now, submission_id=submission_id, user=user)
    if validate:
        check(spec, rendered, source)
    return spec, rendered
