"""Offline Hydra check of rendered overrides against the REAL verl 0.9.1 config."""

from __future__ import annotations

from datetime import UTC, datetime, timezone
from pathlib import Path

import pytest

from argus.spec.config import parse_ray_config
from argus.spec.errors import SpecError
from argus.spec.hydra_check import check_overrides, find_verl_config_dir, installed_verl_config_dir
from argus.spec.render import check, render
from argus.spec.taskspec import parse_task_spec
from conftest import spec_dict

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
CFG = parse_ray_config({"shared_root": "/srv/shared"})


@pytest.fixture(scope="module")
def verl_dir() -> Path:
    found = installed_verl_config_dir()
    assert found is not None, "verl 0.9.1 must be installed (without deps) in the venv"
    return found


def spec(workload="ppo", **extra):
    extra.setdefault("code_path", "/nonexistent/code")
    return parse_task_spec(spec_dict(workload, **extra), "/srv/shared")


def check_problems(s) -> list:
    rendered = render(CFG, s, NOW)
    with pytest.raises(SpecError) as info:
        check(s, rendered, "job.yaml")
    assert info.value.source == "job.yaml"
    return info.value.problems


def test_installed_verl_config_is_the_real_one(verl_dir):
    assert (verl_dir / "ppo_trainer.yaml").is_file()
    assert (verl_dir / "sft_trainer_engine.yaml").is_file()
    assert "site-packages" in str(verl_dir) or "dist-packages" in str(verl_dir)
    assert find_verl_config_dir("/nonexistent/code") == verl_dir
    assert find_verl_config_dir(None) == verl_dir


def test_config_dir_env_override(monkeypatch, tmp_path, verl_dir):
    monkeypatch.setenv("ARGUS_VERL_CONFIG_DIR", str(tmp_path))
    assert installed_verl_config_dir() == tmp_path
    monkeypatch.setenv("ARGUS_VERL_CONFIG_DIR", str(tmp_path / "missing"))
    assert installed_verl_config_dir() is None


@pytest.mark.parametrize(
    "workload, extra",
    [
        ("ppo", {}),
        (
            "ppo",
            {
                "critic_model_id": "/models/critic",
                "val_file": "/data/val.parquet",
                "total_training_steps": 20,
                "wandb": {"project": "p", "run_name": "r 1"},
            },
        ),
        ("grpo", {"rollout_n": 8, "rollout_engine": "sglang", "nnodes": 2, "n_gpus_per_node": 8}),
        ("sft", {}),
        ("sft", {"val_file": "/data/val.parquet", "trainer_device": "cpu"}),
    ],
)
def test_rendered_overrides_compose(verl_dir, workload, extra):
    s = spec(workload, **extra)
    rendered = render(CFG, s, NOW)
    assert rendered.config_dir == verl_dir
    check(s, rendered)  # raises nothing


def test_paths_with_spaces_and_user_overrides_compose(verl_dir):
    s = spec(
        "grpo",
        model_id="/models/my model",
        train_file="/data/my data/train.parquet",
        experiment_name="exp with spaces & more",
        # correctly typed user overrides, and an appended (+) key
        overrides=[
            "data.train_batch_size=16",
            "actor_rollout_ref.actor.use_kl_loss=true",
            "trainer.balance_batch=false",
            "+trainer.argus_extra=1",
        ],
    )
    check(s, render(CFG, s, NOW))


def test_misspelled_override_reports_hydras_message(verl_dir):
    (problem,) = check_problems(spec("ppo", overrides=["trainer.totl_epochs=3"]))
    assert problem.field == "overrides"
    assert "Could not override 'trainer.totl_epochs'" in problem.reason
    assert f"checked against {verl_dir}" in problem.reason


def test_misspelled_override_in_sft(verl_dir):
    (problem,) = check_problems(spec("sft", overrides=["model.pathh=/m"]))
    assert "Could not override 'model.pathh'" in problem.reason


def test_ppo_only_key_does_not_exist_in_sft_config(verl_dir):
    (problem,) = check_problems(spec("sft", overrides=["actor_rollout_ref.rollout.n=2"]))
    assert "Could not override 'actor_rollout_ref.rollout.n'" in problem.reason


def test_wrongly_typed_int_override_names_the_key():
    problems = check_problems(spec("sft", overrides=["data.train_batch_size=abc"]))
    assert [(p.field, p.reason) for p in problems] == [
        ("overrides[data.train_batch_size]", "expects a number, got 'abc'")
    ]


def test_every_typed_problem_is_listed_with_its_key():
    problems = check_problems(
        spec(
            "ppo",
            overrides=[
                "data.train_batch_size=abc",
                "trainer.balance_batch=maybe",
                "data.max_prompt_length=256",
            ],
        )
    )
    assert [(p.field, p.reason) for p in problems] == [
        ("overrides[data.train_batch_size]", "expects a number, got 'abc'"),
        ("overrides[trainer.balance_batch]", "expects true or false, got 'maybe'"),
    ]


def test_hydra_grammar_error_is_a_problem(verl_dir):
    # A space before '=' is not Hydra syntax: the spec refuses it, and so does the compose.
    with pytest.raises(SpecError) as info:
        spec("ppo", overrides=["data.train_batch_size =8"])
    assert [p.field for p in info.value.problems] == ["overrides[0]"]
    (problem,) = check_overrides("ppo_trainer", ["data.train_batch_size =8"], verl_dir)
    assert problem.field == "overrides"
    assert "data.train_batch_size =8" in problem.reason


# -- <code_path>/verl/trainer/config wins -------------------------------------------------------
TINY_PPO = """\
algorithm:
  adv_estimator: gae
data:
  train_files: null
  val_files: null
  only_in_snapshot: 1
actor_rollout_ref:
  model:
    path: null
  rollout:
    name: vllm
    n: 1
critic:
  model:
    path: null
trainer:
  logger: [console]
  project_name: x
  experiment_name: x
  nnodes: 1
  n_gpus_per_node: 1
  total_epochs: 1
  save_freq: -1
  test_freq: -1
  default_local_dir: x
  device: cuda
  max_actor_ckpt_to_keep: null
  max_critic_ckpt_to_keep: null
"""


@pytest.fixture
def snapshot(tmp_path) -> Path:
    code = tmp_path / "code"
    cfg_dir = code / "verl" / "trainer" / "config"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "ppo_trainer.yaml").write_text(TINY_PPO)
    return code


def test_code_path_config_is_preferred(snapshot, verl_dir):
    s = spec("ppo", code_path=str(snapshot), overrides=["data.only_in_snapshot=2"])
    rendered = render(CFG, s, NOW)
    expected = snapshot / "verl" / "trainer" / "config"
    assert rendered.config_dir == expected != verl_dir
    assert find_verl_config_dir(str(snapshot)) == expected
    check(s, rendered)  # a key that exists only in the snapshot composes


def test_key_missing_in_snapshot_fails_though_valid_in_real_verl(snapshot, verl_dir):
    # data.train_batch_size exists in verl 0.9.1 ...
    real = spec("ppo", overrides=["data.train_batch_size=8"])
    check(real, render(CFG, real, NOW))
    # ... but not in the job's own snapshot, which is what the job will run.
    s = spec("ppo", code_path=str(snapshot), overrides=["data.train_batch_size=8"])
    (problem,) = check_problems(s)
    assert "Could not override 'data.train_batch_size'" in problem.reason
    assert str(snapshot / "verl" / "trainer" / "config") in problem.reason


def test_check_overrides_directly_returns_empty_list(verl_dir):
    assert check_overrides("ppo_trainer", ["trainer.total_epochs=2"], verl_dir) == []
    problems = check_overrides("ppo_trainer", ["trainer.total_epochs=2"], verl_dir / "nope")
    assert len(problems) == 1 and problems[0].field == "overrides"


def test_no_config_dir_skips_the_check(monkeypatch, tmp_path):
    monkeypatch.setenv("ARGUS_VERL_CONFIG_DIR", str(tmp_path / "absent"))
    s = spec("ppo", overrides=["trainer.totl_epochs=3"])
    rendered = render(CFG, s, NOW)
    assert rendered.config_dir is None
    check(s, rendered)  # nothing to check against: no error, a warning instead
    assert rendered.warnings
