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

REPO = Path(__file__).resolve().parents[2]
SIM_DIR = REPO / "examples" / "verl-sim"
DATA = "/x/train.parquet"


def _is_sim_module(name: str) -> bool:
    return name == "verl" or name.startswith("verl.") or name == "mvp_marker"


@pytest.fixture(scope="module")
def sim():
    saved = {name: mod for name, mod in sys.modules.items() if _is_sim_module(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(SIM_DIR))
    importlib.invalidate_caches()
    try:
        ns = SimpleNamespace(
            config=importlib.import_module("verl.trainer._sim.config"),
            inputs=importlib.import_module("verl.trainer._sim.inputs"),
            checkpoints=importlib.import_module("verl.trainer._sim.checkpoints"),
            flavors=importlib.import_module("verl.trainer._sim.flavors"),
            runner=importlib.import_module("verl.trainer._sim.runner"),
        )
        assert Path(ns.config.__file__).is_relative_to(SIM_DIR)
        yield ns
    finally:
        sys.path.remove(str(SIM_DIR))
        for name in [n for n in sys.modules if _is_sim_module(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        importlib.invalidate_caches()


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


# ------------------------------------------------------------------ rewards and W&B (a fake Ray)

# The stand-in's whole flow in a subprocess, with the functions that talk to Ray replaced.
FAKE_RAY_RUN = """
import sys
from verl.trainer._sim import cluster, runner

cluster.connect = lambda: "fake-node"
cluster.check_resource_available = lambda nnodes, gpus: None
cluster.acquire_gpus = lambda nnodes, gpus, timeout_s: "pg"
cluster.start_workers = lambda pg, nnodes, gpus: []
cluster.run_step = lambda workers, seconds: [("fake-node", "0")]
cluster.release = lambda pg: None
runner.run(sys.argv[1], sys.argv[2:])
"""

REWARD_ROWS = [{"data_source": "a" if i % 3 else "b", "answer": str(i * 7), "w": round(0.1 * i, 2)} for i in range(10)]

CUSTOM_REWARD = """
def my_score(data_source, solution_str, ground_truth, extra_info=None):
    hit = solution_str.endswith("#### " + str(ground_truth))
    return {"score": (1.0 if hit else 0.0) + extra_info["w"] + (0.5 if data_source == "a" else 0.0), "acc": hit}
"""


def _my_score(data_source, solution_str, ground_truth, extra_info=None):
    hit = solution_str.endswith("#### " + str(ground_truth))
    return (1.0 if hit else 0.0) + extra_info["w"] + (0.5 if data_source == "a" else 0.0)


def _reward_train_file(path: Path) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "data_source": [r["data_source"] for r in REWARD_ROWS],
            "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(len(REWARD_ROWS))],
            "reward_model": [{"style": "rule", "ground_truth": r["answer"]} for r in REWARD_ROWS],
            "extra_info": [{"index": i, "w": r["w"]} for i, r in enumerate(REWARD_ROWS)],
        }
    )
    pq.write_table(table, path)
    return path


def _run_fake_ray(flavor, overrides, **env_extra):
    env = {**os.environ, "PYTHONPATH": str(SIM_DIR), **env_extra}
    env.pop("RAY_ADDRESS", None)
    env.pop("VERL_SIM_CONFIG_DIR", None)
    return subprocess.run(
        [sys.executable, "-c", FAKE_RAY_RUN, flavor, *overrides],
        env=env,
        cwd=SIM_DIR,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _rl_overrides(train, estimator, *extra, logger="['console']"):
    return [
        f"algorithm.adv_estimator={estimator}",
        f"data.train_files={train}",
        "data.val_files=null",
        "data.train_batch_size=4",
        "actor_rollout_ref.model.path=Org/Model",
        "critic.model.path=Org/Critic",
        f"trainer.logger={logger}",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        "trainer.total_training_steps=3",
        *extra,
    ]


def _step_rewards(stdout: str) -> dict[int, float]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("step:") and "reward/mean:" in line:
            fields = dict(f.split(":", 1) for f in line.split(" - "))
            out[int(fields["step"])] = float(fields["reward/mean"])
    return out


def _expected_means(sim, fn, steps=3, batch=4):
    means = {}
    for step in range(1, steps + 1):
        scores = []
        for i in range(batch):
            index = ((step - 1) * batch + i) % len(REWARD_ROWS)
            row = REWARD_ROWS[index]
            response = sim.reward.fake_response(step, index, row["answer"])
            scores.append(fn(row["data_source"], response, row["answer"], {"index": index, "w": row["w"]}))
        means[step] = sum(scores) / len(scores)
    return means


@pytest.fixture
def sim_reward(sim):
    sim.reward = importlib.import_module("verl.trainer._sim.reward")
    return sim


@pytest.mark.parametrize(
    ("estimator", "keys"),
    [
        ("gae", "reward.custom_reward_function"),  # PPO, verl 0.9.1's keys
        ("grpo", "reward.custom_reward_function"),
        ("grpo", "custom_reward_function"),  # older verl's top-level keys (0.9.1 migrates them)
    ],
)
def test_custom_reward_mean_per_step(sim_reward, tmp_path, estimator, keys):
    train = _reward_train_file(tmp_path / "train.parquet")
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text(CUSTOM_REWARD)
    extra = [f"{keys}.path={reward_file}", f"{keys}.name=my_score"]
    proc = _run_fake_ray("ppo", _rl_overrides(train, estimator, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"verl-sim: reward function my_score from {reward_file}" in proc.stdout
    got = _step_rewards(proc.stdout)
    expected = _expected_means(sim_reward, _my_score)
    assert got.keys() == expected.keys() == {1, 2, 3}
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5), (step, got, expected)
    assert got[3] != got[1]  # step 3 wraps around the 10 rows (rows 8, 9, 0, 1)


def test_default_reward_is_the_last_number(sim_reward, tmp_path):
    train = _reward_train_file(tmp_path / "train.parquet")
    proc = _run_fake_ray("ppo", _rl_overrides(train, "grpo"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reward function: built-in default" in proc.stdout
    expected = _expected_means(sim_reward, sim_reward.reward.default_score)
    assert _step_rewards(proc.stdout) == pytest.approx(expected)
    # A row is answered right when index % 10 < step + 1: rows 0-1 of 0-3, none of 4-7, 0-1 of 8, 9, 0, 1.
    assert [expected[s] for s in (1, 2, 3)] == [0.5, 0.0, 0.5]


def test_reward_file_errors_are_verls(tmp_path):
    train = _reward_train_file(tmp_path / "train.parquet")
    broken = tmp_path / "broken.py"
    broken.write_text("def compute_score(:\n")
    key = "reward.custom_reward_function"
    proc = _run_fake_ray("ppo", _rl_overrides(train, "grpo", f"{key}.path={broken}"))
    assert proc.returncode != 0
    assert f"RuntimeError: Error loading module from module_path='{broken}'" in proc.stderr
    assert "SyntaxError" in proc.stderr
    good = tmp_path / "good.py"
    good.write_text(CUSTOM_REWARD)
    proc = _run_fake_ray("ppo", _rl_overrides(train, "grpo", f"{key}.path={good}"))  # name: compute_score
    assert proc.returncode != 0
    assert "AttributeError: Object not found in module: object_name='compute_score'" in proc.stderr


def test_rows_without_verl_columns_and_no_custom_reward(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    train = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["1", "2"]}), train)
    proc = _run_fake_ray("ppo", _rl_overrides(train, "grpo"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no reward/mean" in proc.stdout and "reward/mean:" not in proc.stdout


def test_wandb_missing_prints_one_line(tmp_path):
    train = _reward_train_file(tmp_path / "train.parquet")
    blocker = tmp_path / "no-wandb"
    blocker.mkdir()
    (blocker / "wandb.py").write_text("raise ImportError('wandb is blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{SIM_DIR}:{blocker}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_RAY_RUN, "ppo", *_rl_overrides(train, "grpo", logger="['console','wandb']")],
        env=env,
        cwd=SIM_DIR,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "wandb" in line]
    assert lines == ["verl-sim: trainer.logger has wandb but the wandb package is not importable; console only"]


def _wandb_records(path: Path):
    """The records of a `.wandb` file: a LevelDB-style log (7-byte file header, 32 KiB blocks,
    each chunk `crc32 u32, length u16, type u8`: 1 full, 2 first, 3 middle, 4 last) of protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # padding to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        else:
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_run_logs_each_step(sim_reward, tmp_path):
    pytest.importorskip("wandb")
    train = _reward_train_file(tmp_path / "train.parquet")
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text(CUSTOM_REWARD)
    overrides = _rl_overrides(
        train,
        "gae",
        f"reward.custom_reward_function.path={reward_file}",
        "reward.custom_reward_function.name=my_score",
        "trainer.project_name='argus-test'",
        "trainer.experiment_name='exp-1'",
        logger="['console','wandb']",
    )
    wandb_dir = tmp_path / "wb"
    wandb_dir.mkdir()
    proc = _run_fake_ray(
        "ppo",
        overrides,
        WANDB_MODE="offline",
        WANDB_DIR=str(wandb_dir),
        WANDB_RUN_ID="task-0123",
        WANDB_RESUME="allow",
        WANDB_SILENT="true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verl-sim: wandb run task-0123 (offline)" in proc.stdout
    [run_dir] = list((wandb_dir / "wandb").glob("offline-run-*-task-0123"))
    records = _wandb_records(run_dir / "run-task-0123.wandb")
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.project, run.display_name) == ("task-0123", "argus-test", "exp-1")
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history[int(items["_step"])] = items
    assert sorted(history) == [1, 2, 3]
    expected = _expected_means(sim_reward, _my_score)
    printed = _step_rewards(proc.stdout)
    for step, items in history.items():
        assert items["reward/mean"] == pytest.approx(printed[step]) == pytest.approx(expected[step], rel=1e-5)
        assert items["actor/pg_loss"] == pytest.approx(0.5 * 0.92**step, abs=1e-3)
        assert "critic/vf_loss" in items and "timing_s/step" in items
