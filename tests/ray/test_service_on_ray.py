"""The service against the real local Ray cluster: a real `argus server` process, its SQLite
file, the SDK over HTTP, and the CPU stand-in for verl as the training code (seeds v2.0, v2.5).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import user_client, wait_state
from ray.job_submission import JobSubmissionClient

from argus.client.sdk import ArgusAPIError
from argus.cluster import local
from argus.cluster.snapshot import RaySnapshotSource
from argus.domain.nodes import NODE_LABEL
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "test-admin-token"


def Server(cluster, workdir: Path, **scheduler) -> ServerProcess:
    return ServerProcess(local.config_file(cluster.shared_root), workdir, ADMIN, **scheduler)


@pytest.fixture
def server(idle_cluster, sandbox, tmp_path):
    srv = Server(idle_cluster, tmp_path)
    srv.start()
    yield srv
    srv.stop()


def slow(sandbox, gpus: int, steps: int = 8, step_s: float = 0.5, **fields) -> str:
    return task_yaml(
        sandbox,
        "ppo",
        n_gpus_per_node=gpus,
        total_training_steps=steps,
        save_freq=steps,
        env_vars={"VERL_SIM_STEP_SECONDS": str(step_s)},
        **fields,
    )


def test_task_runs_to_success_with_outputs_under_the_users_own_directory(server, sandbox, ray_cluster):
    alice = user_client(server.url, ADMIN, "alice")
    tid = alice.submit(task_yaml(sandbox, "ppo"))["task_id"]
    task = wait_state(alice, tid, {"SUCCEEDED", "FAILED"})
    assert task["state"] == "SUCCEEDED", alice.logs(tid, tail=40)
    attempts = alice.attempts(tid)["attempts"]
    assert [a["ray_status"] for a in attempts] == ["SUCCEEDED"], attempts
    sid = f"{tid}--a01"
    assert task["latest_attempt"]["ray_submission_id"] == sid
    # The driver ran on a worker (seed 001 §3.3), named as Argus knows it, never on the head.
    driver = {k: task["latest_attempt"][k] for k in ("driver_node_id", "driver_node_ip", "driver_node_name")}
    assert attempts[0] == task["latest_attempt"]
    workers = {n.name: n.ip for n in ray_cluster.nodes if not n.is_head}
    head_ip = next(n.ip for n in ray_cluster.nodes if n.is_head)
    assert driver["driver_node_name"] in workers, driver
    assert driver["driver_node_ip"] == workers[driver["driver_node_name"]] != head_ip, driver
    snap = RaySnapshotSource(ray_cluster.dashboard_url, ray_cluster.gcs_address).snapshot()
    by_id = {n.node_id: n for n in snap.nodes}
    assert driver["driver_node_id"] in by_id and not by_id[driver["driver_node_id"]].is_head, driver
    assert by_id[driver["driver_node_id"]].labels.get(NODE_LABEL) == driver["driver_node_name"]
    root = Path(ray_cluster.shared_root) / "users" / "alice" / "jobs" / sid
    assert task["latest_attempt"]["job_root"] == str(root)
    assert sorted(p.name for p in (root / "checkpoints").glob("global_step_*")) == [
        "global_step_2",
        "global_step_4",
    ]
    assert (root / "config" / "jobspec.yaml").read_text() == task["jobspec_yaml"]
    # The log is archived at the end, so it is served after Ray forgot the job.
    deadline = time.monotonic() + 20
    archive = root / "logs" / "driver.log"
    while not archive.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "MARKER sim-a" in archive.read_text()
    JobSubmissionClient(ray_cluster.dashboard_url).delete_job(sid)
    assert "MARKER sim-a" in alice.logs(tid)
    assert alice.logs(tid, tail=1).count("\n") <= 1


def test_task_short_of_gpus_waits_then_runs_when_another_ends(server, sandbox):
    bob = user_client(server.url, ADMIN, "bob")
    holders = [bob.submit(slow(sandbox, 4, steps=10))["task_id"] for _ in range(2)]
    for tid in holders:
        wait_state(bob, tid, {"RUNNING"})
    waiting = bob.submit(task_yaml(sandbox, "grpo", n_gpus_per_node=3))["task_id"]
    task = wait_state(bob, waiting, {"PENDING_RESOURCES"}, timeout=10)
    assert "needs 1 node(s) x 3 GPU(s)" in task["pending_reason"]
    assert bob.queue()["pending"][0]["task_id"] == waiting
    done = wait_state(bob, waiting, {"SUCCEEDED", "FAILED"}, timeout=180)
    assert done["state"] == "SUCCEEDED"
    assert done["attempts"] == 1  # never submitted while the GPUs were short
    ended = [bob.task(t) for t in holders]
    assert all(t["state"] == "SUCCEEDED" for t in ended)
    started = datetime.fromisoformat(done["latest_attempt"]["start_time"])
    assert started >= min(datetime.fromisoformat(t["ended_at"]) for t in ended) - timedelta(seconds=1)


def test_cancel_pending_and_running_tasks_stops_their_ray_jobs(server, sandbox, ray_cluster):
    carol = user_client(server.url, ADMIN, "carol")
    running = carol.submit(slow(sandbox, 4, steps=40))["task_id"]
    wait_state(carol, running, {"RUNNING"})
    other = carol.submit(slow(sandbox, 4, steps=40))["task_id"]
    wait_state(carol, other, {"RUNNING"})
    pending = carol.submit(slow(sandbox, 4, steps=2))["task_id"]
    wait_state(carol, pending, {"PENDING_RESOURCES"}, timeout=10)

    assert carol.cancel(pending) == {"task_id": pending, "state": "CANCELED"}
    assert carol.attempts(pending)["attempts"] == []  # never reached Ray
    assert carol.cancel(running)["state"] == "CANCELED"
    assert carol.cancel(other)["state"] == "CANCELED"
    ray = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = {str(ray.get_job_status(f"{t}--a01").value) for t in (running, other)}
        if statuses == {"STOPPED"}:
            break
        time.sleep(0.5)
    assert statuses == {"STOPPED"}
    with pytest.raises(ArgusAPIError) as exc:
        carol.cancel(running)
    assert exc.value.status == 409
    time.sleep(2)  # a cancelled task is never picked up again
    assert carol.task(pending)["state"] == "CANCELED"


def test_cancel_a_queued_task(ray_cluster, sandbox, tmp_path):
    srv = Server(ray_cluster, tmp_path, enabled=False)  # nothing leaves QUEUED
    srv.start()
    try:
        dave = user_client(srv.url, ADMIN, "dave")
        tid = dave.submit(task_yaml(sandbox, "sft"))["task_id"]
        assert dave.task(tid)["state"] == "QUEUED"
        assert dave.cancel(tid)["state"] == "CANCELED"
        assert dave.task(tid)["state"] == "CANCELED"
    finally:
        srv.stop()


def test_sigkill_and_restart_loses_nothing_and_submits_nothing_twice(server, sandbox, ray_cluster):
    erin = user_client(server.url, ADMIN, "erin")
    running = [erin.submit(slow(sandbox, 4, steps=12))["task_id"] for _ in range(2)]
    for tid in running:
        wait_state(erin, tid, {"RUNNING"})
    queued = erin.submit(task_yaml(sandbox, "sft", n_gpus_per_node=2))["task_id"]
    wait_state(erin, queued, {"PENDING_RESOURCES"}, timeout=10)

    server.kill()
    ray = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ray finishes the jobs while the server is dead
        if all(str(ray.get_job_status(f"{t}--a01").value) == "SUCCEEDED" for t in running):
            break
        time.sleep(0.5)
    server.start()

    for tid in running:
        try:
            task = wait_state(erin, tid, {"SUCCEEDED", "FAILED"}, timeout=60)
        except AssertionError as exc:  # what the restarted server said, for the next reader
            raise AssertionError(f"{exc}\nserver log:\n{server.log.read_text()[-4000:]}") from None
        assert task["state"] == "SUCCEEDED" and task["attempts"] == 1
    task = wait_state(erin, queued, {"SUCCEEDED", "FAILED"}, timeout=120)
    assert task["state"] == "SUCCEEDED" and task["attempts"] == 1
    ours = sorted(j.submission_id for j in ray.list_jobs() if (j.submission_id or "").startswith("mvp2-erin-"))
    assert ours == sorted(f"{t}--a01" for t in [*running, queued])
