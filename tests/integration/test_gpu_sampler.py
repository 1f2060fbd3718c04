"""The GPU sampler over a real database (SQLite, and PostgreSQL when `ARGUS_TEST_DATABASE_URL` is
set), through the app as `create_app(gpu_stats=...)` wires it, with the real scheduler driving
faked Ray jobs on a fake clock.

GPU readings come from `FakeGpuStats` (these machines have no GPU; the reader itself is tested
against real HTTP endpoints in test_gpu_metrics.py and against the real Ray nodes in
tests/ray/test_metrics_on_ray.py). Checked: the mean utilisation over the samples and the peak
memory of a two-node attempt, a node without readings giving nothing, only RUNNING tasks being
sampled, the figures in the task's detail, its attempts and `argus status`, and null where Ray
reported none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from api_support import ADMIN_TOKEN, Backend, World, backend, make_settings, sandbox
from fastapi.testclient import TestClient

from argus.client import service_cli
from argus.client.cli import app as cli_app
from argus.client.sdk import ArgusClient
from argus.cluster.gpu_metrics import NodeGpuReading
from argus.scheduler.gpu_sampler import GpuSampler
from argus.service.api_models import AttemptList, TaskDetail
from argus.service.app import create_app
from argus.testing import FakeClock
from argus.testing.cli import invoke
from argus.testing.fakes import FakeGpuStats, FakeJobs, FakeSnapshots
from argus.testing.sandbox import Sandbox

__all__ = ["backend", "sandbox"]  # fixtures, found by name
GIB = 1024**3


class GpuWorld(World):
    gpus: FakeGpuStats
    snaps: FakeSnapshots

    def sample(self) -> int:
        return self.client.app.state.gpu_sampler.sample(self.clock())

    def start(self, **fields) -> str:
        """A task submitted and run on Ray (RUNNING)."""
        user = getattr(self, "user", None) or self.new_user("gpu")
        self.user = user
        tid = self.submit(user, self.spec(**fields))
        self.tick()
        self.jobs.run(f"{tid}--a01")
        self.tick()
        assert self.get(user, f"/api/v2/tasks/{tid}").json()["state"] == "RUNNING"
        return tid


@pytest.fixture
def world(sandbox: Sandbox, backend: Backend) -> Iterator[GpuWorld]:
    clock, jobs, gpus = FakeClock(1_800_000_000.0), FakeJobs(), FakeGpuStats()
    jobs.clock = clock
    snaps = FakeSnapshots({"w1": 4, "w2": 4, "w3": 2})
    app = create_app(
        make_settings(sandbox, backend.url),
        jobs=jobs,
        snapshots=snaps,
        clock=clock,
        run_scheduler=False,
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
        gpu_stats=gpus,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        w = GpuWorld(client, sandbox, backend)
        w.jobs, w.clock, w.gpus, w.snaps = jobs, clock, gpus, snaps
        yield w
        # The module's database is shared: what still runs would be sampled by the next test.
        for t in w.list_all(w.admin):
            if t["state"] in ("QUEUED", "PENDING_RESOURCES", "SUBMITTED", "RUNNING"):
                w.post(w.admin, f"/api/v2/tasks/{t['task_id']}:cancel")
    app.state.db.dispose()


def _conforms(model, body):
    assert model.model_validate(body).model_dump(mode="json") == body, body
    return body


def test_mean_utilisation_and_peak_memory_of_a_two_node_attempt(world: GpuWorld):
    gang = world.start(nnodes=2, n_gpus_per_node=4)  # fills w1 and w2
    small = world.start(n_gpus_per_node=2)  # on w3
    placement = world.client.app.state.store.attempt(gang, 1).placement
    assert dict(placement) == {"w1": 4.0, "w2": 4.0}

    # Pass 1: w1's 4 GPUs at 40 %, w2's 2 (all it reports) at 100 %: 60 % over the 6 GPUs.
    world.gpus.readings.update(w1=NodeGpuReading(40.0, 10 * GIB, 4), w2=NodeGpuReading(100.0, 30 * GIB, 2))
    assert world.sample() == 1  # w3 reports nothing: `small` gets no sample
    assert sorted(world.gpus.asked[-1]) == ["w1", "w2", "w3"]  # one read for every node needed
    # Pass 2: 100 % everywhere, less memory: the mean is (60 + 100) / 2, the peak stays.
    world.gpus.readings.update(w1=NodeGpuReading(100.0, 5 * GIB, 4), w2=NodeGpuReading(100.0, 6 * GIB, 2))
    # w3 reports memory only: `small` gets a peak, still no utilisation.
    world.gpus.set("w3", None, 3 * GIB, 2)
    assert world.sample() == 2
    assert len(world.gpus.asked) == 2

    detail = _conforms(TaskDetail, world.get(world.user, f"/api/v2/tasks/{gang}").json())
    latest = detail["latest_attempt"]
    assert (latest["gpu_util_mean"], latest["gpu_mem_peak_bytes"]) == (80.0, 30 * GIB)
    listed = _conforms(AttemptList, world.get(world.user, f"/api/v2/tasks/{gang}/attempts").json())
    assert [(a["gpu_util_mean"], a["gpu_mem_peak_bytes"]) for a in listed["attempts"]] == [(80.0, 30 * GIB)]
    other = _conforms(TaskDetail, world.get(world.user, f"/api/v2/tasks/{small}").json())["latest_attempt"]
    assert (other["gpu_util_mean"], other["gpu_mem_peak_bytes"]) == (None, 3 * GIB)

    # `argus status` over the real app: the two lines for the gang, only the peak for `small`.
    def forward(request: httpx.Request) -> httpx.Response:
        r = world.client.request(request.method, request.url.raw_path.decode(), headers=dict(request.headers))
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    def make_client(url: str, token: str) -> ArgusClient:
        return ArgusClient(url, token, transport=httpx.MockTransport(forward))

    mp = pytest.MonkeyPatch()
    mp.setattr(service_cli, "make_client", make_client)
    mp.setenv("ARGUS_URL", "http://argus.test")
    mp.setenv("ARGUS_TOKEN", world.user.token)
    mp.setenv("COLUMNS", "250")
    mp.setenv("NO_COLOR", "1")
    try:
        shown = invoke(cli_app, "status", gang)
        assert shown.exit_code == 0, shown.output
        lines = shown.out_text.splitlines()
        assert "GPU util        80.0 % (mean over the run, its nodes' GPUs)" in lines, lines
        assert "GPU memory peak 30.0 GiB (on one GPU)" in lines, lines
        shown = invoke(cli_app, "status", small)
        assert "GPU util" not in shown.out_text and "GPU memory peak 3.0 GiB (on one GPU)" in shown.out_text
    finally:
        mp.undo()


def test_only_running_attempts_are_sampled_and_ended_ones_keep_their_figures(world: GpuWorld):
    world.gpus.set("w1", 50.0, 2 * GIB, 4)
    world.gpus.set("w2", 50.0, 2 * GIB, 4)
    world.gpus.set("w3", 50.0, 2 * GIB, 2)
    assert world.sample() == 0 and world.gpus.asked == []  # nothing runs: no read at all
    tid = world.start(n_gpus_per_node=4)
    waiting_user = world.user
    submitted = world.submit(waiting_user, world.spec(n_gpus_per_node=2))
    world.tick()  # SUBMITTED (Ray has not started it): not sampled
    assert world.sample() == 1
    world.jobs.finish(f"{tid}--a01")
    world.tick()
    assert world.get(waiting_user, f"/api/v2/tasks/{tid}").json()["state"] == "SUCCEEDED"
    world.gpus.set("w1", 0.0, 70 * GIB, 4)
    world.gpus.set("w2", 0.0, 70 * GIB, 4)
    world.sample()
    ended = world.get(waiting_user, f"/api/v2/tasks/{tid}").json()["latest_attempt"]
    assert (ended["gpu_util_mean"], ended["gpu_mem_peak_bytes"]) == (50.0, 2 * GIB)
    fresh = world.get(waiting_user, f"/api/v2/tasks/{submitted}").json()["latest_attempt"]
    assert (fresh["gpu_util_mean"], fresh["gpu_mem_peak_bytes"]) == (None, None)


def test_ray_unreachable_records_nothing_and_interval_zero_disables(world: GpuWorld):
    off = GpuSampler(world.client.app.state.store, world.snaps, world.gpus, world.clock, 0)
    off.run(threading.Event())  # returns at once: it never samples
    assert not off.enabled and world.gpus.asked == []

    world.start(n_gpus_per_node=4)
    world.gpus.set("w1", 50.0, GIB, 4)
    world.gpus.set("w2", 50.0, GIB, 4)
    world.snaps.down = True
    assert world.sample() == 0 and world.gpus.asked == []
    world.snaps.down = False
    assert world.sample() == 1
    sampler = world.client.app.state.gpu_sampler
    assert sampler.enabled and sampler.interval_s == 30.0  # the default


def test_the_gpus_read_are_those_of_the_node_where_ray_placed_the_gang(world: GpuWorld):
    tid = world.start(n_gpus_per_node=2)
    counted = dict(world.client.app.state.store.attempt(tid, 1).placement)
    elsewhere = next(n for n in ("w1", "w2", "w3") if n not in counted)
    world.jobs.placed[f"{tid}--a01"] = {elsewhere: 2.0}  # Ray chose another node than admission
    for node in ("w1", "w2", "w3"):
        world.gpus.set(node, 5.0 if node == elsewhere else 95.0, GIB, 2)
    assert world.sample() == 1
    assert world.gpus.asked[-1] == [elsewhere]
    latest = world.get(world.user, f"/api/v2/tasks/{tid}").json()["latest_attempt"]
    assert latest["gpu_util_mean"] == 5.0
