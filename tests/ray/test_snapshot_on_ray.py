"""The capacity snapshot against the real local Ray cluster, and against addresses with no Ray."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from argus.cluster.errors import ClusterUnavailable
from argus.cluster.snapshot import ClusterSnapshot, RaySnapshotSource

pytestmark = pytest.mark.ray

# A separate driver that reserves 2 GPUs on each of two nodes and holds them until killed.
HOLD_GPUS = """
import sys, time, ray
from ray.util.placement_group import placement_group
ray.init(address=sys.argv[1], log_to_driver=False)
pg = placement_group([{"GPU": 2}, {"GPU": 2}], strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=60)
print("READY", flush=True)
time.sleep(600)
"""


def _source(cluster, **kw) -> RaySnapshotSource:
    return RaySnapshotSource(cluster.dashboard_url, gcs_address=cluster.gcs_address, **kw)


def _workers(snap: ClusterSnapshot) -> dict:
    return {n.node_ip: n for n in snap.schedulable("worker_node")}


def _wait_until(src: RaySnapshotSource, ok, timeout: float = 20.0) -> ClusterSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        snap = src.snapshot()
        if ok(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_and_gpus_as_planned(ray_cluster):
    snap = _source(ray_cluster).snapshot()
    assert abs(snap.taken_at - time.time()) < 60
    heads = [n for n in snap.nodes if n.is_head]
    assert [h.node_ip for h in heads] == [ray_cluster.head.ip]
    head = heads[0]
    assert head.alive and head.total_gpus == 0 and head.total_cpus == 0
    assert "worker_node" not in head.resources_total

    planned = {n.ip: n for n in ray_cluster.nodes if not n.is_head}
    workers = _workers(snap)
    assert set(workers) == set(planned)
    assert head not in snap.schedulable() and head not in snap.schedulable("worker_node")
    for ip, w in workers.items():
        assert w.alive and not w.draining and not w.is_head
        assert w.total_gpus == planned[ip].gpus == 4
        assert w.total_cpus == planned[ip].cpus
        assert w.resources_total == {
            "CPU": 4.0,
            "GPU": 4.0,
            "worker_node": float(ray_cluster.drivers_per_worker),
        }
        assert len(w.node_id) == 56 and w.labels.get("ray.io/node-id") == w.node_id


def test_gcs_address_is_learnt_from_the_dashboard(ray_cluster):
    src = RaySnapshotSource(ray_cluster.dashboard_url)
    snap = src.snapshot()
    assert src.gcs_address == ray_cluster.gcs_address
    assert len(snap.schedulable("worker_node")) == ray_cluster.workers


def test_snapshot_does_not_make_the_caller_a_driver(ray_cluster):
    import ray

    _source(ray_cluster).snapshot()
    assert not ray.is_initialized()


def test_placement_group_takes_gpus_and_gives_them_back(idle_cluster):
    src = _source(idle_cluster)
    all_free = lambda s: all(w.available_gpus == w.total_gpus for w in _workers(s).values())  # noqa: E731

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GPUS, idle_cluster.gcs_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 90)
        assert ready and holder.stdout.readline().strip() == "READY", "the placement group never got ready"
        held = lambda s: all(w.available_gpus == 2 for w in _workers(s).values())  # noqa: E731
        snap = _wait_until(src, held)
        assert {ip: w.available_gpus for ip, w in _workers(snap).items()} == {
            n.ip: 2.0 for n in idle_cluster.nodes if not n.is_head
        }
        assert all(w.total_gpus == 4 for w in _workers(snap).values())
        assert snap.available_gpus == 4 and snap.total_gpus == 8
    finally:
        holder.kill()
        holder.wait(timeout=30)
    snap = _wait_until(src, all_free)
    assert all_free(snap), {ip: w.available_gpus for ip, w in _workers(snap).items()}


def test_one_source_serves_many_threads(idle_cluster):
    src = RaySnapshotSource(idle_cluster.dashboard_url)
    errors: list[BaseException] = []
    counts: list[int] = []

    def poll():
        for _ in range(20):
            try:
                counts.append(len(src.snapshot().schedulable("worker_node")))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and counts == [idle_cluster.workers] * 80


# -- no Ray at the address ---------------------------------------------------------------
def test_dead_gcs_address_is_unavailable_at_once():
    src = RaySnapshotSource("http://127.0.0.1:9", gcs_address=f"127.0.0.1:{_free_port()}", timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="GCS"):
        src.snapshot()
    assert time.monotonic() - t0 < 2


def test_dead_dashboard_is_unavailable_at_once():
    src = RaySnapshotSource(f"http://127.0.0.1:{_free_port()}", timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable):
        src.snapshot()
    assert time.monotonic() - t0 < 2


def test_silent_gcs_is_unavailable_within_the_timeout():
    # Accepts TCP connections and never answers: the call must end at its deadline.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        src = RaySnapshotSource("http://127.0.0.1:9", gcs_address=f"127.0.0.1:{port}", timeout_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            src.snapshot()
        assert time.monotonic() - t0 < 3
