"""User inputs cannot escape: overrides, model ids, input paths and env_vars (issue 10, items 1-2).

Each reproduction of the probe is here as it was written: refused at parse (pure rules) or by
the check against the roots the user may read (real files and symlinks under tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from argus.spec.config import parse_ray_config
from argus.spec.errors import SpecError
from argus.spec.hydra_check import installed_verl_config_dir
from argus.spec.inputs import input_problems, is_under
from argus.spec.overrides import check_override, key_problem
from argus.spec.taskspec import parse_task_spec
from argus.testing import FakeClock
from conftest import spec_dict


def parse(root: Path | str = "/srv/shared", **extra):
    return parse_task_spec(spec_dict("ppo", **extra), str(root))


def problems(**extra) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse(**extra)
    return {p.field: p.reason for p in info.value.problems}


@pytest.fixture
def shared(tmp_path) -> Path:
    """A shared root with common/ inputs, alice's and bob's own directories."""
    for d in (
        "common/code/v",
        "common/datasets",
        "common/models/m",
        "users/alice/models/m",
        "users/bob/models/m",
        "users/bob/reward",
    ):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "common/datasets/t.parquet").write_bytes(b"PAR1")
    (tmp_path / "users/bob/reward/fn.py").write_text("def f(*a): return 0\n")
    return tmp_path


def spec_in(shared: Path, **extra):
    fields = {
        "code_path": f"{shared}/common/code/v",
        "train_file": f"{shared}/common/datasets/t.parquet",
        "model_id": "Qwen/Qwen2.5-0.5B",
        **extra,
    }
    return parse(shared, **fields)


def fields_of(shared: Path, user: str | None, **extra) -> dict[str, str]:
    return {p.field: p.reason for p in input_problems(spec_in(shared, **extra), str(shared), user)}


# -- 1: interpolation cannot read the environment -------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "trainer.experiment_name=${oc.env:MVP_INTERNAL_TOKEN}",
        "trainer.project_name='${oc.env:MVP_INTERNAL_TOKEN}'",
        'trainer.project_name="${oc.env:HOME}"',
        "+extra.key=${oc.decode:'{a: 1}'}",
        "data.prompt_key=\\${oc.env:X}",
        "data.prompt_key=[a,${trainer.project_name}]",
        "+x={a: ${oc.env:MVP_INTERNAL_TOKEN}}",
    ],
)
def test_interpolation_is_refused_anywhere_in_an_override(override):
    got = problems(overrides=["data.train_batch_size=8", override])
    assert list(got) == ["overrides[1]"]
    assert "interpolation" in got["overrides[1]"] and "'$'" in got["overrides[1]"]


# -- 2: keys that write outputs or change the runtime ---------------------------------------------
@pytest.mark.parametrize(
    "override, says",
    [
        ("hydra.run.dir=/etc", "Hydra's own configuration"),
        ("+hydra.job.chdir=true", "Hydra's own configuration"),
        ("hydra/launcher=basic", "Hydra's own configuration"),
        ("trainer.rollout_data_dir=/tmp/x", "writes to"),
        ("trainer.validation_data_dir=/tmp/x", "writes to"),
        ("trainer.default_hdfs_dir=/tmp/x", "writes to"),
        ("++trainer.output_dir=/tmp/x", "writes to"),
        ("global_profiler.save_path=/tmp/x", "writes to"),
        ("actor_rollout_ref.actor.profiler.save_path=/tmp/x", "writes to"),
        ("skip.rollout.dump_dir=/tmp/x", "writes to"),
        ("ray_kwargs.timeline_json_file=/tmp/t.json", "writes to"),
        ("actor_rollout_ref.rollout.prometheus.file=/tmp/p.yml", "writes to"),
        ("ray_kwargs.ray_init.runtime_env.py_executable=/tmp/py", "environment or the interpreter"),
        ("+ray_kwargs.ray_init.runtime_env.env_vars.LD_PRELOAD=/tmp/x.so", "environment or the interpreter"),
        ("+ray_kwargs.ray_init.namespace=other", "ray.init"),
        ("algorithm._target_=os.system", "Python object"),
        ("global_profiler.finish_hook_cmd=curl", "shell command"),
        ("trainer.nnodes=4", "set by Argus"),
        ("~trainer.default_local_dir=null", "set by Argus"),
        ("trainer={rollout_data_dir: /tmp/x}", "trainer.default_local_dir"),
        ("global_profiler={save_path: /tmp/x}", "writes to"),
        ("ray_kwargs={ray_init: {runtime_env: {env_vars: {A: b}}}}", "environment or the interpreter"),
        ("data.x@pkg=1", "'@'"),
        ("data.train_batch_size=8,16", "sweep"),
    ],
)
def test_keys_that_write_outputs_or_change_the_runtime_are_refused(override, says):
    got = problems(overrides=[override])
    assert list(got) == ["overrides[0]"], got
    assert says in got["overrides[0]"], got


def test_every_output_or_runtime_key_of_the_real_verl_config_is_refused():
    """Walk verl 0.9.1's generated PPO config: what writes or sets the runtime is refused,
    the inputs and knobs users tune are not."""
    config_dir = installed_verl_config_dir()
    assert config_dir is not None
    tree = OmegaConf.to_container(OmegaConf.load(config_dir / "_generated_ppo_trainer.yaml"))

    def leaves(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{prefix}.{k}" if prefix else k)
        else:
            yield prefix

    keys = list(leaves(tree))
    refused = {k for k in keys if key_problem(k)}
    for key in keys:
        last = key.rsplit(".", 1)[-1]
        if last.endswith(("_dir", "save_path", "_cmd")) or "runtime_env" in key or last == "_target_":
            assert key in refused, key
    for key in (
        "data.train_files",
        "data.val_files",
        "actor_rollout_ref.model.path",
        "critic.model.path",
        "reward.custom_reward_function.path",
        "trainer.total_epochs",
        "data.train_batch_size",
        "actor_rollout_ref.rollout.n",
        "trainer.resume_from_path",
        "ray_kwargs.ray_init.num_cpus",
        "trainer.checkpoint_callback_class",
    ):
        assert key in keys and key not in refused, key
    assert len(refused) < len(keys) // 5


# -- 3: paths in override values -------------------------------------------------------------------
def test_paths_outside_the_users_roots_are_refused(shared):
    got = fields_of(shared, "alice", overrides=["data.train_batch_size=8", "data.train_files=/etc/passwd"])
    assert list(got) == ["overrides[1]"]
    assert "'/etc/passwd' must lie under" in got["overrides[1]"]
    assert f"{shared}/common/" in got["overrides[1]"] and f"{shared}/users/alice/" in got["overrides[1]"]


def test_another_users_model_is_refused_but_the_owner_may_name_it(shared):
    bobs = f"actor_rollout_ref.model.path={shared}/users/bob/models/m"
    assert list(fields_of(shared, "alice", overrides=[bobs])) == ["overrides[0]"]
    assert fields_of(shared, "bob", overrides=[bobs]) == {}
    # The job tool has no user: common/ only.
    assert list(fields_of(shared, None, overrides=[bobs])) == ["overrides[0]"]
    own = f"actor_rollout_ref.model.path={shared}/users/alice/models/m"
    assert fields_of(shared, "alice", overrides=[own]) == {}


def test_a_user_named_like_the_start_of_another_does_not_reach_them(shared):
    (shared / "users/bobby").mkdir()
    bobbys = f"actor_rollout_ref.model.path={shared}/users/bobby/m"
    assert list(fields_of(shared, "bob", overrides=[bobbys])) == ["overrides[0]"]


def test_reward_function_paths_are_checked_like_any_other(shared):
    assert list(fields_of(shared, "alice", overrides=["+reward.custom_reward_function.path=/etc/x.py"])) == [
        "overrides[0]"
    ]
    bobs = f"+reward.custom_reward_function.path={shared}/users/bob/reward/fn.py"
    assert list(fields_of(shared, "alice", overrides=[bobs])) == ["overrides[0]"]
    assert fields_of(shared, "bob", overrides=[bobs]) == {}


def test_every_element_of_a_list_or_dict_value_is_checked(shared):
    good = f"{shared}/common/datasets/t.parquet"
    assert fields_of(shared, "alice", overrides=[f"data.train_files=['{good}','{good}']"]) == {}
    got = fields_of(shared, "alice", overrides=[f"data.train_files=['{good}','/etc/shadow']"])
    assert "'/etc/shadow'" in got["overrides[0]"]
    got = fields_of(shared, "alice", overrides=["+data.extra={files: [/etc/shadow]}"])
    assert "'/etc/shadow'" in got["overrides[0]"]
    got = fields_of(shared, "alice", overrides=["data.train_files=file:///etc/passwd"])
    assert "'/etc/passwd'" in got["overrides[0]"]


@pytest.mark.parametrize(
    "value",
    [
        "'~/x.parquet'",
        "'~bob/x.parquet'",
        "./x.parquet",
        "data/../../x.parquet",
        "'../x'",
        "file://x.parquet",
    ],
)
def test_home_and_relative_paths_are_refused_at_parse(value):
    got = problems(overrides=[f"data.train_files={value}"])
    assert list(got) == ["overrides[0]"]


@pytest.mark.parametrize(
    "override",
    [
        "data.train_batch_size=16",
        "actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B",
        "+trainer.note='a \"quoted\" note'",
        "data.prompt_key=my prompt",
        "algorithm.kl_ctrl.kl_coef=0.001",
        "+actor_rollout_ref.actor.use_kl_loss=true",
        "ray_kwargs.ray_init.num_cpus=4",
        "trainer.checkpoint_callback_class=my_pkg.Callback",
        "data.train_files=null",
    ],
)
def test_ordinary_overrides_still_pass(override):
    assert parse(overrides=[override]).overrides == [override]
    assert check_override(override).paths == ()


# -- 4: model ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "~/../shared/users/bob/m",
        "~bob/m",
        "./models/m",
        "../m",
        "Qwen/../../etc",
        "org/name/extra",
        ".hidden/m",
        "org/..",
    ],
)
def test_a_model_id_is_a_hub_id_or_an_absolute_path(value):
    got = problems(model_id=value)
    assert list(got) == ["model_id"], got
    assert "hub id" in got["model_id"]
    assert "critic_model_id" in problems(critic_model_id=value)


def test_hub_ids_and_absolute_model_paths_parse():
    for value in ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.1-8B_v.2", "/models/m"):
        assert parse(model_id=value, critic_model_id=value).model_id == value


def test_an_absolute_model_path_must_lie_under_common_or_the_users_own_directory(shared):
    assert fields_of(shared, "bob", model_id=f"{shared}/users/bob/models/m") == {}
    assert fields_of(shared, "bob", model_id=f"{shared}/common/models/m") == {}
    assert list(fields_of(shared, "bob", model_id=f"{shared}/users/alice/models/m")) == ["model_id"]


def test_every_input_may_come_from_the_users_own_directory_never_anothers(shared):
    own = {
        "code_path": f"{shared}/users/bob/code/v",
        "train_file": f"{shared}/users/bob/data/t.parquet",
        "val_file": f"{shared}/users/bob/data/v.parquet",
        "reward": {"path": f"{shared}/users/bob/code/v/reward.py"},
    }
    assert fields_of(shared, "bob", **own) == {}
    theirs = {
        k: (v.replace("/bob/", "/alice/") if isinstance(v, str) else {"path": v["path"].replace("/bob/", "/alice/")})
        for k, v in own.items()
    }
    assert set(fields_of(shared, "bob", **theirs)) == {"code_path", "train_file", "val_file", "reward.path"}
    # Whether the other user's file exists does not change the answer.
    (shared / "users" / "alice" / "data").mkdir(parents=True, exist_ok=True)
    (shared / "users" / "alice" / "data" / "t.parquet").write_text("x")
    exists = fields_of(shared, "bob", train_file=f"{shared}/users/alice/data/t.parquet")
    missing = fields_of(shared, "bob", train_file=f"{shared}/users/alice/data/nothing.parquet")
    assert exists == missing and "users/alice" not in exists["train_file"]
    # A link in the user's own tree that leads into another user's is refused too.
    (shared / "users" / "bob").mkdir(parents=True, exist_ok=True)
    (shared / "users" / "bob" / "peek").symlink_to(shared / "users" / "alice" / "data")
    assert list(fields_of(shared, "bob", train_file=f"{shared}/users/bob/peek/t.parquet")) == ["train_file"]


# -- 5: links are followed before `..` is applied --------------------------------------------------
def test_a_dot_dot_after_a_symlink_is_applied_where_the_link_leads(shared):
    evil = shared / "common" / "evil"
    evil.mkdir()
    (evil / "etc_link").symlink_to("/etc")
    sneaky = f"{evil}/etc_link/../etc/passwd"
    # What the kernel opens is /etc/passwd, outside common/ ...
    assert os.path.realpath(sneaky) == "/etc/passwd" and Path(sneaky).read_text()
    assert not is_under(sneaky, str(shared / "common"))
    # ... although normalising first would have said common/evil/etc/passwd.
    assert os.path.normpath(sneaky).startswith(str(shared / "common"))
    assert list(fields_of(shared, "alice", train_file=sneaky)) == ["train_file"]
    assert list(fields_of(shared, "alice", overrides=[f"data.val_files={sneaky}"])) == ["overrides[0]"]
    assert list(fields_of(shared, "alice", code_path=f"{evil}/etc_link")) == ["code_path"]


def test_a_link_inside_common_to_common_is_fine(shared):
    (shared / "common" / "datasets" / "alias.parquet").symlink_to(shared / "common/datasets/t.parquet")
    assert fields_of(shared, "alice", train_file=f"{shared}/common/datasets/alias.parquet") == {}


# -- 6: env_vars -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, says",
    [
        ("LD_PRELOAD", "dynamic loader"),
        ("LD_LIBRARY_PATH", "dynamic loader"),
        ("PYTHONHOME", "interpreter"),
        ("PYTHONSTARTUP", "interpreter"),
        ("PATH", "programs"),
        ("BASH_ENV", "shell"),
        ("ENV", "shell"),
        ("CUDA_VISIBLE_DEVICES", "Ray assigns"),
        ("NVIDIA_VISIBLE_DEVICES", "Ray assigns"),
        ("RAY_RUNTIME_ENV_HOOK", "hooks"),
        ("MVP_INTERNAL_TOKEN", "admin token"),
        ("ARGUS_SHARED_ROOT", "Argus"),
        ("PYTHONPATH", "Argus"),
    ],
)
def test_loader_interpreter_and_ray_variables_are_refused_with_the_reason(name, says):
    got = problems(env_vars={"NCCL_DEBUG": "INFO", name: "/tmp/x"})
    assert list(got) == [f"env_vars.{name}"], got
    assert got[f"env_vars.{name}"].startswith(f"'{name}' cannot be set: ")
    assert says in got[f"env_vars.{name}"]


def test_ordinary_env_vars_pass_and_the_operators_are_free():
    env = {"NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": "eth0", "WANDB_API_KEY": "k", "HF_HUB_OFFLINE": 1}
    assert parse(env_vars=env).env_vars == {**env, "HF_HUB_OFFLINE": "1"}
    cfg = parse_ray_config({"runtime_env": {"env_vars": {"LD_LIBRARY_PATH": "/opt/lib", "RAY_DEDUP_LOGS": "0"}}})
    assert cfg.runtime_env.env_vars["LD_LIBRARY_PATH"] == "/opt/lib"


def test_all_problems_are_reported_at_once():
    got = problems(
        overrides=["data.train_batch_size=8", "hydra.run.dir=/x", "a=${b}"],
        env_vars={"LD_PRELOAD": "x", "PATH": "/x"},
        model_id="~/m",
    )
    assert set(got) == {"overrides[1]", "overrides[2]", "env_vars.LD_PRELOAD", "env_vars.PATH", "model_id"}


# -- URIs, sizes, and env var values that are paths (the second read of the probe) ----------------
@pytest.mark.parametrize("value", ["file:/etc/passwd", "local:///etc/passwd", "local:/etc/passwd"])
def test_local_uris_of_every_spelling_are_checked_like_paths(shared, value):
    got = fields_of(shared, "alice", overrides=[f"data.train_files={value}"])
    assert "'/etc/passwd'" in got["overrides[0]"], got


@pytest.mark.parametrize(
    "value",
    ["simplecache::/etc/passwd", "zip://x/y", "memory://x/y", "reference://x/y", "'filecache::s3://b/k'"],
)
def test_other_uri_schemes_and_chained_urls_are_refused_at_parse(value):
    got = problems(overrides=[f"data.train_files={value}"])
    assert list(got) == ["overrides[0]"], got


@pytest.mark.parametrize(
    "value", ["hdfs://nn/data/x.parquet", "s3://bucket/x.parquet", "https://example.org/x.parquet", "cuda:0"]
)
def test_remote_uris_and_plain_name_value_pairs_pass(value):
    assert check_override(f"data.train_files={value}").paths == ()


def test_override_sizes_are_bounded_before_hydra_parses_them():
    long_list = "+data.extra=[" + ",".join(["1"] * 1500) + "]"
    assert "at most 2048" in problems(overrides=[long_list])["overrides[0]"]
    assert "at most 128" in problems(overrides=["data.train_batch_size=8"] * 129)["overrides"]
    many = ["+data.k{}=[{}]".format(i, ",".join(["1"] * 900)) for i in range(5)]
    assert "at most 8192" in problems(overrides=many)["overrides"]


@pytest.mark.parametrize(
    "name",
    [
        "NCCL_NET_PLUGIN",
        "NCCL_TUNER_PLUGIN",
        "CUDA_INJECTION64_PATH",
        "PYTHONWARNINGS",
        "PYTHONPYCACHEPREFIX",
    ],
)
def test_variables_that_load_code_are_refused(name):
    assert list(problems(env_vars={name: "x"})) == [f"env_vars.{name}"]


def test_env_var_values_that_are_paths_stay_in_the_users_roots(shared):
    bob = shared / "users/bob/models/m"
    got = fields_of(
        shared,
        "alice",
        env_vars={
            "HF_HOME": str(bob),
            "NCCL_DEBUG": "INFO",
            "TRITON_CACHE_DIR": f"/tmp:{shared}/common",
            "HF_ENDPOINT": "https://hf-mirror.example",
            "XDG_CACHE_HOME": "file:///etc",
        },
    )
    assert set(got) == {"env_vars.HF_HOME", "env_vars.TRITON_CACHE_DIR", "env_vars.XDG_CACHE_HOME"}, got
    assert fields_of(shared, "bob", env_vars={"HF_HOME": str(bob)}) == {}


def test_the_accept_paths_resolve_cache_expires(tmp_path):
    from argus.spec.inputs import ResolveCache

    clock = FakeClock()
    resolve = ResolveCache(max_age_s=2.0, clock=clock)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a")
    assert resolve(str(link)) == str(tmp_path / "a")
    link.unlink()
    link.symlink_to("/etc")
    assert resolve(str(link)) == str(tmp_path / "a")  # remembered for a moment
    clock.set(2.5)
    assert resolve(str(link)) == "/etc"


def test_env_values_are_read_as_lists_and_relative_escapes_are_refused(shared):
    got = fields_of(
        shared,
        "alice",
        env_vars={
            "HF_HOME": "../../../../shared/users/bob/hf",
            "A": "x/../../../etc",
            "B": "https://x:/etc",
            "C": f"file:{shared}/common/x:/etc",
            "D": "https://hf-mirror.example:8443/api",
            "E": "eth0",
        },
    )
    assert set(got) == {"env_vars.HF_HOME", "env_vars.A", "env_vars.B", "env_vars.C"}, got


def test_escapes_in_local_uris_are_refused(shared):
    got = problems(overrides=["data.train_files=file:///srv/shared/common/..%2F..%2Fetc/passwd"])
    assert "'%' escape" in got["overrides[0]"]
