"""A TaskSpec's reward function, secrets, W&B and `code:` shorthand, as rendered for verl
(issue 12): the reward's keys decided by composing the run's own verl config (0.9.1's real one,
and an older layout), W&B's run identity in the job's environment, the secrets file named and
never a value, and the warnings a credential-looking env var gets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from argus.spec.config import parse_ray_config
from argus.spec.entrypoint import build_runtime_env
from argus.spec.errors import SpecError
from argus.spec.hydra_check import installed_verl_config_dir
from argus.spec.render import check, prepare_submission, render
from argus.spec.reward import LEGACY_REWARD_KEY, REWARD_KEY, reward_key
from argus.spec.taskspec import parse_task_spec
from conftest import spec_dict

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
SHARED = "/srv/shared"
CFG = parse_ray_config({"shared_root": SHARED})
REWARD = f"{SHARED}/users/alice/code/reward.py"


def spec(workload="grpo", **extra):
    extra.setdefault("code_path", "/nonexistent/code")
    return parse_task_spec(spec_dict(workload, **extra), SHARED)


def overrides_of(rendered) -> dict[str, str]:
    return dict(o.split("=", 1) for o in rendered.overrides)


def problems(**extra) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        spec(**extra)
    return {p.field: p.reason for p in info.value.problems}


# -- reward: fields and the seed's alias ------------------------------------------------------
def test_reward_and_its_alias_give_the_same_spec():
    full = spec(reward={"path": REWARD, "name": "score"})
    alias = spec(reward_fn_path=f"{REWARD}:score")
    assert full.reward == alias.reward and full.reward.name == "score"
    assert spec(reward_fn_path=REWARD).reward.name == "compute_score"
    assert spec(reward={"path": REWARD}).reward.name == "compute_score"


@pytest.mark.parametrize(
    "extra, field, reason",
    [
        ({"reward": {"path": "~/reward.py"}}, "reward.path", "must be an absolute path, or relative"),
        ({"reward": {"path": "/x/reward.txt"}}, "reward.path", "must be a Python file (.py)"),
        ({"reward": {"path": REWARD, "name": "1bad"}}, "reward.name", "must be a Python function name"),
        ({"reward": {"path": REWARD, "fn": "x"}}, "reward.fn", "unknown key"),
        ({"reward": {"path": REWARD}, "reward_fn_path": REWARD}, "reward_fn_path", "not both"),
        ({"reward_fn_path": 3}, "reward_fn_path", "must be '<file>[:<function>]'"),
    ],
)
def test_bad_rewards_name_the_field(extra, field, reason):
    got = problems(**extra)
    assert field in got and reason in got[field], got


def test_a_relative_reward_path_is_in_the_tasks_code():
    assert spec(code_path="/srv/shared/users/a/code/x", reward={"path": "rw/r.py"}).reward.path == (
        "/srv/shared/users/a/code/x/rw/r.py"
    )
    assert spec(code_path="/c/", reward_fn_path="r.py:f").reward.path == "/c/r.py"


def test_sft_has_no_reward():
    assert problems(workload="sft", reward={"path": REWARD}) == {"reward": "SFT has no reward function"}


# -- reward: rendered for the run's verl ------------------------------------------------------
def test_the_reward_composes_against_verl_0_9_1s_real_config():
    verl = installed_verl_config_dir()
    assert verl is not None and (verl / "reward" / "reward.yaml").is_file()
    assert reward_key(verl, "ppo_trainer") == REWARD_KEY == "reward.custom_reward_function"
    s = spec(reward={"path": REWARD, "name": "score"})
    rendered = render(CFG, s, NOW, user="alice")
    ov = overrides_of(rendered)
    assert ov["reward.custom_reward_function.path"] == f"'{REWARD}'"
    assert ov["reward.custom_reward_function.name"] == "score"
    assert "custom_reward_function.path" not in ov
    assert f"reward.custom_reward_function.path='{REWARD}'" in rendered.request.entrypoint
    check(s, rendered)  # composes: raises nothing


def _older_verl(tmp: Path) -> Path:
    """A verl config of the older layout: the function is a top-level group."""
    d = tmp / "verl" / "trainer" / "config"
    d.mkdir(parents=True)
    (d / "ppo_trainer.yaml").write_text(
        "custom_reward_function:\n  path: null\n  name: compute_score\n"
        "algorithm:\n  adv_estimator: gae\n"
        "data:\n  train_files: null\n  val_files: null\n"
        "actor_rollout_ref:\n  model:\n    path: null\n  rollout:\n    name: vllm\n    n: 1\n"
        "critic:\n  model:\n    path: null\n"
        "trainer:\n  logger: [console]\n  project_name: p\n  experiment_name: e\n  nnodes: 1\n"
        "  n_gpus_per_node: 1\n  total_epochs: 1\n  total_training_steps: null\n  save_freq: -1\n"
        "  test_freq: -1\n  default_local_dir: x\n  device: cuda\n  max_actor_ckpt_to_keep: null\n"
        "  max_critic_ckpt_to_keep: null\n"
    )
    return d


def test_an_older_verl_takes_the_top_level_key(tmp_path):
    d = _older_verl(tmp_path)
    assert reward_key(d, "ppo_trainer") == LEGACY_REWARD_KEY
    s = spec(code_path=str(tmp_path), reward={"path": REWARD})
    rendered = render(CFG, s, NOW, user="alice")
    assert rendered.config_dir == d
    ov = overrides_of(rendered)
    assert ov["custom_reward_function.path"] == f"'{REWARD}'"
    assert ov["custom_reward_function.name"] == "compute_score"
    assert not any(k.startswith("reward.") for k in ov)
    check(s, rendered)  # composes against that config


def test_no_reward_renders_no_reward_keys():
    ov = overrides_of(render(CFG, spec(), NOW, user="alice"))
    assert not any("custom_reward_function" in k for k in ov)


# -- W&B ------------------------------------------------------------------------------------
def test_wandb_run_identity_is_the_task_and_resumes():
    s = spec(wandb={"project": "p", "run_name": "r", "entity": "team", "base_url": "https://wandb.example.org"})
    sid = "alice-grpo-20250304-050607-ab12--a02"
    root = PurePosixPath(f"{SHARED}/users/alice/jobs/{sid}")
    env = build_runtime_env(CFG, s, sid, root, "alice")["env_vars"]
    assert env["WANDB_RUN_ID"] == "alice-grpo-20250304-050607-ab12"
    assert env["WANDB_RESUME"] == "allow" and env["WANDB_MODE"] == "online"
    assert env["WANDB_DIR"] == str(root)
    assert env["WANDB_ENTITY"] == "team" and env["WANDB_BASE_URL"] == "https://wandb.example.org"
    ov = overrides_of(render(CFG, s, NOW, submission_id=sid, user="alice"))
    assert ov["trainer.logger"] == "['console','wandb']"
    assert ov["trainer.project_name"] == "'p'" and ov["trainer.experiment_name"] == "'r'"


def test_wandb_online_needs_the_api_key_secret_offline_does_not():
    assert spec(wandb={}).secret_names == ["WANDB_API_KEY"]
    assert spec(wandb={"mode": "offline"}).secret_names == []
    assert spec(wandb={}, secrets=["WANDB_API_KEY", "HF_TOKEN"]).secret_names == ["WANDB_API_KEY", "HF_TOKEN"]
    got = problems(wandb={"mode": "cloud"})
    assert "wandb.mode" in got
    assert "wandb.base_url" in problems(wandb={"base_url": "ftp://x"})


@pytest.mark.parametrize("name", ["WANDB_RUN_ID", "WANDB_RESUME", "ARGUS_SECRETS_FILE"])
def test_env_vars_cannot_set_what_argus_sets(name):
    assert f"env_vars.{name}" in problems(env_vars={name: "x"})


# -- secrets -------------------------------------------------------------------------------
def test_a_task_with_secrets_names_its_attempts_file_never_a_value():
    s = spec(secrets=["HF_TOKEN"], env_vars={"A": "1"})
    sid = "alice-grpo-20250304-050607-ab12--a01"
    rendered = render(CFG, s, NOW, submission_id=sid, user="alice")
    env = rendered.request.runtime_env["env_vars"]
    assert env["ARGUS_SECRETS_FILE"] == f"{SHARED}/users/alice/.secrets/{sid}.json"
    assert env["PYTHONPATH"] == f"/nonexistent/code:{SHARED}/common/argus/pool-shim"
    assert "HF_TOKEN" not in env
    # The job tool (no user) has no secrets: it says so, and names no file.
    plain = render(CFG, s, NOW, submission_id="run-1")
    assert "ARGUS_SECRETS_FILE" not in plain.request.runtime_env["env_vars"]
    assert any("secrets (HF_TOKEN)" in w for w in plain.warnings)


@pytest.mark.parametrize(
    "names, reason",
    [
        (["LD_PRELOAD"], "dynamic loader"),
        (["RAY_RUNTIME_ENV_HOOK"], "configures Ray"),
        (["PYTHONPATH"], "set by Argus"),
        (["1X"], "not a valid environment variable name"),
        (["A", "A"], "listed twice"),
        (["WANDB_DIR"], "only WANDB_API_KEY is one"),
    ],
)
def test_secret_names_are_checked_like_env_vars(names, reason):
    got = problems(secrets=names)
    assert any(reason in r for r in got.values()), got


def test_a_secret_cannot_also_be_a_plain_env_var():
    assert "also in env_vars" in problems(secrets=["HF_TOKEN"], env_vars={"HF_TOKEN": "x"})["secrets"]


def test_credential_looking_env_vars_get_a_warning_pointing_to_secrets():
    rendered = render(CFG, spec(env_vars={"MY_API_KEY": "k", "HF_HOME": "/x", "GH_TOKEN": "t"}), NOW, user="alice")
    flagged = [w.split(" ", 1)[0] for w in rendered.warnings if "looks like a credential" in w]
    assert flagged == ["env_vars.MY_API_KEY", "env_vars.GH_TOKEN"]
    assert all("argus secrets set" in w for w in rendered.warnings if "credential" in w)


# -- code: shorthand -------------------------------------------------------------------------
def test_code_shorthand_is_resolved_by_the_server_only():
    text = f"workload: grpo\ncode: my-proj\nmodel_id: Qwen/Qwen2.5-0.5B\ntrain_file: {SHARED}/common/data/t.parquet\n"
    snap = f"{SHARED}/users/alice/code/" + "a" * 64
    s, rendered = prepare_submission(CFG, text, NOW, user="alice", validate=False, resolve_code=lambda ref: snap)
    assert s.code == "my-proj" and s.code_path == snap
    assert rendered.request.runtime_env["env_vars"]["PYTHONPATH"] == snap
    with pytest.raises(SpecError) as info:
        prepare_submission(CFG, text, NOW, validate=False)
    assert [p.field for p in info.value.problems] == ["code"]
    assert "only the Argus server" in info.value.problems[0].reason

    def unknown(ref: str) -> str:
        raise ValueError(f"no snapshot named or starting with '{ref}'")

    with pytest.raises(SpecError) as info:
        prepare_submission(CFG, text, NOW, validate=False, resolve_code=unknown)
    assert str(info.value.problems[0]) == "code: no snapshot named or starting with 'my-proj'"
    both = text + "code_path: /x\n"
    with pytest.raises(SpecError) as info:
        prepare_submission(CFG, both, NOW, validate=False, resolve_code=lambda ref: snap)
    assert str(info.value.problems[0]) == "code: give code or code_path, not both"
