"""Where a running task's GPUs are, as the real local Ray cluster placed them.

A 2-GPU verl-sim task runs under the submission id of an attempt that admission counted on a
node that does not exist: `RayJobTool.gpus_by_job` reports its 2 GPUs on the worker whose free
GPUs Ray shows dropped, and `/api/v2/nodes` lists the task there, and on no other node.
"""

from __future__ import annotations

import time

import pytest
import yaml
from fastapi.testclient import TestClient
from helpers import submit, wait_for

from argus.cluster import local
from argus.cluster.snapshot import RaySnapshotSource
from argus.service.app import create_app
from argus.settings import parse_settings
from argus.store.tasks import TaskStore
from argus.testing.sandbox import task_yaml

pytestmark = pytest.mark.ray
ADMIN = "admin-gpu-holders-on-ray"


def test_a_running_tasks_gpus_are_reported_where_ray_took_them(idle_cluster, ray_config, sandbox, tmp_path):
    ray = yaml.safe_load(local.config_file(idle_cluster.shared_root).read_text())
    settings = parse_settings(
        {"ray": ray, "service": {"db_url": f"sqlite:///{tmp_path / 'h.sqlite3'}"}, "scheduler": {"enabled": False}},
        environ={},
    )
    source = RaySnapshotSource(idle_cluster.dashboard_url, idle_cluster.gcs_address)
    app = create_app(
        settings, snapshots=source, run_scheduler=False, run_nodes=False, environ={"MVP_INTERNAL_TOKEN": ADMIN}
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        tasks = TaskStore(app.state.db)
        tid = f"mvp2-alice-ppo-20260101-000000-{int(time.time() * 1000) % 0xFFFF:04x}"
        tasks.create(
            task_id=tid,
            user_id="alice",
            workload="ppo",
            jobspec_yaml="x",
            nnodes=1,
            n_gpus_per_node=2,
            driver_gpus=0,
            now=time.time(),
        )
        attempt = tasks.start_attempt(tid, 0, str(tmp_path / "job"), {"not-a-ray-node": 2.0}, time.time())
        assert attempt is not None
        sid = tasks.latest_attempts([tid])[tid].ray_submission_id
        text = task_yaml(sandbox, "ppo", total_training_steps=500, env_vars={"VERL_SIM_STEP_SECONDS": "0.5"})
        tool, _, _ = submit(ray_config, text, submission_id=sid)
        try:
            wait_for(tool, sid, {"RUNNING"})
            deadline = time.monotonic() + 60
            taken: dict[str, float] = {}
            while time.monotonic() < deadline:
                workers = source.snapshot().schedulable()
                taken = {n.node_id: n.total_gpus - n.available_gpus for n in workers if n.available_gpus < n.total_gpus}
                if taken:
                    break
                time.sleep(0.5)
            assert list(taken.values()) == [2.0], taken
            (node_id,) = taken

            assert tool.gpus_by_job() == {sid: {node_id: 2.0}}

            r = client.get("/api/v2/nodes", headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200, r.text
            holding = {n["ray"]["node_id"]: n["running_tasks"] for n in r.json()["nodes"] if n["ray"]}
            assert holding.pop(node_id) == [tid], r.json()
            assert all(v == [] for v in holding.values()), holding
        finally:
            tool.stop(sid)
            wait_for(tool, sid, {"STOPPED"}, timeout=60)
    app.state.db.dispose()
