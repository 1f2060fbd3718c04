"""The job tool against a real local Ray cluster (seeds v1 / v1.1 acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import markers, submit, wait_for
from ray.util.state import list_nodes, list_placement_groups

from argus.domain.failure import FailureCause
from argus.spec.redact import redact_spec_text
from argus.testing.sandbox import task_yaml

pytestmark = pytest.mark.ray


def _nodes(cluster):
    return list_nodes(address=cluster.dashboard_url, detail=True)


def test_head_is_control_only_and_drivers_run_on_workers(ray_cluster, ray_config, sandbox):
    nodes = _nodes(ray_cluster)
    head = [n for n in nodes if n.is_head_node]
    workers = [n for n in nodes if not n.is_head_node and n.state == "ALIVE"]
    assert len(head) == 1 and len(workers) == 2
    assert head[0].resources_total.get("CPU", 0) == 0
    assert head[0].resources_total.get("GPU", 0) == 0
    assert "worker_node" not in head[0].resources_total
    assert all(w.resources_total["GPU"] == 4 and w.resources_total["worker_node"] > 0 for w in workers)

    runs = [submit(ray_config, task_yaml(sandbox, wl, total_training_steps=2)) for wl in ("ppo", "grpo", "sft")]
    worker_ids = {w.node_id for w in workers}
    for tool, sid, _ in runs:
        view = wait_for(tool, sid, {"SUCCEEDED"})
        assert view.driver_node_id in worker_ids, (sid, view.driver_node_id)
        assert view.driver_node_id != head[0].node_id


def test_two_code_versions_run_side_by_side(ray_config, sandbox):
    slow = {"VERL_SIM_STEP_SECONDS": "1.0"}
    tool, a, _ = submit(ray_config, task_yaml(sandbox, "ppo", "sim-a", env_vars=slow, total_training_steps=5))
    _, b, _ = submit(ray_config, task_yaml(sandbox, "grpo", "sim-b", env_vars=slow, total_training_steps=5))
    va = wait_for(tool, a, {"SUCCEEDED"})
    vb = wait_for(tool, b, {"SUCCEEDED"})
    # They overlapped in time: each started before the other ended.
    assert va.start_time < vb.end_time and vb.start_time < va.end_time
    assert markers(tool.logs(a)) == ["sim-a"]
    assert markers(tool.logs(b)) == ["sim-b"]
    env_a = json.loads((Path(ray_config.shared_root) / "jobs" / a / "config" / "submit_payload.json").read_text())
    assert env_a["runtime_env"]["env_vars"]["PYTHONPATH"].split(":")[0] == str(sandbox.code["sim-a"])


def test_three_ppo_runs_keep_three_job_directories(ray_config, sandbox):
    text = task_yaml(sandbox, "ppo", total_training_steps=2, save_freq=1)
    sids = []
    for _ in range(3):
        tool, sid, rendered = submit(ray_config, text)
        wait_for(tool, sid, {"SUCCEEDED"})
        sids.append(sid)
    assert len(set(sids)) == 3
    for sid in sids:
        root = Path(ray_config.shared_root) / "jobs" / sid
        for rel in (
            "config/ray_config.yaml",
            "config/jobspec.yaml",
            "config/submit_payload.json",
            "logs/submit.out",
            "debug/ray_status_pre.txt",
            "debug/ray_job_list_post.txt",
        ):
            assert (root / rel).is_file(), f"{sid}: missing {rel}"
        assert (root / "config" / "jobspec.yaml").read_text() == redact_spec_text(text)  # env values hidden
        ckpts = sorted(p.name for p in (root / "checkpoints").glob("global_step_*"))
        assert ckpts == ["global_step_1", "global_step_2"]
        assert (root / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
        assert sid in json.loads((root / "config" / "submit_payload.json").read_text())["entrypoint"]


def _gpus_held(cluster) -> float:
    pgs = list_placement_groups(address=cluster.dashboard_url, detail=True)
    return sum(b.get("unit_resources", b).get("GPU", 0) for p in pgs if p.state == "CREATED" for b in p.bundles)


def test_stop_ends_a_running_task_and_frees_its_gpus(idle_cluster, ray_config, sandbox):
    long = task_yaml(
        sandbox,
        "ppo",
        nnodes=2,
        n_gpus_per_node=4,
        total_training_steps=500,
        env_vars={"VERL_SIM_STEP_SECONDS": "0.5"},
    )
    tool, sid, _ = submit(ray_config, long)
    wait_for(tool, sid, {"RUNNING"})
    import time

    deadline = time.monotonic() + 60
    while _gpus_held(idle_cluster) < 8 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _gpus_held(idle_cluster) == 8
    assert tool.stop(sid) is True
    view = wait_for(tool, sid, {"STOPPED"}, timeout=60)
    assert view.diagnosis is None
    deadline = time.monotonic() + 30
    while _gpus_held(idle_cluster) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _gpus_held(idle_cluster) == 0
    # And they are usable: a job that needs all 8 GPUs runs to the end.
    tool, sid2, _ = submit(ray_config, task_yaml(sandbox, "grpo", nnodes=2, n_gpus_per_node=4, total_training_steps=1))
    wait_for(tool, sid2, {"SUCCEEDED"})


def test_too_many_gpus_fails_with_verls_message(ray_config, sandbox):
    tool, sid, _ = submit(ray_config, task_yaml(sandbox, "ppo", nnodes=3, n_gpus_per_node=4))
    view = wait_for(tool, sid, {"FAILED"})
    assert view.diagnosis is not None
    assert view.diagnosis.cause is FailureCause.INSUFFICIENT_RESOURCES
    assert "is less than total desired GPUs 12" in view.diagnosis.evidence
    assert "Total available GPUs" in tool.logs(sid)


def test_injected_failure_is_user_code_and_logs_follow_to_the_end(ray_config, sandbox):
    text = task_yaml(sandbox, "sft", env_vars={"VERL_SIM_FAIL_AT_STEP": "2", "VERL_SIM_STEP_SECONDS": "0.2"})
    tool, sid, _ = submit(ray_config, text)
    streamed = "".join(tool.follow(sid))
    assert "injected failure at step 2" in streamed
    view = wait_for(tool, sid, {"FAILED"})
    assert view.diagnosis.cause is FailureCause.USER_CODE
    assert "injected failure" in view.diagnosis.evidence
