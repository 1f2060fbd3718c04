"""Parsing of the GCS resource view into ClusterSnapshot, on payloads recorded from Ray 2.60.

The payloads are `GetClusterResourceState` replies of a local cluster (head 0 CPU/0 GPU, two
workers x 4 GPUs, `worker_node` 100), in the JSON form `RaySnapshotSource` parses: first with a
placement group holding {"GPU": 2} on 127.0.202.2, then after draining both workers (the idle
one died at once, the busy one stays DRAINING while the group holds its GPUs).
"""

from __future__ import annotations

import pytest

from argus.cluster import snapshot as snap
from argus.cluster.errors import ClusterUnavailable
from argus.cluster.snapshot import (
    ClusterSnapshot,
    RaySnapshotSource,
    gcs_address_from_head_detail,
    parse_cluster_resource_state,
    parse_node_state,
)

PG = "86e826f0524cd3068fde84f0d7d701000000"
HEAD_ID = "923e2f80adf0f4307c9174da1d5e85008a8c76f9b0b96186f3807daa"
W2_ID = "e07bac6a57435e17ce2a515a82383db8d1c7a8a9c5c9d5a603dc1a69"
W3_ID = "964a8672b687673a46075966cca13d6a13f6088d9f53757adc80d0ab"

HEAD = {
    "node_id": "kj4vgK3w9DB8kXTaHV6FAIqMdvmwuWGG84B9qg==",
    "available_resources": {
        "memory": 24215748608.0,
        "node:__internal_head__": 1.0,
        "node:127.0.202.1": 1.0,
        "object_store_memory": 268435456.0,
    },
    "total_resources": {
        "memory": 24215748608.0,
        "node:__internal_head__": 1.0,
        "node:127.0.202.1": 1.0,
        "object_store_memory": 268435456.0,
    },
    "node_state_version": "3",
    "status": "IDLE",
    "idle_duration_ms": "8070",
    "node_ip_address": "127.0.202.1",
    "labels": {"ray.io/node-id": HEAD_ID},
}
WORKER_3_IDLE = {
    "node_id": "lkqGcraHZzpGB1lmzKE9ahP2CI2fU3V63IDQqw==",
    "available_resources": {
        "memory": 23611076608.0,
        "node:127.0.202.3": 1.0,
        "worker_node": 100.0,
        "GPU": 4.0,
        "object_store_memory": 268435456.0,
        "CPU": 4.0,
    },
    "total_resources": {
        "memory": 23611076608.0,
        "node:127.0.202.3": 1.0,
        "worker_node": 100.0,
        "GPU": 4.0,
        "object_store_memory": 268435456.0,
        "CPU": 4.0,
    },
    "node_state_version": "3",
    "status": "IDLE",
    "idle_duration_ms": "3541",
    "node_ip_address": "127.0.202.3",
    "labels": {"ray.io/node-id": W3_ID},
}
WORKER_2_HOLDING = {
    "node_id": "4HusaldDXhfOKlFagjg9uNHHqKnFydWmA9waaQ==",
    "available_resources": {
        "memory": 23874404352.0,
        "object_store_memory": 268435456.0,
        f"bundle_group_0_{PG}": 1000.0,
        "CPU": 4.0,
        f"bundle_group_{PG}": 1000.0,
        f"GPU_group_0_{PG}": 2.0,
        "worker_node": 100.0,
        "node:127.0.202.2": 1.0,
        f"GPU_group_{PG}": 2.0,
        "GPU": 2.0,
    },
    "total_resources": {
        "memory": 23874404352.0,
        "node:127.0.202.2": 1.0,
        f"bundle_group_0_{PG}": 1000.0,
        "CPU": 4.0,
        f"bundle_group_{PG}": 1000.0,
        f"GPU_group_0_{PG}": 2.0,
        "worker_node": 100.0,
        "GPU": 4.0,
        f"GPU_group_{PG}": 2.0,
        "object_store_memory": 268435456.0,
    },
    "dynamic_labels": {f"_PG_{PG}": ""},
    "node_state_version": "3",
    "status": "RUNNING",
    "node_ip_address": "127.0.202.2",
    "node_activity": ["Resource: GPU currently in use."],
    "labels": {"ray.io/node-id": W2_ID},
}
HELD = {
    "cluster_resource_state_version": "3",
    "node_states": [WORKER_3_IDLE, HEAD, WORKER_2_HOLDING],
    "cluster_session_name": "session_2026-11-25_02-05-53_471510_10604",
}
DRAINED = {
    "cluster_resource_state_version": "6",
    "node_states": [
        {**HEAD, "node_state_version": "6"},
        {**WORKER_2_HOLDING, "node_state_version": "6", "status": "DRAINING"},
        {
            "node_id": "lkqGcraHZzpGB1lmzKE9ahP2CI2fU3V63IDQqw==",
            "node_state_version": "6",
            "status": "DEAD",
            "node_ip_address": "127.0.202.3",
        },
    ],
    "cluster_session_name": "session_2026-11-25_02-05-53_471510_10604",
}
# `data.detail` of the dashboard's GET /nodes/<head id>, cut to what names the GCS.
HEAD_DETAIL = {
    "gcs": {
        "cmdline": [
            "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server",
            "--gcs_server_port=6450",
            "--metrics-agent-port=20001",
            "--node-ip-address=127.0.202.1",
        ]
    },
    "cmdline": [
        "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet",
        "--node_ip_address=127.0.202.1",
        "--python_worker_command=/venv/bin/python setup_worker.py default_worker.py "
        "--node-ip-address=127.0.202.1 --gcs-address=127.0.202.1:6450 --webui=127.0.202.1:8450",
    ],
}


def _by_ip(s: ClusterSnapshot) -> dict:
    return {n.node_ip: n for n in s.nodes}


def test_held_placement_group_shows_as_taken_gpus():
    s = parse_cluster_resource_state(HELD, taken_at=123.0)
    assert s.taken_at == 123.0
    assert [n.node_ip for n in s.nodes] == ["127.0.202.1", "127.0.202.2", "127.0.202.3"]
    nodes = _by_ip(s)
    w2, w3 = nodes["127.0.202.2"], nodes["127.0.202.3"]
    assert (w2.total_gpus, w2.available_gpus, w2.total_cpus, w2.available_cpus) == (4, 2, 4, 4)
    assert (w3.total_gpus, w3.available_gpus) == (4, 4)
    assert s.total_gpus == 8 and s.available_gpus == 6


def test_node_ids_are_hex_like_rays_own():
    s = parse_cluster_resource_state(HELD, 0.0)
    for n in s.nodes:
        assert n.node_id == n.labels["ray.io/node-id"]
    assert _by_ip(s)["127.0.202.1"].node_id == HEAD_ID


def test_head_is_recognised_and_never_schedulable():
    s = parse_cluster_resource_state(HELD, 0.0)
    head = _by_ip(s)["127.0.202.1"]
    assert head.is_head and head.alive and head.total_gpus == 0 and head.total_cpus == 0
    assert [n.node_ip for n in s.schedulable()] == ["127.0.202.2", "127.0.202.3"]
    assert [n.node_ip for n in s.schedulable("worker_node")] == ["127.0.202.2", "127.0.202.3"]
    assert s.schedulable("no_such_resource") == []


def test_resources_total_drops_node_memory_and_placement_group_keys():
    w2 = _by_ip(parse_cluster_resource_state(HELD, 0.0))["127.0.202.2"]
    assert w2.resources_total == {"CPU": 4.0, "GPU": 4.0, "worker_node": 100.0}
    assert w2.labels == {"ray.io/node-id": W2_ID}  # no `_PG_<id>` dynamic label
    head = _by_ip(parse_cluster_resource_state(HELD, 0.0))["127.0.202.1"]
    assert head.resources_total == {}


def test_draining_and_dead_nodes_are_not_schedulable():
    s = parse_cluster_resource_state(DRAINED, 0.0)
    nodes = _by_ip(s)
    w2, w3 = nodes["127.0.202.2"], nodes["127.0.202.3"]
    assert w2.alive and w2.draining and w2.available_gpus == 2
    assert not w3.alive and not w3.draining
    assert (w3.total_gpus, w3.available_gpus, w3.resources_total, w3.labels) == (0, 0, {}, {})
    assert w3.node_id == W3_ID
    assert s.schedulable() == []
    assert s.total_gpus == 4  # dead nodes do not count


def test_missing_fields_take_proto_defaults():
    n = parse_node_state({"node_id": "", "total_resources": {"GPU": 8.0}})
    assert n.node_id == "" and n.node_ip == ""
    assert not n.alive  # UNSPECIFIED is not trusted as alive
    assert n.total_gpus == 8 and n.available_gpus == 0  # absent from available = all taken


def test_bytes_node_id():
    assert parse_node_state({"node_id": bytes.fromhex(W2_ID)}).node_id == W2_ID


def test_empty_state_is_an_empty_snapshot():
    s = parse_cluster_resource_state({}, 1.0)
    assert s.nodes == () and s.schedulable() == [] and s.total_gpus == 0


def test_gcs_address_from_the_gcs_command_line():
    assert gcs_address_from_head_detail(HEAD_DETAIL, "127.0.202.1") == "127.0.202.1:6450"


def test_gcs_address_from_the_raylet_command_line_when_the_gcs_entry_is_missing():
    detail = {"cmdline": HEAD_DETAIL["cmdline"]}
    assert gcs_address_from_head_detail(detail, "127.0.202.1") == "127.0.202.1:6450"


def test_no_gcs_address_in_an_empty_detail():
    assert gcs_address_from_head_detail({}, "127.0.202.1") is None
    assert gcs_address_from_head_detail({"gcs": {}, "cmdline": ["", None]}, "10.0.0.1") is None


@pytest.mark.parametrize("bad", ["", "http://10.0.0.1:6379", "10.0.0.1", "10.0.0.1:port"])
def test_source_refuses_a_malformed_gcs_address(bad):
    with pytest.raises(ValueError):
        RaySnapshotSource("http://10.0.0.1:8265", gcs_address=bad)


def test_source_refuses_a_non_positive_timeout():
    with pytest.raises(ValueError):
        RaySnapshotSource("http://10.0.0.1:8265", timeout_s=0)


# -- learning the GCS address from the dashboard (HTTP and gRPC replaced) -----------------
NODES_REPLY = {
    "data": {
        "result": {
            "result": [
                {"node_id": W2_ID, "node_ip": "127.0.202.2", "is_head_node": False, "state": "ALIVE"},
                {"node_id": "0" * 56, "node_ip": "127.0.202.1", "is_head_node": True, "state": "DEAD"},
                {"node_id": HEAD_ID, "node_ip": "127.0.202.1", "is_head_node": True, "state": "ALIVE"},
            ]
        }
    }
}


class FakeRay:
    def __init__(self, detail=HEAD_DETAIL):
        self.urls: list[str] = []
        self.gcs_calls: list[str] = []
        self.gcs_up = True
        self.detail = detail

    def get_json(self, url, deadline):
        self.urls.append(url)
        if url.endswith("/api/v0/nodes"):
            return NODES_REPLY
        if url.endswith(f"/nodes/{HEAD_ID}"):
            return {"data": {"detail": self.detail}}
        raise ClusterUnavailable(f"cannot read {url}: 404")

    def read_state(self, address, deadline):
        self.gcs_calls.append(address)
        if not self.gcs_up:
            raise ClusterUnavailable(f"cannot read the GCS at {address}: UNAVAILABLE")
        return HELD, 42.0


@pytest.fixture
def fake_ray(monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(snap, "_get_json", fake.get_json)
    monkeypatch.setattr(snap, "_read_resource_state", fake.read_state)
    return fake


def test_gcs_address_is_learnt_once_from_the_alive_head(fake_ray):
    src = RaySnapshotSource("http://127.0.202.1:8450/")
    assert src.gcs_address is None
    assert src.snapshot().taken_at == 42.0
    assert src.snapshot().taken_at == 42.0
    assert src.gcs_address == "127.0.202.1:6450"
    assert fake_ray.urls == [
        "http://127.0.202.1:8450/api/v0/nodes",
        f"http://127.0.202.1:8450/nodes/{HEAD_ID}",
    ]
    assert fake_ray.gcs_calls == ["127.0.202.1:6450"] * 2


def test_a_learnt_address_that_stops_answering_is_learnt_again(fake_ray):
    src = RaySnapshotSource("http://127.0.202.1:8450")
    src.snapshot()
    fake_ray.gcs_up = False
    with pytest.raises(ClusterUnavailable):
        src.snapshot()
    assert src.gcs_address is None
    fake_ray.gcs_up = True
    src.snapshot()
    assert len(fake_ray.urls) == 4  # asked the dashboard again after the failure


def test_a_given_address_skips_the_dashboard(fake_ray):
    src = RaySnapshotSource("http://127.0.202.1:8450", gcs_address="10.1.2.3:6380")
    src.snapshot()
    fake_ray.gcs_up = False
    with pytest.raises(ClusterUnavailable):
        src.snapshot()
    assert src.gcs_address == "10.1.2.3:6380"
    assert fake_ray.urls == [] and fake_ray.gcs_calls == ["10.1.2.3:6380"] * 2


def test_a_dashboard_without_the_gcs_command_line_is_unavailable(monkeypatch):
    fake = FakeRay(detail={"gcs": {}, "cmdline": []})
    monkeypatch.setattr(snap, "_get_json", fake.get_json)
    monkeypatch.setattr(snap, "_read_resource_state", fake.read_state)
    with pytest.raises(ClusterUnavailable, match="gcs_address"):
        RaySnapshotSource("http://127.0.202.1:8450").snapshot()
    assert fake.gcs_calls == []
