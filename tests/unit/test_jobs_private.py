"""What the job tool leaves on shared storage is the job's own and keeps no secret in clear.

RayJobTool against a fake JobSubmissionClient that also knows another user's job (with a
secret in its runtime_env): the job's directories are 0750 and files 0640 even under umask 0,
`ray_job_list_post.txt` holds only this job (its env values redacted), and `jobspec.yaml` /
`submit_payload.json` keep env var names with `<redacted>` values while Ray gets the real ones.
"""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pytest
import yaml
from test_jobs_fake import NOW, FakeClient, job_info

from argus.cluster.jobs import RayJobTool
from argus.spec.config import parse_ray_config
from argus.spec.redact import REDACTED, redact_spec_text
from argus.spec.render import render
from argus.spec.taskspec import parse_task_spec
from argus.testing import FakeClock
from conftest import spec_dict

SECRET = "k-alice-secret-value"
BOBS = "bobs-own-secret"


class EnvClient(FakeClient):
    """Keeps each job's runtime_env, as Ray's JobDetails does; knows bob's job already."""

    def __init__(self, address: str):
        super().__init__(address)
        bob = job_info("mvp2-bob-ppo-20250101-000000-abcd--a01", "RUNNING")
        bob.runtime_env = {"env_vars": {"HF_TOKEN": BOBS}}
        self.jobs[bob.submission_id] = bob

    def submit_job(self, **kwargs):
        sid = super().submit_job(**kwargs)
        self.jobs[sid].runtime_env = kwargs.get("runtime_env")
        self.jobs[sid].driver_info = SimpleNamespace(node_ip_address="10.0.0.2")
        return sid


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def tool_and_client(tmp_path, monkeypatch):
    config = parse_ray_config(
        {
            "address": "http://127.0.0.9:8265",
            "shared_root": str(tmp_path / "shared"),
            "runtime_env": {"env_vars": {"HF_HOME": "${shared_root}/hf"}},
        }
    )
    monkeypatch.setattr(RayJobTool, "cluster_summary", lambda self: "cluster at fake\n")
    client = EnvClient("unused")
    return RayJobTool(config, client_factory=lambda a: client, clock=FakeClock(NOW.timestamp()).utc), client, config


SPEC = (
    "# alice's run\nworkload: ppo\ncode_path: /srv/shared/user/code\n"
    "model_id: /models/Qwen2.5-0.5B-Instruct\ntrain_file: /data/gsm8k/train.parquet\n"
    f"env_vars:\n  WANDB_API_KEY: {SECRET}  # the key\n  STEPS: 3\n"
)


def _submit(tool, config):
    spec = parse_task_spec(
        spec_dict(submission_id="mvp2-alice-ppo-1", env_vars={"WANDB_API_KEY": SECRET, "STEPS": 3}),
        config.shared_root,
    )
    rendered = render(config, spec, NOW, user="alice")
    tool.submit(rendered, SPEC)
    return rendered


def test_job_files_and_directories_are_not_readable_by_others(tool_and_client, umask0, tmp_path):
    tool, _, config = tool_and_client
    rendered = _submit(tool, config)
    root = tmp_path / "shared" / "users" / "alice" / "jobs" / "mvp2-alice-ppo-1"
    assert str(rendered.job_root) == str(root)
    paths = [tmp_path / "shared" / "users", tmp_path / "shared" / "users" / "alice", root, *root.rglob("*")]
    assert len([p for p in paths if p.is_file()]) == 6
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))


def test_an_existing_file_of_wider_mode_is_narrowed(tool_and_client, umask0, tmp_path):
    tool, _, config = tool_and_client
    root = tmp_path / "shared" / "users" / "alice" / "jobs" / "mvp2-alice-ppo-1"
    (root / "config").mkdir(parents=True, mode=0o777)
    (root / "config" / "jobspec.yaml").write_text("old\n")
    os.chmod(root / "config" / "jobspec.yaml", 0o666)
    _submit(tool, config)
    assert stat.S_IMODE((root / "config" / "jobspec.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "config").stat().st_mode) == 0o750


def test_debug_file_lists_only_this_job_with_its_env_redacted(tool_and_client, tmp_path):
    tool, client, config = tool_and_client
    _submit(tool, config)
    root = tmp_path / "shared" / "users" / "alice" / "jobs" / "mvp2-alice-ppo-1"
    text = (root / "debug" / "ray_job_list_post.txt").read_text()
    assert "bob" not in text and BOBS not in text and SECRET not in text
    post = json.loads(text)
    assert post["submission_id"] == "mvp2-alice-ppo-1"
    env = post["runtime_env"]["env_vars"]
    assert env["WANDB_API_KEY"] == env["HF_HOME"] == REDACTED and "PYTHONPATH" in env
    assert post["driver_info"] == {"node_ip_address": "10.0.0.2"}


def test_jobspec_and_payload_keep_env_names_not_values_while_ray_gets_them(tool_and_client, tmp_path):
    tool, client, config = tool_and_client
    _submit(tool, config)
    cfg = tmp_path / "shared" / "users" / "alice" / "jobs" / "mvp2-alice-ppo-1" / "config"
    for name in ("jobspec.yaml", "submit_payload.json"):
        assert SECRET not in (cfg / name).read_text(), name
    jobspec = (cfg / "jobspec.yaml").read_text()
    assert jobspec == redact_spec_text(SPEC)
    assert jobspec.startswith("# alice's run\n") and "# the key" in jobspec  # the text as written
    assert yaml.safe_load(jobspec)["env_vars"] == {"WANDB_API_KEY": REDACTED, "STEPS": REDACTED}
    payload = json.loads((cfg / "submit_payload.json").read_text())["runtime_env"]["env_vars"]
    assert payload["WANDB_API_KEY"] == payload["STEPS"] == REDACTED
    assert payload["HF_HOME"] == f"{config.shared_root}/hf"  # the cluster's config: kept
    assert payload["PYTHONPATH"].startswith("/srv/shared/user/code")  # Argus's own: kept
    (sent,) = client.submitted
    assert (
        sent["runtime_env"]["env_vars"]["WANDB_API_KEY"] == SECRET and sent["runtime_env"]["env_vars"]["STEPS"] == "3"
    )
