"""Which node's GPUs a running task holds, in `/api/v2/nodes` and the console's nodes grid.

Ray chooses the nodes of a job's placement groups, so a task is listed where Ray put its GPUs
(`FakeJobs.placed`, Ray's placement groups as `JobTool.gpus_by_job` reports them), not where
admission counted its gang (`attempt.placement`); admission's placement stands in only before
Ray shows any (or while Ray cannot be read), and a task whose GPUs are all its driver's is
listed on its driver's node. Ray is asked once per listing, never per task.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from api_support import ADMIN_TOKEN, Backend, backend
from fastapi.testclient import TestClient

from argus.service.app import create_app
from argus.service.ui.routes_nodes import holders
from argus.settings import parse_settings
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeRayNodes, FakeSSH

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_seq = itertools.count()


class World:
    def __init__(self, client: TestClient, ray: FakeRayNodes, jobs: FakeJobs, clock: FakeClock):
        self.client, self.ray, self.jobs, self.clock = client, ray, jobs, clock
        self.tasks = TaskStore(client.app.state.db)

    def start(
        self, placement: dict[str, float], nnodes: int = 1, per_node: int = 2, driver_gpus: float = 0
    ) -> tuple[str, str]:
        """A task admitted with `placement`; returns its id and its Ray submission id."""
        tid = f"mvp2-alice-ppo-20260101-000000-{next(_seq):04x}"
        self.tasks.create(
            task_id=tid,
            user_id="alice",
            workload="ppo",
            jobspec_yaml="x",
            nnodes=nnodes,
            n_gpus_per_node=per_node,
            driver_gpus=driver_gpus,
            now=self.clock(),
        )
        assert self.tasks.start_attempt(tid, 0, "/tmp/x", placement, self.clock()) is not None
        sid = self.tasks.latest_attempts([tid])[tid].ray_submission_id
        return tid, sid

    def listed(self) -> dict[str, list[str]]:
        """Node id -> its `running_tasks`, as the admin's listing shows them."""
        r = self.client.get("/api/v2/nodes", headers=ADMIN)
        assert r.status_code == 200, r.text
        return {n["id"]: n["running_tasks"] for n in r.json()["nodes"]}

    def end(self, *tids: str) -> None:
        for tid in tids:
            assert self.tasks.cancel(tid, self.clock(), "test")


@pytest.fixture(scope="module")
def world(tmp_path_factory, backend: Backend) -> Iterator[World]:
    shared = tmp_path_factory.mktemp("shared")
    settings = parse_settings(
        {"ray": {"shared_root": str(shared)}, "service": {"db_url": backend.url}, "scheduler": {"enabled": False}},
        "gpu holders test config",
        environ={},
    )
    ray, jobs, clock = FakeRayNodes(), FakeJobs(), FakeClock(1_800_000_000.0)
    app = create_app(
        settings,
        jobs=jobs,
        snapshots=ray,
        ssh=FakeSSH(ray=ray),
        drainer=ray,
        run_scheduler=False,
        run_nodes=False,
        clock=clock,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(client, ray, jobs, clock)
    app.state.db.dispose()


@pytest.fixture
def nodes(world: World) -> Iterator[tuple[str, str]]:
    """Two unmanaged 4-GPU workers, `worker-1` and `worker-2`, by Ray node id."""
    a, b = world.ray.join("worker-1", gpus=4), world.ray.join("worker-2", gpus=4)
    yield a, b
    world.ray.leave(a)
    world.ray.leave(b)
    world.jobs.placed.clear()


def test_a_task_is_listed_where_ray_put_its_gpus_not_where_admission_counted_it(world, nodes):
    a, b = nodes
    # Admission counted the 4-GPU task on worker-1 and the 2-GPU one on worker-2; Ray swapped them.
    big, big_sid = world.start({a: 4.0}, per_node=4)
    small, small_sid = world.start({b: 2.0}, per_node=2)
    world.jobs.placed.update({big_sid: {b: 4.0}, small_sid: {a: 2.0}})
    world.ray.use(a, gpus=2)
    world.ray.use(b, gpus=4)
    calls = world.jobs.gpus_by_job_calls
    listed = world.listed()
    assert listed["worker-1"] == [small] and listed["worker-2"] == [big], listed
    assert world.jobs.gpus_by_job_calls == calls + 1  # once per listing, not per task

    one = world.client.get("/api/v2/nodes/worker-2", headers=ADMIN).json()
    assert one["running_tasks"] == [big] and one["ray"]["gpus_free"] == 0, one
    # The console's grid names the same holders (it renders `NodeService.list`).
    grid = {n["id"]: holders(n) for n in world.client.app.state.nodes.list(None)["nodes"]}  # the admin's view
    assert grid["worker-1"] == small and grid["worker-2"] == big, grid
    world.end(big, small)


def test_a_gang_across_two_nodes_is_listed_on_both_where_ray_put_it(world, nodes):
    a, b = nodes
    c = world.ray.join("worker-3", gpus=4)
    try:
        tid, sid = world.start({a: 2.0, b: 2.0}, nnodes=2, per_node=2)
        world.jobs.placed[sid] = {b: 2.0, c: 2.0}
        listed = world.listed()
        assert (listed["worker-1"], listed["worker-2"], listed["worker-3"]) == ([], [tid], [tid]), listed
        world.end(tid)
    finally:
        world.ray.leave(c)


def test_before_ray_shows_its_gpus_or_while_ray_is_unread_admissions_placement_stands_in(world, nodes):
    a, b = nodes
    tid, sid = world.start({a: 2.0})
    assert world.listed()["worker-1"] == [tid]  # no placement group yet
    world.jobs.placed[sid] = {b: 2.0}
    assert (world.listed()["worker-1"], world.listed()["worker-2"]) == ([], [tid])
    world.jobs.down = True
    try:
        body = world.client.get("/api/v2/nodes", headers=ADMIN).json()
        listed = {n["id"]: n["running_tasks"] for n in body["nodes"]}
        assert (listed["worker-1"], listed["worker-2"]) == ([tid], []), body
        assert body["ray_error"] is None  # the node view itself is still Ray's
    finally:
        world.jobs.down = False
    world.end(tid)


def test_a_task_whose_gpus_are_its_drivers_is_listed_on_the_driver_node(world, nodes):
    a, b = nodes
    # All its GPUs are the driver's: Ray runs the driver on worker-2, admission counted worker-1.
    tid, sid = world.start({a: 1.0}, nnodes=0, per_node=0, driver_gpus=1)
    assert world.listed()["worker-1"] == [tid]  # the driver's node is not known yet
    _driver_on(world, sid, b)
    assert (world.listed()["worker-1"], world.listed()["worker-2"]) == ([], [tid])
    # A gang with a GPU for its driver too: Ray's placement groups' nodes and the driver's.
    gang, gang_sid = world.start({a: 3.0}, per_node=2, driver_gpus=1)
    _driver_on(world, gang_sid, b)
    world.jobs.placed[gang_sid] = {a: 2.0}
    listed = world.listed()
    assert (listed["worker-1"], listed["worker-2"]) == ([gang], sorted([tid, gang])), listed
    world.end(tid, gang)


def _driver_on(world: World, sid: str, node_id: str) -> None:
    world.tasks.record_ray_view(
        sid,
        ray_status="RUNNING",
        message=None,
        start_time=world.clock(),
        end_time=None,
        failure_kind=None,
        driver_node_id=node_id,
        driver_node_ip="127.0.0.1",
        driver_node_name=None,
    )
