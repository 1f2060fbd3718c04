"""`argus spec validate|render` and `argus run` input handling, through typer's CliRunner.

No cluster: specs are checked against the installed verl config (code_path points to a
directory that does not exist), and `run` is given a RayConfig at http://127.0.0.1:9 so any
contact would fail differently from the exit 2 of bad input.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from argus.client.cli import app
from argus.cluster.jobs import RayJobTool
from argus.spec.config import load_ray_config

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RENDER_KEYS = {
    "entrypoint",
    "runtime_env",
    "entrypoint_num_cpus",
    "entrypoint_resources",
    "submission_id",
    "entrypoint_num_gpus",
    "job_root",
}


def runner() -> CliRunner:
    # click >= 8.2 always keeps stderr apart (and dropped mix_stderr); older click needs it.
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def invoke(*args: str):
    result = runner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    result.text_out = ANSI.sub("", result.stdout)  # type: ignore[attr-defined]
    result.text_err = ANSI.sub("", result.stderr)  # type: ignore[attr-defined]
    return result


@pytest.fixture
def shared(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    monkeypatch.setenv("ARGUS_SHARED_ROOT", str(root))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    return root


@pytest.fixture
def write(tmp_path):
    def _write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


GOOD = """\
workload: {workload}
code_path: ${{shared_root}}/no-such-code
model_id: /models/Qwen2.5-0.5B-Instruct
train_file: /data/gsm8k/train.parquet
"""


@pytest.fixture
def unreachable_config(write, shared):
    return write("ray.yaml", f"address: http://127.0.0.1:9\nshared_root: {shared}\n")


# -- spec validate ------------------------------------------------------------------------------
@pytest.mark.parametrize("workload", ["ppo", "sft"])
def test_validate_good_spec(shared, write, workload):
    path = write("job.yaml", GOOD.format(workload=workload))
    result = invoke("spec", "validate", path)
    assert result.exit_code == 0, result.output
    assert result.text_out.startswith(f"valid: {workload} 1x1 GPUs, overrides compose against ")
    assert "verl/trainer/config" in result.text_out
    assert "warning" not in result.text_err


def test_validate_wrong_types_and_unknown_keys_lists_every_problem(shared, write):
    path = write(
        "job.yaml",
        GOOD.format(workload="grpo") + "nnodes: two\nn_gpu_per_node: 2\nsave_freq: 0\ncode_path2: /x\n",
    )
    result = invoke("spec", "validate", path)
    assert result.exit_code == 2
    err = result.text_err
    assert err.startswith(f"error: {path} is invalid:\n")
    assert "  - nnodes: Input should be a valid integer" in err
    assert "  - n_gpu_per_node: unknown key; did you mean 'n_gpus_per_node'?" in err
    assert "  - save_freq: must be -1 (never) or a positive number of steps" in err
    assert "  - code_path2: unknown key; did you mean 'code_path'?" in err
    assert err.count("\n  - ") == 4
    assert result.text_out == ""


def test_validate_bad_yaml(shared, write):
    path = write("job.yaml", "workload: ppo\nnnodes: [1, 2\nmodel_id: /m\n")
    result = invoke("spec", "validate", path)
    assert result.exit_code == 2
    assert "  - <yaml>: line 3, column " in result.text_err


def test_validate_missing_file(shared, tmp_path):
    result = invoke("spec", "validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "<file>: No such file or directory" in result.text_err


def test_validate_misspelled_override(shared, write):
    path = write("job.yaml", GOOD.format(workload="ppo") + "overrides: ['trainer.totl_epochs=3']\n")
    result = invoke("spec", "validate", path)
    assert result.exit_code == 2
    assert "  - overrides: Could not override 'trainer.totl_epochs'" in result.text_err


def test_validate_wrongly_typed_override_names_the_key(shared, write):
    path = write("job.yaml", GOOD.format(workload="sft") + "overrides: ['data.train_batch_size=abc']\n")
    result = invoke("spec", "validate", path)
    assert result.exit_code == 2
    assert "  - overrides[data.train_batch_size]: expects a number, got 'abc'" in result.text_err


def test_validate_bad_ray_config(shared, write):
    spec = write("job.yaml", GOOD.format(workload="ppo"))
    cfg = write("ray.yaml", "address: 127.0.0.1:8265\nshared_root: relative\n")
    result = invoke("spec", "validate", spec, "--config", cfg)
    assert result.exit_code == 2
    assert "  - address: must be the dashboard URL" in result.text_err
    assert "  - shared_root: must be an absolute path" in result.text_err


# -- spec render --------------------------------------------------------------------------------
def test_render_json(shared, write):
    path = write("job.yaml", GOOD.format(workload="ppo") + "submission_id: my-run\nenv_vars: {A: 1}\n")
    result = invoke("spec", "render", "--json", path)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == RENDER_KEYS
    assert payload["entrypoint"].startswith("python3 -m verl.trainer.main_ppo ")
    assert payload["submission_id"] == "my-run"
    assert payload["job_root"] == f"{shared}/jobs/my-run"
    assert payload["entrypoint_num_cpus"] == 1
    assert payload["entrypoint_resources"] == {"worker_node": 1}
    assert payload["entrypoint_num_gpus"] == 0
    assert payload["runtime_env"] == {
        "env_vars": {"A": "1", "PYTHONSAFEPATH": "1", "PYTHONPATH": f"{shared}/no-such-code"}
    }
    argv = shlex.split(payload["entrypoint"])
    assert f"trainer.default_local_dir='{shared}/jobs/my-run/checkpoints'" in argv


def test_render_json_generates_submission_id(shared, write):
    path = write("job.yaml", GOOD.format(workload="sft"))
    payload = json.loads(invoke("spec", "render", "--json", path).stdout)
    assert re.fullmatch(r"mvp11-sft-\d{8}-\d{6}-[0-9a-f]{4}", payload["submission_id"])
    assert payload["entrypoint"].startswith("python3 -m verl.trainer.sft_trainer_ray ")
    assert payload["entrypoint_num_gpus"] == 1


def test_render_does_not_check_overrides(shared, write):
    path = write("job.yaml", GOOD.format(workload="ppo") + "overrides: ['trainer.totl_epochs=3']\n")
    rendered = invoke("spec", "render", "--json", path)
    assert rendered.exit_code == 0
    assert json.loads(rendered.stdout)["entrypoint"].endswith(" trainer.totl_epochs=3")


def test_render_text(shared, write):
    path = write("job.yaml", GOOD.format(workload="grpo") + "submission_id: g-1\n")
    result = invoke("spec", "render", path)
    assert result.exit_code == 0
    out = result.text_out
    assert f"job_root       {shared}/jobs/g-1" in out
    assert "python3 -m verl.trainer.main_ppo \\\n    algorithm.adv_estimator=grpo \\\n" in out


def test_render_invalid_spec_exits_2(shared, write):
    result = invoke("spec", "render", "--json", write("job.yaml", "workload: dpo\n"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "  - workload: Input should be 'ppo', 'grpo' or 'sft'" in result.text_err


# -- run ----------------------------------------------------------------------------------------
@pytest.fixture
def no_cluster(monkeypatch):
    """Any use of the job tool's client fails the test loudly."""

    def boom(self):
        raise AssertionError("the cluster was contacted")

    monkeypatch.setattr(RayJobTool, "client", property(boom))
    monkeypatch.setattr(RayJobTool, "cluster_summary", boom)


@pytest.mark.parametrize(
    "extra, field",
    [
        ("nnodes: 0\n", "nnodes"),
        ("overrides: ['trainer.totl_epochs=3']\n", "overrides"),
        ("overrides: ['trainer.default_local_dir=/x']\n", "overrides[0]"),
    ],
)
def test_run_submit_invalid_spec_exits_2_without_contacting_cluster(
    shared, write, unreachable_config, no_cluster, extra, field
):
    path = write("job.yaml", GOOD.format(workload="ppo") + extra)
    result = invoke("run", "--config", unreachable_config, "--action", "submit", "--jobspec", path)
    assert result.exit_code == 2
    assert f"  - {field}: " in result.text_err
    assert "127.0.0.1:9" not in result.output
    assert not (shared / "jobs").exists()


def test_run_submit_without_jobspec_exits_2(shared, unreachable_config, no_cluster):
    result = invoke("run", "--config", unreachable_config, "--action", "submit")
    assert result.exit_code == 2
    assert "--jobspec is required for --action submit" in result.text_err


def test_run_status_without_id_exits_2(shared, unreachable_config, no_cluster):
    result = invoke("run", "--config", unreachable_config, "--action", "status")
    assert result.exit_code == 2
    assert "--submission-id (or a --jobspec naming one) is required for --action status" in result.text_err


def test_run_submit_good_spec_goes_to_the_job_tool(shared, write, unreachable_config, monkeypatch):
    submitted = []

    class Fake:
        def submit_job(self, **kwargs):
            submitted.append(kwargs)
            return kwargs["submission_id"]

        def list_jobs(self):
            return []

    fake = Fake()
    monkeypatch.setattr(RayJobTool, "client", property(lambda self: fake))
    monkeypatch.setattr(RayJobTool, "cluster_summary", lambda self: "fake\n")
    path = write("job.yaml", GOOD.format(workload="ppo") + "submission_id: from-spec\n")
    result = invoke("run", "-c", unreachable_config, "-a", "submit", "-j", path, "--submission-id", "given")
    assert result.exit_code == 0, result.output
    assert "submitted given" in result.text_out
    assert f"job root: {shared}/jobs/given" in result.text_out
    assert [k["submission_id"] for k in submitted] == ["given"]
    assert (shared / "jobs" / "given" / "config" / "jobspec.yaml").read_text() == path.read_text()


def test_run_unreachable_cluster_exits_1(shared, unreachable_config, monkeypatch):
    def factory_fails(self):
        from argus.cluster.errors import ClusterUnavailable

        raise ClusterUnavailable("cannot reach the Ray job server at http://127.0.0.1:9: refused")

    monkeypatch.setattr(RayJobTool, "client", property(factory_fails))
    result = invoke("run", "-c", unreachable_config, "-a", "status", "--submission-id", "x")
    assert result.exit_code == 1
    assert "error: " in result.text_err and "http://127.0.0.1:9" in result.text_err


def test_run_status_json_carries_diagnosis(shared, unreachable_config, monkeypatch):
    info = SimpleNamespace(
        submission_id="x",
        status="FAILED",
        message="Job entrypoint command failed with exit code 1",
        error_type=None,
        start_time=None,
        end_time=None,
        entrypoint="python3 -m verl.trainer.main_ppo",
        metadata={},
        driver_info=None,
        driver_node_id=None,
    )
    fake = SimpleNamespace(
        get_job_info=lambda sid: info,
        get_job_logs=lambda sid: "ValueError: Total available GPUs 0 is less than total desired GPUs 2\n",
    )
    monkeypatch.setattr(RayJobTool, "client", property(lambda self: fake))
    result = invoke("run", "-c", unreachable_config, "-a", "status", "--submission-id", "x", "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["status"] == "FAILED"
    assert view["diagnosis"] == {
        "cause": "INSUFFICIENT_RESOURCES",
        "evidence": "ValueError: Total available GPUs 0 is less than total desired GPUs 2",
    }


# -- the seeds' examples, as written --------------------------------------------------------------
# `argus spec validate` checks the fields and composes the overrides against verl's config; it
# never looks for the files a spec names (that happens at submission, against the user's roots),
# so the seeds' `/private` paths validate on a machine that has no `/private`.
SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
SEED_RAY_CONFIG = SEEDS / "000_s3_1_ray_config.yaml"


@pytest.mark.parametrize(
    "fixture, summary",
    [("003_s3_jobspec.yaml", "valid: ppo 2x4 GPUs"), ("000_s3_2_jobspec.yaml", "valid: sft 2x4 GPUs")],
)
def test_seed_example_specs_validate_as_written(monkeypatch, fixture, summary):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    result = invoke("spec", "validate", SEEDS / fixture, "--config", SEED_RAY_CONFIG)
    assert result.exit_code == 0, result.output
    assert result.text_out.startswith(f"{summary}, overrides compose against ")
    assert result.text_err == ""


def test_seed_ray_config_is_the_production_shared_root():
    cfg, _ = load_ray_config(SEED_RAY_CONFIG)
    assert cfg.shared_root == "/private"
    assert cfg.entrypoint_resources == {"worker_node": 1}
    assert cfg.user_code_path == "/private/user/code"
    assert cfg.runtime_env.env_vars == {"HF_HOME": "/private/common/hf"}


def test_seed_003_example_renders_like_the_spec_without_its_empty_values(monkeypatch, tmp_path):
    """`submission_id: ""` and `trainer_device: null` render exactly as if left out."""
    monkeypatch.setenv("NO_COLOR", "1")
    text = (SEEDS / "003_s3_jobspec.yaml").read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not line.startswith(("submission_id:", "trainer_device:"))]
    assert len(kept) == len(text.splitlines()) - 2
    without = tmp_path / "without.yaml"
    without.write_text("\n".join(kept) + "\n", encoding="utf-8")

    def render(path: Path) -> dict:
        result = invoke("spec", "render", "--json", path, "--config", SEED_RAY_CONFIG)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        sid = payload["submission_id"]
        assert re.fullmatch(r"mvp11-ppo-\d{8}-\d{6}-[0-9a-f]{4}", sid)
        # the generated id (clock and random suffix) is the only difference allowed
        return json.loads(result.stdout.replace(sid, "<sid>"))

    seed = render(SEEDS / "003_s3_jobspec.yaml")
    assert seed == render(without)
    argv = shlex.split(seed["entrypoint"])
    assert "trainer.device=cuda" in argv
    assert seed["job_root"] == "/private/jobs/<sid>"
