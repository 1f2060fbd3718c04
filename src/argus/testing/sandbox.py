"""Tiny inputs under `<shared_root>/common/` for the demo and the tests.

Owns: code snapshots of the CPU stand-in for verl (`examples/verl-sim`) with their own
`mvp_marker.MARKER` (seed 000 §6: several verl versions side by side), tiny parquet datasets
(prompts for PPO/GRPO, chat messages for SFT) and a tiny local model directory. Nothing is
downloaded; everything is built here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

STANDIN_SOURCE = Path(__file__).resolve().parents[3] / "examples" / "verl-sim"


@dataclass(frozen=True)
class Sandbox:
    shared_root: Path
    code: dict[str, Path]
    model: Path
    rl_train: Path
    rl_val: Path
    sft_train: Path
    sft_val: Path


def make_snapshot(dest: Path, marker: str, source: Path = STANDIN_SOURCE) -> Path:
    """Copy the stand-in to `dest` (replacing it) with `MARKER = marker`."""
    if not (source / "verl" / "trainer" / "main_ppo.py").exists():
        raise FileNotFoundError(f"the verl stand-in is not at {source}")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "mvp_marker.py").write_text(f'"""Which code snapshot this is."""\n\nMARKER = "{marker}"\n')
    return dest


def _write_parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


RL_DATA_SOURCE = "argus/tiny-arith"


def rl_columns(prompts: list[str], split: str) -> dict[str, list]:
    """verl's RL dataset layout (as its gsm8k preprocessing writes it): `data_source`, `prompt`
    (chat messages), `ability`, `reward_model: {style, ground_truth}` and `extra_info`. The
    ground truth of "What is i + i?" is 2i."""
    n = len(prompts)
    return {
        "data_source": [RL_DATA_SOURCE] * n,
        "prompt": [[{"role": "user", "content": p}] for p in prompts],
        "ability": ["math"] * n,
        "reward_model": [{"style": "rule", "ground_truth": str(2 * i)} for i in range(n)],
        "extra_info": [{"split": split, "index": i} for i in range(n)],
    }


def prepare(shared_root: str | Path, markers: tuple[str, ...] = ("sim-a", "sim-b")) -> Sandbox:
    """Build (idempotently) the inputs the demo and the tests use."""
    root = Path(shared_root)
    common = root / "common"
    code = {m: make_snapshot(common / "code" / "verl" / m, m) for m in markers}
    model = common / "models" / "tiny-lm"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text('{"model_type": "tiny-lm", "hidden_size": 8, "num_hidden_layers": 1}\n')
    data = common / "datasets" / "tiny"
    prompts = [f"What is {i} + {i}?" for i in range(32)]
    _write_parquet(data / "rl_train.parquet", rl_columns(prompts, "train"))
    _write_parquet(data / "rl_val.parquet", rl_columns(prompts[:8], "test"))
    messages = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": str(2 * i)}] for i, p in enumerate(prompts)
    ]
    _write_parquet(data / "sft_train.parquet", {"messages": messages})
    _write_parquet(data / "sft_val.parquet", {"messages": messages[:8]})
    return Sandbox(
        root,
        code,
        model,
        data / "rl_train.parquet",
        data / "rl_val.parquet",
        data / "sft_train.parquet",
        data / "sft_val.parquet",
    )


def task_yaml(sandbox: Sandbox, workload: str, marker: str = "sim-a", **fields) -> str:
    """A TaskSpec YAML for the sandbox; `fields` override or add keys (None drops a key)."""
    import yaml

    rl = workload != "sft"
    spec = {
        "workload": workload,
        "code_path": str(sandbox.code[marker]),
        "model_id": str(sandbox.model),
        "train_file": str(sandbox.rl_train if rl else sandbox.sft_train),
        "val_file": str(sandbox.rl_val if rl else sandbox.sft_val),
        "nnodes": 1,
        "n_gpus_per_node": 2,
        "total_training_steps": 4,
        "save_freq": 2,
        "env_vars": {"VERL_SIM_STEP_SECONDS": "0.2"},
        "overrides": ["data.train_batch_size=8"],
    }
    for key, value in fields.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return yaml.safe_dump(spec, sort_keys=False)
