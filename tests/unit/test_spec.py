"""TaskSpec and RayConfig: parsing, defaults, `${shared_root}` expansion, field-level errors."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from argus.spec.config import RayConfig, load_ray_config, parse_ray_config
from argus.spec.entrypoint import build_entrypoint, build_submission
from argus.spec.errors import Problem, SpecError
from argus.spec.loader import expand_vars, load_yaml_mapping
from argus.spec.taskspec import (
    DEFAULT_SAVE_FREQ,
    DEFAULT_TRAINER_DEVICE,
    MANAGED_KEYS,
    RESERVED_ENV_VARS,
    TaskSpec,
    load_task_spec,
    parse_task_spec,
)
from conftest import SHARED, spec_dict


def parse(workload: str = "ppo", **extra) -> TaskSpec:
    return parse_task_spec(spec_dict(workload, **extra), SHARED)


def problems(workload: str = "ppo", **extra) -> dict[str, str]:
    """field -> reason of the SpecError that parsing raises (fails if it parses)."""
    with pytest.raises(SpecError) as info:
        parse(workload, **extra)
    return {p.field: p.reason for p in info.value.problems}


def ray_problems(data: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_ray_config(data)
    return {p.field: p.reason for p in info.value.problems}


# -- valid specs and defaults -----------------------------------------------------------------
def test_ppo_spec_parses_with_seed_defaults():
    spec = parse("ppo")
    assert spec.workload == "ppo"
    assert spec.save_freq == DEFAULT_SAVE_FREQ == 10
    assert spec.max_ckpt_to_keep == 3
    assert spec.rollout_engine == "vllm"
    assert spec.trainer_device == "cuda"
    assert (spec.nnodes, spec.n_gpus_per_node, spec.total_epochs) == (1, 1, 1)
    assert spec.test_freq == -1
    assert spec.submission_id is None and spec.val_file is None and spec.wandb is None
    assert spec.overrides == [] and spec.env_vars == {}


def test_ppo_critic_defaults_to_the_actor_model():
    spec = parse("ppo")
    assert spec.critic_model_id is None
    assert spec.effective_critic_model == "/models/Qwen2.5-0.5B-Instruct"
    other = parse("ppo", critic_model_id="/models/critic")
    assert other.effective_critic_model == "/models/critic"


def test_rollout_n_defaults_5_for_grpo_and_1_for_ppo():
    assert parse("grpo").effective_rollout_n == 5
    assert parse("ppo").effective_rollout_n == 1
    assert parse("grpo", rollout_n=8).effective_rollout_n == 8


def test_sft_spec_parses():
    spec = parse("sft", val_file="/data/gsm8k/test.parquet", nnodes=2, n_gpus_per_node=4)
    assert spec.workload == "sft"
    assert spec.val_file == "/data/gsm8k/test.parquet"
    assert spec.total_gpus == 8


def test_empty_submission_id_means_none():
    assert parse(submission_id="").submission_id is None
    assert parse(submission_id="run-1.a_b").submission_id == "run-1.a_b"


@pytest.mark.parametrize("workload", ["ppo", "grpo", "sft"])
def test_null_trainer_device_is_the_workload_default(workload):
    """Seed 003 §3 writes `trainer_device: null`: the same spec, and the same command, as leaving it out."""
    given, left_out = parse(workload, trainer_device=None), parse(workload)
    assert given.trainer_device == left_out.trainer_device == DEFAULT_TRAINER_DEVICE == "cuda"
    assert given == left_out
    cfg = parse_ray_config({"shared_root": SHARED})
    root = PurePosixPath(SHARED) / "jobs" / "run-1"
    assert build_submission(cfg, given, "run-1", root) == build_submission(cfg, left_out, "run-1", root)
    assert "trainer.device=cuda" in build_entrypoint(given, "run-1", root).split()


def test_trainer_device_still_refuses_other_values():
    assert problems(trainer_device="tpu") == {"trainer_device": "Input should be 'cuda', 'cpu' or 'npu'"}
    assert problems(trainer_device="") == {"trainer_device": "Input should be 'cuda', 'cpu' or 'npu'"}
    assert parse("sft", trainer_device="cpu").trainer_device == "cpu"


def test_empty_submission_id_and_null_val_file_are_left_out():
    given = parse(submission_id="", val_file=None)
    assert given.submission_id is None and given.val_file is None
    assert given == parse()


def test_spec_is_frozen():
    spec = parse()
    with pytest.raises(Exception, match="frozen"):
        spec.nnodes = 4  # type: ignore[misc]


# -- ${shared_root} expansion -------------------------------------------------------------------
def test_shared_root_expands_in_task_spec_values():
    spec = parse_task_spec(
        spec_dict(
            code_path="${shared_root}/user/code",
            train_file="${shared_root}/data/train.parquet",
            env_vars={"CACHE": "${shared_root}/cache", "OTHER": "${HOME}/x"},
        ),
        "/private",
    )
    assert spec.code_path == "/private/user/code"
    assert spec.train_file == "/private/data/train.parquet"
    assert spec.env_vars["CACHE"] == "/private/cache"
    # Only ${shared_root} is expanded; everything else stays as written.
    assert spec.env_vars["OTHER"] == "${HOME}/x"


def test_shared_root_expands_in_ray_config_values():
    cfg = parse_ray_config(
        {
            "shared_root": "/private",
            "user_code_path": "${shared_root}/user/code",
            "runtime_env": {"env_vars": {"HF_HOME": "${shared_root}/hf", "P": "${PYTHONPATH}"}},
        }
    )
    assert cfg.user_code_path == "/private/user/code"
    assert cfg.runtime_env.env_vars == {"HF_HOME": "/private/hf", "P": "${PYTHONPATH}"}


def test_ray_config_without_shared_root_expands_the_environment_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ARGUS_SHARED_ROOT", str(tmp_path))
    cfg = parse_ray_config({"user_code_path": "${shared_root}/code"})
    assert cfg.shared_root == str(tmp_path)
    assert cfg.user_code_path == f"{tmp_path}/code"


def test_default_user_code_path_is_expanded():
    cfg = parse_ray_config({"shared_root": "/private"})
    assert cfg.user_code_path == "/private/user/code"


def test_shared_root_with_trailing_slash_expands_normalized():
    cfg = parse_ray_config({"shared_root": "/private/", "user_code_path": "${shared_root}/code"})
    assert cfg.shared_root == "/private"
    assert cfg.user_code_path == "/private/code"


def test_expand_vars_walks_lists_and_dicts_and_keeps_other_types():
    value = {"a": ["${x}/1", 2, {"b": "${y}"}], "c": None, "d": "${x}${x}"}
    assert expand_vars(value, {"x": "X"}) == {"a": ["X/1", 2, {"b": "${y}"}], "c": None, "d": "XX"}


def test_dollar_inside_a_path_is_refused_after_expansion():
    # ${HOME} is not expanded, so the path still holds '$', which Hydra would interpolate.
    assert problems(code_path="/opt/${HOME}/code") == {"code_path": "must not contain '$'"}


# -- unknown keys -------------------------------------------------------------------------------
def test_unknown_key_suggests_nearest_field():
    assert problems(n_gpu_per_node=2) == {"n_gpu_per_node": "unknown key; did you mean 'n_gpus_per_node'?"}


def test_unknown_key_workloadd_suggests_workload():
    data = spec_dict()
    data["workloadd"] = data.pop("workload")
    with pytest.raises(SpecError) as info:
        parse_task_spec(data, SHARED)
    got = {p.field: p.reason for p in info.value.problems}
    assert got["workloadd"] == "unknown key; did you mean 'workload'?"
    assert got["workload"] == "is required"


def test_unknown_key_without_close_match_lists_valid_keys():
    reason = problems(zzzz=1)["zzzz"]
    assert reason.startswith("unknown key (valid keys: ")
    assert "did you mean" not in reason
    for name in ("code_path", "model_id", "n_gpus_per_node", "overrides", "workload"):
        assert name in reason
    listed = reason[len("unknown key (valid keys: ") : -1].split(", ")
    assert listed == sorted(TaskSpec.model_fields)


def test_unknown_nested_key_names_the_dotted_path():
    assert problems(wandb={"projet": "x"}) == {"wandb.projet": "unknown key; did you mean 'project'?"}


def test_unknown_ray_config_keys():
    assert ray_problems({"adress": "http://h:1"}) == {"adress": "unknown key; did you mean 'address'?"}
    assert ray_problems({"runtime_env": {"env_var": {}}}) == {
        "runtime_env.env_var": "unknown key; did you mean 'env_vars'?"
    }


# -- wrong values -------------------------------------------------------------------------------
def test_wrong_type():
    reason = problems(nnodes="two")["nnodes"]
    assert "valid integer" in reason


def test_out_of_range():
    assert problems(nnodes=0) == {"nnodes": "Input should be greater than or equal to 1"}
    assert "less than or equal to 64" in problems(n_gpus_per_node=65)["n_gpus_per_node"]


def test_bool_is_not_an_integer():
    assert "nnodes" in problems(nnodes=True)


def test_bad_workload_value():
    assert problems(workload="dpo") == {"workload": "Input should be 'ppo', 'grpo' or 'sft'"}


@pytest.mark.parametrize("field", ["code_path", "train_file", "val_file"])
def test_relative_paths_are_refused(field):
    assert problems(**{field: "data/train.parquet"}) == {field: "must be an absolute path"}


@pytest.mark.parametrize(
    "value, shown",
    [("it's", '"\'"'), ("a\\b", "'\\\\'"), ("cost$5", "'$'")],
)
def test_free_text_refuses_quote_backslash_dollar(value, shown):
    assert problems(experiment_name=value) == {"experiment_name": f"must not contain {shown}"}
    assert problems(model_id=f"/m/{value}")["model_id"] == f"must not contain {shown}"


def test_free_text_refuses_control_characters_and_blank():
    assert problems(experiment_name="a\nb") == {"experiment_name": "must not contain control characters"}
    assert problems(model_id="   ") == {"model_id": "must not be empty"}


def test_wandb_text_is_checked():
    assert problems(wandb={"project": "it's"}) == {"wandb.project": 'must not contain "\'"'}


@pytest.mark.parametrize("field", ["save_freq", "test_freq"])
@pytest.mark.parametrize("value", [0, -2])
def test_freq_zero_or_below_minus_one_is_refused(field, value):
    assert problems(**{field: value}) == {field: "must be -1 (never) or a positive number of steps"}


def test_freq_minus_one_is_never():
    assert parse(save_freq=-1).save_freq == -1


def test_grpo_rollout_n_1_is_reported_as_rollout_n():
    assert problems("grpo", rollout_n=1) == {"rollout_n": "GRPO needs at least 2 responses per prompt"}


def test_critic_model_id_only_for_ppo():
    assert problems("grpo", critic_model_id="/m/critic") == {"critic_model_id": "only PPO has a critic, not grpo"}
    assert problems("sft", critic_model_id="/m/critic") == {"critic_model_id": "only PPO has a critic, not sft"}


def test_sft_has_no_rollout():
    assert problems("sft", rollout_n=2) == {"rollout_n": "SFT has no rollout"}


@pytest.mark.parametrize("key", MANAGED_KEYS)
@pytest.mark.parametrize("prefix", ["", "+", "++", "~"])
def test_overrides_cannot_touch_managed_keys(key, prefix):
    assert problems(overrides=[f"{prefix}{key}=/x"]) == {
        "overrides[0]": f"'{key}' is set by Argus and cannot be overridden"
    }


def test_overrides_cannot_replace_a_managed_key_through_its_parent():
    assert "overrides[0]" in problems(overrides=["trainer={default_local_dir:/evil}"])


def test_override_without_equals_is_refused():
    assert problems(overrides=["trainer.total_epochs"]) == {
        "overrides[0]": "'trainer.total_epochs' is not a Hydra override of the form key=value"
    }


def test_overrides_must_be_a_list():
    assert problems(overrides="trainer.total_epochs=3") == {"overrides": "Input should be a valid list"}


def test_unmanaged_overrides_are_kept_in_order():
    ovs = ["data.train_batch_size=16", "+actor_rollout_ref.actor.use_kl_loss=true"]
    assert parse(overrides=ovs).overrides == ovs


@pytest.mark.parametrize("name", sorted(RESERVED_ENV_VARS))
def test_reserved_env_vars_are_refused(name):
    reason = problems(env_vars={name: "x"})[f"env_vars.{name}"]
    assert reason == f"'{name}' cannot be set: {RESERVED_ENV_VARS[name]}"


@pytest.mark.parametrize("name", ["1BAD", "A-B", "A B", ""])
def test_invalid_env_var_names_are_refused(name):
    assert problems(env_vars={name: "x"}) == {"env_vars": f"'{name}' is not a valid environment variable name"}


def test_env_var_values_must_be_scalars():
    assert problems(env_vars={"A": None}) == {"env_vars": "value of 'A' must be a string or number"}
    assert problems(env_vars={"A": [1]}) == {"env_vars": "value of 'A' must be a string or number"}


def test_spec_env_var_values_become_strings():
    spec = parse(env_vars={"N": 3, "B": True, "F": 0.5, "S": "x"})
    assert spec.env_vars == {"N": "3", "B": "true", "F": "0.5", "S": "x"}


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as info:
        parse(nnodes=0, code_path="code", n_gpu_per_node=2)
    exc = info.value
    assert sorted(p.field for p in exc.problems) == ["code_path", "n_gpu_per_node", "nnodes"]
    assert len(exc.problems) == 3
    # The message lists each problem on its own line, under the source name.
    text = str(exc)
    assert text.startswith("task spec is invalid:\n")
    assert "  - code_path: must be an absolute path" in text
    assert "  - nnodes: Input should be greater than or equal to 1" in text


def test_cross_field_problems_are_reported_with_field_problems():
    assert set(problems("grpo", nnodes=0, rollout_n=1, critic_model_id="/c")) == {
        "nnodes",
        "rollout_n",
        "critic_model_id",
    }


def test_problem_str_and_error_source():
    err = SpecError("job.yaml", [Problem("a", "b"), Problem("c.d", "e")])
    assert str(Problem("nnodes", "bad")) == "nnodes: bad"
    assert err.source == "job.yaml"
    assert str(err) == "job.yaml is invalid:\n  - a: b\n  - c.d: e"
    assert isinstance(err, ValueError)


# -- YAML ---------------------------------------------------------------------------------------
def test_bad_yaml_reports_line():
    with pytest.raises(SpecError) as info:
        load_yaml_mapping("workload: ppo\nnnodes: [1, 2\nmodel_id: /m\n", "job.yaml")
    (problem,) = info.value.problems
    assert problem.field == "<yaml>"
    assert problem.reason.startswith("line 3, column ")
    assert info.value.source == "job.yaml"


def test_yaml_top_level_list_is_root_problem():
    with pytest.raises(SpecError) as info:
        load_yaml_mapping("- workload: ppo\n- nnodes: 1\n", "job.yaml")
    assert info.value.problems == [Problem("<root>", "must be a mapping, got list")]


def test_empty_yaml_is_an_empty_mapping():
    assert load_yaml_mapping("", "x") == {}
    assert load_yaml_mapping("# only a comment\n", "x") == {}


def test_load_task_spec_returns_text_verbatim(tmp_path):
    text = "# my run\nworkload: grpo\ncode_path: ${shared_root}/code\nmodel_id: /m\ntrain_file: /d/t.parquet\n"
    path = tmp_path / "job.yaml"
    path.write_text(text)
    spec, got = load_task_spec(path, "/private")
    assert got == text
    assert spec.code_path == "/private/code"


def test_load_task_spec_names_the_file_in_errors(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("workload: ppo\nnnodes: 0\n")
    with pytest.raises(SpecError) as info:
        load_task_spec(path, SHARED)
    assert info.value.source == str(path)
    assert {p.field for p in info.value.problems} == {"nnodes", "code_path", "model_id", "train_file"}


def test_missing_file_is_a_file_problem(tmp_path):
    with pytest.raises(SpecError) as info:
        load_task_spec(tmp_path / "nope.yaml", SHARED)
    assert info.value.problems == [Problem("<file>", "No such file or directory")]


# -- RayConfig ----------------------------------------------------------------------------------
def test_ray_config_defaults(monkeypatch):
    monkeypatch.setenv("ARGUS_SHARED_ROOT", "/private")
    cfg, text = load_ray_config(None)
    assert text == ""
    assert cfg.address == "http://127.0.0.1:8265"
    assert cfg.shared_root == "/private"
    assert cfg.entrypoint_num_cpus == 1
    assert cfg.entrypoint_resources == {"worker_node": 1}
    assert cfg.runtime_env.env_vars == {}


def test_default_entrypoint_resources_are_not_shared_between_instances():
    a, b = RayConfig(shared_root="/a"), RayConfig(shared_root="/b")
    assert a.entrypoint_resources == {"worker_node": 1}
    assert a.entrypoint_resources is not b.entrypoint_resources


@pytest.mark.parametrize("address", ["127.0.0.1:8265", "ftp://h:1", "http://h:1/api", "http://h:x", "ray://h:10001"])
def test_address_must_be_http_url(address):
    assert ray_problems({"address": address}) == {"address": "must be the dashboard URL, e.g. http://127.0.0.1:8265"}


def test_address_trailing_slash_is_stripped():
    assert parse_ray_config({"address": "https://ray.example:8265/"}).address == "https://ray.example:8265"


def test_shared_root_must_be_absolute():
    assert ray_problems({"shared_root": "shared"}) == {"shared_root": "must be an absolute path"}


@pytest.mark.parametrize("name", ["CPU", "GPU", "memory"])
def test_entrypoint_resources_refuse_builtin_resources(name):
    assert ray_problems({"entrypoint_resources": {name: 1}}) == {
        "entrypoint_resources": f"'{name}' is not a custom resource; use entrypoint_num_cpus"
    }


def test_entrypoint_resources_must_be_positive():
    assert ray_problems({"entrypoint_resources": {"worker_node": 0}}) == {
        "entrypoint_resources": "'worker_node' must be positive"
    }


def test_entrypoint_num_cpus_not_negative():
    assert "greater than or equal to 0" in ray_problems({"entrypoint_num_cpus": -1})["entrypoint_num_cpus"]


def test_ray_config_env_values_become_strings():
    cfg = parse_ray_config({"shared_root": "/p", "runtime_env": {"env_vars": {"N": 1, "B": False, "F": 1.5}}})
    assert cfg.runtime_env.env_vars == {"N": "1", "B": "false", "F": "1.5"}
    assert all(isinstance(v, str) for v in cfg.runtime_env.env_vars.values())


def test_ray_config_invalid_env_name():
    assert ray_problems({"runtime_env": {"env_vars": {"9X": "a"}}}) == {
        "runtime_env.env_vars": "'9X' is not a valid environment variable name"
    }


def test_load_ray_config_file(tmp_path):
    text = "address: http://10.0.0.1:8265\nshared_root: /private\nentrypoint_num_cpus: 2\n"
    path = tmp_path / "ray.yaml"
    path.write_text(text)
    cfg, got = load_ray_config(path)
    assert got == text
    assert (cfg.address, cfg.shared_root, cfg.entrypoint_num_cpus) == ("http://10.0.0.1:8265", "/private", 2)
