"""`/metrics` and the Ray targets for Prometheus against the real local Ray cluster.

The app reads the real GCS (scheduler off): Ray is up, every worker node has its `node_up`
series with the IP Ray reports, the head's record is fresh, and each listed target is a live
Ray metrics agent (an HTTP GET answers Prometheus text with `ray_` series). `RayGpuReader` reads
every real node's agent without error and, these machines having no GPU, finds no GPU series;
the app's GPU sampler (its default reader) then records nothing for a task running on them.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from argus.cluster import local
from argus.cluster.gpu_metrics import RayGpuReader, parse_gpu_metrics
from argus.cluster.snapshot import RaySnapshotSource
from argus.service.app import create_app
from argus.settings import parse_settings

pytestmark = pytest.mark.ray
TOKEN = "metrics-on-ray-token"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def client(ray_cluster, tmp_path):
    ray = yaml.safe_load(local.config_file(ray_cluster.shared_root).read_text())
    db = {"db_url": f"sqlite:///{tmp_path / 'm.sqlite3'}"}
    settings = parse_settings({"ray": ray, "service": db, "scheduler": {"enabled": False}}, environ={})
    app = create_app(
        settings,
        snapshots=RaySnapshotSource(ray_cluster.dashboard_url, ray_cluster.gcs_address),
        run_scheduler=False,
        run_nodes=False,
        environ={"ARGUS_METRICS_TOKEN": TOKEN, "MVP_INTERNAL_TOKEN": "admin-on-ray"},
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.state.db.dispose()


def test_metrics_and_targets_show_the_real_nodes(client, ray_cluster):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.get("/metrics", headers={**auth, "Accept": "application/openmetrics-text"})
    assert r.status_code == 200, r.text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }
    assert samples[("argus_ray_up", ())] == 1
    assert 0 <= samples[("argus_head_record_age_seconds", ())] < 120
    up = {dict(k[1])["ip"]: v for k, v in samples.items() if k[0] == "argus_node_up"}
    workers = {n.ip for n in ray_cluster.nodes if not n.is_head}
    assert workers and set(up) == workers and set(up.values()) == {1.0}, up
    free = sum(v for k, v in samples.items() if k[0] == "argus_node_gpus" and dict(k[1])["state"] == "free")
    assert (
        free + sum(v for k, v in samples.items() if k[0] == "argus_node_gpus" and dict(k[1])["state"] == "allocated")
        == 8
    )

    t = client.get("/api/v2/monitoring/ray-targets", headers=auth)
    assert t.status_code == 200, t.text
    groups = t.json()
    assert {g["labels"]["ray_head"] for g in groups} == {"true", "false"}
    assert {g["targets"][0].rsplit(":", 1)[0] for g in groups} == {n.ip for n in ray_cluster.nodes}
    reached = 0
    for group in groups:
        with NO_PROXY.open(f"http://{group['targets'][0]}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "ray_" in text, group
        reached += 1
    assert reached == len(ray_cluster.nodes)


def test_the_gpu_reader_reads_the_real_nodes_and_finds_no_gpus(ray_cluster):
    snap = RaySnapshotSource(ray_cluster.dashboard_url, ray_cluster.gcs_address).snapshot()
    nodes = [n for n in snap.nodes if n.alive]
    assert nodes and all(n.metrics_export_port for n in nodes)
    t0 = time.monotonic()
    assert RayGpuReader(timeout_s=5.0).read(nodes) == {}
    assert time.monotonic() - t0 < 10
    for n in nodes:  # each agent answers Prometheus text the reader parses: no GPU series in it
        with NO_PROXY.open(f"http://{n.node_ip}:{n.metrics_export_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "ray_node_cpu_utilization" in text and parse_gpu_metrics(text, n.node_ip) is None, n.node_id


def test_the_apps_gpu_sampler_records_nothing_without_gpus(client, ray_cluster):
    """The sampler as `create_app` wires it (`RayGpuReader` by default) over the real nodes."""
    state = client.app.state
    workers = [n.node_id for n in state.snapshots.snapshot().nodes if n.alive and not n.is_head]
    store, now, tid = state.store, time.time(), "mvp2-alice-ppo-20270116-000000-9a9a"
    store.create(
        task_id=tid, user_id="alice", workload="ppo", jobspec_yaml="workload: ppo\n", nnodes=len(workers),
        n_gpus_per_node=1, driver_gpus=0, now=now,
    )  # fmt: skip
    assert store.start_attempt(tid, 0, "/x", {w: 1.0 for w in workers}, now) is not None
    assert store.mark_running(tid, now, None, 1)
    assert state.gpu_sampler.sample(time.time()) == 0
    attempt = store.attempt(tid, 1)
    assert (attempt.gpu_util_mean, attempt.gpu_mem_peak_bytes, attempt.gpu_util_samples) == (None, None, 0)
    detail = client.get(f"/api/v2/tasks/{tid}", headers={"Authorization": "Bearer admin-on-ray"})
    assert detail.status_code == 200, detail.text
    latest = detail.json()["latest_attempt"]
    assert (latest["gpu_util_mean"], latest["gpu_mem_peak_bytes"]) == (None, None)
