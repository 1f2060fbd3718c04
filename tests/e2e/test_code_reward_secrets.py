"""Bring your own code and reward (issue 12), end to end: a real `argus server` over the real local
Ray cluster, the real `argus` executable, and the CPU stand-in for verl as the training code.

A user pushes a directory (the stand-in plus a reward function) as a code snapshot, stores a
canary secret, and runs a GRPO task with `code:` and `reward:`. The reward function is checked on
a worker node before the task is accepted, runs inside the job (its `reward/mean` values are the
ones it computes, and only with the canary in its environment), and the canary is searched for,
byte by byte, everywhere it must never be: every API answer, the database file, Ray's job info,
the job directory and the server's log. Another user can neither use, list nor delete the
snapshot or the secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.cluster import local
from argus.testing.cluster import quiesce
from argus.testing.sandbox import RL_DATA_SOURCE, task_yaml
from argus.testing.server import ServerProcess, wait_state

pytestmark = pytest.mark.ray
ADMIN = "test-admin-token"
CANARY = "canary-7f3e9b1c-" + hashlib.sha256(b"argus issue 12").hexdigest()[:24]
SECRET = "E2E_CANARY"
ARGUS = str(Path(sys.executable).with_name("argus"))
REWARD_MEAN = re.compile(r"^step:(\d+) - .*reward/mean:([0-9.eE+-]+)", re.MULTILINE)

REWARD_PY = f'''\
"""A user's reward: the ground truth's value over 100, plus 0.5 when the canary secret arrived."""
import hashlib
import os

EXPECTED = "{hashlib.sha256(CANARY.encode()).hexdigest()}"


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    arrived = hashlib.sha256(os.environ.get("{SECRET}", "").encode()).hexdigest() == EXPECTED
    assert data_source == "{RL_DATA_SOURCE}", data_source
    return int(ground_truth) / 100 + (0.5 if arrived else 0.0)
'''


def expected_score(ground_truth: str) -> float:
    return int(ground_truth) / 100 + 0.5


def cli(url: str, token: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ARGUS_CONFIG_DIR", "MVP_INTERNAL_TOKEN")}
    env.update(ARGUS_URL=url, ARGUS_TOKEN=token, COLUMNS="250")
    return subprocess.run([ARGUS, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def server(ray_cluster, sandbox, tmp_path_factory):
    quiesce(ray_cluster)
    srv = ServerProcess(local.config_file(ray_cluster.shared_root), tmp_path_factory.mktemp("byo-server"), ADMIN)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def project(sandbox, tmp_path_factory) -> Path:
    """The user's working directory: the stand-in (their training code) and their reward."""
    d = tmp_path_factory.mktemp("alice-project") / "grpo-proj"
    shutil.copytree(sandbox.code["sim-a"], d)
    (d / "reward.py").write_text(REWARD_PY)
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (d / "notes.tmp").write_text("left out by .argusignore\n")
    (d / ".argusignore").write_text("*.tmp\n")
    return d


def new_user(url: str, name: str) -> tuple[ArgusClient, str]:
    admin = ArgusClient(url, ADMIN)
    try:
        admin.create_user(name)
    except ArgusAPIError as exc:
        assert exc.status == 409
    token = admin.issue_token(name)["token"]
    return ArgusClient(url, token), token


def problems(exc: ArgusAPIError) -> dict[str, str]:
    return {p["field"]: p["message"] for p in exc.problems}


def _find_canary(where: str, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    assert CANARY.encode() not in raw, f"the secret's value appears in {where}"


def test_own_code_reward_and_secret_run_in_the_job_and_the_secret_leaks_nowhere(server, sandbox, project, ray_cluster):
    shared = Path(ray_cluster.shared_root)
    alice, token = new_user(server.url, "alice12")

    # Push: a snapshot of the kept files; the same directory again uploads nothing.
    first = cli(server.url, token, "code", "push", str(project), "--name", "grpo-proj", "--json")
    assert first.returncode == 0, first.stderr
    pushed = json.loads(first.stdout)
    snap = Path(pushed["path"])
    assert snap == shared / "users" / "alice12" / "code" / pushed["sha256"]
    assert pushed["bytes_uploaded"] > 0 and (snap / "reward.py").read_text() == REWARD_PY
    assert not (snap / ".git").exists() and not (snap / "notes.tmp").exists()
    assert not os.access(snap / "reward.py", os.W_OK) or os.geteuid() == 0
    assert (os.stat(snap / "reward.py").st_mode & 0o222) == 0
    again = cli(server.url, token, "code", "push", str(project), "--name", "grpo-proj", "--json")
    assert json.loads(again.stdout)["bytes_uploaded"] == 0 and json.loads(again.stdout)["sha256"] == pushed["sha256"]
    human = cli(server.url, token, "code", "push", str(project), "--name", "grpo-proj")
    assert "unchanged" in human.stdout, human.stdout

    # The secret: set from stdin, listed by name only.
    assert cli(server.url, token, "secrets", "set", SECRET, stdin=CANARY + "\n").returncode == 0
    listed = cli(server.url, token, "secrets", "list", "--json")
    _find_canary("argus secrets list", listed.stdout)
    assert SECRET in listed.stdout

    text = task_yaml(
        sandbox,
        "grpo",
        code="grpo-proj",
        code_path=None,
        reward={"path": "reward.py"},
        secrets=[SECRET],
        wandb={"project": "byo", "run_name": "canary-run", "mode": "offline"},
        total_training_steps=4,
        save_freq=-1,
        val_file=None,
    )
    answer = alice.submit(text)
    tid = answer["task_id"]
    task = wait_state(alice, tid, {"SUCCEEDED", "FAILED"}, timeout=180)
    log = alice.logs(tid)
    assert task["state"] == "SUCCEEDED", log[-3000:]
    sid = task["latest_attempt"]["ray_submission_id"]

    # The reward ran inside the job, in a Ray worker process of it (the stand-in scores in its first
    # bundle's actor, as verl's reward workers do), with the secret: each step's mean is the function's.
    rows = _train_rows(sandbox.rl_train)
    means = {int(step): float(value) for step, value in REWARD_MEAN.findall(log)}
    assert sorted(means) == [1, 2, 3, 4], log[-2000:]
    for step, got in means.items():
        want = sum(expected_score(gt) for gt in _batch(rows, step, 8)) / 8
        assert got == pytest.approx(want, abs=1e-5), (step, got, want)

    # W&B: an offline run in the attempt's own directory, named by the task id.
    job_root = Path(task["latest_attempt"]["job_root"])
    runs = list(job_root.glob(f"wandb/offline-run-*-{tid}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), sorted(p.name for p in job_root.rglob("*"))[:40]

    # The snapshot is in use while the task lives and listed with it.
    listing = alice.code_snapshots()
    mine = next(s for s in listing["snapshots"] if s["sha256"] == pushed["sha256"])
    assert tid in mine["tasks"]

    # The secrets file is gone once the attempt has ended and its log was archived.
    secrets_file = shared / "users" / "alice12" / ".secrets" / f"{sid}.json"
    deadline = time.monotonic() + 30
    while secrets_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not secrets_file.exists()

    # Byte by byte: nowhere it must never be.
    for name, body in {
        "the task": alice.task(tid),
        "the task list": alice.tasks(),
        "the attempts": alice.attempts(tid),
        "the queue": alice.queue(),
        "the secrets list": alice.secrets(),
        "the snapshots": alice.code_snapshots(),
    }.items():
        _find_canary(name, json.dumps(body))
    _find_canary("the driver log", log)
    databases = [*server.workdir.glob("*.sqlite3*"), *(shared / "common" / "db").glob("*")]
    assert databases
    for path in databases:
        if path.is_file():
            _find_canary(str(path), path.read_bytes())
    info = JobSubmissionClient(ray_cluster.dashboard_url).get_job_info(sid)
    _find_canary("Ray's job info", json.dumps(info.model_dump(mode="json"), default=str))
    for path in job_root.rglob("*"):
        if path.is_file():
            _find_canary(str(path), path.read_bytes())
    _find_canary("the server's log", server.log.read_bytes())


def _train_rows(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [r["ground_truth"] for r in pq.read_table(path).column("reward_model").to_pylist()]


def _batch(rows: list[str], step: int, size: int) -> list[str]:
    start = (step - 1) * size
    return [rows[(start + i) % len(rows)] for i in range(size)]


def test_a_broken_reward_is_refused_at_submit_with_its_traceback(server, sandbox, project, tmp_path):
    bob, _ = new_user(server.url, "bob12")
    before = len(bob.tasks()["tasks"])
    broken = tmp_path / "broken"
    shutil.copytree(project, broken, ignore=shutil.ignore_patterns(".git"))
    (broken / "reward.py").write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    raise ZeroDivisionError('no reward for ' + ground_truth)\n"
    )
    bob.push_code(str(broken), name="broken")
    with pytest.raises(ArgusAPIError) as info:
        bob.submit(task_yaml(sandbox, "grpo", code="broken", code_path=None, reward={"path": "reward.py"}))
    assert info.value.status == 400
    got = problems(info.value)
    assert list(got) == ["reward"] and "ZeroDivisionError: no reward for" in got["reward"], got
    assert len(bob.tasks()["tasks"]) == before  # nothing queued


def test_another_user_can_neither_use_list_nor_delete_the_snapshot_or_secret(server, sandbox, project, ray_cluster):
    shared = Path(ray_cluster.shared_root)
    alice, _ = new_user(server.url, "alice12")
    carol, _ = new_user(server.url, "carol12")
    pushed = alice.push_code(str(project), name="grpo-proj")
    sha = pushed["sha256"]
    assert all(s["sha256"] != sha for s in carol.code_snapshots()["snapshots"])
    with pytest.raises(ArgusAPIError) as info:
        carol.delete_code(sha)
    assert info.value.status == 404
    assert Path(pushed["path"]).is_dir()
    # By name: carol has no such snapshot. By path: refused, the same as a path that does not exist.
    with pytest.raises(ArgusAPIError) as by_name:
        carol.submit(task_yaml(sandbox, "grpo", code="grpo-proj", code_path=None))
    assert by_name.value.status == 400 and list(problems(by_name.value)) == ["code"]
    answers = []
    for path in (pushed["path"], str(shared / "users" / "alice12" / "code" / ("0" * 64))):
        with pytest.raises(ArgusAPIError) as by_path:
            carol.submit(task_yaml(sandbox, "grpo", code_path=path))
        assert by_path.value.status == 400
        answers.append(problems(by_path.value)["code_path"])
    assert answers[0] == answers[1]
    # Secrets: carol does not see alice's, and cannot name it in a task.
    assert SECRET not in json.dumps(carol.secrets())
    with pytest.raises(ArgusAPIError) as secret:
        carol.submit(task_yaml(sandbox, "grpo", secrets=[SECRET]))
    assert secret.value.status == 400 and list(problems(secret.value)) == ["secrets[0]"]
