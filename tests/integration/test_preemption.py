"""Preemption (issue 16, item 2) over a real database (SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set), through the app with the real scheduler driving faked Ray jobs
on a fake clock (tests/ray/test_preemption_on_ray.py runs it on the real local cluster).

Checked: a preemptible low-priority task holding the GPUs is stopped for a higher-priority one
(its attempt ended PREEMPTED, events on both, the stop sent to Ray), the high one starts in a
later pass once Ray shows the GPUs free, and the low one then gets attempt 2 resuming from its
checkpoint and succeeds although `max_attempts` is 1; nothing is preempted with the setting off
(the default); while a victim's GPUs are being freed no second task is stopped; a victim's event
names the head only to its own user; a task preempted lately is passed over (min_run).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import ADMIN_TOKEN, MAX_BODY_BYTES, Backend, User, World, migrate_to, open_backend, sandbox
from fastapi.testclient import TestClient

from argus.cluster.reward_check import LocalRewardChecker
from argus.service.api_models import TaskDetail
from argus.service.app import create_app
from argus.settings import parse_settings
from argus.store.db import MIGRATIONS, connect
from argus.store.schema import attempts, tasks
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import Sandbox

__all__ = ["sandbox"]  # a fixture, found by name
T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Iterator[Backend]:
    """A fresh database per test: a test's tasks never meet another's."""
    with open_backend(request.param, tmp_path) as db:
        yield db


@contextmanager
def preemption_world(sandbox: Sandbox, backend: Backend, gpus: dict[str, float], **sched) -> Iterator[World]:
    """An app over `backend` whose scheduler (ticked by the test) has the settings `sched`."""
    settings = parse_settings(
        {
            "ray": {"shared_root": str(sandbox.shared_root)},
            "service": {"db_url": backend.url, "max_body_bytes": MAX_BODY_BYTES},
            "scheduler": {"enabled": False, **sched},
        },
        "preemption test config",
        environ={},
    )
    clock = FakeClock(T0)
    jobs, snaps = FakeJobs(clock=clock), FakeSnapshots(dict(gpus))
    app = create_app(
        settings,
        jobs=jobs,
        snapshots=snaps,
        clock=clock,
        run_scheduler=False,
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
        rewards=LocalRewardChecker(str(sandbox.shared_root)),
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            w = World(client, sandbox, backend)
            w.jobs, w.clock = jobs, clock
            w.snaps = snaps  # type: ignore[attr-defined]
            yield w
    finally:
        app.state.db.dispose()


def _save(w: World, job_root: str, step: int) -> Path:
    """A complete verl save of `step` in the attempt's `checkpoints/` (the tracker last), made
    now by the test's clock (the tracker's mtime is when the save completed)."""
    ckpt = Path(job_root) / "checkpoints"
    (ckpt / f"global_step_{step}" / "actor").mkdir(parents=True)
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    tracker.write_text(str(step))
    os.utime(tracker, (w.clock(), w.clock()))
    return ckpt / f"global_step_{step}"


def _detail(w: World, who: User, tid: str) -> dict:
    body = w.get(who, f"/api/v2/tasks/{tid}").json()
    assert TaskDetail.model_validate(body).model_dump(mode="json") == body, body
    return body


def _attempts(w: World, who: User, tid: str) -> list[dict]:
    return w.get(who, f"/api/v2/tasks/{tid}/attempts").json()["attempts"]


def _events(w: World, tid: str) -> list[dict]:
    return w.backend.rows(
        "SELECT from_state, to_state, attempt_no, reason FROM task_events WHERE task_id = :t ORDER BY id", t=tid
    )


def _state(w: World, who: User, tid: str) -> str:
    return _detail(w, who, tid)["state"]


def _ray_free(w: World, **free: float) -> None:
    """What Ray shows available per node (None: every GPU)."""
    w.snaps.free = {**w.snaps.gpus, **free} if free else None  # type: ignore[attr-defined]


def _run(w: World, sid: str, **free: float) -> None:
    """Ray starts `sid`'s driver; its GPUs show taken."""
    w.jobs.run(sid)
    _ray_free(w, **free)


def _running_low(w: World, user: User) -> str:
    """`user`'s preemptible priority-100 task holding all 4 GPUs of w1, RUNNING."""
    low = w.submit(user, w.spec("ppo", n_gpus_per_node=4, priority=100, preemptible=True))
    w.tick()
    _run(w, f"{low}--a01", w1=0)
    w.tick()
    return low


def test_a_low_priority_task_is_preempted_then_resumes_and_succeeds(sandbox, backend):
    with preemption_world(sandbox, backend, {"w1": 4}, preemption="priority", max_attempts=1) as w:
        bob = w.new_user("bob")
        low = _running_low(w, bob)
        assert _state(w, bob, low) == "RUNNING"
        step2 = _save(w, _attempts(w, bob, low)[0]["job_root"], 2)
        w.clock.advance(300)

        high_spec = w.spec("ppo", n_gpus_per_node=4, priority=900)
        refused = w.post_yaml(bob, high_spec)
        assert refused.status_code == 400 and "priority" in refused.text  # above 500: the admin's
        high = w.submit(w.admin, high_spec)
        w.tick()  # the head cannot fit: bob's task is preempted; the head does not start yet

        detail = _detail(w, bob, low)
        assert (detail["state"], detail["failure_cause"], detail["preemptible"]) == ("QUEUED", "PREEMPTED", True)
        [first] = _attempts(w, bob, low)
        assert (first["failure_kind"], first["ray_status"]) == ("PREEMPTED", "STOPPED")
        assert first["end_time"] is not None
        assert w.jobs.stops == [f"{low}--a01"] and w.jobs.jobs[f"{low}--a01"].status == "STOPPED"
        reason = "preempted by a higher-priority task (priority 900)"  # the admin's task: not named
        assert _events(w, low)[-1]["reason"].startswith(f"PREEMPTED: {reason}; requeued (")
        assert _events(w, low)[-1]["from_state"] == "RUNNING" and _events(w, low)[-1]["attempt_no"] == 1
        assert high not in str(_detail(w, bob, low))
        assert _events(w, high)[-1]["reason"] == "preempting 1 task(s) to make room"
        assert _state(w, w.admin, high) == "PENDING_RESOURCES" and _attempts(w, w.admin, high) == []
        assert _detail(w, w.admin, high)["preemptible"] is False

        w.tick()  # Ray still shows the GPUs taken: nothing more happens; the stopped job is archived
        assert (_state(w, bob, low), _state(w, w.admin, high)) == ("PENDING_RESOURCES", "PENDING_RESOURCES")
        assert w.jobs.stops == [f"{low}--a01"]
        [first] = _attempts(w, bob, low)
        assert (first["failure_kind"], first["ray_status"]) == ("PREEMPTED", "STOPPED")

        _ray_free(w)  # Ray let go of them
        w.tick()
        assert _state(w, w.admin, high) == "SUBMITTED"
        assert _state(w, bob, low) == "PENDING_RESOURCES"
        _run(w, f"{high}--a01", w1=0)
        w.tick()
        w.jobs.finish(f"{high}--a01")
        _ray_free(w)
        w.tick()
        assert _state(w, w.admin, high) == "SUCCEEDED"

        w.tick()
        second = _attempts(w, bob, low)[1]
        assert (second["attempt_no"], second["resumed_from_step"], second["resumed_from"]) == (2, 2, str(step2))
        entry = shlex.split(w.jobs.jobs[f"{low}--a02"].request["entrypoint"])
        assert entry[-2:] == ["trainer.resume_mode=resume_path", f"trainer.resume_from_path='{step2}'"]
        _run(w, f"{low}--a02", w1=0)
        w.tick()
        w.jobs.finish(f"{low}--a02")
        w.tick()
        detail = _detail(w, bob, low)
        assert (detail["state"], detail["attempts"], detail["failure_cause"]) == ("SUCCEEDED", 2, None)
        states = [(e["from_state"], e["to_state"]) for e in _events(w, low)]
        assert ("RUNNING", "QUEUED") in states and states[-1] == ("RUNNING", "SUCCEEDED")


def test_nothing_is_preempted_with_preemption_off_the_default(sandbox, backend):
    with preemption_world(sandbox, backend, {"w1": 4}) as w:
        assert w.client.app.state.settings.scheduler.preemption == "off"
        bob = w.new_user("bob")
        low = _running_low(w, bob)
        high = w.submit(w.admin, w.spec("ppo", n_gpus_per_node=4, priority=900))
        for _ in range(3):
            w.tick()
        assert (_state(w, bob, low), _state(w, w.admin, high)) == ("RUNNING", "PENDING_RESOURCES")
        assert w.jobs.stops == []
        assert not any("preempt" in (e["reason"] or "") for e in _events(w, low) + _events(w, high))


def test_one_victim_at_a_time_named_to_its_own_user_and_min_run_protects_a_resumed_one(sandbox, backend):
    with preemption_world(sandbox, backend, {"w1": 4, "w2": 4}, preemption="priority") as w:
        carol = w.new_user("carol")
        spec = w.spec("ppo", n_gpus_per_node=4, priority=100, preemptible=True)
        a, b = w.submit(carol, spec), w.submit(carol, spec)
        w.tick()
        _run(w, f"{a}--a01", w1=0)
        _run(w, f"{b}--a01", w1=0, w2=0)
        w.tick()
        node_of = {t: next(iter(_placement(w, t))) for t in (a, b)}
        w.clock.advance(600)
        _save(w, _attempts(w, carol, b)[0]["job_root"], 2)  # b saved just now: it loses least
        head = w.submit(carol, w.spec("ppo", n_gpus_per_node=4))  # priority 500
        w.tick()
        assert (_state(w, carol, a), _state(w, carol, b)) == ("RUNNING", "QUEUED")
        assert _events(w, b)[-1]["reason"].startswith(f"PREEMPTED: preempted by {head}; requeued (")

        for _ in range(3):  # Ray is slow to free b's GPUs: a is not stopped as well
            w.tick()
        assert _state(w, carol, a) == "RUNNING" and w.jobs.stops == [f"{b}--a01"]

        _ray_free(w, **{node_of[a]: 0})
        w.tick()
        assert _state(w, carol, head) == "SUBMITTED"
        _run(w, f"{head}--a01", w1=0, w2=0)
        w.tick()
        w.jobs.finish(f"{head}--a01")
        _ray_free(w, **{node_of[a]: 0})
        w.tick()
        w.tick()
        assert _state(w, carol, b) == "SUBMITTED" and _attempts(w, carol, b)[1]["resumed_from_step"] == 2
        _run(w, f"{b}--a02", w1=0, w2=0)
        w.tick()

        # b has just resumed (it would lose least) but was preempted before: a goes instead.
        head2 = w.submit(carol, w.spec("ppo", n_gpus_per_node=4))
        w.tick()
        assert (_state(w, carol, a), _state(w, carol, b)) == ("QUEUED", "RUNNING")
        assert _events(w, a)[-1]["reason"].startswith(f"PREEMPTED: preempted by {head2}; ")
        assert _events(w, head2)[-1]["reason"] == "preempting 1 task(s) to make room"


def test_a_victim_whose_ray_job_ended_meanwhile_calls_the_preemption_off(sandbox, backend, monkeypatch):
    with preemption_world(sandbox, backend, {"w1": 4}, preemption="priority") as w:
        bob = w.new_user("bob")
        low = _running_low(w, bob)
        high = w.submit(w.admin, w.spec("ppo", n_gpus_per_node=4, priority=900))
        sched = w.client.app.state.scheduler
        synced = sched.sync

        def sync_then_the_job_ends(now: float) -> bool:
            ended = synced(now)
            w.jobs.finish(f"{low}--a01")  # after this pass read it RUNNING
            return ended

        monkeypatch.setattr(sched, "sync", sync_then_the_job_ends)
        w.tick()
        monkeypatch.setattr(sched, "sync", synced)
        assert w.jobs.stops == [] and _state(w, bob, low) == "RUNNING"
        assert not any("preempt" in (e["reason"] or "") for e in _events(w, low) + _events(w, high))
        _ray_free(w)
        w.tick()
        assert (_state(w, bob, low), _state(w, w.admin, high)) == ("SUCCEEDED", "SUBMITTED")


def _placement(w: World, tid: str) -> dict[str, float]:
    [row] = w.backend.rows("SELECT placement FROM attempts WHERE task_id = :t ORDER BY attempt_no DESC LIMIT 1", t=tid)
    return json.loads(row["placement"])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migration_0012_adds_preemptible_false_on_old_tasks(kind, tmp_path):
    with open_backend(kind, tmp_path) as b:
        db = connect(b.url)
        try:
            migrate_to(db, "0011")
            with db.write.begin() as conn:  # a task and its attempt as a server before 0012 wrote them
                conn.execute(
                    tasks.insert().values(
                        task_id="old", user_id="u", workload="ppo", state="RUNNING", jobspec_yaml="x: 1\n",
                        nnodes=1, n_gpus_per_node=1, created_at=10.0, updated_at=10.0, attempts=1,
                    )
                )  # fmt: skip
                conn.execute(
                    attempts.insert().values(
                        task_id="old", attempt_no=1, ray_submission_id="old--a01", job_root="/j", created_at=11.0
                    )
                )
            migrate_to(db, "head")
            store = TaskStore(db)
            assert store.get("old").preemptible is False
            store.create(
                task_id="new", user_id="u", workload="ppo", jobspec_yaml="x: 1\n", nnodes=1, n_gpus_per_node=1,
                driver_gpus=0, now=12.0, preemptible=True,
            )  # fmt: skip
            assert [t.preemptible for t in store.in_states(["QUEUED", "RUNNING"])] == [False, True]
            migrate_to(db, "0011", down=True)  # and back, with the attempt row still there
            with db.read.connect() as conn:
                cols = {c["name"] for c in sa.inspect(conn).get_columns("tasks")}
                left = conn.execute(sa.text("SELECT task_id FROM tasks ORDER BY task_id")).scalars().all()
            assert "preemptible" not in cols and left == ["new", "old"]
        finally:
            db.dispose()
