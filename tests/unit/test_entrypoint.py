"""The verl entrypoints, runtime env and submission request built from RayConfig + TaskSpec."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime, timezone
from pathlib import PurePosixPath

import pytest

from argus.domain.ids import new_submission_id
from argus.domain.paths import JOB_SUBDIRS, checkpoints_dir, job_root
from argus.spec.config import parse_ray_config
from argus.spec.entrypoint import (
    CONFIG_NAMES,
    build_entrypoint,
    build_overrides,
    build_runtime_env,
    build_submission,
    driver_gpus,
    shell_quote,
)
from argus.spec.render import render
from argus.spec.taskspec import parse_task_spec
from conftest import SHARED, spec_dict

ROOT = PurePosixPath("/srv/shared/jobs/run-1")
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def spec(workload="ppo", **extra):
    return parse_task_spec(spec_dict(workload, **extra), SHARED)


def config(**extra):
    return parse_ray_config({"shared_root": SHARED, **extra})


def as_map(overrides: list[str]) -> dict[str, str]:
    out = {}
    for ov in overrides:
        key, _, value = ov.partition("=")
        assert key not in out, f"{key} given twice"
        out[key] = value
    return out


# -- PPO / GRPO / SFT ---------------------------------------------------------------------------
def test_ppo_entrypoint():
    s = spec("ppo", max_ckpt_to_keep=4)
    ep = build_entrypoint(s, "run-1", ROOT)
    assert ep.startswith("python3 -m verl.trainer.main_ppo ")
    ov = as_map(build_overrides(s, "run-1", ROOT))
    assert ov["algorithm.adv_estimator"] == "gae"
    assert ov["critic.model.path"] == "'/models/Qwen2.5-0.5B-Instruct'"
    assert ov["actor_rollout_ref.model.path"] == "'/models/Qwen2.5-0.5B-Instruct'"
    assert ov["actor_rollout_ref.rollout.name"] == "vllm"
    assert ov["actor_rollout_ref.rollout.n"] == "1"
    assert ov["trainer.max_actor_ckpt_to_keep"] == "4"
    assert ov["trainer.max_critic_ckpt_to_keep"] == "4"
    # Without val_file, PPO validates on the train file.
    assert ov["data.val_files"] == "'/data/gsm8k/train.parquet'"
    assert CONFIG_NAMES["ppo"] == "ppo_trainer"


def test_ppo_separate_critic_model():
    ov = as_map(build_overrides(spec("ppo", critic_model_id="/models/critic-7b"), "run-1", ROOT))
    assert ov["critic.model.path"] == "'/models/critic-7b'"


def test_grpo_entrypoint_has_no_critic():
    s = spec("grpo", rollout_engine="sglang", val_file="/data/val.parquet")
    ep = build_entrypoint(s, "run-1", ROOT)
    assert ep.startswith("python3 -m verl.trainer.main_ppo ")
    overrides = build_overrides(s, "run-1", ROOT)
    ov = as_map(overrides)
    assert ov["algorithm.adv_estimator"] == "grpo"
    assert ov["actor_rollout_ref.rollout.n"] == "5"
    assert ov["actor_rollout_ref.rollout.name"] == "sglang"
    assert ov["data.val_files"] == "'/data/val.parquet'"
    assert ov["trainer.max_actor_ckpt_to_keep"] == "3"
    assert not [o for o in overrides if "critic" in o.split("=", 1)[0]]
    assert "critic" not in ep
    assert CONFIG_NAMES["grpo"] == "ppo_trainer"


def test_sft_entrypoint():
    s = spec("sft", max_ckpt_to_keep=2)
    ep = build_entrypoint(s, "run-1", ROOT)
    assert ep.startswith("python3 -m verl.trainer.sft_trainer_ray ")
    ov = as_map(build_overrides(s, "run-1", ROOT))
    assert ov["model.path"] == "'/models/Qwen2.5-0.5B-Instruct'"
    assert ov["data.train_files"] == "'/data/gsm8k/train.parquet'"
    assert ov["data.val_files"] == "null"
    assert ov["trainer.max_ckpt_to_keep"] == "2"
    for key in ov:
        assert not key.startswith(("actor_rollout_ref.", "critic.", "algorithm."))
    assert "trainer.max_actor_ckpt_to_keep" not in ov
    assert CONFIG_NAMES["sft"] == "sft_trainer_engine"


def test_sft_with_val_file():
    ov = as_map(build_overrides(spec("sft", val_file="/data/val.parquet"), "run-1", ROOT))
    assert ov["data.val_files"] == "'/data/val.parquet'"


@pytest.mark.parametrize("workload", ["ppo", "grpo", "sft"])
def test_trainer_keys_common_to_every_workload(workload):
    s = spec(
        workload,
        nnodes=2,
        n_gpus_per_node=4,
        total_epochs=3,
        total_training_steps=50,
        save_freq=5,
        test_freq=7,
        trainer_device="npu",
    )
    ov = as_map(build_overrides(s, "run-1", ROOT))
    assert ov["trainer.default_local_dir"] == "'/srv/shared/jobs/run-1/checkpoints'"
    assert ov["trainer.nnodes"] == "2"
    assert ov["trainer.n_gpus_per_node"] == "4"
    assert ov["trainer.total_epochs"] == "3"
    assert ov["trainer.total_training_steps"] == "50"
    assert ov["trainer.save_freq"] == "5"
    assert ov["trainer.test_freq"] == "7"
    assert ov["trainer.device"] == "npu"
    assert ov["trainer.logger"] == "['console']"
    assert ov["trainer.project_name"] == "'argus'"
    assert ov["trainer.experiment_name"] == "'run-1'"


def test_total_training_steps_absent_unless_given():
    assert "trainer.total_training_steps" not in as_map(build_overrides(spec(), "run-1", ROOT))


def test_default_local_dir_is_absolute_checkpoints_of_job_root():
    root = job_root("/private", "abc")
    ov = as_map(build_overrides(spec(), "abc", root))
    path = ov["trainer.default_local_dir"].strip("'")
    assert path == "/private/jobs/abc/checkpoints"
    assert PurePosixPath(path).is_absolute()
    assert checkpoints_dir(root) == PurePosixPath(path)
    assert "checkpoints" in JOB_SUBDIRS


def test_wandb_logger_project_and_run_name():
    s = spec("ppo", wandb={"project": "my-proj", "run_name": "try 3"}, experiment_name="exp")
    ov = as_map(build_overrides(s, "run-1", ROOT))
    assert ov["trainer.logger"] == "['console','wandb']"
    assert ov["trainer.project_name"] == "'my-proj'"
    assert ov["trainer.experiment_name"] == "'try 3'"


def test_wandb_without_run_name_uses_experiment_name_then_submission_id():
    ov = as_map(build_overrides(spec("ppo", wandb={}, experiment_name="exp"), "run-1", ROOT))
    assert ov["trainer.logger"] == "['console','wandb']"
    assert ov["trainer.project_name"] == "'argus'"
    assert ov["trainer.experiment_name"] == "'exp'"
    ov = as_map(build_overrides(spec("ppo", wandb={"project": "p"}), "run-1", ROOT))
    assert ov["trainer.experiment_name"] == "'run-1'"


def test_experiment_name_without_wandb_keeps_console_logger():
    ov = as_map(build_overrides(spec("grpo", experiment_name="my exp"), "run-1", ROOT))
    assert ov["trainer.logger"] == "['console']"
    assert ov["trainer.experiment_name"] == "'my exp'"


# -- quoting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("workload", ["ppo", "grpo", "sft"])
def test_entrypoint_round_trips_through_shlex(workload):
    s = spec(
        workload,
        code_path="/srv/shared/my code",
        model_id="/models/my model (v2)",
        train_file="/data/my data/train set.parquet",
        val_file="/data/my data/val.parquet",
        experiment_name="my exp & more; echo pwned",
        overrides=[
            "data.prompt_key=my prompt",
            "+trainer.note='a \"quoted\" note'",
            "data.max_prompt_length=512",
        ],
    )
    root = job_root("/srv/shared dir", "run-1")
    overrides = build_overrides(s, "run-1", root)
    ep = build_entrypoint(s, "run-1", root)
    argv = shlex.split(ep)
    module = "verl.trainer.sft_trainer_ray" if workload == "sft" else "verl.trainer.main_ppo"
    assert argv[:3] == ["python3", "-m", module]
    assert argv[3:] == overrides
    # User overrides come last, in the order given.
    assert overrides[-3:] == s.overrides
    assert "trainer.experiment_name='my exp & more; echo pwned'" in overrides


def test_user_override_of_unmanaged_trainer_key_comes_after_argus_value():
    overrides = build_overrides(spec(overrides=["trainer.total_epochs=7"]), "run-1", ROOT)
    positions = [i for i, o in enumerate(overrides) if o.startswith("trainer.total_epochs=")]
    assert [overrides[i] for i in positions] == ["trainer.total_epochs=1", "trainer.total_epochs=7"]
    assert positions[-1] == len(overrides) - 1


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("trainer.nnodes=2", "trainer.nnodes=2"),
        ("model.path='/m'", "\"model.path='/m'\""),
        ("trainer.logger=['console']", "\"trainer.logger=['console']\""),
        ("a=b c", "'a=b c'"),
        ("a='$x'", shlex.quote("a='$x'")),
        ("a='x!'", shlex.quote("a='x!'")),
    ],
)
def test_shell_quote_is_readable_and_safe(arg, expected):
    assert shell_quote(arg) == expected
    assert shlex.split(shell_quote(arg)) == [arg]


# -- runtime env and submission -----------------------------------------------------------------
def test_runtime_env_order_config_then_spec_then_pythonpath():
    cfg = config(runtime_env={"env_vars": {"A": "config", "B": "config", "HF_HOME": "/hf"}})
    s = spec(env_vars={"B": "spec", "C": 3})
    env = build_runtime_env(cfg, s)
    assert env == {
        "env_vars": {
            "A": "config",
            "B": "spec",
            "HF_HOME": "/hf",
            "C": "3",
            "PYTHONSAFEPATH": "1",
            "PYTHONPATH": "/srv/shared/user/code",
        }
    }
    assert list(env["env_vars"])[-2:] == ["PYTHONSAFEPATH", "PYTHONPATH"]


def test_pythonpath_from_config_is_replaced_by_code_path():
    cfg = config(runtime_env={"env_vars": {"PYTHONPATH": "/elsewhere", "PYTHONSAFEPATH": ""}})
    env = build_runtime_env(cfg, spec(code_path="/code/v2"))
    assert env["env_vars"]["PYTHONPATH"] == "/code/v2"
    assert env["env_vars"]["PYTHONSAFEPATH"] == "1"


def test_the_job_imports_its_code_path_first_never_its_working_directory(tmp_path):
    """What Ray does with the runtime env (`${X}` of an unset X becomes "", as in
    `ray._private.utils.update_envs`), then the entrypoint's `python3 -m`, run in a working
    directory holding shadow modules: sys.path[0] is the code path, no shadow is seen."""
    import os
    import re
    import subprocess
    import sys

    code = tmp_path / "code"
    (code / "probe").mkdir(parents=True)
    (code / "probe" / "__init__.py").write_text("")
    (code / "probe" / "__main__.py").write_text(
        "import secrets, sys, mvp_marker\nprint(sys.path[0], mvp_marker.MARKER, hasattr(secrets, 'token_hex'))\n"
    )
    (code / "mvp_marker.py").write_text("MARKER = 'mine'\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mvp_marker.py").write_text("MARKER = 'shadow'\n")
    (cwd / "secrets.py").write_text("raise SystemExit('a shadow secrets.py was imported')\n")
    env_vars = build_runtime_env(config(), spec(code_path=str(code)))["env_vars"]
    env = {"PATH": os.environ["PATH"]}  # a node's environment: no PYTHONPATH of its own
    for key, value in env_vars.items():
        env[key] = re.sub(r"\$\{[A-Z0-9_]+\}", "", os.path.expandvars(value))
    out = subprocess.run([sys.executable, "-m", "probe"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(code), "mine", "True"]


def test_submission_request_carries_driver_placement():
    cfg = config(entrypoint_num_cpus=2, entrypoint_resources={"worker_node": 1, "argus_driver": 0.5})
    s = spec("ppo")
    req = build_submission(cfg, s, "run-1", ROOT)
    assert req.submission_id == "run-1"
    assert req.entrypoint_num_cpus == 2
    assert req.entrypoint_resources == {"worker_node": 1, "argus_driver": 0.5}
    assert req.entrypoint_num_gpus == 0
    assert req.entrypoint == build_entrypoint(s, "run-1", ROOT)
    assert req.runtime_env == build_runtime_env(cfg, s)
    assert req.metadata == {
        "argus.workload": "ppo",
        "argus.job_root": "/srv/shared/jobs/run-1",
        "argus.code_path": "/srv/shared/user/code",
    }
    d = req.as_dict()
    assert set(d) == {
        "entrypoint",
        "submission_id",
        "runtime_env",
        "entrypoint_num_cpus",
        "entrypoint_resources",
        "entrypoint_num_gpus",
        "metadata",
        "entrypoint_label_selector",
    }
    assert req.entrypoint_label_selector is None  # no pool: any worker node
    # The request owns a copy: mutating it does not touch the config.
    req.entrypoint_resources["x"] = 1
    assert cfg.entrypoint_resources == {"worker_node": 1, "argus_driver": 0.5}


def test_pool_pins_the_driver_inside_it():
    req = build_submission(config(), spec("grpo", pool="h20"), "run-1", ROOT)
    assert req.entrypoint_label_selector == {"pool": "h20"}
    assert req.entrypoint_resources == {"worker_node": 1}  # still on a worker, never the head
    # The job's own placement groups are kept in the pool by the shim on its PYTHONPATH.
    env = req.runtime_env["env_vars"]
    assert env["ARGUS_POOL"] == "h20"
    assert env["PYTHONPATH"] == "/srv/shared/user/code:/srv/shared/common/argus/pool-shim"
    plain = build_submission(config(), spec("grpo"), "run-1", ROOT).runtime_env["env_vars"]
    assert "ARGUS_POOL" not in plain and plain["PYTHONPATH"] == "/srv/shared/user/code"


def test_the_pool_shim_labels_placement_groups_made_without_a_selector(tmp_path, monkeypatch):
    import subprocess
    import sys

    from argus.runtime.pool_shim import ensure_shim

    d = ensure_shim(str(tmp_path))
    assert ensure_shim(str(tmp_path)) == d  # idempotent
    # Ray's own function is replaced (in the shim's globals) by a recorder: no cluster needed.
    probe = (
        "from ray.util import placement_group as pg\n"
        "calls = []\n"
        "if hasattr(pg, '_argus_pool'):\n"
        "    pg.__globals__['_orig'] = lambda bundles, *a, **kw: calls.append(kw.get('bundle_label_selector'))\n"
        "    pg([{'GPU': 1}, {'GPU': 1}], strategy='PACK')\n"
        "    pg([{'GPU': 1}], bundle_label_selector=[{'zone': 'x'}])\n"
        "print(getattr(pg, '_argus_pool', None), calls)\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(d), "ARGUS_POOL": "h20"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "h20 [[{'pool': 'h20'}, {'pool': 'h20'}], [{'zone': 'x'}]]", out.stderr
    env.pop("ARGUS_POOL")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "None []", out.stderr


@pytest.mark.parametrize("pool", ["", "-a", "a b", "x" * 64, "a/b", "ä"])
def test_pool_must_be_a_label_value(pool):
    with pytest.raises(Exception) as info:
        spec("ppo", pool=pool)
    assert "pool" in str(info.value)


@pytest.mark.parametrize(
    "workload, device, gpus",
    [
        ("sft", "cuda", 1),
        ("sft", "npu", 1),
        ("sft", "cpu", 0),
        ("ppo", "cuda", 0),
        ("grpo", "cuda", 0),
        ("ppo", "cpu", 0),
    ],
)
def test_driver_gpus(workload, device, gpus):
    s = spec(workload, trainer_device=device)
    assert driver_gpus(s) == gpus
    assert build_submission(config(), s, "run-1", ROOT).entrypoint_num_gpus == gpus


# -- render -------------------------------------------------------------------------------------
def test_render_generates_submission_id_from_clock():
    r = render(config(), spec("grpo"), NOW)
    assert re.fullmatch(r"mvp11-grpo-20250304-050607-[0-9a-f]{4}", r.submission_id)
    assert r.job_root == PurePosixPath(f"/srv/shared/jobs/{r.submission_id}")
    assert r.request.metadata["argus.job_root"] == str(r.job_root)
    assert f"trainer.default_local_dir='{r.job_root}/checkpoints'" in r.overrides
    assert f"trainer.experiment_name='{r.submission_id}'" in r.overrides
    assert r.overrides == build_overrides(spec("grpo"), r.submission_id, r.job_root)


def test_render_uses_spec_submission_id_unless_one_is_passed():
    s = spec(submission_id="my-run")
    assert render(config(), s, NOW).submission_id == "my-run"
    assert render(config(), s, NOW, submission_id="other").submission_id == "other"


def test_render_with_user_moves_job_root():
    r = render(config(), spec(submission_id="my-run"), NOW, user="alice")
    assert r.job_root == PurePosixPath("/srv/shared/users/alice/jobs/my-run")
    assert "trainer.default_local_dir='/srv/shared/users/alice/jobs/my-run/checkpoints'" in r.overrides


def test_render_finds_installed_verl_config_without_warning():
    r = render(config(), spec(code_path="/nonexistent/code"), NOW)
    assert r.config_dir is not None
    assert r.config_dir.name == "config" and r.config_dir.parent.name == "trainer"
    assert r.warnings == []


def test_render_warns_when_no_verl_config(monkeypatch, tmp_path):
    monkeypatch.setenv("ARGUS_VERL_CONFIG_DIR", str(tmp_path / "absent"))
    r = render(config(), spec(code_path="/nonexistent/code"), NOW)
    assert r.config_dir is None
    assert len(r.warnings) == 1 and "overrides were not checked" in r.warnings[0]


def test_new_submission_id_shape():
    assert new_submission_id("sft", NOW, suffix="beef") == "mvp11-sft-20250304-050607-beef"
    assert re.fullmatch(r"mvp11-ppo-20250304-050607-[0-9a-f]{4}", new_submission_id("ppo", NOW))


def test_job_root_paths():
    assert job_root("/s", "id-1") == PurePosixPath("/s/jobs/id-1")
    assert job_root("/s", "id-1", user="bob") == PurePosixPath("/s/users/bob/jobs/id-1")
    assert checkpoints_dir(PurePosixPath("/s/jobs/id-1")) == PurePosixPath("/s/jobs/id-1/checkpoints")


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "../x", "/abs"])
def test_job_root_refuses_escaping_ids(bad):
    with pytest.raises(ValueError, match="invalid submission id"):
        job_root("/s", bad)
