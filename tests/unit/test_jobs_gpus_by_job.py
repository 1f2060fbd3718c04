"""`RayJobTool.gpus_by_job` without a Ray cluster: Ray's state API and job list are stubbed.

Live placement groups' GPU bundles are summed per node under the creating Ray job, which the
job list maps to its submission id; a job without GPU bundles, a driver started without the
Jobs API, and CPU-only bundles are left out; the state API's errors are `ClusterUnavailable`.
(The real cluster's answer: tests/ray/test_gpu_holders_on_ray.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import ray.util.state as state
from ray.util.state.exception import RayStateApiException

from argus.cluster.errors import ClusterUnavailable
from argus.cluster.jobs import RayJobTool
from argus.spec.config import parse_ray_config


def _pg(job: str, *bundles: tuple[str | None, dict[str, float]]) -> SimpleNamespace:
    return SimpleNamespace(
        creator_job_id=job,
        state="CREATED",
        bundles=[{"bundle_id": "b", "node_id": node, "unit_resources": res} for node, res in bundles],
    )


class Client:
    def __init__(self, jobs: list[SimpleNamespace]):
        self.jobs, self.listed = jobs, 0

    def list_jobs(self) -> list[SimpleNamespace]:
        self.listed += 1
        return self.jobs


@pytest.fixture
def config(tmp_path):
    return parse_ray_config({"address": "http://127.0.0.9:8265", "shared_root": str(tmp_path)})


def test_gpus_are_summed_per_node_under_each_jobs_submission_id(config, monkeypatch):
    seen: dict = {}

    def list_placement_groups(**kw):
        seen.update(kw)
        return [
            _pg("02000000", ("n1", {"GPU": 2.0, "CPU": 0.0}), ("n2", {"GPU": 2.0})),
            _pg("02000000", ("n2", {"GPU": 1.0})),
            _pg("03000000", ("n1", {"CPU": 1.0})),  # no GPU
            _pg("04000000", ("n3", {"GPU": 4.0})),  # a driver without a submission id
            _pg("05000000", (None, {"GPU": 1.0})),  # a bundle not placed
        ]

    monkeypatch.setattr(state, "list_placement_groups", list_placement_groups)
    client = Client(
        [
            SimpleNamespace(job_id="02000000", submission_id="mvp2-a-ppo-1-a0"),
            SimpleNamespace(job_id="03000000", submission_id="mvp2-b-ppo-1-a0"),
            SimpleNamespace(job_id="04000000", submission_id=None),
            SimpleNamespace(job_id=None, submission_id="mvp2-c-ppo-1-a0"),  # not started
        ]
    )
    tool = RayJobTool(config, client_factory=lambda _: client)
    assert tool.gpus_by_job() == {"mvp2-a-ppo-1-a0": {"n1": 2.0, "n2": 3.0}}
    assert seen["filters"] == [("state", "=", "CREATED")] and seen["detail"] is True
    assert seen["address"] == "http://127.0.0.9:8265" and seen["timeout"] > 0


def test_no_gpu_bundle_skips_the_job_list(config, monkeypatch):
    monkeypatch.setattr(state, "list_placement_groups", lambda **kw: [])
    client = Client([])
    assert RayJobTool(config, client_factory=lambda _: client).gpus_by_job() == {}
    assert client.listed == 0


@pytest.mark.parametrize("error", [RayStateApiException("Failed to connect to API server"), ConnectionError("refused")])
def test_state_api_errors_are_cluster_unavailable(config, monkeypatch, error):
    def fail(**kw):
        raise error

    monkeypatch.setattr(state, "list_placement_groups", fail)
    with pytest.raises(ClusterUnavailable, match="list_placement_groups failed"):
        RayJobTool(config, client_factory=lambda _: Client([])).gpus_by_job()


class StatusClient(Client):
    def get_job_info(self, sid: str) -> SimpleNamespace:
        job = next(j for j in self.jobs if j.submission_id == sid)
        return SimpleNamespace(
            job_id=job.job_id,
            submission_id=sid,
            status="RUNNING",
            message=None,
            driver_info=None,
            error_type=None,
            start_time=None,
            end_time=None,
            entrypoint="python x.py",
            metadata={},
        )


def test_the_job_list_is_read_only_for_jobs_never_seen_and_at_most_once_a_minute(config, monkeypatch):
    pgs = [_pg("02000000", ("n1", {"GPU": 2.0}))]
    monkeypatch.setattr(state, "list_placement_groups", lambda **kw: pgs)
    client = StatusClient(
        [
            SimpleNamespace(job_id="02000000", submission_id="mvp2-a-ppo-1-a0"),
            SimpleNamespace(job_id="06000000", submission_id="mvp2-d-ppo-1-a0"),
        ]
    )
    now = [datetime(2027, 1, 1, tzinfo=UTC)]
    tool = RayJobTool(config, client_factory=lambda _: client, clock=lambda: now[0])
    tool.status("mvp2-a-ppo-1-a0")  # the scheduler's status read teaches the job's Ray id
    assert tool.gpus_by_job() == {"mvp2-a-ppo-1-a0": {"n1": 2.0}} and client.listed == 0
    pgs.append(_pg("06000000", ("n2", {"GPU": 1.0})))  # a job this tool never read
    assert tool.gpus_by_job()["mvp2-d-ppo-1-a0"] == {"n2": 1.0} and client.listed == 1
    pgs.append(_pg("07000000", ("n3", {"GPU": 1.0})))  # unknown to Ray's job list as well
    assert "n3" not in str(tool.gpus_by_job()) and client.listed == 1  # not again within a minute
    now[0] += timedelta(seconds=61)
    tool.gpus_by_job()
    assert client.listed == 2
