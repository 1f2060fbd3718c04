"""`/api/v2/nodes` over a real database (SQLite, and PostgreSQL when configured), with SSH and
Ray faked (`FakeSSH`, whose agents join and leave `FakeRayNodes`; `FakeRayNodes` is also Ray's
drain). The reconciler does not run by itself: tests call its `tick(now)` (`NodesApi.reconcile`)
and move the clock.

Covers registration (bodies, 400 naming the field, 403, 409, a request never waiting for SSH),
the bring-up (`pending` → `online` with the agent's command line; SSH, auth, host-check and join
failures → `failed` with the reason), drain / undrain (Ray's drain, hold files, 409 naming the
state), offline (at once when empty, after the work when busy), unmanaged nodes, Ray being
unreachable, events in the database, and a restart that lost a bring-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import (
    ADMIN_TOKEN,
    Api,
    Backend,
    backend,
)
from fastapi.testclient import TestClient

from argus.cluster.ssh import SSHError
from argus.service.app import create_app
from argus.settings import parse_settings
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.cli import invoke as run_cli
from argus.testing.fakes import FakeRayNodes, FakeSSH

ERROR_KEYS = {"error", "message", "problems"}
VIEW_KEYS = {
    "id",
    "name",
    "managed",
    "state",
    "reason",
    "offline_requested",
    "pool",
    "labels",
    "gpus",
    "cpus",
    "ssh",
    "agent_pid",
    "agent_started_at",
    "created_at",
    "updated_at",
    "ray",
    "gpus_free",
    "running_tasks",
    "running_tasks_other",
}
RAY_KEYS = {
    "node_id",
    "node_ip",
    "alive",
    "draining",
    "gpus_total",
    "gpus_free",
    "cpus_total",
    "cpus_free",
    "labels",
}


class NodesApi(Api):
    ray: FakeRayNodes
    ssh: FakeSSH
    clock: FakeClock
    shared: Path

    @property
    def svc(self):
        return self.client.app.state.nodes

    @property
    def rec(self):
        """The node reconciler (`argus.scheduler.node_reconciler.NodeReconciler`)."""
        return self.client.app.state.node_reconciler

    def reconcile(self) -> None:
        """One reconciler pass at the test's clock."""
        self.rec.tick(self.clock())

    def register(self, name: str, host: str = "10.0.0.5", **fields: Any):
        body = {"name": name, "host": host, "user": "root", "key": "good.pem", **fields}
        return self.post(self.admin, "/api/v2/nodes", json=body)

    def node(self, name: str) -> dict[str, Any]:
        r = self.get(self.admin, f"/api/v2/nodes/{name}")
        assert r.status_code == 200, r.text
        return r.json()

    def online(self, name: str, **fields: Any) -> dict[str, Any]:
        """Register `name` and bring it online."""
        r = self.register(name, **fields)
        assert r.status_code == 201, r.text
        self.rec.wait_idle()
        self.reconcile()
        node = self.node(name)
        assert node["state"] == "online", node
        return node

    def unjoined(self, name: str, **fields: Any) -> None:
        """Register `name` with an agent that starts but never joins Ray (the node stays pending)."""
        self.ssh.join = False
        try:
            r = self.register(name, **fields)
            assert r.status_code == 201, r.text
            self.rec.wait_idle()
        finally:
            self.ssh.join = True

    def hold(self, name: str) -> Path:
        return self.shared / "ray" / "discovery" / "argus" / "hold" / name


def assert_error(response, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == error and body["message"], body
    if field is not None:
        assert field in [p["field"] for p in body["problems"]], body
    return body


@pytest.fixture(scope="module")
def api(tmp_path_factory, backend) -> Iterator[NodesApi]:
    shared = tmp_path_factory.mktemp("shared")
    keys = tmp_path_factory.mktemp("keys")
    (keys / "good.pem").write_text("not used by the fake\n")
    settings = parse_settings(
        {
            "ray": {"shared_root": str(shared)},
            "service": {"db_url": backend.url},
            "scheduler": {"enabled": False},
            "nodes": {
                "key_dir": str(keys),
                "agent_command": "/opt/argus/bin/argus",
                "shared_root": "/private",
                "join_timeout_s": 120,
            },
        },
        "nodes test config",
        environ={},
    )
    ray = FakeRayNodes()
    ssh = FakeSSH(ray=ray)
    clock = FakeClock(1_800_000_000.0)
    app = create_app(
        settings,
        run_scheduler=False,
        run_nodes=False,
        snapshots=ray,
        ssh=ssh,
        drainer=ray,
        clock=clock,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        a = NodesApi(client, None, backend)  # type: ignore[arg-type]
        a.ray, a.ssh, a.clock, a.shared = ray, ssh, clock, shared
        yield a
    app.state.db.dispose()


def events(backend: Backend, name: str) -> list[tuple[str | None, str, str]]:
    rows = backend.rows("SELECT from_state, to_state, reason FROM node_events WHERE node = :n ORDER BY id", n=name)
    return [(r["from_state"], r["to_state"], r["reason"]) for r in rows]


# -- registration and bring-up ------------------------------------------------------------------
def test_register_brings_the_node_up_over_ssh(api, backend):
    r = api.register("gpu-1", gpus=8, labels={"pool": "a100"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == VIEW_KEYS
    assert (body["id"], body["managed"], body["state"], body["pool"], body["gpus"]) == (
        "gpu-1",
        True,
        "pending",
        "a100",
        8,
    )
    assert body["ssh"] == {"host": "10.0.0.5", "port": 22, "user": "root", "key": "good.pem"}
    assert body["ray"] is None and body["running_tasks"] == []

    api.rec.wait_idle()
    check, start = [c for h, c in api.ssh.commands if h == "10.0.0.5"][-2:]
    assert "uname -n" in check and "/opt/argus/bin/argus node-agent --help" in check
    assert (
        "nohup setsid /opt/argus/bin/argus node-agent --shared-root /private --cluster argus "
        "--name gpu-1 --gpus 8 --labels pool=a100 --node-ip 10.0.0.5 "
        "> /private/common/logs/nodes/gpu-1.log 2>&1 < /dev/null & echo $!"
    ) in start
    node = api.node("gpu-1")
    assert node["state"] == "pending" and node["agent_pid"] > 0 and node["agent_started_at"]

    api.reconcile()
    node = api.node("gpu-1")
    joined = api.ray.by_name("gpu-1")
    assert node["state"] == "online" and node["reason"] == f"joined Ray as node {joined.node_id}"
    assert set(node["ray"]) == RAY_KEYS
    assert node["ray"]["alive"] and not node["ray"]["draining"]
    assert node["ray"]["labels"] == {"pool": "a100", "argus.io/node": "gpu-1"}
    assert (node["ray"]["gpus_total"], node["ray"]["gpus_free"]) == (8, 8)
    assert [(e["from_state"], e["to_state"]) for e in node["events"]] == [
        (None, "pending"),
        ("pending", "pending"),
        ("pending", "online"),
    ]
    stored = events(backend, "gpu-1")
    assert stored[0] == (None, "pending", "registered")
    assert stored[1][2].startswith("agent started on 10.0.0.5 (pid ")
    assert "/private/common/logs/nodes/gpu-1.log" in stored[1][2]


def test_register_never_waits_for_ssh(api):
    api.ssh.gate = threading.Event()
    try:
        t0 = time.monotonic()
        r = api.register("slow-1")
        assert r.status_code == 201 and r.json()["state"] == "pending"
        assert time.monotonic() - t0 < 5
        assert_error(api.register("slow-1"), 409, "conflict")  # being set up
        assert_error(api.post(api.admin, "/api/v2/nodes/slow-1:offline"), 409, "conflict")
    finally:
        api.ssh.gate.set()
        api.rec.wait_idle()
        api.ssh.gate = None
    api.reconcile()
    assert api.node("slow-1")["state"] == "online"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "Bad_Name"}, "name"),
        ({"host": "bad host"}, "host"),
        ({"port": 0}, "port"),
        ({"user": "Root"}, "user"),
        ({"key": "../etc/shadow"}, "key"),
        ({"key": "missing.pem"}, "key"),
        ({"labels": {"ray.io/node-id": "x"}}, "labels.ray.io/node-id"),
        ({"labels": {"argus.io/node": "x"}}, "labels.argus.io/node"),
        ({"labels": {"pool": "a b"}}, "labels.pool"),
        ({"gpus": -1}, "gpus"),
        ({"gpus": "8"}, "gpus"),
        ({"extra": 1}, "extra"),
        ({"name": None}, "name"),
    ],
)
def test_an_invalid_registration_is_400_naming_the_field(api, backend, body, field):
    before = (backend.count("nodes"), backend.count("node_events"))
    full = {"name": "n-bad", "host": "10.0.0.9", "user": "root", "key": "good.pem", **body}
    r = assert_error(api.post(api.admin, "/api/v2/nodes", json=full), 400, "bad_request", field)
    assert r["message"] == "the node registration is invalid"
    assert (backend.count("nodes"), backend.count("node_events")) == before


def test_a_body_that_is_not_an_object_is_400(api):
    assert_error(api.post(api.admin, "/api/v2/nodes", json=["x"]), 400, "bad_request", "<body>")
    assert_error(api.post(api.admin, "/api/v2/nodes"), 400, "bad_request", "<body>")


def test_only_the_admin_changes_nodes_and_users_see_no_ssh_details(api):
    api.online("seen-1")
    user = api.new_user()
    assert_error(api.post(user, "/api/v2/nodes", json={"name": "x"}), 403, "forbidden")
    for action in ("drain", "undrain", "offline"):
        assert_error(api.post(user, f"/api/v2/nodes/seen-1:{action}"), 403, "forbidden")
    assert_error(api.client.get("/api/v2/nodes"), 401, "unauthorized")
    listed = {n["id"]: n for n in api.get(user, "/api/v2/nodes").json()["nodes"]}
    assert listed["seen-1"]["state"] == "online" and listed["seen-1"]["ssh"] is None
    assert listed["seen-1"]["agent_pid"] is None
    one = api.get(user, "/api/v2/nodes/seen-1").json()
    assert one["ssh"] is None and one["events"]


def test_a_registered_name_is_409_until_it_failed_or_went_offline(api, backend):
    api.online("dup-1")
    body = assert_error(api.register("dup-1"), 409, "conflict")
    assert "online" in body["message"]
    assert api.post(api.admin, "/api/v2/nodes/dup-1:offline").json()["state"] == "offline"
    r = api.register("dup-1", host="10.0.0.6", gpus=2)
    assert r.status_code == 201 and r.json()["state"] == "pending" and r.json()["ssh"]["host"] == "10.0.0.6"
    assert not api.hold("dup-1").exists()  # registered again: free to join
    api.rec.wait_idle()
    api.reconcile()
    assert api.node("dup-1")["state"] == "online"
    assert [e[1] for e in events(backend, "dup-1")] == [
        "pending",
        "pending",
        "online",
        "offline",
        "pending",
        "pending",
        "online",
    ]


def test_unknown_nodes_are_404(api):
    for path in ("/api/v2/nodes/nope-1", "/api/v2/nodes/NOPE"):
        assert_error(api.get(api.admin, path), 404, "not_found")
    for action in ("drain", "undrain", "offline"):
        assert_error(api.post(api.admin, f"/api/v2/nodes/nope-1:{action}"), 404, "not_found")


# -- failures -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error,words",
    [
        (
            SSHError("auth", "authentication failed for root@10.9.0.1:22 with key good.pem"),
            "authentication failed for root@10.9.0.1:22 with key good.pem",
        ),
        (
            SSHError("unreachable", "cannot connect to 10.9.0.1:22: Connection refused"),
            "cannot connect to 10.9.0.1:22",
        ),
        (SSHError("timeout", "cannot connect to 10.9.0.1:22: timed out after 10 s"), "timed out"),
    ],
)
def test_ssh_failures_fail_the_node_with_the_reason(api, backend, error, words):
    name = f"bad-{error.kind}"
    api.ssh.fail["10.9.0.1"] = error
    try:
        assert api.register(name, host="10.9.0.1").status_code == 201
        api.rec.wait_idle()
    finally:
        del api.ssh.fail["10.9.0.1"]
    node = api.node(name)
    assert node["state"] == "failed" and words in node["reason"], node
    assert events(backend, name)[-1] == ("pending", "failed", node["reason"])


def test_a_host_check_failure_names_what_is_missing(api):
    api.ssh.check_rc = 4
    try:
        api.register("noagent-1")
        api.rec.wait_idle()
    finally:
        api.ssh.check_rc = 0
    node = api.node("noagent-1")
    assert node["state"] == "failed"
    assert "`/opt/argus/bin/argus node-agent --help` does not run on the host" in node["reason"]


def test_an_agent_that_never_joins_fails_after_the_join_timeout_and_can_be_cleaned_up(api, backend):
    api.unjoined("lost-1")
    api.reconcile()
    assert api.node("lost-1")["state"] == "pending"
    api.clock.now += 121
    try:
        api.reconcile()
    finally:
        api.clock.now -= 121
    node = api.node("lost-1")
    assert node["state"] == "failed", node
    assert node["reason"].startswith("agent started but the node did not join Ray within 120 s")
    assert "looks for the head in /private/ray/discovery/argus/head.json" in node["reason"]
    # A late join must not put a failed node in service: its agent is stopped, and held out.
    assert node["agent_pid"] not in api.ssh.agents
    assert api.rec.held_name("lost-1")
    r = api.post(api.admin, "/api/v2/nodes/lost-1:offline")
    assert r.status_code == 200 and r.json()["state"] == "offline", r.text
    assert r.json()["agent_pid"] is None


def test_registering_a_failed_node_again_stops_its_leftover_agent_first(api):
    api.unjoined("again-1", host="10.0.0.21")
    api.ssh.stop_rc = 1  # when it fails, its agent cannot be stopped (it is held out instead)
    api.clock.now += 121
    try:
        api.reconcile()
    finally:
        api.clock.now -= 121
        api.ssh.stop_rc = 0
    old = api.node("again-1")
    assert old["state"] == "failed" and old["agent_pid"] in api.ssh.agents
    r = api.register("again-1", host="10.0.0.22")
    assert r.status_code == 201, r.text
    api.rec.wait_idle()
    assert old["agent_pid"] not in api.ssh.agents  # stopped on its old host
    stop = next(i for i, (h, c) in enumerate(api.ssh.commands) if h == "10.0.0.21" and "kill -TERM" in c)
    start = next(i for i, (h, c) in enumerate(api.ssh.commands) if h == "10.0.0.22" and "nohup" in c)
    assert stop < start
    api.reconcile()
    assert api.node("again-1")["state"] == "online"


def test_the_reconciler_runs_passes_until_stopped(api):
    api.unjoined("run-1")
    api.clock.now += 121  # its first pass fails the node that did not join
    stop = threading.Event()
    thread = threading.Thread(target=api.rec.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while api.node("run-1")["state"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api.node("run-1")["state"] == "failed"
        assert api.rec.last_error is None
    finally:
        stop.set()
        api.rec.nudge()
        thread.join(timeout=10)
        api.clock.now -= 121
    assert not thread.is_alive()


def test_a_bring_up_lost_in_a_restart_fails_the_node(api, backend):
    from argus.domain.nodes import parse_registration

    api.svc.store.create(
        parse_registration({"name": "orphan-1", "host": "10.0.0.7", "user": "root", "key": "good.pem"}),
        api.clock(),
    )
    api.reconcile()
    node = api.node("orphan-1")
    assert node["state"] == "failed" and "restarted before the agent was started" in node["reason"]


# -- drain, undrain, offline --------------------------------------------------------------------
def test_drain_and_undrain(api, backend):
    node = api.online("dr-1")
    node_id = node["ray"]["node_id"]
    r = api.client.post("/api/v2/nodes/dr-1:drain", json={"reason": "disk swap"}, headers=api.admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "draining" and r.json()["reason"] == "disk swap"
    assert r.json()["ray"]["draining"] is True
    assert api.ray.drains[-1] == (node_id, "argus: disk swap")
    assert api.hold("dr-1").read_text() == "disk swap\n"
    body = assert_error(api.post(api.admin, "/api/v2/nodes/dr-1:drain"), 409, "conflict")
    assert "is draining" in body["message"]

    r = api.post(api.admin, "/api/v2/nodes/dr-1:undrain")
    assert r.status_code == 200 and r.json()["state"] == "online"
    assert not api.hold("dr-1").exists()
    body = assert_error(api.post(api.admin, "/api/v2/nodes/dr-1:undrain"), 409, "conflict")
    assert "is online" in body["message"]
    assert events(backend, "dr-1")[-2:] == [
        ("online", "draining", "disk swap"),
        ("draining", "online", "undrained by the admin"),
    ]
    assert_error(
        api.client.post("/api/v2/nodes/dr-1:drain", json={"reason": ""}, headers=api.admin.headers),
        400,
        "bad_request",
        "reason",
    )


def test_drain_of_a_pending_or_failed_node_is_409_naming_the_state(api):
    api.unjoined("pend-1")
    body = assert_error(api.post(api.admin, "/api/v2/nodes/pend-1:drain"), 409, "conflict")
    assert body["message"] == "node pend-1 is pending: only an online node can be drained"


def test_offline_of_an_empty_node_stops_its_agent(api, backend):
    node = api.online("off-1")
    pid = node["agent_pid"]
    r = api.post(api.admin, "/api/v2/nodes/off-1:offline")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "offline" and r.json()["reason"] == "taken offline by the admin"
    assert pid not in api.ssh.agents and not api.ray.nodes[node["ray"]["node_id"]].alive
    assert any(f"p={pid};" in c and "kill -TERM" in c for _, c in api.ssh.commands)
    assert api.hold("off-1").exists()
    # Drained in Ray before its agent is stopped: nothing is placed there in between.
    assert [d for d in api.ray.drains if d[0] == node["ray"]["node_id"]] == [
        (node["ray"]["node_id"], "argus: taken offline by the admin")
    ]
    body = assert_error(api.post(api.admin, "/api/v2/nodes/off-1:offline"), 409, "conflict")
    assert "is offline" in body["message"]
    assert_error(api.post(api.admin, "/api/v2/nodes/off-1:drain"), 409, "conflict")


def test_offline_of_a_busy_node_drains_first_and_finishes_when_it_is_empty(api, backend):
    node = api.online("busy-1", gpus=4)
    node_id = node["ray"]["node_id"]
    tasks = TaskStore(api.client.app.state.db)
    tid = f"mvp2-alice-ppo-20260101-000000-{int(time.time() * 1000) % 0xFFFF:04x}"
    tasks.create(
        task_id=tid,
        user_id="alice",
        workload="ppo",
        jobspec_yaml="x",
        nnodes=1,
        n_gpus_per_node=2,
        driver_gpus=0,
        now=api.clock(),
    )
    assert tasks.start_attempt(tid, 0, "/tmp/x", {node_id: 2.0}, api.clock()) is not None
    api.ray.use(node_id, gpus=2, cpus=1)
    assert api.node("busy-1")["running_tasks"] == [tid]

    r = api.post(api.admin, "/api/v2/nodes/busy-1:offline")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["offline_requested"]) == ("draining", True)
    assert "draining first (1 task(s) placed there)" in r.json()["reason"]
    assert api.ray.drains[-1][0] == node_id and api.hold("busy-1").exists()
    api.reconcile()
    assert api.node("busy-1")["state"] == "draining"
    api.ray.use(node_id)  # Ray's view is free, but Argus still places a task there
    api.reconcile()
    assert api.node("busy-1")["state"] == "draining"
    assert tasks.cancel(tid, api.clock(), "test")
    api.reconcile()
    node = api.node("busy-1")
    assert node["state"] == "offline" and not node["offline_requested"], node
    assert node["reason"] == "offline requested: the node is empty"
    assert [e[1] for e in events(backend, "busy-1")][-2:] == ["draining", "offline"]


def test_undrain_cancels_a_requested_offline(api):
    node = api.online("keep-1")
    api.ray.use(node["ray"]["node_id"], gpus=1)
    assert api.post(api.admin, "/api/v2/nodes/keep-1:offline").json()["offline_requested"] is True
    r = api.post(api.admin, "/api/v2/nodes/keep-1:undrain")
    assert (r.json()["state"], r.json()["offline_requested"]) == ("online", False)
    api.ray.use(node["ray"]["node_id"])
    api.reconcile()
    assert api.node("keep-1")["state"] == "online"


def test_an_agent_that_cannot_be_stopped_is_still_held_out(api):
    node = api.online("stuck-1")
    api.ssh.stop_rc = 5
    try:
        r = api.post(api.admin, "/api/v2/nodes/stuck-1:offline")
    finally:
        api.ssh.stop_rc = 0
    assert r.json()["state"] == "offline"
    assert "the agent could not be stopped" in r.json()["reason"] and "hold file" in r.json()["reason"]
    assert api.hold("stuck-1").exists()
    assert api.ray.drains[-1][0] == node["ray"]["node_id"]


# -- the live view ------------------------------------------------------------------------------
def test_unmanaged_nodes_are_listed_and_can_be_drained_not_taken_offline(api):
    named = api.ray.join("self-1", gpus=2, labels={"pool": "h100"})
    anon = api.ray.join(None, gpus=1)
    listed = {n["id"]: n for n in api.get(api.admin, "/api/v2/nodes").json()["nodes"]}
    assert listed["self-1"]["managed"] is False and listed["self-1"]["pool"] == "h100"
    assert listed["self-1"]["state"] == "online" and listed["self-1"]["ray"]["node_id"] == named
    assert listed[anon]["name"] is None and listed[anon]["managed"] is False
    assert api.get(api.admin, f"/api/v2/nodes/{anon}").json()["events"] == []

    r = api.post(api.admin, "/api/v2/nodes/self-1:drain")
    assert r.status_code == 200 and r.json()["state"] == "draining", r.text
    assert api.ray.drains[-1][0] == named and api.hold("self-1").exists()
    r = api.post(api.admin, "/api/v2/nodes/self-1:undrain")
    assert r.status_code == 200 and not api.hold("self-1").exists()
    assert_error(api.post(api.admin, f"/api/v2/nodes/{anon}:undrain"), 409, "conflict")
    assert api.post(api.admin, f"/api/v2/nodes/{anon}:drain").json()["ray"]["draining"] is True
    body = assert_error(api.post(api.admin, "/api/v2/nodes/self-1:offline"), 409, "conflict")
    assert "not managed" in body["message"]
    api.ray.leave(named)
    api.ray.leave(anon)


def test_pools_show_free_gpus(api):
    a = api.ray.join("pool-a", gpus=4, labels={"pool": "p-test"})
    b = api.ray.join("pool-b", gpus=4, labels={"pool": "p-test"})
    api.ray.use(a, gpus=3)
    listing = api.get(api.admin, "/api/v2/nodes").json()
    assert listing["pools"]["p-test"] == {"nodes": 2, "gpus_total": 8, "gpus_free": 5}
    free = {n["id"]: n["gpus_free"] for n in listing["nodes"] if n["id"] in ("pool-a", "pool-b")}
    assert free == {"pool-a": 1, "pool-b": 4}  # per node, as admission counts them
    api.ray.leave(a)
    api.ray.leave(b)


def test_ray_unreachable_lists_the_registry_and_refuses_a_drain(api, backend):
    api.online("ray-1")
    api.ray.down = True
    try:
        body = api.get(api.admin, "/api/v2/nodes").json()
        assert "cannot reach the GCS" in body["ray_error"] and body["pools"] is None
        assert {n["id"]: n for n in body["nodes"]}["ray-1"]["ray"] is None
        before = backend.count("node_events")
        assert_error(api.post(api.admin, "/api/v2/nodes/ray-1:drain"), 503, "unavailable")
        assert backend.count("node_events") == before and api.node("ray-1")["state"] == "online"
        api.reconcile()  # nothing to do without Ray, nothing breaks
    finally:
        api.ray.down = False


def test_routes_are_in_the_openapi_schema(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v2/nodes",
        "/api/v2/nodes/{node_id}",
        "/api/v2/nodes/{node_id}:drain",
        "/api/v2/nodes/{node_id}:undrain",
        "/api/v2/nodes/{node_id}:offline",
    ):
        assert path in paths


# -- the SDK and the CLI over this API ------------------------------------------------------------
@pytest.fixture
def cli(api, monkeypatch):
    """`argus …` against this module's app, as the admin."""
    from argus.client import service_cli
    from argus.client.cli import app
    from argus.client.sdk import ArgusClient

    monkeypatch.setattr(
        service_cli,
        "make_client",
        lambda url, token: ArgusClient(url, token, transport=api.client._transport),
    )
    monkeypatch.setenv("ARGUS_URL", "http://testserver")
    monkeypatch.setenv("ARGUS_TOKEN", ADMIN_TOKEN)

    def invoke(*args: Any):
        return run_cli(app, *args)

    return invoke


def test_the_cli_adds_lists_drains_undrains_and_takes_nodes_offline(api, cli):
    r = cli(
        "nodes",
        "add",
        "cli-1",
        "--host",
        "10.0.0.8",
        "--user",
        "root",
        "--key",
        "good.pem",
        "--gpus",
        "2",
        "--labels",
        "pool=cli-pool,rack=r9",
    )
    assert r.exit_code == 0, r.err_text
    assert "registered cli-1 (pending)" in r.out_text
    api.rec.wait_idle()
    api.reconcile()
    r = cli("nodes")
    assert r.exit_code == 0, r.err_text
    line = next(l for l in r.out_text.splitlines() if "cli-1" in l)
    for words in ("yes", "online", "10.0.0.8", "cli-pool", "2/2"):
        assert words in line, line
    listed = {n["id"]: n for n in cli("nodes", "--json").json()["nodes"]}
    assert listed["cli-1"]["labels"] == {"pool": "cli-pool", "rack": "r9"}
    assert "events" in cli("nodes", "show", "cli-1").out_text
    assert cli("nodes", "show", "cli-1", "--json").json()["events"][-1]["to_state"] == "online"

    r = cli("nodes", "drain", "cli-1", "--reason", "maintenance")
    assert r.exit_code == 0 and "cli-1: draining" in r.out_text, r.err_text
    r = cli("nodes", "drain", "cli-1")
    assert r.exit_code == 1 and "is draining" in r.err_text and "409" in r.err_text
    assert cli("nodes", "undrain", "cli-1", "--json").json()["state"] == "online"
    r = cli("nodes", "offline", "cli-1")
    assert r.exit_code == 0 and "cli-1: offline" in r.out_text, r.err_text


def test_the_cli_exits_2_on_bad_input_naming_the_field(api, cli):
    r = cli("nodes", "add", "Bad_Name", "--host", "10.0.0.8", "--user", "root", "--key", "good.pem")
    assert r.exit_code == 2 and "name:" in r.err_text, r.err_text
    r = cli(
        "nodes",
        "add",
        "ok-1",
        "--host",
        "10.0.0.8",
        "--user",
        "root",
        "--key",
        "good.pem",
        "--labels",
        "ray.io/x=1",
    )
    assert r.exit_code == 2 and "labels.ray.io/x" in r.err_text, r.err_text
    r = cli("nodes", "add", "ok-1", "--host", "h", "--user", "root", "--key", "k", "--labels", "nonsense")
    assert r.exit_code == 2 and "--labels" in r.err_text
    assert cli("nodes", "show", "nope-9").exit_code == 1
