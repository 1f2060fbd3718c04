"""A worker node that dies under a running task, on a real local Ray cluster of this module's own
(killing a raylet would disturb the session cluster's other tests): a real `argus server`, the
SDK over HTTP, the CPU stand-in for verl as the training code.

The task saves a checkpoint every 2 steps; once one is saved, the raylet of the worker node its
driver runs on is SIGKILLed (by its pid, under that node's agent). Ray fails the job ("Job
supervisor actor died: The actor died because its node has died"), the attempt ends NODE_LOST
with the node's name and IP as evidence, and the retry resumes from the last checkpoint the first
attempt completed and succeeds.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from helpers import user_client, wait_state

from argus.cluster import local
from argus.cluster.local import port_free
from argus.cluster.procs import descendants
from argus.store.db import connect
from argus.store.tasks import TaskStore
from argus.testing.sandbox import prepare, task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "node-lost-admin-token"


def _free(start: int) -> int:
    port = start
    while not (port_free(port) and port_free(port + 1900)):
        port += 1
    return port


@pytest.fixture(scope="module")
def lost_cluster():
    root = Path(tempfile.mkdtemp(prefix="argus-node-lost-"))
    gcs = _free(6470)
    state, _ = local.up(
        str(root), workers=2, gpus_per_worker=4, cpus_per_worker=4, gcs_port=gcs, dashboard_port=gcs + 1900
    )
    try:
        yield state
    finally:
        assert local.down(str(root)) is True
        if not os.environ.get("ARGUS_KEEP_TEST_ROOT"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(lost_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("node-lost-server")
    srv = ServerProcess(local.config_file(lost_cluster.shared_root), workdir, ADMIN)
    srv.start()
    yield srv
    srv.stop()


def _steps(log: str) -> list[int]:
    return [int(line.split(" - ", 1)[0].split(":", 1)[1]) for line in log.splitlines() if line.startswith("step:")]


def _raylet_pid(agent_pid: int) -> int:
    raylets = [p.pid for p in descendants(agent_pid) if p.name() == "raylet"]
    assert len(raylets) == 1, raylets
    return raylets[0]


def test_a_node_lost_under_a_running_task_ends_its_attempt_node_lost_and_the_retry_resumes(lost_cluster, server):
    sandbox = prepare(lost_cluster.shared_root)
    carol = user_client(server.url, ADMIN, "carol")
    spec = task_yaml(
        sandbox,
        "ppo",
        n_gpus_per_node=2,
        total_training_steps=10,
        save_freq=2,
        env_vars={"VERL_SIM_STEP_SECONDS": "1.5"},
    )
    tid = carol.submit(spec)["task_id"]
    wait_state(carol, tid, {"RUNNING"}, timeout=120)
    ckpt1 = Path(lost_cluster.shared_root) / "users" / "carol" / "jobs" / f"{tid}--a01" / "checkpoints"
    tracker = ckpt1 / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + 120
    while not (tracker.exists() and tracker.read_text().strip()):
        assert time.monotonic() < deadline, carol.logs(tid, tail=30)
        time.sleep(0.2)
    first = carol.attempts(tid)["attempts"][0]
    deadline = time.monotonic() + 30
    while not first.get("driver_node_ip"):
        assert time.monotonic() < deadline, first
        time.sleep(0.5)
        first = carol.attempts(tid)["attempts"][0]
    node = next(n for n in lost_cluster.nodes if n.ip == first["driver_node_ip"])
    assert not node.is_head and node.pid is not None
    os.kill(_raylet_pid(node.pid), signal.SIGKILL)

    task = wait_state(carol, tid, {"SUCCEEDED", "FAILED"}, timeout=300)
    attempts = carol.attempts(tid)["attempts"]
    print("\nattempt 1 as Ray ended it:", attempts[0]["ray_status"], repr(attempts[0]["message"]))
    assert task["state"] == "SUCCEEDED", (task, attempts, carol.logs(tid, attempt=1, tail=30), carol.logs(tid, tail=30))
    first, second = attempts
    assert (first["ray_status"], first["failure_kind"]) == ("FAILED", "NODE_LOST"), first
    assert "its node has died" in first["message"], first["message"]

    store = TaskStore(connect(f"sqlite:///{server.workdir}/argus.sqlite3"))
    requeued = [e for e in store.events(tid) if e.to_state == "QUEUED" and e.attempt_no == 1]
    assert len(requeued) == 1, store.events(tid)
    reason = requeued[0].reason or ""
    assert reason.startswith(
        f"NODE_LOST, retrying (attempt 1 of 3): node {node.name} ({node.ip}) was lost under the job: "
    )
    assert reason.endswith("The actor died because its node has died. Node Id: " + first["driver_node_id"]), reason

    saved = int(tracker.read_text())  # the last save attempt 1 completed before its node died
    assert saved >= 2 and (ckpt1 / f"global_step_{saved}").is_dir()
    assert (second["resumed_from_step"], second["resumed_from"]) == (saved, str(ckpt1 / f"global_step_{saved}"))
    assert second["driver_node_id"] != first["driver_node_id"]
    second_log = carol.logs(tid, attempt=2)
    assert _steps(second_log) == list(range(saved + 1, 11)), second_log
    assert f"verl-sim: training finished after 10 steps (resumed after step {saved})" in second_log
