"""Preemption on the real local Ray cluster (issue 16, item 2): a real `argus server` with
`scheduler.preemption: priority`, the SDK over HTTP, the CPU stand-in for verl as the training code.

A preemptible low-priority task of a user holds every GPU of the cluster (2 workers x 4) and saves
a checkpoint every 2 steps. Once it has saved one, the admin submits a priority-900 task of one
node x 4 GPUs (a user may not ask for more than 500). The scheduler stops the low task (its
attempt ends PREEMPTED, its task goes back to the queue, events on both), starts the high one
once Ray shows the GPUs free (its only attempt succeeds), and the low task's second attempt
resumes from the last checkpoint its first one completed and succeeds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import user_client, wait_state

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.cluster import local
from argus.store.db import connect
from argus.store.tasks import TaskStore
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "preemption-admin-token"


@pytest.fixture
def server(idle_cluster, tmp_path):
    srv = ServerProcess(local.config_file(idle_cluster.shared_root), tmp_path, ADMIN, preemption="priority")
    srv.start()
    yield srv
    srv.stop()


def _steps(log: str) -> list[int]:
    return [int(line.split(" - ", 1)[0].split(":", 1)[1]) for line in log.splitlines() if line.startswith("step:")]


def test_a_high_priority_task_preempts_a_preemptible_one_which_resumes_and_succeeds(server, sandbox, ray_cluster):
    dave = user_client(server.url, ADMIN, "dave")
    admin = ArgusClient(server.url, ADMIN)
    low_spec = task_yaml(
        sandbox,
        "ppo",
        nnodes=2,
        n_gpus_per_node=4,
        total_training_steps=12,
        save_freq=2,
        priority=100,
        preemptible=True,
        env_vars={"VERL_SIM_STEP_SECONDS": "1.0"},
    )
    low = dave.submit(low_spec)["task_id"]
    wait_state(dave, low, {"RUNNING"}, timeout=120)
    ckpt1 = Path(ray_cluster.shared_root) / "users" / "dave" / "jobs" / f"{low}--a01" / "checkpoints"
    tracker = ckpt1 / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + 120
    while not (tracker.exists() and tracker.read_text().strip()):
        assert time.monotonic() < deadline, dave.logs(low, tail=30)
        time.sleep(0.2)

    high_spec = task_yaml(sandbox, "ppo", n_gpus_per_node=4, priority=900, total_training_steps=4)
    with pytest.raises(ArgusAPIError) as refused:
        dave.submit(high_spec)
    assert refused.value.status == 400
    high = admin.submit(high_spec)["task_id"]

    done = wait_state(admin, high, {"SUCCEEDED", "FAILED"}, timeout=180)
    assert done["state"] == "SUCCEEDED" and done["attempts"] == 1, (done, admin.logs(high, tail=30))
    task = wait_state(dave, low, {"SUCCEEDED", "FAILED"}, timeout=240)
    first, second = dave.attempts(low)["attempts"]
    assert task["state"] == "SUCCEEDED", (task, dave.logs(low, attempt=1, tail=30), dave.logs(low, tail=30))
    assert task["preemptible"] is True and task["attempts"] == 2
    assert (first["failure_kind"], first["ray_status"]) == ("PREEMPTED", "STOPPED"), first

    saved = int(tracker.read_text())  # the last save attempt 1 completed before it was stopped
    assert saved >= 2 and (ckpt1 / f"global_step_{saved}").is_dir()
    assert (second["resumed_from_step"], second["resumed_from"]) == (saved, str(ckpt1 / f"global_step_{saved}"))
    second_log = dave.logs(low, attempt=2)
    assert _steps(second_log) == list(range(saved + 1, 13)), second_log
    assert f"verl-sim: training finished after 12 steps (resumed after step {saved})" in second_log

    store = TaskStore(connect(f"sqlite:///{server.workdir}/argus.sqlite3"))
    requeued = [e for e in store.events(low) if e.to_state == "QUEUED" and e.attempt_no == 1]
    assert len(requeued) == 1, store.events(low)
    assert (requeued[0].reason or "").startswith("PREEMPTED: preempted by a higher-priority task (priority 900)")
    assert [e.reason for e in store.events(high)].count("preempting 1 task(s) to make room") == 1
    [high_attempt] = store.attempts(high)  # written by a later pass, once Ray showed the GPUs free
    assert high_attempt.created_at > requeued[0].at and high_attempt.ray_status == "SUCCEEDED"
