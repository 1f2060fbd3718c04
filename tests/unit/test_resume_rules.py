"""Which checkpoint a retried attempt resumes from, and what verl is told (`argus.domain.resume`,
`argus.scheduler.resume`): real directories laid out as verl 0.9.1 leaves them, no store.

The store and the scheduler around them are tested in tests/integration/test_api_resume.py, the
whole retry on the real Ray cluster in tests/ray/test_resume_on_ray.py.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from argus.domain.records import Attempt
from argus.domain.resume import (
    ResumePoint,
    override_key,
    resume_overrides,
    tracker_step,
    user_sets_resume,
)
from argus.scheduler.resume import attempt_checkpoint, latest_checkpoint, with_resume
from argus.spec.config import parse_ray_config
from argus.spec.render import check, render
from argus.spec.taskspec import parse_task_spec
from conftest import SHARED, spec_dict

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def saved(root: Path, *steps: int, tracker: int | str | None = None, partial: tuple[int, ...] = ()) -> Path:
    """An attempt's job root whose `checkpoints/` holds `global_step_<N>/actor/` for `steps`
    (then the tracker naming the last of them, or `tracker`), and `partial` step dirs begun
    after it (a save cut short: no tracker update)."""
    ckpt = root / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for step in steps:
        (ckpt / f"global_step_{step}" / "actor").mkdir(parents=True)
        (ckpt / f"global_step_{step}" / "data.pt").write_text("dataloader")
    last = tracker if tracker is not None else (steps[-1] if steps else None)
    if last is not None:
        (ckpt / "latest_checkpointed_iteration.txt").write_text(str(last))
    for step in partial:
        (ckpt / f"global_step_{step}" / "actor").mkdir(parents=True)
    return root


def test_an_attempt_checkpoint_is_the_trackers_step_when_its_directory_exists(tmp_path):
    root = saved(tmp_path / "a01", 2, 4, partial=(6,))
    found = attempt_checkpoint(str(root))
    assert found == ResumePoint(4, str(root / "checkpoints" / "global_step_4"))


@pytest.mark.parametrize(
    "layout",
    [
        {"steps": (), "partial": (2,)},  # a save cut short before the first tracker write
        {"steps": (2,), "tracker": 4},  # the tracker names a directory that is not there
        {"steps": (2,), "tracker": "two"},  # not a number
        {"steps": (2,), "tracker": ""},
    ],
)
def test_an_attempt_without_a_complete_checkpoint_gives_none(tmp_path, layout):
    root = saved(tmp_path / "a01", *layout["steps"], tracker=layout.get("tracker"), partial=layout.get("partial", ()))
    assert attempt_checkpoint(str(root)) is None
    assert attempt_checkpoint(str(tmp_path / "never-ran")) is None  # no checkpoints/ at all


def test_a_step_directory_linked_from_elsewhere_is_never_resumed_from(tmp_path):
    # A job's own code could link global_step_N to another user's checkpoint and then fail.
    other = saved(tmp_path / "users" / "bob" / "jobs" / "b--a01", 7)
    root = tmp_path / "users" / "eve" / "jobs" / "e--a01"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "global_step_7").symlink_to(other / "checkpoints" / "global_step_7")
    (root / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("7")
    assert attempt_checkpoint(str(root)) is None
    assert attempt_checkpoint(str(other)) == ResumePoint(7, str(other / "checkpoints" / "global_step_7"))


def test_the_newest_attempt_with_a_complete_checkpoint_wins(tmp_path):
    a1 = saved(tmp_path / "a01", 2, 4)
    a2 = saved(tmp_path / "a02", 6, 8)  # resumed from a01's 4, saved 6 and 8
    a3 = saved(tmp_path / "a03", partial=(10,))  # resumed from 8, failed while saving 10
    newest_first = [str(a3), str(a2), str(a1)]
    assert latest_checkpoint(newest_first) == ResumePoint(8, str(a2 / "checkpoints" / "global_step_8"))
    assert latest_checkpoint([str(a3), str(a1)]) == ResumePoint(4, str(a1 / "checkpoints" / "global_step_4"))
    assert latest_checkpoint([str(a3)]) is None
    assert latest_checkpoint([]) is None  # a first attempt: nothing before it


def test_tracker_text_is_read_as_verl_reads_it():
    assert [tracker_step(t) for t in ("40", "40\n", " 7 ", "x", "", "-1")] == [40, 40, 7, None, None, None]


@pytest.mark.parametrize(
    ("overrides", "sets"),
    [
        ([], False),
        (["data.train_batch_size=8", "trainer.resume_modes=x"], False),
        (["trainer.resume_mode=disable"], True),
        (["trainer.resume_from_path=/srv/shared/users/u/ckpt/global_step_3"], True),
        (["+trainer.resume_mode=auto"], True),
        (["++trainer.resume_from_path=null"], True),
        (["~trainer.resume_mode"], True),
        ([" trainer.resume_mode = auto"], True),
    ],
)
def test_the_users_own_resume_overrides_are_recognised(overrides, sets):
    assert user_sets_resume(overrides) is sets


def test_override_key():
    assert [override_key(o) for o in ("a.b=1", "+a.b=1", "++a.b=[1,2]", "~a.b", "~a.b=1")] == ["a.b"] * 5


def _attempt(step: int | None, path: str | None) -> Attempt:
    return Attempt(1, "t", 2, "t--a02", None, None, None, "/x", {}, 0.0, None, None, None, False, None, None, None,
                   resumed_from_step=step, resumed_from=path)  # fmt: skip


@pytest.mark.parametrize("workload", ["ppo", "grpo", "sft"])
def test_the_recorded_point_is_added_after_the_specs_overrides_and_composes_with_verl(workload):
    """verl 0.9.1's ppo_trainer and sft_trainer_engine configs both have the two keys."""
    spec = parse_task_spec(spec_dict(workload, overrides=["data.train_batch_size=8"]), SHARED)
    config = parse_ray_config({"shared_root": SHARED})
    rendered = render(config, spec, NOW, submission_id="t--a02", user="alice")
    path = f"{SHARED}/users/alice/jobs/t--a01/checkpoints/global_step_4"
    resumed = with_resume(spec, rendered, _attempt(4, path))
    extra = ["trainer.resume_mode=resume_path", f"trainer.resume_from_path='{path}'"]
    assert (
        resumed.overrides
        == [*rendered.overrides, *extra]
        == [*rendered.overrides, *resume_overrides(ResumePoint(4, path))]
    )
    args = shlex.split(resumed.request.entrypoint)
    assert args[:3] == shlex.split(rendered.request.entrypoint)[:3]
    assert args[3:] == resumed.overrides  # each one shell-quoted, as `build_entrypoint` quotes them
    assert resumed.request.runtime_env == rendered.request.runtime_env
    check(spec, resumed, "test")  # composes against the installed verl's config: no SpecError


def test_an_attempt_that_did_not_resume_is_submitted_unchanged():
    spec = parse_task_spec(spec_dict("ppo"), SHARED)
    rendered = render(parse_ray_config({"shared_root": SHARED}), spec, NOW, submission_id="t--a02", user="alice")
    assert with_resume(spec, rendered, _attempt(None, None)) is rendered
