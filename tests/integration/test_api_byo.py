"""A task's own code, reward and secrets through the API (issue 12), over a real database (SQLite,
and PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set), the scheduler run one pass at a time over
faked Ray jobs, and reward functions checked by the real check script in a scrubbed subprocess.

- A reward function that does not import, lacks the function, raises or returns a string is
  refused at submit with the traceback's last lines, and nothing is queued; a good one is
  accepted, and its verdict is reused for the same inputs.
- `code: <name>` is pinned at accept: the attempt runs the snapshot the task was accepted with,
  even after the name is pushed again; a snapshot in use cannot be deleted; a resubmission is a
  new acceptance, so it runs the name's newest snapshot.
- Secrets: an unknown name is refused; at dispatch the attempt's file holds the values (0600,
  outside the job directory) and nothing Ray is handed holds one; the file goes when the attempt
  ends; a secret deleted before dispatch fails the task (CONFIG) with nothing submitted.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import Backend, User, World, backend, fake_ray_world, sandbox
from cryptography.fernet import Fernet

from argus.client.sdk_code import code_archive
from argus.domain.code_manifest import scan
from argus.scheduler.secrets import JobSecrets
from argus.store.secrets import SecretStore
from argus.testing.sandbox import Sandbox

KEY = Fernet.generate_key().decode()
CANARY = "canary-0b7d2f6a9c1e4d83"
GOOD = (
    "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return len(ground_truth) / 10\n"
)
BROKEN = {
    "syntax": ("def compute_score(:\n", "SyntaxError"),
    "missing": (
        "def other(data_source, solution_str, ground_truth, extra_info=None):\n    return 1\n",
        "compute_score",
    ),
    "raises": (
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    raise ValueError('bad ground truth ' + ground_truth)\n",
        "ValueError: bad ground truth",
    ),
    "string": (
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 'high'\n",
        "'high'",
    ),
}


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    yield from fake_ray_world(sandbox, backend, environ={"ARGUS_SECRETS_KEY": KEY})


@pytest.fixture(autouse=True)
def no_tasks_left(world: World) -> Iterator[None]:
    """Each test starts with every GPU free: tasks earlier tests left are cancelled."""
    final = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}
    for task in world.list_all(world.admin):
        if task["state"] not in final:
            world.post(world.admin, f"/api/v2/tasks/{task['task_id']}:cancel")
    yield


def push(world: World, who: User, directory: Path, name: str) -> dict:
    archive = code_archive(str(directory), scan(str(directory)).entries)
    headers = {**who.headers, "Content-Type": "application/gzip"}
    r = world.client.post("/api/v2/code", params={"name": name}, content=archive, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def project(sandbox: Sandbox, tmp: Path, reward: str) -> Path:
    """The stand-in as training code, with a reward file."""
    import shutil

    d = tmp / "proj"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(sandbox.code["sim-a"], d)
    (d / "reward.py").write_text(reward)
    return d


def task_count(world: World, who: User) -> int:
    return len(world.list_all(who))


def problems_of(r) -> dict[str, str]:
    return {p["field"]: p["message"] for p in r.json()["problems"]}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_reward_is_refused_with_its_traceback_and_nothing_is_queued(world, tmp_path, case):
    text, shown = BROKEN[case]
    who = world.new_user("rw")
    snap = push(world, who, project(world.sandbox, tmp_path, text), "proj")
    r = world.post_yaml(who, world.spec("grpo", code_path=snap["path"], reward={"path": "reward.py"}))
    assert r.status_code == 400, r.text
    got = problems_of(r)
    assert list(got) == ["reward"] and shown in got["reward"], got
    assert "failed its check" in got["reward"]
    assert task_count(world, who) == 0
    assert world.backend.rows("SELECT task_id FROM tasks WHERE user_id = :u", u=who.user_id) == []


def test_a_good_reward_is_accepted_and_its_verdict_reused(world, tmp_path):
    who = world.new_user("rw")
    snap = push(world, who, project(world.sandbox, tmp_path, GOOD), "proj")
    checker = world.client.app.state.tasks.inputs.rewards
    calls: list[str] = []
    original = checker.check

    def counting(request, timeout_s):
        calls.append(request.reward_path)
        return original(request, timeout_s)

    checker.check = counting
    try:
        spec = world.spec("grpo", code_path=snap["path"], reward_fn_path=f"{snap['path']}/reward.py:compute_score")
        first = world.submit(who, spec)
        second = world.submit(who, spec)
    finally:
        del checker.check
    assert first != second and calls == [f"{snap['path']}/reward.py"]


def test_code_is_pinned_at_accept_and_a_snapshot_in_use_cannot_be_deleted(world, tmp_path):
    who = world.new_user("pin")
    old = push(world, who, project(world.sandbox, tmp_path, GOOD), "proj")
    tid = world.submit(who, world.spec("ppo", code="proj", code_path=None))
    new = push(world, who, project(world.sandbox, tmp_path, GOOD + "# v2\n"), "proj")
    assert new["sha256"] != old["sha256"]
    r = world.client.delete(f"/api/v2/code/{old['sha256']}", headers=who.headers)
    assert r.status_code == 409 and tid in r.json()["message"], r.text
    world.tick()
    request = world.jobs.jobs[f"{tid}--a01"].request
    assert request["runtime_env"]["env_vars"]["PYTHONPATH"] == old["path"]
    assert request["metadata"]["argus.code_path"] == old["path"]
    listed = {s["sha256"]: s for s in world.get(who, "/api/v2/code").json()["snapshots"]}
    assert listed[old["sha256"]]["tasks"] == [tid] and listed[new["sha256"]]["tasks"] == []
    # A task that has ended no longer holds its snapshot.
    assert world.post(who, f"/api/v2/tasks/{tid}:cancel").status_code == 200
    assert world.client.delete(f"/api/v2/code/{old['sha256']}", headers=who.headers).status_code == 200
    assert not Path(old["path"]).exists()


def test_resubmit_resolves_a_code_name_again_to_its_newest_snapshot(world, tmp_path):
    """`:resubmit` accepts the stored TaskSpec anew: `code: <name>` names the newest snapshot of
    that name then, so fixed code pushed under the same name is what the continuation runs."""
    who = world.new_user("pin")
    old = push(world, who, project(world.sandbox, tmp_path, GOOD), "proj")
    tid = world.submit(who, world.spec("ppo", code="proj", code_path=None))
    world.tick()
    assert world.jobs.jobs[f"{tid}--a01"].request["metadata"]["argus.code_path"] == old["path"]
    assert world.post(who, f"/api/v2/tasks/{tid}:cancel").status_code == 200
    new = push(world, who, project(world.sandbox, tmp_path, GOOD + "# v2\n"), "proj")
    r = world.post(who, f"/api/v2/tasks/{tid}:resubmit")
    assert r.status_code == 201, r.text
    again = r.json()["task_id"]
    world.tick()
    request = world.jobs.jobs[f"{again}--a01"].request
    assert request["metadata"]["argus.code_path"] == new["path"] != old["path"]
    assert request["runtime_env"]["env_vars"]["PYTHONPATH"] == new["path"]


def test_secrets_reach_only_the_attempts_file_and_it_goes_when_the_attempt_ends(world):
    who = world.new_user("sec")
    r = world.client.put("/api/v2/secrets/HF_TOKEN", json={"value": CANARY}, headers=who.headers)
    assert r.status_code == 201, r.text
    unknown = world.post_yaml(who, world.spec("ppo", secrets=["HF_TOKEN", "NOPE"]))
    assert unknown.status_code == 400 and list(problems_of(unknown)) == ["secrets[1]"], unknown.text
    online = world.post_yaml(who, world.spec("ppo", wandb={"project": "p"}))
    assert online.status_code == 400 and list(problems_of(online)) == ["wandb"], online.text

    tid = world.submit(who, world.spec("ppo", secrets=["HF_TOKEN"], wandb={"mode": "offline"}))
    world.tick()
    sid = f"{tid}--a01"
    request = world.jobs.jobs[sid].request
    assert CANARY not in json.dumps(request)
    env = request["runtime_env"]["env_vars"]
    path = Path(env["ARGUS_SECRETS_FILE"])
    assert path == world.sandbox.shared_root / "users" / who.user_id / ".secrets" / f"{sid}.json"
    assert json.loads(path.read_text()) == {"HF_TOKEN": CANARY}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert env["WANDB_RUN_ID"] == tid and env["WANDB_MODE"] == "offline"
    job_root = Path(request["metadata"]["argus.job_root"])
    assert not str(path).startswith(str(job_root))
    for f in job_root.rglob("*"):
        if f.is_file():
            assert CANARY not in f.read_text(errors="replace"), f
    detail = world.get(who, f"/api/v2/tasks/{tid}").text
    assert CANARY not in detail and "HF_TOKEN" in detail
    world.jobs.finish(sid)
    world.tick()
    world.tick()
    assert not path.exists()


def test_a_secret_deleted_before_dispatch_fails_the_task_and_nothing_is_submitted(world):
    who = world.new_user("gone")
    world.client.put("/api/v2/secrets/HF_TOKEN", json={"value": CANARY}, headers=who.headers)
    tid = world.submit(who, world.spec("ppo", secrets=["HF_TOKEN"]))  # queued: no pass has run yet
    assert world.client.delete("/api/v2/secrets/HF_TOKEN", headers=who.headers).status_code == 200
    world.tick()
    task = world.get(who, f"/api/v2/tasks/{tid}").json()
    assert task["state"] == "FAILED" and task["failure_cause"] == "CONFIG", task
    assert "HF_TOKEN" in task["error_summary"]
    assert f"{tid}--a01" not in world.jobs.submits
    assert not any((world.sandbox.shared_root / "users" / who.user_id / ".secrets").glob("*"))


def test_credential_looking_env_vars_are_accepted_with_a_warning(world):
    who = world.new_user("warn")
    r = world.post_yaml(who, world.spec("ppo", env_vars={"WANDB_API_KEY": "x", "HF_HUB_OFFLINE": "1"}))
    assert r.status_code == 201, r.text
    warnings = r.json()["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("env_vars.WANDB_API_KEY looks like a credential")
    assert "argus secrets set WANDB_API_KEY" in warnings[0]


def test_inputs_from_another_users_directory_are_refused_alike_whether_or_not_they_exist(world, tmp_path):
    alice, bob = world.new_user("own"), world.new_user("other")
    snap = push(world, alice, project(world.sandbox, tmp_path, GOOD), "proj")
    theirs = world.post_yaml(bob, world.spec("ppo", code_path=snap["path"]))
    nothing = world.post_yaml(bob, world.spec("ppo", code_path=snap["path"].replace(snap["sha256"], "f" * 64)))
    assert theirs.status_code == nothing.status_code == 400
    assert problems_of(theirs) == problems_of(nothing)
    assert snap["sha256"] not in theirs.text and alice.user_id not in theirs.text
    by_name = world.post_yaml(bob, world.spec("ppo", code="proj", code_path=None))
    assert by_name.status_code == 400 and problems_of(by_name) == {"code": "no code snapshot 'proj'"}
    own = world.post_yaml(alice, world.spec("ppo", code=snap["sha256"][:10], code_path=None))
    assert own.status_code == 201, own.text
    assert os.path.isdir(snap["path"])


@pytest.mark.parametrize("key", [None, "rotated"])
def test_secrets_the_server_cannot_read_fail_the_task_at_dispatch_naming_the_secret(world, key):
    """A server restarted without its key, or with another one: the task fails (CONFIG), never
    hangs in SUBMITTED, and no value or file is anywhere."""
    who = world.new_user("key")
    world.client.put("/api/v2/secrets/HF_TOKEN", json={"value": CANARY}, headers=who.headers)
    tid = world.submit(who, world.spec("ppo", secrets=["HF_TOKEN"]))
    scheduler = world.client.app.state.scheduler
    kept = scheduler.inputs.secrets
    other = None if key is None else Fernet.generate_key().decode()
    scheduler.inputs.secrets = JobSecrets(kept.shared_root, SecretStore(world.client.app.state.db, other))
    try:
        world.tick()
    finally:
        scheduler.inputs.secrets = kept
    task = world.get(who, f"/api/v2/tasks/{tid}").json()
    assert task["state"] == "FAILED" and task["failure_cause"] == "CONFIG", task
    assert "HF_TOKEN" in task["error_summary"] and CANARY not in json.dumps(task)
    assert f"{tid}--a01" not in world.jobs.submits
    assert not any((world.sandbox.shared_root / "users" / who.user_id / ".secrets").glob("*"))


def test_an_ended_attempts_secrets_file_goes_even_while_ray_is_unreachable(world):
    who = world.new_user("down")
    world.client.put("/api/v2/secrets/HF_TOKEN", json={"value": CANARY}, headers=who.headers)
    other = world.submit(who, world.spec("ppo"))
    tid = world.submit(who, world.spec("ppo", secrets=["HF_TOKEN"]))
    world.tick()
    path = world.sandbox.shared_root / "users" / who.user_id / ".secrets" / f"{tid}--a01.json"
    assert path.exists() and f"{other}--a01" in world.jobs.jobs
    assert world.post(who, f"/api/v2/tasks/{tid}:cancel").status_code == 200
    world.jobs.down = True  # the other task is still active: the pass cannot sync it
    try:
        world.tick()
    finally:
        world.jobs.down = False
    assert not path.exists()
    world.post(who, f"/api/v2/tasks/{other}:cancel")


def test_a_snapshot_deleted_while_its_task_is_accepted_is_a_conflict_and_nothing_is_queued(world, tmp_path):
    who = world.new_user("race")
    snap = push(world, who, project(world.sandbox, tmp_path, GOOD), "proj")
    checker = world.client.app.state.tasks.inputs.rewards
    original = checker.check

    def check_then_lose_the_snapshot(request, timeout_s):
        verdict = original(request, timeout_s)
        world.client.app.state.code.store.delete(who.user_id, snap["sha256"])  # a delete in between
        return verdict

    checker.check = check_then_lose_the_snapshot
    try:
        r = world.post_yaml(who, world.spec("grpo", code="proj", code_path=None, reward={"path": "reward.py"}))
    finally:
        del checker.check
    assert r.status_code == 409 and snap["sha256"][:12] in r.json()["message"], r.text
    assert task_count(world, who) == 0


def test_a_pass_between_the_insert_and_the_pin_resolves_the_name_as_the_accept_did(world, tmp_path):
    who = world.new_user("window")
    snap = push(world, who, project(world.sandbox, tmp_path, GOOD), "proj")
    tid = world.submit(who, world.spec("ppo", code="proj", code_path=None))
    with world.backend.engine.begin() as conn:  # as if the pin were not written yet
        conn.execute(sa.text("DELETE FROM task_code WHERE task_id = :t"), {"t": tid})
    world.tick()
    env = world.jobs.jobs[f"{tid}--a01"].request["runtime_env"]["env_vars"]
    assert env["PYTHONPATH"] == snap["path"]
    world.post(who, f"/api/v2/tasks/{tid}:cancel")


def test_snapshots_used_through_overrides_and_env_vars_are_held_too(world, tmp_path):
    who = world.new_user("held")
    snap = push(world, who, project(world.sandbox, tmp_path, GOOD), "proj")
    overrides = [f"+data.extra_file={snap['path']}/reward.py"]
    tid = world.submit(who, world.spec("ppo", overrides=overrides, env_vars={"X_DIR": snap["path"]}))
    listed = {s["sha256"]: s for s in world.get(who, "/api/v2/code").json()["snapshots"]}
    assert listed[snap["sha256"]]["tasks"] == [tid]
    assert world.client.delete(f"/api/v2/code/{snap['sha256']}", headers=who.headers).status_code == 409
    world.post(who, f"/api/v2/tasks/{tid}:cancel")
