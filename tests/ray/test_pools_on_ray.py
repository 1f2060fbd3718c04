"""Pools, drain and a moving head, against a real local Ray cluster of this module's own.

The cluster is the production path (`argus.cluster.head` plus one `argus node-agent` per
worker) with worker-1 in pool `blue` and worker-2 in pool `green`, and a real `argus server`
that finds the head through head.json (`ray.cluster_name`), never through a fixed address.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
from helpers import user_client, wait_state

from argus.cluster import head, local
from argus.cluster.local import port_free
from argus.cluster.snapshot import RaySnapshotSource
from argus.testing.sandbox import prepare, task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "pools-admin-token"
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}


def _free(start: int) -> int:
    port = start
    while not (port_free(port) and port_free(port + 1900)):
        port += 1
    return port


@pytest.fixture(scope="module")
def pools_cluster():
    root = Path(tempfile.mkdtemp(prefix="argus-pools-"))
    gcs = _free(6440)
    state, _ = local.up(
        str(root),
        workers=2,
        gpus_per_worker=4,
        cpus_per_worker=4,
        gcs_port=gcs,
        dashboard_port=gcs + 1900,
        worker_labels=[{"pool": "blue"}, {"pool": "green"}],
    )
    try:
        yield state
    finally:
        assert local.down(str(root)) is True
        if not __import__("os").environ.get("ARGUS_KEEP_TEST_ROOT"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(pools_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pools-server")
    srv = ServerProcess(local.config_file(pools_cluster.shared_root), workdir, ADMIN)
    assert "cluster_name: local" in local.config_file(pools_cluster.shared_root).read_text()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sandbox(pools_cluster):
    return prepare(pools_cluster.shared_root)


def slow(sandbox, gpus: int, steps: int = 6, step_s: float = 0.5, **fields) -> str:
    return task_yaml(
        sandbox,
        "ppo",
        n_gpus_per_node=gpus,
        total_training_steps=steps,
        save_freq=steps,
        env_vars={"VERL_SIM_STEP_SECONDS": str(step_s)},
        **fields,
    )


def nodes_by_name(cluster) -> dict:
    snap = RaySnapshotSource(cluster.dashboard_url, cluster.gcs_address).snapshot()
    return {n.labels.get("argus.io/node"): n for n in snap.nodes if n.alive and not n.is_head}


def driver_ip(cluster, sid: str) -> str:
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(cluster.dashboard_url).get_job_info(sid)
    return info.driver_node_id and next(
        n.node_ip
        for n in RaySnapshotSource(cluster.dashboard_url, cluster.gcs_address).snapshot().nodes
        if n.node_id == info.driver_node_id
    )


def test_a_pool_task_runs_only_in_its_pool_and_waits_naming_it_when_full(pools_cluster, server, sandbox):
    alice = user_client(server.url, ADMIN, "alice")
    blue_ip = next(n.ip for n in pools_cluster.nodes if n.labels.get("pool") == "blue")
    first = alice.submit(slow(sandbox, 4, pool="blue"))["task_id"]
    wait_state(alice, first, {"RUNNING"} | FINAL)
    second = alice.submit(slow(sandbox, 2, steps=2, pool="blue"))["task_id"]
    task = wait_state(alice, second, {"PENDING_RESOURCES"} | FINAL, timeout=30)
    # Green has 4 free GPUs, but the task asked for blue.
    assert task["pending_code"] == "Resources"
    assert task["pending_reason"].startswith("Resources: in pool blue: needs 1 node(s) x 2 GPU(s)"), task
    queue = alice.queue()
    assert queue["pools"]["blue"]["gpus_free"] == 0 and queue["pools"]["green"]["gpus_free"] == 4
    assert wait_state(alice, first, FINAL)["state"] == "SUCCEEDED"
    assert wait_state(alice, second, FINAL)["state"] == "SUCCEEDED"
    for tid in (first, second):
        # The driver ran inside the pool (entrypoint_label_selector), and so did the gang.
        assert driver_ip(pools_cluster, f"{tid}--a01") == blue_ip
        log = alice.logs(tid)
        assert "MARKER sim-a" in log


def test_a_drained_node_takes_no_new_task_while_its_running_task_finishes(pools_cluster, server, sandbox):
    admin_sdk = user_client(server.url, ADMIN, "bob")  # bob submits; the admin drains
    from argus.client.sdk import ArgusClient

    admin = ArgusClient(server.url, ADMIN)
    running = admin_sdk.submit(slow(sandbox, 2, steps=10, pool="green"))["task_id"]
    wait_state(admin_sdk, running, {"RUNNING"})
    # RUNNING is its driver; drain once its workers hold their GPUs and train (step 1 logged).
    deadline = time.monotonic() + 60
    while "step:1 " not in admin_sdk.logs(running):
        assert time.monotonic() < deadline, "the running task never started training"
        time.sleep(0.3)
    assert nodes_by_name(pools_cluster)["worker-2"].available_gpus == 2
    drained = admin.drain_node("worker-2", reason="maintenance")
    assert drained["state"] == "draining" and drained["managed"] is False
    deadline = time.monotonic() + 15
    while not nodes_by_name(pools_cluster)["worker-2"].draining:
        assert time.monotonic() < deadline, "Ray never reported worker-2 DRAINING"
        time.sleep(0.3)
    # Green still has 2 free GPUs, but nothing new goes there; a task for any pool goes to blue.
    waiting = admin_sdk.submit(slow(sandbox, 1, steps=2, pool="green"))["task_id"]
    anywhere = admin_sdk.submit(slow(sandbox, 1, steps=2))["task_id"]
    task = wait_state(admin_sdk, waiting, {"PENDING_RESOURCES"} | FINAL, timeout=30)
    assert task["pending_reason"].startswith("Resources: no schedulable worker node is alive in pool green"), task
    assert wait_state(admin_sdk, anywhere, FINAL)["state"] == "SUCCEEDED"
    blue_ip = next(n.ip for n in pools_cluster.nodes if n.labels.get("pool") == "blue")
    assert driver_ip(pools_cluster, f"{anywhere}--a01") == blue_ip
    # The task that was running there finishes normally.
    assert wait_state(admin_sdk, running, FINAL)["state"] == "SUCCEEDED"
    # Once empty, Ray stops the drained raylet, and the hold keeps the agent from re-joining.
    deadline = time.monotonic() + 30
    while "worker-2" in nodes_by_name(pools_cluster):
        assert time.monotonic() < deadline, "worker-2 stayed in Ray after its drain"
        time.sleep(0.5)
    time.sleep(3)
    assert "worker-2" not in nodes_by_name(pools_cluster)
    assert admin_sdk.task(waiting)["state"] == "PENDING_RESOURCES"
    # Undrain: the agent joins again and the waiting task runs.
    admin.undrain_node("worker-2")
    assert wait_state(admin_sdk, waiting, FINAL, timeout=90)["state"] == "SUCCEEDED"
    assert not nodes_by_name(pools_cluster)["worker-2"].draining


def test_the_head_moves_to_another_port_and_the_agents_and_the_service_follow(pools_cluster, server, sandbox):
    cluster = pools_cluster
    assert head.stop(cluster.shared_root, cluster.cluster) is True
    new_port = _free(cluster.gcs_port + 7)
    t0 = time.monotonic()
    rec = head.start(
        cluster.shared_root,
        cluster.cluster,
        port=new_port,
        dashboard_port=cluster.dashboard_port,
        node_ip=cluster.head.ip,
    )
    assert rec.address == f"{cluster.head.ip}:{new_port}"
    source = RaySnapshotSource(rec.dashboard_url, rec.address)
    want = {n.ip for n in cluster.nodes[1:]}
    while True:
        alive = {n.node_ip for n in source.snapshot().nodes if n.alive and not n.is_head}
        if want <= alive:
            break
        assert time.monotonic() - t0 < 30, f"agents did not re-join the new head: {alive}"
        time.sleep(0.5)
    # The server was never told: it reads head.json, and a task submitted now runs.
    carol = user_client(server.url, ADMIN, "carol")
    tid = carol.submit(task_yaml(sandbox, "ppo", pool="green"))["task_id"]
    task = wait_state(carol, tid, FINAL, timeout=120)
    assert task["state"] == "SUCCEEDED", carol.logs(tid, tail=40)
