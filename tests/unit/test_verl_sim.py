"""Unit tests of the verl stand-in (examples/verl-sim): its pure parts, no Ray cluster.

The stand-in's top-level package is named ``verl``; the fixture puts it on
``sys.path`` only for this module and afterwards removes it and every
``verl*``/``mvp_marker`` module again, because other tests look for the real
installed verl (through package metadata).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from verl_sim_support import REPO, SIM_DIR, sim

DATA = "/x/train.parquet"


@pytest.fixture
def verl_config_dir(sim, monkeypatch):
    monkeypatch.delenv(sim.config.CONFIG_DIR_ENV, raising=False)
    found = sim.config.find_verl_config_dir()
    if found is None:
        pytest.skip("the real verl (its Hydra config) is not installed")
    return found


# ------------------------------------------------------------------ config


def test_config_dir_comes_from_the_real_verl_distribution(verl_config_dir):
    assert verl_config_dir.parts[-3:] == ("verl", "trainer", "config")
    assert not verl_config_dir.is_relative_to(SIM_DIR)
    assert (verl_config_dir / "ppo_trainer.yaml").is_file()
    assert (verl_config_dir / "sft_trainer_engine.yaml").is_file()


def test_stand_in_ships_no_config_dir():
    assert not (SIM_DIR / "verl" / "trainer" / "config").exists()


def test_misspelled_key_fails_like_verl(sim, verl_config_dir):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"Could not override 'trainer\.totl_epochs'\."):
        sim.config.load_config(["trainer.totl_epochs=3"], "ppo_trainer", {})


def test_ppo_settings_from_real_config(sim, verl_config_dir):
    cfg, how = sim.config.load_config(
        [
            "algorithm.adv_estimator=gae",
            f"data.train_files={DATA}",
            "data.val_files=null",
            "data.train_batch_size=4",
            "actor_rollout_ref.model.path=/m/actor",
            "critic.model.path=/m/critic",
            "actor_rollout_ref.rollout.n=2",
            "trainer.logger=['console']",
            "trainer.nnodes=1",
            "trainer.n_gpus_per_node=2",
            "trainer.total_training_steps=5",
            "trainer.save_freq=2",
            "trainer.default_local_dir=/ckpt",
            "trainer.max_actor_ckpt_to_keep=2",
            "trainer.device=cuda",
        ],
        "ppo_trainer",
        {},
    )
    assert "checked against" in how and "NOT" not in how
    s = sim.flavors.read_ppo_settings(cfg)
    assert (s.trainer, s.use_critic, s.rollout_n) == ("ppo", True, 2)
    assert (s.nnodes, s.n_gpus_per_node, s.total_training_steps, s.save_freq) == (1, 2, 5, 2)
    assert s.train_files == [DATA] and s.val_files == [] and s.train_batch_size == 4
    assert s.models == {"actor_rollout_ref.model.path": "/m/actor", "critic.model.path": "/m/critic"}
    assert s.keep == {"actor": 2, "critic": None}
    assert (s.default_local_dir, s.device) == ("/ckpt", "cuda")


def test_grpo_has_no_critic(sim, verl_config_dir):
    cfg, _ = sim.config.load_config(
        [
            "algorithm.adv_estimator=grpo",
            f"data.train_files={DATA}",
            "actor_rollout_ref.model.path=Org/Model",
        ],
        "ppo_trainer",
        {},
    )
    s = sim.flavors.read_ppo_settings(cfg)
    assert (s.trainer, s.use_critic) == ("grpo", False)
    assert list(s.models) == ["actor_rollout_ref.model.path"] and list(s.keep) == ["actor"]
    assert s.total_training_steps is None  # verl's default: derived from the data
    assert "critic/vf_loss" not in dict(sim.flavors.ppo_step_metrics(s, 1))


def test_sft_settings_from_real_config(sim, verl_config_dir):
    cfg, _ = sim.config.load_config(
        ["model.path=/m", f"data.train_files={DATA}", "trainer.max_ckpt_to_keep=3", "optim.lr=1e-5"],
        "sft_trainer_engine",
        {},
    )
    s = sim.flavors.read_sft_settings(cfg)
    assert (s.trainer, s.models, s.keep) == ("sft", {"model.path": "/m"}, {"": 3})
    assert sim.flavors.metrics_line(3, sim.flavors.sft_step_metrics(s, 3)).startswith("step:3 - train/loss:")
    assert dict(sim.flavors.sft_step_metrics(s, 3))["train/lr"] == "1e-05"


def test_without_a_config_overrides_are_parsed_only(sim, monkeypatch, tmp_path):
    monkeypatch.setenv(sim.config.CONFIG_DIR_ENV, str(tmp_path))  # a dir without ppo_trainer.yaml
    cfg, how = sim.config.load_config(
        [
            "trainer.totl_epochs=3",
            f"data.train_files=[{DATA},/x/b.parquet]",
            "actor_rollout_ref.model.path=/m",
        ],
        "ppo_trainer",
        sim.flavors.PPO.fallback_defaults,
    )
    assert "NOT checked" in how
    assert sim.config.value(cfg, "trainer.totl_epochs") == 3
    s = sim.flavors.read_ppo_settings(cfg)
    assert s.train_files == [DATA, "/x/b.parquet"]
    assert (s.nnodes, s.use_critic, s.models["critic.model.path"]) == (1, True, "/m")


def test_parse_overrides(sim):
    tree = sim.config.parse_overrides(["a.b=1", "a.c='x y'", "+a.d=[1,2]", "e=null", "~a.b", "f.g.h=true", "lr=1e-5"])
    assert tree == {"a": {"c": "x y", "d": [1, 2]}, "e": None, "f": {"g": {"h": True}}, "lr": 1e-5}


# ------------------------------------------------------------------ steps


def test_step_count_derivation(sim):
    derive = sim.inputs.derive_total_steps
    assert derive(5, 100, 10, 4) == 5  # explicit total_training_steps wins
    assert derive(None, 3, 10, 4) == 9  # 3 epochs x ceil(10 / 4)
    assert derive(None, 2, 8, 4) == 4
    assert derive(None, 1, 0, 4) == 0
    with pytest.raises(ValueError):
        derive(None, 1, 10, 0)


def test_ppo_metric_line_format(sim):
    s = SimpleNamespace(use_critic=True)
    line = sim.flavors.metrics_line(3, [*sim.flavors.ppo_step_metrics(s, 3), ("timing_s/step", "0.51")])
    assert line == (
        "step:3 - actor/pg_loss:0.389 - critic/vf_loss:0.219 - response_length/mean:30.5 - timing_s/step:0.51"
    )
    losses = [float(dict(sim.flavors.ppo_step_metrics(s, n))["actor/pg_loss"]) for n in range(1, 6)]
    assert losses == sorted(losses, reverse=True)


# ------------------------------------------------------------------ checkpoints


def _run_saves(sim, root, steps, save_freq, files, keep):
    for step in range(1, steps + 1):
        if sim.checkpoints.should_save(step, save_freq, steps):
            sim.checkpoints.save(root, step, files, keep)


def _names(root):
    return sorted(p.name for p in root.iterdir())


def test_retention_keeps_newest(sim, tmp_path):
    _run_saves(sim, tmp_path, 7, 2, {"model.txt": "x"}, {"": 2})
    assert _names(tmp_path) == ["global_step_6", "global_step_7", "latest_checkpointed_iteration.txt"]
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "7"
    assert (tmp_path / "global_step_7" / "model.txt").is_file()


def test_retention_per_role(sim, tmp_path):
    files = {"actor/model.txt": "a", "critic/model.txt": "c"}
    _run_saves(sim, tmp_path, 7, 2, files, {"actor": 2, "critic": 2})
    assert _names(tmp_path) == ["global_step_6", "global_step_7", "latest_checkpointed_iteration.txt"]
    assert _names(tmp_path / "global_step_6") == ["actor", "critic"]
    other = tmp_path / "other"
    _run_saves(sim, other, 6, 2, files, {"actor": 1, "critic": 2})
    assert _names(other / "global_step_4") == ["critic"]
    assert _names(other / "global_step_6") == ["actor", "critic"]
    assert not (other / "global_step_2").exists()


@pytest.mark.parametrize("keep", [None, 0, -1])
def test_retention_off_keeps_all(sim, tmp_path, keep):
    _run_saves(sim, tmp_path, 5, 1, {"model.txt": "x"}, {"": keep})
    assert len([n for n in _names(tmp_path) if n.startswith("global_step_")]) == 5


def test_save_freq_rules(sim):
    should = sim.checkpoints.should_save
    assert [s for s in range(1, 8) if should(s, 2, 7)] == [2, 4, 6, 7]
    assert not any(should(s, -1, 7) for s in range(1, 8))
    assert not any(should(s, 0, 7) for s in range(1, 8))


def test_checkpoint_root_must_be_absolute(sim, tmp_path):
    root = sim.checkpoints.checkpoint_root(str(tmp_path / "new" / "ckpt"))
    assert root.is_dir()
    with pytest.raises(ValueError, match="must be an absolute path"):
        sim.checkpoints.checkpoint_root("checkpoints/rel")


# ------------------------------------------------------------------ inputs


def test_missing_data_file(sim, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        sim.inputs.check_data_files(["/x/train.parquet"])
    assert str(err.value) == "Unable to find '/x/train.parquet'"
    present = tmp_path / "t.parquet"
    present.write_bytes(b"")
    assert sim.inputs.check_data_files([str(present)]) == [present]


def test_parquet_row_count(sim, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for name, rows in [("a.parquet", 10), ("b.parquet", 3)]:
        pq.write_table(pa.table({"prompt": [str(i) for i in range(rows)]}), tmp_path / name)
    assert sim.inputs.count_rows([tmp_path / "a.parquet", tmp_path / "b.parquet"]) == 13
    assert sim.inputs.count_rows([tmp_path / "a.jsonl"]) is None


@pytest.mark.parametrize("name", ["/no/such/model", "./no/such/model", "~/no/such/model"])
def test_bad_local_model(sim, name):
    with pytest.raises(OSError) as err:
        sim.inputs.check_model_path(name)
    assert str(err.value) == (
        f"{name} is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'"
    )


def test_local_model_needs_config_json(sim, tmp_path):
    with pytest.raises(OSError, match="is not a local folder"):
        sim.inputs.check_model_path(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert sim.inputs.check_model_path(str(tmp_path)) is True


def test_hub_id_accepted_without_loading(sim):
    assert sim.inputs.check_model_path("Qwen/Qwen2.5-0.5B-Instruct") is False


# ------------------------------------------------------------------ marker, GPU check


def test_marker(sim, monkeypatch):
    assert sim.runner.read_marker() == "verl-sim-default"
    monkeypatch.setitem(sys.modules, "mvp_marker", None)  # import now raises ImportError
    assert sim.runner.read_marker() == "<none>"


def test_gpu_precheck_message(sim, monkeypatch):
    cluster = importlib.import_module("verl.trainer._sim.cluster")
    nodes = {"n1": {"CPU": 2.0, "GPU": 4.0}, "n2": {"CPU": 2.0}}
    monkeypatch.setattr(cluster.ray._private.state, "available_resources_per_node", lambda: nodes)
    cluster.check_resource_available(1, 4)
    with pytest.raises(ValueError) as err:
        cluster.check_resource_available(2, 4)
    assert str(err.value) == "Total available GPUs 4.0 is less than total desired GPUs 8"


# ------------------------------------------------------------------ entrypoints (fail before Ray)


def _run_entrypoint(module, *overrides):
    env = {**os.environ, "PYTHONPATH": str(SIM_DIR)}
    env.pop("RAY_ADDRESS", None)
    env.pop("VERL_SIM_CONFIG_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        env=env,
        cwd=SIM_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_entrypoint_typo_fails_with_hydra_message(verl_config_dir):
    proc = _run_entrypoint("verl.trainer.main_ppo", "trainer.totl_epochs=3")
    assert proc.returncode != 0
    assert proc.stdout.splitlines()[0] == "MARKER verl-sim-default"
    assert "ConfigCompositionException: Could not override 'trainer.totl_epochs'." in proc.stderr


def test_entrypoint_missing_data_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    proc = _run_entrypoint(
        "verl.trainer.sft_trainer_ray", f"model.path={tmp_path}", f"data.train_files={tmp_path}/train.parquet"
    )
    assert proc.returncode != 0
    assert proc.stdout.splitlines()[0] == "MARKER verl-sim-default"
    assert f"FileNotFoundError: Unable to find '{tmp_path}/train.parquet'" in proc.stderr
