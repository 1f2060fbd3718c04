"""The scheduling policy live: a real `argus server` over the real local Ray cluster (2 workers
x 4 GPUs) running the CPU stand-in for verl. Gang fit, time limits, priority and backfill."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from helpers import user_client, wait_state
from ray.job_submission import JobSubmissionClient

from argus.client.sdk import ArgusClient
from argus.cluster import local
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "sched-admin-token"


@pytest.fixture
def server(idle_cluster, sandbox, tmp_path):
    srv = ServerProcess(local.config_file(idle_cluster.shared_root), tmp_path, ADMIN)
    srv.start()
    yield srv
    srv.stop()


def spec(sandbox, gpus: int, steps: int, step_s: float = 0.5, nnodes: int = 1, **fields) -> str:
    return task_yaml(
        sandbox,
        "ppo",
        nnodes=nnodes,
        n_gpus_per_node=gpus,
        total_training_steps=steps,
        save_freq=-1,
        env_vars={"VERL_SIM_STEP_SECONDS": str(step_s)},
        **fields,
    )


def at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_a_one_by_eight_gang_is_not_admitted_on_four_plus_four(server, sandbox):
    c = user_client(server.url, ADMIN, "gang")
    tid = c.submit(spec(sandbox, 8, 2))["task_id"]
    task = wait_state(c, tid, {"PENDING_RESOURCES"}, timeout=15)
    assert task["pending_code"] == "Resources"
    assert task["pending_reason"].startswith("Resources: needs 1 node(s) x 8 GPU(s); largest free bundle is 4")
    assert "cannot fit on the current nodes" in task["pending_reason"]
    time.sleep(2)
    assert c.attempts(tid)["attempts"] == []  # never submitted, so it never hangs in Ray
    c.cancel(tid)


def test_a_task_at_its_time_limit_ends_timeout_and_frees_its_gpus(server, sandbox, ray_cluster):
    c = user_client(server.url, ADMIN, "limited")
    tid = c.submit(spec(sandbox, 4, 200, nnodes=2, time_limit="30s"))["task_id"]
    running = wait_state(c, tid, {"RUNNING"}, timeout=60)
    behind = c.submit(spec(sandbox, 4, 2))["task_id"]
    wait_state(c, behind, {"PENDING_RESOURCES"}, timeout=15)
    ended = wait_state(c, tid, {"TIMEOUT", "FAILED", "SUCCEEDED"}, timeout=90)
    assert ended["state"] == "TIMEOUT" and ended["error_summary"] == "stopped at its time limit (30s)"
    started = at(running["latest_attempt"]["start_time"])
    assert 30 <= at(ended["ended_at"]) - started <= 45
    ray = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 30
    while str(ray.get_job_status(f"{tid}--a01").value) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert str(ray.get_job_status(f"{tid}--a01").value) == "STOPPED"
    done = wait_state(c, behind, {"SUCCEEDED", "FAILED"}, timeout=90)  # the GPUs were freed
    assert done["state"] == "SUCCEEDED"


def test_higher_priority_starts_first_and_a_short_task_backfills_beside_a_blocked_one(server, sandbox):
    c = user_client(server.url, ADMIN, "prio")
    # One holder with 2 GPUs on each node; it ends after about ten seconds (limit 2 minutes).
    holder = c.submit(spec(sandbox, 2, 12, nnodes=2, time_limit="2m"))["task_id"]
    wait_state(c, holder, {"RUNNING"}, timeout=60)
    low = c.submit(spec(sandbox, 4, 2))["task_id"]
    high = c.submit(spec(sandbox, 4, 2))["task_id"]
    # Raising a priority above the default is the admin's: here through the API, while it waits.
    assert ArgusClient(server.url, ADMIN).set_priority(high, 900) == {"task_id": high, "priority": 900}
    long = c.submit(spec(sandbox, 2, 2, nnodes=2, time_limit="1h"))["task_id"]  # needs the head's node
    time.sleep(2)  # full passes (every 0.5 s) have planned them all
    head = c.task(high)
    assert head["state"] == "PENDING_RESOURCES" and head["pending_code"] == "Resources", head
    reserved = at(head["estimated_start"])
    assert c.task(low)["pending_code"] == "Resources"
    blocked = c.task(long)  # it fits now, on 2 + 2 free GPUs, but would hold the head's node
    assert blocked["pending_code"] == "Priority" and f"would delay {high}" in blocked["pending_reason"]
    short = c.submit(spec(sandbox, 2, 2, time_limit="60s"))["task_id"]  # ends before the head starts
    assert wait_state(c, short, {"SUBMITTED", "RUNNING", "SUCCEEDED"}, timeout=10)  # backfilled
    started = wait_state(c, high, {"SUBMITTED", "RUNNING", "SUCCEEDED"}, timeout=120)
    first = at(started["latest_attempt"]["created_at"])
    assert first <= reserved + 1  # the backfilled task did not delay it
    lower = c.task(low)
    assert lower["attempts"] == 0 or at(lower["latest_attempt"]["created_at"]) >= first
    for tid in (low, long):
        c.cancel(tid)
