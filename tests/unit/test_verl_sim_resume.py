"""The verl stand-in resumes as verl 0.9.1 does (examples/verl-sim/verl/trainer/_sim/resume.py):
`trainer.resume_mode` / `trainer.resume_from_path` read with verl's rules, the run continuing at
the step after the checkpoint, its saves numbered from there, retention confined to its own
directory, and `VERL_SIM_FAIL_AFTER_STEP` failing only a run that did not resume.

The whole flow runs in a subprocess with the functions that talk to Ray replaced (as in
test_verl_sim_rewards.py); the overrides are composed against the installed verl's config.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from verl_sim_support import SIM_DIR, sim

from argus.domain.failure import FailureCause, classify_failure

__all__ = ["sim"]  # the fixture, found by name

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


def _run(flavor: str, overrides: list[str], **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SIM_DIR), "VERL_SIM_STEP_SECONDS": "0", **env_extra}
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


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(8)]}), path)
    return path


def _overrides(train: Path, ckpt: Path, *extra: str, steps: int = 5) -> list[str]:
    """A GRPO run of `steps` steps saving every 2 into `ckpt`."""
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={train}",
        "data.val_files=null",
        "data.train_batch_size=4",
        "actor_rollout_ref.model.path=Org/Model",
        "trainer.logger=['console']",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        f"trainer.total_training_steps={steps}",
        "trainer.save_freq=2",
        f"trainer.default_local_dir={ckpt}",
        *extra,
    ]


def _steps(stdout: str) -> list[int]:
    return [int(line.split(" - ", 1)[0].split(":", 1)[1]) for line in stdout.splitlines() if line.startswith("step:")]


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_a_run_failing_after_a_save_is_resumed_by_the_next_from_that_step(tmp_path, train_file):
    first, second = tmp_path / "a01" / "checkpoints", tmp_path / "a02" / "checkpoints"
    failed = _run("ppo", _overrides(train_file, first), VERL_SIM_FAIL_AFTER_STEP="2")
    assert failed.returncode != 0, failed.stdout
    assert _steps(failed.stdout) == [1, 2]
    assert "RuntimeError: NCCL error: verl-sim: injected communicator failure after step 2" in failed.stderr
    diagnosis = classify_failure("FAILED", "exit code 1", failed.stdout + failed.stderr)
    assert diagnosis is not None and diagnosis.cause is FailureCause.NCCL  # one Argus retries
    assert _names(first) == ["global_step_2", "latest_checkpointed_iteration.txt"]
    assert (first / "latest_checkpointed_iteration.txt").read_text() == "2"

    resume = [
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path={first / 'global_step_2'}",
        "trainer.max_actor_ckpt_to_keep=1",
    ]
    done = _run("ppo", _overrides(train_file, second, *resume), VERL_SIM_FAIL_AFTER_STEP="2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"resumed from {first / 'global_step_2'}" in lines
    assert _steps(done.stdout) == [3, 4, 5]  # total_training_steps - 2 more steps
    assert "verl-sim: saved checkpoint " + str(second / "global_step_4") in lines
    assert lines[-1] == "verl-sim: training finished after 5 steps (resumed after step 2)"
    # Retention (keep 1) pruned only this run's own saves; the checkpoint it resumed from stays.
    assert _names(second) == ["global_step_5", "latest_checkpointed_iteration.txt"]
    assert (second / "latest_checkpointed_iteration.txt").read_text() == "5"
    assert _names(first) == ["global_step_2", "latest_checkpointed_iteration.txt"]


def test_auto_resumes_from_the_tracker_in_its_own_directory(tmp_path, train_file):
    ckpt = tmp_path / "checkpoints"
    assert _run("ppo", _overrides(train_file, ckpt, steps=4)).returncode == 0
    again = _run("ppo", _overrides(train_file, ckpt, "trainer.resume_mode=auto", steps=6))
    assert again.returncode == 0, again.stderr
    assert f"resumed from {ckpt / 'global_step_4'}" in again.stdout.splitlines()
    assert _steps(again.stdout) == [5, 6]
    scratch = _run("ppo", _overrides(train_file, ckpt, "trainer.resume_mode=disable", steps=2))
    assert _steps(scratch.stdout) == [1, 2] and "resumed from" not in scratch.stdout


def test_verls_checks_of_the_resume_keys(tmp_path, train_file):
    ckpt = tmp_path / "checkpoints"
    no_step = _run(
        "ppo", _overrides(train_file, ckpt, "trainer.resume_mode=resume_path", f"trainer.resume_from_path={tmp_path}")
    )
    assert no_step.returncode != 0
    assert "AssertionError: resume ckpt must specify the global_steps" in no_step.stderr
    missing = tmp_path / "gone" / "global_step_3"
    gone = _run(
        "ppo", _overrides(train_file, ckpt, "trainer.resume_mode=resume_path", f"trainer.resume_from_path={missing}")
    )
    assert (
        gone.returncode != 0 and f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}'" in gone.stderr
    )


@pytest.fixture
def resume(sim):
    return importlib.import_module("verl.trainer._sim.resume")


def _saved(root: Path, step: int) -> Path:
    (root / f"global_step_{step}" / "actor").mkdir(parents=True)
    (root / "latest_checkpointed_iteration.txt").write_text(str(step))
    return root / f"global_step_{step}"


def test_ppo_and_sft_read_the_two_keys_as_verl_does(resume, tmp_path):
    own, other = tmp_path / "own", tmp_path / "other"
    own_ckpt, other_ckpt = _saved(own, 4), _saved(other, 6)
    # PPO: auto ignores resume_from_path and takes the tracker's; resume_path takes the path.
    assert resume.resume_from("ppo", "auto", str(other_ckpt), str(own)) == (4, str(own_ckpt))
    assert resume.resume_from("ppo", "resume_path", str(other_ckpt), str(own)) == (6, str(other_ckpt))
    assert resume.resume_from("ppo", "auto", None, str(tmp_path / "empty")) == (0, None)
    assert resume.resume_from("ppo", "disable", str(other_ckpt), str(own)) == (0, None)
    with pytest.raises(AssertionError, match="resume ckpt must be str type"):
        resume.resume_from("ppo", "resume_path", None, str(own))
    # SFT: auto takes a set resume_from_path, else the tracker's.
    assert resume.resume_from("sft", "auto", str(other_ckpt), str(own)) == (6, str(other_ckpt))
    assert resume.resume_from("sft", "auto", None, str(own)) == (4, str(own_ckpt))
    assert resume.resume_from("sft", "resume_path", str(other_ckpt), None) == (6, str(other_ckpt))
    with pytest.raises(AssertionError, match="must be an existing path when resume_mode is 'resume_path'"):
        resume.resume_from("sft", "resume_path", str(tmp_path / "global_step_9"), None)
    with pytest.raises(ValueError, match="Invalid resume_mode: sometimes"):
        resume.resume_from("sft", "sometimes", None, None)
