"""The verl stand-in's reward function and W&B logging (examples/verl-sim), its whole flow run
in a subprocess with the functions that talk to Ray replaced: `reward/mean` per step is what the
configured function computes (verl 0.9.1's keys and the older top-level ones), the default
scorer, verl's loader errors, and an offline W&B run read back from what wandb wrote.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from verl_sim_support import SIM_DIR, sim

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
