"""RayJobTool against a fake JobSubmissionClient: artifacts, errors, status and logs.

No Ray cluster: the client comes from `client_factory`, and `cluster_summary` (which uses
ray.util.state) is replaced with a stub.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timezone
from types import SimpleNamespace

import pytest
import yaml

from argus.cluster.errors import ClusterUnavailable, JobNotFound, SubmissionRefused
from argus.cluster.jobs import RayJobTool, tail_lines
from argus.domain.failure import FailureCause
from argus.spec.config import parse_ray_config
from argus.spec.render import render
from argus.spec.taskspec import parse_task_spec
from argus.testing import FakeClock
from conftest import spec_dict

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
GPU_LINE = "ValueError: Total available GPUs 4.0 is less than total desired GPUs 8"
FAILED_LOG = (
    "2025-03-04 05:06:08,000\tINFO worker.py:1654 -- Connecting to existing Ray cluster\n"
    "Traceback (most recent call last):\n"
    '  File "/verl/single_controller/ray/base.py", line 241, in _check_resource_available\n'
    f"{GPU_LINE}\n"
)


class FakeClient:
    """The part of ray.job_submission.JobSubmissionClient that RayJobTool uses."""

    def __init__(self, address: str):
        self.address = address
        self.submitted: list[dict] = []
        self.jobs: dict[str, SimpleNamespace] = {}
        self.logs: dict[str, str] = {}
        self.stopped: list[str] = []
        self.submit_error: Exception | None = None

    def submit_job(self, **kwargs):
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted.append(kwargs)
        sid = kwargs["submission_id"]
        self.jobs[sid] = job_info(sid, "PENDING", entrypoint=kwargs["entrypoint"], metadata=kwargs.get("metadata"))
        return sid

    def get_job_info(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return self.jobs[sid]

    def get_job_logs(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return self.logs.get(sid, "")

    def stop_job(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Job {sid} does not exist")
        self.stopped.append(sid)
        return self.jobs[sid].status in ("PENDING", "RUNNING")

    def list_jobs(self):
        return list(self.jobs.values())


def job_info(
    sid,
    status,
    message=None,
    error_type=None,
    start=None,
    end=None,
    entrypoint="python3 -m x",
    metadata=None,
    driver_ip=None,
):
    return SimpleNamespace(
        submission_id=sid,
        status=status,
        message=message,
        error_type=error_type,
        start_time=start,
        end_time=end,
        entrypoint=entrypoint,
        metadata=metadata,
        driver_node_id="node-1" if driver_ip else None,
        driver_info=SimpleNamespace(node_ip_address=driver_ip) if driver_ip else None,
    )


@pytest.fixture
def shared(tmp_path):
    return tmp_path / "shared"


@pytest.fixture
def config(shared):
    return parse_ray_config(
        {
            "address": "http://127.0.0.9:8265",
            "shared_root": str(shared),
            "entrypoint_num_cpus": 1,
            "entrypoint_resources": {"worker_node": 1},
            "runtime_env": {"env_vars": {"HF_HOME": "${shared_root}/hf"}},
        }
    )


@pytest.fixture
def fake():
    return FakeClient("unused")


@pytest.fixture
def tool(config, fake, monkeypatch):
    monkeypatch.setattr(RayJobTool, "cluster_summary", lambda self: "cluster at fake: 3 nodes\n")
    made = []

    def factory(address):
        made.append(address)
        fake.address = address
        return fake

    t = RayJobTool(config, client_factory=factory, clock=FakeClock(NOW.timestamp()).utc)
    t.made = made  # type: ignore[attr-defined]
    return t


def rendered_for(config, workload="ppo", sid="run-1", **extra):
    spec = parse_task_spec(spec_dict(workload, submission_id=sid, **extra), config.shared_root)
    return render(config, spec, NOW)


SPEC_TEXT = "# my run, as written\nworkload: ppo\nsubmission_id: run-1\ncode_path: ${shared_root}/code\n"


# -- submit -------------------------------------------------------------------------------------
def test_constructing_the_tool_does_not_build_a_client(config):
    calls = []
    RayJobTool(config, client_factory=lambda a: calls.append(a))
    assert calls == []


def test_submit_writes_artifacts_and_passes_everything_to_ray(tool, fake, config, shared):
    rendered = rendered_for(config)
    assert tool.submit(rendered, SPEC_TEXT) == "run-1"

    root = shared / "jobs" / "run-1"
    assert str(rendered.job_root) == str(root)
    for sub in ("config", "logs", "checkpoints", "debug"):
        assert (root / sub).is_dir()
    assert (root / "config" / "jobspec.yaml").read_text() == SPEC_TEXT

    ray_cfg = yaml.safe_load((root / "config" / "ray_config.yaml").read_text())
    assert ray_cfg["address"] == "http://127.0.0.9:8265"
    assert ray_cfg["shared_root"] == str(shared)
    assert ray_cfg["entrypoint_resources"] == {"worker_node": 1}
    assert ray_cfg["runtime_env"] == {"env_vars": {"HF_HOME": "<redacted>"}}  # the operator's values too

    payload = json.loads((root / "config" / "submit_payload.json").read_text())
    assert payload == rendered.request.as_dict()
    assert payload["submission_id"] == "run-1"

    submit_out = (root / "logs" / "submit.out").read_text().splitlines()
    assert submit_out == [
        f"{NOW.isoformat()} submit run-1 to http://127.0.0.9:8265",
        f"entrypoint: {rendered.request.entrypoint}",
        f"{NOW.isoformat()} accepted: run-1",
    ]
    assert (root / "debug" / "ray_status_pre.txt").read_text() == "cluster at fake: 3 nodes\n"
    post = json.loads((root / "debug" / "ray_job_list_post.txt").read_text())  # this job only
    assert (post["submission_id"], post["status"]) == ("run-1", "PENDING")

    assert tool.made == ["http://127.0.0.9:8265"]
    (kwargs,) = fake.submitted
    assert kwargs["submission_id"] == "run-1"
    assert kwargs["entrypoint"] == rendered.request.entrypoint
    assert kwargs["entrypoint"].startswith("python3 -m verl.trainer.main_ppo ")
    assert kwargs["entrypoint_num_cpus"] == 1
    assert kwargs["entrypoint_resources"] == {"worker_node": 1}
    assert kwargs["runtime_env"]["env_vars"]["PYTHONPATH"] == "/srv/shared/user/code"
    assert kwargs["runtime_env"]["env_vars"]["PYTHONSAFEPATH"] == "1"
    assert kwargs["metadata"]["argus.job_root"] == str(root)
    # A PPO driver needs no GPU, so Ray is not even asked for zero GPUs.
    assert "entrypoint_num_gpus" not in kwargs
    assert "entrypoint_label_selector" not in kwargs  # no pool: not even an empty selector


def test_sft_submission_asks_ray_for_one_driver_gpu(tool, fake, config):
    tool.submit(rendered_for(config, "sft", sid="sft-1"), "workload: sft\n")
    (kwargs,) = fake.submitted
    assert kwargs["entrypoint_num_gpus"] == 1
    assert kwargs["entrypoint"].startswith("python3 -m verl.trainer.sft_trainer_ray ")


def test_user_job_root_is_used_for_artifacts(tool, config, shared):
    spec = parse_task_spec(spec_dict(submission_id="u-1"), config.shared_root)
    rendered = render(config, spec, NOW, user="alice")
    tool.submit(rendered, "x: 1\n")
    assert (shared / "users" / "alice" / "jobs" / "u-1" / "config" / "jobspec.yaml").read_text() == "x: 1\n"
    assert not (shared / "jobs").exists()


def test_duplicate_submission_is_refused_and_recorded(tool, fake, config, shared):
    fake.submit_error = RuntimeError(
        "Job with submission_id run-1 already exists. Please use a different submission_id."
    )
    with pytest.raises(SubmissionRefused) as info:
        tool.submit(rendered_for(config), SPEC_TEXT)
    assert "run-1 already exists" in str(info.value)
    root = shared / "jobs" / "run-1"
    lines = (root / "logs" / "submit.out").read_text().splitlines()
    assert lines[0] == f"{NOW.isoformat()} submit run-1 to http://127.0.0.9:8265"
    assert lines[-1].startswith(f"{NOW.isoformat()} refused: ")
    assert "Job with submission_id run-1 already exists" in lines[-1]
    assert not any("accepted" in line for line in lines)
    # The config artifacts were written before the attempt; the post snapshot was not.
    assert (root / "config" / "jobspec.yaml").read_text() == SPEC_TEXT
    assert not (root / "debug" / "ray_job_list_post.txt").exists()


def test_unreachable_cluster_on_submit_is_cluster_unavailable(tool, fake, config, shared):
    fake.submit_error = ConnectionError("Connection refused")
    with pytest.raises(ClusterUnavailable, match="submit_job failed: Connection refused"):
        tool.submit(rendered_for(config), SPEC_TEXT)
    assert (
        "refused: submit_job failed: Connection refused"
        in (shared / "jobs" / "run-1" / "logs" / "submit.out").read_text()
    )


def test_debug_snapshot_failure_does_not_fail_submission(config, fake, monkeypatch, shared):
    def broken(self):
        raise ClusterUnavailable("list_nodes failed: boom")

    monkeypatch.setattr(RayJobTool, "cluster_summary", broken)
    tool = RayJobTool(config, client_factory=lambda a: fake, clock=FakeClock(NOW.timestamp()).utc)
    assert tool.submit(rendered_for(config), SPEC_TEXT) == "run-1"
    pre = (shared / "jobs" / "run-1" / "debug" / "ray_status_pre.txt").read_text()
    assert pre == "unavailable: list_nodes failed: boom\n"


@pytest.mark.parametrize("exc", [ConnectionError("refused"), RuntimeError("bad"), ValueError("no")])
def test_client_constructor_failure_is_cluster_unavailable(config, exc):
    def factory(address):
        raise exc

    tool = RayJobTool(config, client_factory=factory)
    with pytest.raises(ClusterUnavailable) as info:
        tool.status("run-1")
    assert str(info.value).endswith(f"cannot reach the Ray job server at http://127.0.0.9:8265: {exc}")
    with pytest.raises(ClusterUnavailable, match="cannot reach the Ray job server"):
        tool.list()


def _unreachable(address):
    raise ConnectionError(f"Failed to connect to Ray at address: {address}.")


def test_unreachable_cluster_message_is_not_rewrapped(config):
    with pytest.raises(ClusterUnavailable) as info:
        RayJobTool(config, client_factory=_unreachable).status("run-1")
    assert str(info.value).startswith("cannot reach the Ray job server at http://127.0.0.9:8265")


def test_unreachable_cluster_on_port_4040_is_not_job_not_found(shared):
    cfg = parse_ray_config({"address": "http://10.0.0.7:4040", "shared_root": str(shared)})
    with pytest.raises(ClusterUnavailable):
        RayJobTool(cfg, client_factory=_unreachable).status("run-1")


# -- status / logs / stop / list ----------------------------------------------------------------
def test_failed_job_status_carries_diagnosis(tool, fake):
    fake.jobs["run-1"] = job_info(
        "run-1",
        "FAILED",
        message="Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n",
        error_type=SimpleNamespace(value="JOB_ENTRYPOINT_COMMAND_ERROR"),
        start=1_700_000_000_000,
        end=1_700_000_060_500,
        driver_ip="127.0.131.2",
    )
    fake.logs["run-1"] = FAILED_LOG
    view = tool.status("run-1")
    assert view.status == "FAILED"
    assert view.diagnosis is not None
    assert view.diagnosis.cause is FailureCause.INSUFFICIENT_RESOURCES
    assert view.diagnosis.evidence == GPU_LINE
    assert view.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert (view.start_time, view.end_time) == (1_700_000_000.0, 1_700_000_060.5)
    assert view.driver_node_ip == "127.0.131.2"
    d = view.as_dict()
    assert d["diagnosis"] == {"cause": "INSUFFICIENT_RESOURCES", "evidence": GPU_LINE}
    json.dumps(d)  # serialisable for --json


def test_failed_status_without_diagnosis_when_asked(tool, fake):
    fake.jobs["run-1"] = job_info("run-1", "FAILED", message="x")
    fake.logs["run-1"] = FAILED_LOG
    assert tool.status("run-1", diagnose=False).diagnosis is None


def test_failed_status_still_diagnosed_when_logs_are_unavailable(tool, fake):
    fake.jobs["run-1"] = job_info("run-1", "FAILED", message=None, error_type="RUNTIME_ENV_SETUP_FAILURE")
    fake.get_job_logs = lambda sid: (_ for _ in ()).throw(ConnectionError("gone"))
    view = tool.status("run-1")
    assert view.diagnosis.cause is FailureCause.PLATFORM
    assert view.diagnosis.evidence == "Ray error type RUNTIME_ENV_SETUP_FAILURE"


def test_succeeded_job_has_no_diagnosis(tool, fake):
    fake.jobs["ok"] = job_info("ok", SimpleNamespace(value="SUCCEEDED"), message="Job finished successfully.")
    view = tool.status("ok")
    assert view.status == "SUCCEEDED"
    assert view.diagnosis is None
    assert view.as_dict()["diagnosis"] is None


def test_unknown_job_is_job_not_found(tool):
    with pytest.raises(JobNotFound, match="no Ray job with submission id nope"):
        tool.status("nope")
    with pytest.raises(JobNotFound):
        tool.logs("nope")
    with pytest.raises(JobNotFound):
        tool.stop("nope")


def test_other_runtime_error_is_cluster_unavailable(tool, fake):
    def boom(sid):
        raise RuntimeError("Request failed with status code 500: internal")

    fake.get_job_info = boom
    with pytest.raises(ClusterUnavailable, match="get_job_info failed: Request failed with status code 500"):
        tool.status("run-1")


def test_logs_tail(tool, fake):
    fake.jobs["run-1"] = job_info("run-1", "RUNNING")
    fake.logs["run-1"] = "line 1\nline 2\nline 3\nline 4\n"
    assert tool.logs("run-1", tail=2) == "line 3\nline 4\n"
    assert tool.logs("run-1") == "line 1\nline 2\nline 3\nline 4\n"
    assert tool.logs("run-1", tail=0) == ""
    assert tool.logs("run-1", tail=10) == "line 1\nline 2\nline 3\nline 4\n"


def test_tail_lines_without_trailing_newline():
    assert tail_lines("a\nb\nc", 2) == "b\nc"
    assert tail_lines("", 3) == ""


def test_stop(tool, fake):
    fake.jobs["run-1"] = job_info("run-1", "RUNNING")
    fake.jobs["done"] = job_info("done", "SUCCEEDED")
    assert tool.stop("run-1") is True
    assert tool.stop("done") is False
    assert fake.stopped == ["run-1", "done"]


def test_list_is_newest_first_and_skips_non_submission_jobs(tool, fake):
    fake.jobs = {
        "old": job_info("old", "SUCCEEDED", start=1_000),
        "new": job_info("new", "RUNNING", start=3_000, driver_ip="127.0.131.3"),
        "mid": job_info("mid", "FAILED", start=2_000),
        "driver": job_info(None, "RUNNING", start=4_000),
    }
    views = tool.list()
    assert [v.submission_id for v in views] == ["new", "mid", "old"]
    assert views[0].driver_node_id == "node-1"
    text = tool.list_text().splitlines()
    assert text == [
        "submission_id\tstatus\tdriver_node_id",
        "new\tRUNNING\tnode-1",
        "mid\tFAILED\t-",
        "old\tSUCCEEDED\t-",
    ]
