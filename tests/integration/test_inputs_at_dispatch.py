"""Inputs are checked again right before submission (issue 10, item 2): a symlink under common/
that was fine at submit and is re-pointed outside before dispatch ends the task FAILED (CONFIG)
without it ever reaching Ray. The real store (SQLite and PostgreSQL), the job server faked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import open_backend

from argus.scheduler.loop import Scheduler
from argus.settings import parse_settings
from argus.spec.entrypoint import driver_gpus
from argus.spec.inputs import input_problems
from argus.spec.loader import load_yaml_mapping
from argus.spec.taskspec import parse_task_spec
from argus.store.db import open_database
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import prepare, task_yaml

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = prepare(tmp_path_factory.mktemp("shared"))
    outside = box.shared_root / "users" / "bob"
    outside.mkdir(parents=True)
    (outside / "secret.parquet").write_bytes(box.rl_train.read_bytes())
    return box


class Dispatch:
    def __init__(self, sandbox, db_url: str):
        self.sandbox = sandbox
        self.settings = parse_settings(
            {
                "ray": {"shared_root": str(sandbox.shared_root)},
                "service": {"db_url": db_url},
                "scheduler": {"retry_interval_s": 30},
            },
            environ={},
        )
        self.db = open_database(self.settings.db_url)
        self.store = TaskStore(self.db)
        self.clock = FakeClock(T0)
        self.jobs = FakeJobs(clock=self.clock)
        self.sched = Scheduler(
            self.settings, self.store, self.jobs, FakeSnapshots({"w1": 4, "w2": 4}), clock=self.clock
        )
        self.n = 0

    @property
    def now(self) -> float:
        return self.clock()

    def add(self, user: str = "alice", **fields) -> str:
        """Store a task the way the API does once its inputs passed the check at submit."""
        text = task_yaml(self.sandbox, "ppo", **fields)
        spec = parse_task_spec(load_yaml_mapping(text, "t"), str(self.sandbox.shared_root))
        assert input_problems(spec, str(self.sandbox.shared_root), user) == []
        self.n += 1
        tid = f"mvp2-{user}-ppo-20270115-080000-{self.n:04x}"
        self.store.create(
            task_id=tid,
            user_id=user,
            workload="ppo",
            jobspec_yaml=text,
            nnodes=spec.nnodes,
            n_gpus_per_node=spec.n_gpus_per_node,
            driver_gpus=driver_gpus(spec),
            now=self.now,
            priority=spec.priority,
            time_limit_s=3600,
            pool=spec.pool,
        )
        return tid

    def tick(self) -> None:
        self.sched.tick(self.clock.advance(1))


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, sandbox, tmp_path):
    with open_backend(request.param, tmp_path) as backend:
        w = Dispatch(sandbox, backend.url)
        yield w
        w.db.dispose()


def _relink(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)  # atomically, as an attacker with write access to the link would


@pytest.mark.parametrize("field", ["train_file", "code_path", "override"])
def test_a_link_re_pointed_outside_after_submit_fails_the_task_before_ray(world, sandbox, tmp_path, field):
    common = sandbox.shared_root / "common"
    good_data, good_code = sandbox.rl_train, sandbox.code["sim-a"]
    name = f"live-{tmp_path.name}"
    if field == "code_path":
        link = common / "code" / name
        link.symlink_to(good_code)
        tid = world.add(code_path=str(link))
        evil = Path("/etc")
    else:
        link = common / "datasets" / f"{name}.parquet"
        link.symlink_to(good_data)
        fields = {"train_file": str(link)} if field == "train_file" else {"overrides": [f"data.val_files={link}"]}
        tid = world.add(**fields)
        evil = sandbox.shared_root / "users" / "bob" / "secret.parquet"
    _relink(link, evil)
    world.tick()
    task = world.store.get(tid)
    assert (task.state, task.failure_cause) == ("FAILED", "CONFIG"), task
    shown = {"train_file": "train_file", "code_path": "code_path", "override": "overrides[0]"}[field]
    assert f"inputs refused at submission: {shown}: " in task.error_summary, task.error_summary
    assert world.jobs.submits == []  # never reached Ray
    [attempt] = world.store.attempts(tid)
    assert attempt.submitted_at is None


def test_an_unchanged_link_inside_common_is_submitted(world, sandbox, tmp_path):
    link = sandbox.shared_root / "common" / "datasets" / f"ok-{tmp_path.name}.parquet"
    link.symlink_to(sandbox.rl_train)
    tid = world.add(train_file=str(link), overrides=[f"data.val_files={link}"])
    world.tick()
    assert world.store.get(tid).state == "SUBMITTED"
    assert world.jobs.submits == [f"{tid}--a01"]
