"""The `argus` command line as a user runs it, against the real local Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

from argus.cluster import local
from argus.testing.sandbox import task_yaml

pytestmark = pytest.mark.ray
ARGUS = [sys.executable, "-m", "argus.client.cli"]


def argus(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([*ARGUS, *args], capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"argus {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cfg_path(ray_cluster) -> str:
    return str(local.config_file(ray_cluster.shared_root))


def _job_count(cluster) -> int:
    return len(JobSubmissionClient(cluster.dashboard_url).list_jobs())


def test_run_submit_status_logs_list(ray_cluster, sandbox, cfg_path, tmp_path):
    spec = tmp_path / "grpo.yaml"
    spec.write_text(task_yaml(sandbox, "grpo", "sim-b", submission_id="e2e-grpo-1"))
    out = argus("run", "--config", cfg_path, "--jobspec", str(spec), "--action", "submit", check=True)
    assert "submitted e2e-grpo-1" in out.stdout
    logs = argus("run", "-c", cfg_path, "-a", "logs", "--submission-id", "e2e-grpo-1", "--follow", check=True)
    assert "MARKER sim-b" in logs.stdout and "training finished after 4 steps" in logs.stdout
    status = json.loads(
        argus("run", "-c", cfg_path, "-a", "status", "--submission-id", "e2e-grpo-1", "--json", check=True).stdout
    )
    assert status["status"] == "SUCCEEDED" and status["diagnosis"] is None
    tail = argus("run", "-c", cfg_path, "-a", "logs", "--submission-id", "e2e-grpo-1", "--tail", "1", check=True)
    assert tail.stdout.strip().endswith("training finished after 4 steps")
    listed = json.loads(argus("run", "-c", cfg_path, "-a", "list", "--json", check=True).stdout)
    assert "e2e-grpo-1" in {j["submission_id"] for j in listed}
    # The same id again is refused by Ray, and nothing runs twice.
    again = argus("run", "-c", cfg_path, "-j", str(spec), "-a", "submit")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_status_names_the_cause_of_a_gpu_shortage(ray_cluster, sandbox, cfg_path, tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text(task_yaml(sandbox, "ppo", nnodes=4, n_gpus_per_node=4, submission_id="e2e-too-big"))
    argus("run", "-c", cfg_path, "-j", str(spec), "-a", "submit", check=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = argus("run", "-c", cfg_path, "-a", "status", "--submission-id", "e2e-too-big").stdout
        if "FAILED" in out:
            break
        time.sleep(1)
    assert "cause: INSUFFICIENT_RESOURCES" in out
    assert "is less than total desired GPUs 16" in out


@pytest.mark.parametrize(
    "body, field",
    [
        ("workload: ppo\ncode_path: /x\n  bad: [\n", "<yaml>"),
        (None, "nnodes"),
        (None, "n_gpu_per_node"),
        (None, "overrides"),
    ],
)
def test_bad_input_exits_2_and_submits_nothing(ray_cluster, sandbox, cfg_path, tmp_path, body, field):
    if body is None:
        extra = {
            "nnodes": {"nnodes": "two"},
            "n_gpu_per_node": {"n_gpu_per_node": 2},
            "overrides": {"overrides": ["trainer.totl_epochs=3"]},
        }[field]
        body = task_yaml(sandbox, "ppo", **extra)
    spec = tmp_path / "bad.yaml"
    spec.write_text(body)
    jobs_dir = Path(ray_cluster.shared_root) / "jobs"
    dirs_before = set(jobs_dir.iterdir()) if jobs_dir.exists() else set()
    before = _job_count(ray_cluster)
    proc = argus("run", "-c", cfg_path, "-j", str(spec), "-a", "submit")
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr
    assert _job_count(ray_cluster) == before
    assert (set(jobs_dir.iterdir()) if jobs_dir.exists() else set()) == dirs_before


def test_cluster_up_is_idempotent_and_says_when_a_port_is_taken(ray_cluster, tmp_path):
    root = ray_cluster.shared_root
    again = argus(
        "cluster",
        "up",
        "--shared-root",
        root,
        "--port",
        str(ray_cluster.gcs_port),
        "--dashboard-port",
        str(ray_cluster.dashboard_port),
        check=True,
    )
    assert "already running" in again.stdout
    status = json.loads(argus("cluster", "status", "--shared-root", root, "--json", check=True).stdout)
    assert status["healthy"] and [n["gpus"] for n in status["nodes"]] == [0, 4, 4]
    other = argus(
        "cluster",
        "up",
        "--shared-root",
        str(tmp_path / "other"),
        "--port",
        str(ray_cluster.gcs_port),
        "--dashboard-port",
        "1",
    )
    assert other.returncode == 1
    assert f"port {ray_cluster.gcs_port} (Ray GCS) is already in use" in other.stderr
    assert not (tmp_path / "other" / "ray" / "local" / "cluster.json").exists()
