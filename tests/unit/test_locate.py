"""Following the head through head.json: the locator, the job tool and the snapshot source."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from argus.cluster.errors import ClusterUnavailable
from argus.cluster.jobs import RayJobTool
from argus.cluster.locate import HeadLocator
from argus.cluster.snapshot import RaySnapshotSource
from argus.domain.discovery import HeadInfo, discovery_file
from argus.spec.config import parse_ray_config
from argus.testing import FakeClock

T = 1_800_000_000.0


def publish(root, **fields):
    info = {
        "cluster_name": "c1",
        "head_ip": "10.0.0.5",
        "gcs_port": 6380,
        "dashboard_url": "http://10.0.0.5:8265",
        "updated_at": T,
        "ttl_s": 30.0,
        **fields,
    }
    path = Path(str(discovery_file(str(root), "c1")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HeadInfo(**info).to_json())


@pytest.fixture
def clock():
    return FakeClock(T + 1)


def locator(root, clock, **cfg):
    config = parse_ray_config({"shared_root": str(root), "cluster_name": "c1", **cfg})
    return HeadLocator(config, clock=clock, max_age_s=0)


def test_without_a_cluster_name_the_configured_address_is_used(tmp_path):
    config = parse_ray_config({"shared_root": str(tmp_path), "address": "http://10.1.1.1:8265"})
    found = HeadLocator(config).current()
    assert (found.dashboard_url, found.gcs_address) == ("http://10.1.1.1:8265", None)


def test_the_published_head_is_followed_when_it_moves(tmp_path, clock):
    loc = locator(tmp_path, clock)
    publish(tmp_path)
    assert loc.current().dashboard_url == "http://10.0.0.5:8265"
    assert loc.current().gcs_address == "10.0.0.5:6380"
    publish(tmp_path, head_ip="10.0.0.9", gcs_port=6400, dashboard_url="http://10.0.0.9:8270")
    assert (loc.current().dashboard_url, loc.current().gcs_address) == (
        "http://10.0.0.9:8270",
        "10.0.0.9:6400",
    )


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda root: None, "is missing"),
        (lambda root: publish(root, stopped=True), "was stopped"),
        (lambda root: publish(root, updated_at=T - 100), "is stale: updated 101s ago, TTL 30s"),
    ],
)
def test_no_live_head_is_a_clear_unavailable_cluster(tmp_path, clock, setup, words):
    setup(tmp_path)
    with pytest.raises(ClusterUnavailable) as info:
        locator(tmp_path, clock).current()
    assert words in str(info.value)


def test_a_broken_record_names_the_file(tmp_path, clock):
    path = tmp_path / "ray" / "discovery" / "c1" / "head.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"cluster_name": "c1"}))
    with pytest.raises(ClusterUnavailable) as info:
        locator(tmp_path, clock).current()
    assert str(path) in str(info.value) and "missing key 'head_ip'" in str(info.value)


def test_answers_are_reused_for_max_age(tmp_path, clock):
    reads = []
    config = parse_ray_config({"shared_root": str(tmp_path), "cluster_name": "c1"})
    publish(tmp_path)
    loc = HeadLocator(config, clock=clock, max_age_s=1.0, read=lambda p: reads.append(p) or p.read_text())
    loc.current()
    loc.current()
    assert len(reads) == 1
    clock.advance(1.5)
    loc.current()
    assert len(reads) == 2


def test_the_job_tool_builds_a_new_client_when_the_head_moves(tmp_path):
    publish(tmp_path, updated_at=time.time())
    config = parse_ray_config({"shared_root": str(tmp_path), "cluster_name": "c1"})
    made = []
    tool = RayJobTool(config, client_factory=lambda a: made.append(a) or object())
    tool.locator._max_age_s = 0
    tool.client
    tool.client
    assert made == ["http://10.0.0.5:8265"]
    publish(tmp_path, updated_at=time.time(), head_ip="10.0.0.9", dashboard_url="http://10.0.0.9:8265")
    tool.client
    assert made == ["http://10.0.0.5:8265", "http://10.0.0.9:8265"]
    publish(tmp_path, updated_at=time.time(), stopped=True)
    with pytest.raises(ClusterUnavailable):
        tool.client


def test_the_snapshot_source_reads_the_gcs_address_from_the_record(tmp_path):
    publish(tmp_path, updated_at=time.time(), gcs_port=6411)
    config = parse_ray_config({"shared_root": str(tmp_path), "cluster_name": "c1"})
    source = RaySnapshotSource.for_config(config)
    assert source.gcs(time.monotonic() + 1) == "10.0.0.5:6411"
    plain = RaySnapshotSource.for_config(parse_ray_config({"shared_root": str(tmp_path)}))
    assert plain._locate is None


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 64])
def test_cluster_name_is_checked(tmp_path, name):
    with pytest.raises(Exception) as info:
        parse_ray_config({"shared_root": str(tmp_path), "cluster_name": name})
    assert "cluster_name" in str(info.value)
