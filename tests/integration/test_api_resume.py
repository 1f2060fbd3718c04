"""A retried attempt resumes from the checkpoints of the attempts before it, over a real database
(SQLite, and PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set), through the app with the real
scheduler driving faked Ray jobs on a fake clock.

The checkpoints are real directories in the attempts' job roots, laid out as verl 0.9.1 leaves
them (here written by the test in place of the faked job; tests/ray/test_resume_on_ray.py has
the stand-in write them on the real cluster). Checked: the attempt row's new columns (written
with the row, read back, migrated onto old rows), the overrides the retry is submitted with (also
when its submission is retried after Ray was away), the API's attempts and `argus status`, the
user's own `trainer.resume_mode` winning, and nothing added when no earlier attempt saved.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import Backend, User, World, backend, fake_ray_world, migrate_to, open_backend, sandbox

from argus.client import service_cli
from argus.client.cli import app as cli_app
from argus.client.sdk import ArgusClient
from argus.cluster.errors import ClusterUnavailable
from argus.domain.resume import ResumePoint
from argus.service.api_models import AttemptList, TaskDetail
from argus.store.db import MIGRATIONS, connect
from argus.store.schema import attempts, tasks
from argus.store.tasks import TaskStore
from argus.testing.cli import invoke
from argus.testing.sandbox import Sandbox

__all__ = ["backend", "sandbox"]  # fixtures, found by name
NCCL_LOG = "Traceback (most recent call last):\nRuntimeError: NCCL error: injected communicator failure after step 2\n"


@pytest.fixture
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    yield from fake_ray_world(sandbox, backend)


def _save(job_root: str, *steps: int, complete: bool = True) -> Path:
    """verl's saves in an attempt's `checkpoints/`: `global_step_N/actor/` and `data.pt`, then
    (when `complete`) the tracker naming the last step."""
    ckpt = Path(job_root) / "checkpoints"
    for step in steps:
        (ckpt / f"global_step_{step}" / "actor").mkdir(parents=True)
        (ckpt / f"global_step_{step}" / "data.pt").write_text("dataloader state")
    if complete:
        (ckpt / "latest_checkpointed_iteration.txt").write_text(str(steps[-1]))
    return ckpt / f"global_step_{steps[-1]}"


def _attempts(w: World, user: User, tid: str) -> list[dict]:
    body = w.get(user, f"/api/v2/tasks/{tid}/attempts").json()
    assert AttemptList.model_validate(body).model_dump(mode="json") == body, body
    return body["attempts"]


def _until_attempt(w: World, user: User, tid: str, n: int) -> dict:
    for _ in range(4):
        w.tick()
        found = _attempts(w, user, tid)
        if len(found) >= n:
            return found[n - 1]
    raise AssertionError(f"{tid} has no attempt {n}: {w.get(user, f'/api/v2/tasks/{tid}').json()}")


def _entry_args(w: World, sid: str) -> list[str]:
    return shlex.split(w.jobs.jobs[sid].request["entrypoint"])


def _status_lines(w: World, user: User, tid: str, command: str = "status") -> list[str]:
    """`argus <command> <tid>` over the real app (the SDK's HTTP forwarded to the TestClient)."""

    def forward(request: httpx.Request) -> httpx.Response:
        r = w.client.request(request.method, request.url.raw_path.decode(), headers=dict(request.headers))
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
        shown = invoke(cli_app, command, tid)
        assert shown.exit_code == 0, shown.output
        return shown.out_text.splitlines()
    finally:
        mp.undo()


def test_a_retry_resumes_from_the_latest_complete_checkpoint_of_the_attempts_before_it(world: World):
    user = world.new_user("res")
    tid = world.submit(user, world.spec("ppo", total_training_steps=6))
    first = _until_attempt(world, user, tid, 1)
    assert (first["resumed_from_step"], first["resumed_from"]) == (None, None)
    assert not any("resume" in a for a in _entry_args(world, f"{tid}--a01"))
    step2 = _save(first["job_root"], 2)
    _save(first["job_root"], 4, complete=False)  # cut short by the failure: no tracker update
    world.jobs.run(f"{tid}--a01")
    world.jobs.fail(f"{tid}--a01", "exit code 1", log=NCCL_LOG)

    second = _until_attempt(world, user, tid, 2)
    assert (second["resumed_from_step"], second["resumed_from"]) == (2, str(step2))
    assert _entry_args(world, f"{tid}--a02")[-2:] == [
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path='{step2}'",
    ]
    assert world.backend.rows(
        "SELECT attempt_no, resumed_from_step, resumed_from FROM attempts WHERE task_id = :t ORDER BY attempt_no", t=tid
    ) == [
        {"attempt_no": 1, "resumed_from_step": None, "resumed_from": None},
        {"attempt_no": 2, "resumed_from_step": 2, "resumed_from": str(step2)},
    ]
    detail = world.get(user, f"/api/v2/tasks/{tid}").json()
    assert TaskDetail.model_validate(detail).model_dump(mode="json") == detail
    assert detail["latest_attempt"]["resumed_from_step"] == 2
    assert f"resumed from    step 2 ({step2})" in _status_lines(world, user, tid)
    table = _status_lines(world, user, tid, "attempts")
    assert any("--a02" in line and "step 2" in line for line in table), table
    assert not any("--a01" in line and "step 2" in line for line in table), table

    # Attempt 2 fails while saving its first checkpoint: attempt 3 goes back to attempt 1's.
    _save(second["job_root"], 4, complete=False)
    world.jobs.run(f"{tid}--a02")
    world.jobs.fail(f"{tid}--a02", "exit code 1", log=NCCL_LOG)
    third = _until_attempt(world, user, tid, 3)
    assert (third["resumed_from_step"], third["resumed_from"]) == (2, str(step2))


def test_the_newest_attempts_checkpoint_wins_and_a_resubmission_keeps_the_recorded_point(world: World):
    user = world.new_user("res")
    tid = world.submit(user, world.spec("sft"))
    first = _until_attempt(world, user, tid, 1)
    _save(first["job_root"], 2)
    world.jobs.fail(f"{tid}--a01", "exit code 1", log=NCCL_LOG)
    second = _until_attempt(world, user, tid, 2)
    newer = _save(second["job_root"], 3)
    world.jobs.fail(f"{tid}--a02", "exit code 1", log=NCCL_LOG)
    world.jobs.fail_next_submit = ClusterUnavailable("Ray is away (fake)")  # the row is written, not submitted
    third = _until_attempt(world, user, tid, 3)
    assert third["submitted_at"] is None and (third["resumed_from_step"], third["resumed_from"]) == (3, str(newer))
    _save(third["job_root"], 4)  # never read: the point was recorded with the row
    world.tick()  # the attempt is submitted now, from its row
    assert world.jobs.submits.count(f"{tid}--a03") == 2
    assert _entry_args(world, f"{tid}--a03")[-1] == f"trainer.resume_from_path='{newer}'"


def test_the_users_own_resume_mode_wins_and_no_checkpoint_means_a_fresh_start(world: World):
    user = world.new_user("res")
    own = world.submit(user, world.spec("grpo", overrides=["data.train_batch_size=8", "trainer.resume_mode=disable"]))
    bare = world.submit(user, world.spec("grpo"))
    for tid in (own, bare):
        first = _until_attempt(world, user, tid, 1)
        if tid == own:
            _save(first["job_root"], 2)
        world.jobs.fail(f"{tid}--a01", "exit code 1", log=NCCL_LOG)
    for tid in (own, bare):
        second = _until_attempt(world, user, tid, 2)
        assert (second["resumed_from_step"], second["resumed_from"]) == (None, None)
        args = _entry_args(world, f"{tid}--a02")
        assert not any(a.startswith("trainer.resume_from_path") for a in args)
    assert _entry_args(world, f"{own}--a02")[-1] == "trainer.resume_mode=disable"
    assert not any("resumed from" in line for line in _status_lines(world, user, own))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migration_0011_adds_the_columns_empty_on_old_attempts(kind, tmp_path):
    with open_backend(kind, tmp_path) as b:
        db = connect(b.url)
        try:
            migrate_to(db, "0010")
            store = TaskStore(db)
            with db.write.begin() as conn:  # as a server before 0011 wrote them (no later columns)
                conn.execute(
                    tasks.insert().values(
                        task_id="t1", user_id="u", workload="ppo", state="QUEUED", jobspec_yaml="x: 1\n", nnodes=1,
                        n_gpus_per_node=1, created_at=10.0, updated_at=10.0,
                    )
                )  # fmt: skip
                conn.execute(
                    attempts.insert().values(
                        task_id="t1", attempt_no=1, ray_submission_id="t1--a01", job_root="/j1", placement="{}",
                        created_at=11.0,
                    )
                )  # fmt: skip
                conn.execute(tasks.update().where(tasks.c.task_id == "t1").values(attempts=1))  # requeued since
            migrate_to(db, "head")
            [old] = store.attempts("t1")
            assert (old.resumed_from_step, old.resumed_from) == (None, None)
            point = ResumePoint(7, "/j1/checkpoints/global_step_7")
            dispatch = store.start_attempt("t1", 1, "/j2", {"w1": 1.0}, 13.0, point)
            assert dispatch is not None
            assert (dispatch.attempt.resumed_from_step, dispatch.attempt.resumed_from) == (7, point.path)
            assert store.attempt("t1", 2) == dispatch.attempt
            assert store.latest_attempts(["t1"])["t1"] == dispatch.attempt
        finally:
            db.dispose()
