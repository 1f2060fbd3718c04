"""`/metrics` and the Ray targets for Prometheus against the real local Ray cluster.

The app reads the real GCS (scheduler off): Ray is up, every worker node has its `node_up`
series with the IP Ray reports, the head's record is fresh, and each listed target is a live
Ray metrics agent (an HTTP GET answers Prometheus text with `ray_` series).
"""

from __future__ import annotations

import urllib.request

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from argus.cluster import local
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
        environ={"ARGUS_METRICS_TOKEN": TOKEN},
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
