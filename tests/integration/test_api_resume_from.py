"""Continuing an ended task as a new one (`resume_from`, `POST /tasks/{id}:resubmit`, `argus
resubmit`), over a real database (SQLite, and PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set),
through the app with the real scheduler driving faked Ray jobs on a fake clock.

Checkpoints are real directories in the attempts' job roots, laid out as verl 0.9.1 leaves them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from api_support import Backend, User, World, backend, fake_ray_world, sandbox

from argus.client import service_cli
from argus.client.cli import app as cli_app
from argus.client.sdk import ArgusClient
from argus.testing.cli import invoke
from argus.testing.sandbox import Sandbox

__all__ = ["backend", "sandbox"]  # fixtures, found by name
NCCL_LOG = "Traceback (most recent call last):\nRuntimeError: NCCL error: injected communicator failure\n"
USER_LOG = "Traceback (most recent call last):\nKeyError: 'reward'\n"


@pytest.fixture
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    yield from fake_ray_world(sandbox, backend)


def _save(job_root: str, step: int) -> Path:
    """A complete verl save of `step` in an attempt's `checkpoints/` (the tracker written last)."""
    ckpt = Path(job_root) / "checkpoints"
    (ckpt / f"global_step_{step}" / "actor").mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text(str(step))
    return ckpt / f"global_step_{step}"


def _attempt(w: World, user: User, tid: str, n: int) -> dict:
    for _ in range(4):
        w.tick()
        found = w.get(user, f"/api/v2/tasks/{tid}/attempts").json()["attempts"]
        if len(found) >= n:
            return found[n - 1]
    raise AssertionError(f"{tid} has no attempt {n}: {w.get(user, f'/api/v2/tasks/{tid}').json()}")


def _state(w: World, user: User, tid: str) -> str:
    return w.get(user, f"/api/v2/tasks/{tid}").json()["state"]


def _ended_with_checkpoint(w: World, user: User, step: int, **fields) -> tuple[str, Path]:
    """A task of `user` whose attempt 1 saved `step` and then failed (USER_CODE: not retried)."""
    tid = w.submit(user, w.spec("ppo", **fields))
    first = _attempt(w, user, tid, 1)
    saved = _save(first["job_root"], step)
    w.jobs.run(f"{tid}--a01")
    w.jobs.fail(f"{tid}--a01", "exit code 1", log=USER_LOG)
    w.tick()
    assert _state(w, user, tid) == "FAILED"
    return tid, saved


def _entry_args(w: World, sid: str) -> list[str]:
    return shlex.split(w.jobs.jobs[sid].request["entrypoint"])


def test_a_new_task_resumes_from_an_ended_tasks_checkpoint_then_prefers_its_own(world: World):
    user = world.new_user("rf")
    old, saved = _ended_with_checkpoint(world, user, 4)
    new = world.submit(user, world.spec("ppo", resume_from=old, total_training_steps=8))
    first = _attempt(world, user, new, 1)
    assert (first["resumed_from_step"], first["resumed_from"]) == (4, str(saved))
    assert _entry_args(world, f"{new}--a01")[-2:] == [
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path='{saved}'",
    ]
    linked = world.backend.rows("SELECT attempt_no, reason FROM task_events WHERE task_id = :t", t=new)
    assert {"attempt_no": 1, "reason": f"resumes from task {old} at step 4 ({saved})"} in linked, linked
    assert _state(world, user, old) == "FAILED"  # the old task stays as it ended

    # Its own attempt 1 saved nothing: attempt 2 falls back to the old task's checkpoint.
    world.jobs.fail(f"{new}--a01", "exit code 1", log=NCCL_LOG)
    second = _attempt(world, user, new, 2)
    assert (second["resumed_from_step"], second["resumed_from"]) == (4, str(saved))
    # Attempt 2 saved step 6: attempt 3 resumes from it, not from the old task.
    own = _save(second["job_root"], 6)
    world.jobs.fail(f"{new}--a02", "exit code 1", log=NCCL_LOG)
    third = _attempt(world, user, new, 3)
    assert (third["resumed_from_step"], third["resumed_from"]) == (6, str(own))


def test_an_ended_task_without_a_checkpoint_gives_a_fresh_start_and_says_so(world: World):
    user = world.new_user("rf")
    old = world.submit(user, world.spec("sft"))
    assert world.post(user, f"/api/v2/tasks/{old}:cancel").status_code == 200
    new = world.submit(user, world.spec("sft", resume_from=old))
    first = _attempt(world, user, new, 1)
    assert (first["resumed_from_step"], first["resumed_from"]) == (None, None)
    assert not any("resume" in a for a in _entry_args(world, f"{new}--a01"))
    reasons = [r["reason"] for r in world.backend.rows("SELECT reason FROM task_events WHERE task_id = :t", t=new)]
    assert f"resumes from task {old}: it left no complete checkpoint, so it starts from scratch" in reasons


def test_a_users_own_resume_overrides_win_and_no_resume_event_is_written(world: World):
    user = world.new_user("rf")
    old, _ = _ended_with_checkpoint(world, user, 4)
    mine = "trainer.resume_mode=disable"
    new = world.submit(user, world.spec("ppo", resume_from=old, overrides=[mine]))
    first = _attempt(world, user, new, 1)
    assert (first["resumed_from_step"], first["resumed_from"]) == (None, None)
    args = _entry_args(world, f"{new}--a01")
    assert mine in args and not any(a.startswith("trainer.resume_from_path") for a in args)
    reasons = [r["reason"] for r in world.backend.rows("SELECT reason FROM task_events WHERE task_id = :t", t=new)]
    assert not any("resumes from task" in (r or "") for r in reasons), reasons


def test_resume_from_must_name_an_ended_task_of_the_callers_own(world: World):
    alice, bob = world.new_user("rf"), world.new_user("rf")
    bobs, _ = _ended_with_checkpoint(world, bob, 2)
    alices, _ = _ended_with_checkpoint(world, alice, 2)
    waiting = world.submit(alice, world.spec("ppo"))  # QUEUED: not ended
    missing = bobs.replace(bob.user_id, alice.user_id)[:-4] + "ffff"
    before = world.backend.count("tasks")
    cases = {
        bobs: f"no such task of yours: {bobs}",
        missing: f"no such task of yours: {missing}",
        waiting: f"task {waiting} is still QUEUED: cancel it first or wait",
        "not-a-task": "must be a task id",
    }
    r = world.post_yaml(alice, world.spec("sft", resume_from=alices))
    assert r.status_code == 400 and r.json()["problems"] == [
        {"field": "resume_from", "message": f"task {alices} is a ppo task: its checkpoints fit ppo only"}
    ], r.text
    for named, message in cases.items():
        r = world.post_yaml(alice, world.spec("ppo", resume_from=named))
        assert r.status_code == 400, r.text
        problems = r.json()["problems"]
        assert [p["field"] for p in problems] == ["resume_from"], problems
        assert message in problems[0]["message"], problems
    assert world.backend.count("tasks") == before  # nothing stored


def _cli(w: World, user: User, *args: str):
    """`argus <args>` over the real app (the SDK's HTTP forwarded to the TestClient)."""

    def forward(request: httpx.Request) -> httpx.Response:
        r = w.client.request(
            request.method, request.url.raw_path.decode(), headers=dict(request.headers), content=request.content
        )
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    mp = pytest.MonkeyPatch()
    mp.setattr(
        service_cli, "make_client", lambda url, token: ArgusClient(url, token, transport=httpx.MockTransport(forward))
    )
    mp.setenv("ARGUS_URL", "http://argus.test")
    mp.setenv("ARGUS_TOKEN", user.token)
    mp.setenv("COLUMNS", "400")
    mp.setenv("NO_COLOR", "1")
    try:
        return invoke(cli_app, *args)
    finally:
        mp.undo()


def test_argus_resubmit_continues_a_canceled_task_with_its_spec_verbatim_and_new_options(world: World):
    user = world.new_user("rf")
    old = world.submit(user, world.spec("ppo", env_vars={"VERL_SIM_STEP_SECONDS": "0.2", "MY_TOKEN": "s3cr3t"}))
    first = _attempt(world, user, old, 1)
    saved = _save(first["job_root"], 2)
    world.jobs.run(f"{old}--a01")
    assert world.post(user, f"/api/v2/tasks/{old}:cancel").status_code == 200

    shown = _cli(world, user, "resubmit", old, "--time-limit", "12h", "--priority", "100", "--json")
    assert shown.exit_code == 0, shown.output
    new = yaml.safe_load(shown.out_text)["task_id"]
    assert new != old
    [row] = world.backend.rows("SELECT jobspec_yaml, priority, time_limit_s FROM tasks WHERE task_id = :t", t=new)
    spec = yaml.safe_load(row["jobspec_yaml"])
    assert (spec["resume_from"], spec["time_limit"], spec["priority"]) == (old, "12h", 100)
    assert spec["env_vars"]["MY_TOKEN"] == "s3cr3t"  # the stored text, not the API's redacted copy
    assert (row["priority"], row["time_limit_s"]) == (100, 12 * 3600)
    assert _attempt(world, user, new, 1)["resumed_from"] == str(saved)

    plain = _cli(world, user, "resubmit", old)
    assert plain.exit_code == 0, plain.output
    assert f"resuming from {old}" in plain.out_text


def test_argus_resubmit_refuses_an_unknown_or_running_task_with_exit_2(world: World):
    alice, bob = world.new_user("rf"), world.new_user("rf")
    running = world.submit(alice, world.spec("ppo"))
    _attempt(world, alice, running, 1)
    before = world.backend.count("tasks")
    unknown = _cli(world, bob, "resubmit", running)  # alice's task, asked by bob
    assert unknown.exit_code == 2, unknown.output
    assert f"no such task of yours: {running}" in unknown.output
    busy = _cli(world, alice, "resubmit", running)
    assert busy.exit_code == 2, busy.output
    assert "resume_from" in busy.output and "is still SUBMITTED: cancel it first or wait" in busy.output
    bad = world.post(alice, f"/api/v2/tasks/{running}:resubmit", json={"time_limit": "12h", "gpus": 8})
    assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "gpus", bad.text
    assert world.backend.count("tasks") == before
