"""The scheduler's decisions over a real SQLite store, with the job server and the cluster faked.

The same behaviours run against the real local Ray cluster in tests/ray/test_service_on_ray.py;
here each rule is checked fast and precisely, with the clock passed in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import open_backend

from argus.cluster.errors import ClusterUnavailable
from argus.domain.nodes import NODE_LABEL
from argus.scheduler.loop import Scheduler
from argus.service.auth import Identity
from argus.service.task_service import TaskService
from argus.settings import parse_settings
from argus.spec.entrypoint import driver_gpus
from argus.spec.loader import load_yaml_mapping
from argus.spec.taskspec import parse_task_spec
from argus.store.db import open_database
from argus.store.schema import attempts
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import prepare, task_yaml

T0 = 1_800_000_000.0
GPU_MSG = "Total available GPUs 2 is less than total desired GPUs 4"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("shared"))


class World:
    def __init__(self, sandbox, tmp_path: Path, gpus=None, db_url: str | None = None, **sched):
        self.sandbox = sandbox
        self.settings = parse_settings(
            {
                "ray": {"shared_root": str(sandbox.shared_root)},
                "service": {"db_url": db_url or f"sqlite:///{tmp_path}/argus.sqlite3"},
                "scheduler": {"retry_interval_s": 30, **sched},
            },
            environ={},
        )
        self.db = open_database(self.settings.db_url)
        self.store = TaskStore(self.db)
        self.clock = FakeClock(T0)
        self.jobs = FakeJobs(clock=self.clock)
        self.snaps = FakeSnapshots(gpus if gpus is not None else {"w1": 4, "w2": 4})
        self.n = 0
        self.sched = self.new_scheduler()

    @property
    def now(self) -> float:
        return self.clock()

    def new_scheduler(self) -> Scheduler:
        return Scheduler(self.settings, self.store, self.jobs, self.snaps, clock=self.clock)

    def add(self, workload="ppo", user="alice", **fields) -> str:
        text = task_yaml(self.sandbox, workload, **fields)
        spec = parse_task_spec(load_yaml_mapping(text, "t"), str(self.sandbox.shared_root))
        self.n += 1
        tid = f"mvp2-{user}-{workload}-20270115-080000-{self.n:04x}"
        self.store.create(
            task_id=tid,
            user_id=user,
            workload=workload,
            jobspec_yaml=text,
            nnodes=spec.nnodes,
            n_gpus_per_node=spec.n_gpus_per_node,
            driver_gpus=driver_gpus(spec),
            now=self.now,
            priority=spec.priority,
            time_limit_s=spec.time_limit_s or self.settings.scheduler.default_time_limit_s,
            pool=spec.pool,
        )
        return tid

    def tick(self, dt: float = 1.0) -> None:
        self.sched.tick(self.clock.advance(dt))

    def state(self, tid: str) -> str:
        return self.store.get(tid).state


def forget_submission(world: World, sid: str) -> None:
    """The attempt as a crash between Ray's acceptance and its record leaves it: not marked
    submitted (no store method undoes `mark_submitted`, so the row is written directly)."""
    with world.db.write.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.ray_submission_id == sid).values(submitted_at=None))


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, sandbox, tmp_path):
    """The same rules over a SQLite file and over PostgreSQL (when ARGUS_TEST_DATABASE_URL is set),
    whose compare-and-set transitions lock rows instead of the whole database."""
    with open_backend(request.param, tmp_path) as backend:
        w = World(sandbox, tmp_path, db_url=backend.url)
        yield w
        w.db.dispose()


def test_admitted_task_is_submitted_once_with_its_attempt_written_first(world):
    tid = world.add()
    world.tick()
    assert world.state(tid) == "SUBMITTED"
    [attempt] = world.store.attempts(tid)
    assert attempt.ray_submission_id == f"{tid}--a01"
    assert attempt.submitted_at is not None and attempt.created_at <= attempt.submitted_at
    assert attempt.job_root == f"{world.sandbox.shared_root}/users/alice/jobs/{tid}--a01"
    assert world.jobs.submits == [f"{tid}--a01"]
    req = world.jobs.jobs[f"{tid}--a01"].request
    assert req["entrypoint_resources"] == {"worker_node": 1.0}
    assert f"trainer.default_local_dir='{attempt.job_root}/checkpoints'" in req["entrypoint"]
    world.tick()
    assert world.jobs.submits == [f"{tid}--a01"]  # never twice


def test_states_follow_ray_and_the_log_is_archived_at_the_end(world):
    tid = world.add()
    world.tick()
    sid = f"{tid}--a01"
    world.jobs.run(sid, "step 1\n")
    world.tick()
    assert world.state(tid) == "RUNNING"
    world.jobs.finish(sid, "step 2\nMARKER=sim-a\n")
    world.tick()
    assert world.state(tid) == "SUCCEEDED"
    archive = Path(world.store.attempts(tid)[0].job_root) / "logs" / "driver.log"
    assert archive.read_text() == "step 1\nstep 2\nMARKER=sim-a\n"
    assert world.store.attempts(tid)[0].log_archived
    events = [(e.from_state, e.to_state) for e in world.store.events(tid)]
    assert events == [
        (None, "QUEUED"),
        ("QUEUED", "SUBMITTED"),
        ("SUBMITTED", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
    ]


def test_a_gang_needs_whole_bundles_per_node_not_aggregate_gpus(world):
    big = world.add(nnodes=1, n_gpus_per_node=8)  # 8 free GPUs, but 4 per node
    two = world.add(nnodes=2, n_gpus_per_node=4)
    world.tick()
    assert world.state(big) == "PENDING_RESOURCES"
    task = world.store.get(big)
    assert "needs 1 node(s) x 8 GPU(s)" in task.pending_reason
    assert "cannot fit on the current nodes" in task.pending_reason
    assert (task.pending_code, task.estimated_start, task.next_run_at) == ("Resources", None, None)
    assert world.state(two) == "SUBMITTED"
    assert sorted(eval_placement(world, two)) == ["w1", "w2"]


def eval_placement(world, tid):
    return dict(world.store.attempts(tid)[-1].placement)


def test_pending_task_runs_as_soon_as_another_ends(world):
    first = world.add(n_gpus_per_node=4)
    second = world.add(n_gpus_per_node=4)
    third = world.add(n_gpus_per_node=4)
    world.tick()
    assert [world.state(t) for t in (first, second, third)] == ["SUBMITTED", "SUBMITTED", "PENDING_RESOURCES"]
    world.jobs.finish(f"{first}--a01")
    world.tick()  # well before next_run_at: the end of a task makes pending ones due
    assert world.state(first) == "SUCCEEDED"
    assert world.state(third) == "SUBMITTED"


def test_held_gpus_count_even_before_ray_places_them(world):
    a = world.add(n_gpus_per_node=3)
    world.tick()
    assert world.state(a) == "SUBMITTED"
    b = world.add(n_gpus_per_node=3)
    c = world.add(n_gpus_per_node=3)
    world.tick()  # Ray still says every GPU is free; the book says w? holds 3
    assert [world.state(b), world.state(c)] == ["SUBMITTED", "PENDING_RESOURCES"]


def test_ray_view_counts_gpus_argus_did_not_place(world):
    world.snaps.free = {"w1": 1, "w2": 4}  # someone else holds 3 GPUs on w1
    a = world.add(n_gpus_per_node=2)
    b = world.add(n_gpus_per_node=3)
    world.tick()
    assert eval_placement(world, a) == {"w2": 2}
    assert world.state(b) == "PENDING_RESOURCES"


def test_verl_gpu_message_sends_the_task_back_to_wait_and_it_is_retried(world):
    tid = world.add(n_gpus_per_node=4)
    world.tick()
    world.jobs.fail(f"{tid}--a01", "Job entrypoint command failed with exit code 1", log=f"RuntimeError: {GPU_MSG}\n")
    world.tick()
    task = world.store.get(tid)
    assert task.state == "PENDING_RESOURCES"
    assert GPU_MSG in task.pending_reason
    assert world.store.attempts(tid)[0].failure_kind == "INSUFFICIENT_RESOURCES"
    world.tick(31)
    assert world.state(tid) == "SUBMITTED"
    assert [a.ray_submission_id for a in world.store.attempts(tid)] == [f"{tid}--a01", f"{tid}--a02"]


def test_config_failure_ends_the_task_with_its_cause(world):
    tid = world.add()
    world.tick()
    world.jobs.fail(
        f"{tid}--a01",
        "exit code 1",
        log="omegaconf.errors.ConfigAttributeError: Key 'foo' is not in struct\n",
    )
    world.tick()
    task = world.store.get(tid)
    assert (task.state, task.failure_cause) == ("FAILED", "CONFIG")
    assert "Key 'foo' is not in struct" in task.error_summary


def test_platform_failures_are_retried_up_to_max_attempts(sandbox, tmp_path):
    world = World(sandbox, tmp_path, max_attempts=2)
    tid = world.add()
    world.tick()
    world.jobs.lose_all()  # the head restarted and forgot the job
    world.tick()
    assert world.state(tid) == "SUBMITTED"  # attempt 2 submitted in the same pass
    assert world.store.attempts(tid)[0].ray_status == "LOST"
    world.jobs.lose_all()
    world.tick()
    task = world.store.get(tid)
    assert (task.state, task.failure_cause, task.attempts) == ("FAILED", "PLATFORM", 2)


def test_an_attempt_written_but_never_submitted_is_submitted_once_after_a_crash(world):
    tid = world.add()
    attempt = world.store.start_attempt(tid, 0, "/x/root", {"w1": 2}, world.now)  # crash here
    assert attempt is not None and world.jobs.submits == []
    world.sched = world.new_scheduler()
    world.tick()
    assert world.jobs.submits == [f"{tid}--a01"]
    assert world.store.attempts(tid)[0].submitted_at is not None


def test_a_task_cancelled_while_its_lost_attempt_is_looked_up_is_not_submitted(world):
    tid = world.add()
    world.store.start_attempt(tid, 0, "/x/root", {"w1": 2}, world.now)  # crash before submit_job
    world.sched = world.new_scheduler()
    status = world.jobs.status

    def cancelled_meanwhile(sid, diagnose=True):  # the user cancels while the pass asks Ray
        world.store.cancel(tid, world.now, "cancelled by alice")
        return status(sid, diagnose)

    world.jobs.status = cancelled_meanwhile
    world.tick()
    assert world.jobs.submits == []
    assert world.state(tid) == "CANCELED"


def test_an_attempt_ray_accepted_before_the_crash_is_not_submitted_again(world):
    tid = world.add()
    world.tick()
    forget_submission(world, f"{tid}--a01")  # crash before recording
    world.sched = world.new_scheduler()
    world.tick()
    assert world.jobs.submits == [f"{tid}--a01"]
    assert world.store.attempts(tid)[0].submitted_at is not None


def test_restart_reconciles_with_ray_before_admitting(world):
    a = world.add(n_gpus_per_node=4)
    b = world.add(n_gpus_per_node=4)
    world.tick()
    world.jobs.finish(f"{a}--a01")
    world.jobs.run(f"{b}--a01")
    c = world.add(n_gpus_per_node=4)
    world.sched = world.new_scheduler()  # the server restarted
    world.tick()
    assert [world.state(a), world.state(b), world.state(c)] == ["SUCCEEDED", "RUNNING", "SUBMITTED"]


def test_nothing_is_admitted_while_ray_is_unreachable(world):
    tid = world.add()
    world.jobs.down = world.snaps.down = True
    world.tick()
    assert world.state(tid) == "QUEUED"
    assert "fake: down" in world.sched.last_error
    world.jobs.down = world.snaps.down = False
    world.tick()
    assert world.state(tid) == "SUBMITTED" and world.sched.last_error is None


def test_cancel_during_submission_stops_the_job(world):
    tid = world.add()
    original = world.jobs.submit

    def submit_then_cancel(rendered, text):
        sid = original(rendered, text)
        world.store.cancel(tid, world.now, "cancelled by alice")
        return sid

    world.jobs.submit = submit_then_cancel
    world.tick()
    assert world.state(tid) == "CANCELED"
    assert world.jobs.jobs[f"{tid}--a01"].status == "STOPPED"


def test_a_job_outliving_its_cancelled_task_is_stopped_later(world):
    tid = world.add()
    world.tick()
    world.jobs.run(f"{tid}--a01")
    world.store.cancel(tid, world.now, "cancelled while Ray was away")
    world.tick()
    assert world.jobs.jobs[f"{tid}--a01"].status == "STOPPED"
    world.tick()
    assert world.store.attempts(tid)[0].log_archived


def test_max_running_tasks_caps_admission(sandbox, tmp_path):
    world = World(sandbox, tmp_path, max_running_tasks=1)
    a, b = world.add(), world.add()
    world.tick()
    assert world.state(a) == "SUBMITTED"
    task = world.store.get(b)
    assert task.state == "PENDING_RESOURCES" and "max_running_tasks (1)" in task.pending_reason


def test_sft_driver_gpu_is_counted(sandbox, tmp_path):
    world = World(sandbox, tmp_path, gpus={"w1": 2})
    tid = world.add("sft", n_gpus_per_node=2)  # 2 for the trainer + 1 for the driver
    world.tick()
    assert "+ 1 for the driver" in world.store.get(tid).pending_reason


def test_draining_nodes_take_no_new_work(world):
    world.snaps.draining = {"w1", "w2"}
    tid = world.add()
    world.tick()
    assert world.store.get(tid).pending_reason.startswith("no schedulable worker node is alive")


def test_submission_failure_other_than_ray_unavailable_fails_the_task(world):
    tid = world.add()
    world.jobs.fail_next_submit = OSError("read-only file system")
    world.tick()
    task = world.store.get(tid)
    assert (task.state, task.failure_cause) == ("FAILED", "PLATFORM")
    world.jobs.fail_next_submit = ClusterUnavailable("gone")
    other = world.add()
    world.tick()
    assert world.state(other) == "SUBMITTED"  # written; submitted once Ray answers
    assert world.store.attempts(other)[0].submitted_at is None
    world.tick()
    assert world.store.attempts(other)[0].submitted_at is not None


def test_a_nudged_pass_admits_without_reading_every_job_back(world):
    first = world.add()
    world.tick()  # full: reconciles, admits
    calls = world.jobs.status_calls
    world.jobs.finish(f"{first}--a01")
    second = world.add()
    world.clock.advance(0.1)
    world.sched.tick(world.now, full=False)
    assert world.state(second) == "SUBMITTED"
    assert world.jobs.status_calls == calls  # nothing was read back from Ray
    assert world.state(first) == "SUBMITTED"  # not yet seen as ended
    world.tick()
    assert world.state(first) == "SUCCEEDED"


def test_the_first_pass_after_a_start_is_always_full(world):
    tid = world.add()
    world.tick()
    world.jobs.finish(f"{tid}--a01")
    world.sched = world.new_scheduler()
    world.sched.tick(world.now + 1, full=False)
    assert world.state(tid) == "SUCCEEDED"


def test_a_task_is_stopped_at_its_time_limit_and_its_gpus_are_free_again(world):
    tid = world.add(n_gpus_per_node=4, time_limit="30s")
    other = world.add(n_gpus_per_node=4)
    world.tick()
    world.jobs.run(f"{tid}--a01")
    world.tick()
    assert world.store.get(tid).time_limit_s == 30
    waiting = world.add(n_gpus_per_node=4)
    world.tick(10)
    assert world.state(waiting) == "PENDING_RESOURCES"
    assert world.state(tid) == "RUNNING"
    world.tick(25)  # 36 s after it started
    task = world.store.get(tid)
    assert (task.state, task.error_summary) == ("TIMEOUT", "stopped at its time limit (30s)")
    assert world.jobs.jobs[f"{tid}--a01"].status == "STOPPED"
    assert world.store.events(tid)[-1].reason == "time limit 30s reached"
    assert world.state(waiting) == "SUBMITTED"  # the GPUs it held are free again
    assert world.state(other) == "SUBMITTED"


def test_higher_priority_starts_first_and_the_blocked_head_gets_an_estimated_start(world):
    a = world.add(n_gpus_per_node=4, time_limit="1h")
    b = world.add(n_gpus_per_node=4, time_limit="2h")
    world.tick()
    for t in (a, b):
        world.jobs.run(f"{t}--a01")
    low = world.add(n_gpus_per_node=4)
    high = world.add(n_gpus_per_node=4, priority=900)
    world.tick()
    head = world.store.get(high)
    assert head.pending_code == "Resources"
    assert head.estimated_start == pytest.approx(world.now - 1 + 3600, abs=2)
    assert world.store.get(low).pending_code == "Resources"
    world.jobs.finish(f"{a}--a01")
    world.tick()
    assert (world.state(high), world.state(low)) == ("SUBMITTED", "PENDING_RESOURCES")


def test_a_short_task_backfills_beside_a_blocked_big_one_without_delaying_it(world):
    holder = world.add(n_gpus_per_node=2, time_limit="1h")
    world.tick()
    world.jobs.run(f"{holder}--a01")
    big = world.add(nnodes=2, n_gpus_per_node=4)  # needs both nodes whole: waits for holder
    world.tick()  # big is reserved, and keeps its reservation against the smaller tasks below
    assert world.state(big) == "PENDING_RESOURCES"
    long = world.add(n_gpus_per_node=2, time_limit="3h")  # would delay big
    short = world.add(n_gpus_per_node=2, time_limit="10m")  # ends before big can start
    world.tick()
    assert world.state(big) == "PENDING_RESOURCES"
    assert world.state(short) == "SUBMITTED"
    assert world.store.get(long).pending_code == "Priority"
    assert f"would delay {big}" in world.store.get(long).pending_reason


def test_a_nudged_pass_does_not_jump_a_blocked_head(world):
    holder = world.add(n_gpus_per_node=4, time_limit="1h")  # 4 GPU-hours: before `other` (6)
    other = world.add(n_gpus_per_node=2, time_limit="3h")
    world.tick()
    big = world.add(nnodes=2, n_gpus_per_node=4)
    world.tick()
    assert world.state(big) == "PENDING_RESOURCES"
    late = world.add(n_gpus_per_node=2, time_limit="3h")  # fits now, but would delay big
    world.clock.advance(0.1)
    world.sched.tick(world.now, full=False)
    assert world.state(late) == "QUEUED"
    world.tick()
    assert world.store.get(late).pending_code == "Priority"
    assert {world.state(holder), world.state(other)} == {"SUBMITTED"}


def test_user_gpu_limit_holds_a_users_task_with_quota_user(sandbox, tmp_path):
    world = World(sandbox, tmp_path, user_max_gpus=4)
    a1 = world.add(n_gpus_per_node=4, time_limit="1h")  # the smallest area (4 GPU-hours): first
    a2 = world.add(n_gpus_per_node=2)
    b1 = world.add(n_gpus_per_node=2, user="bob")
    world.tick()
    assert (world.state(a1), world.state(b1)) == ("SUBMITTED", "SUBMITTED")
    task = world.store.get(a2)
    assert task.pending_code == "QuotaUser" and "the limit is 4" in task.pending_reason


def test_an_attempt_whose_log_cannot_be_archived_does_not_stop_admission(world):
    broken = world.add(n_gpus_per_node=4)
    world.tick()
    sid = f"{broken}--a01"
    world.jobs.fail(sid, "exit 1", log="Traceback (most recent call last):\nValueError: boom\n")
    original = world.jobs.logs

    def logs(s, tail=None):
        if s == sid:  # its driver's node died: Ray cannot fetch the log
            raise ClusterUnavailable("get_job_logs failed: 500")
        return original(s, tail)

    world.jobs.logs = logs
    world.tick()
    assert world.state(broken) == "FAILED"
    later = world.add(n_gpus_per_node=4)
    world.tick()
    assert world.state(later) == "SUBMITTED"  # admission went on
    for _ in range(5):
        world.tick()
    attempt = world.store.attempts(broken)[0]
    assert attempt.log_archived
    archive = Path(attempt.job_root) / "logs" / "driver.log"
    assert "could not be archived" in archive.read_text()


def test_a_head_found_by_a_nudged_pass_is_protected_too(world):
    holder = world.add(n_gpus_per_node=2, time_limit="1h")
    world.tick()
    world.jobs.run(f"{holder}--a01")
    world.tick()
    big = world.add(nnodes=2, n_gpus_per_node=4)
    world.clock.advance(0.1)
    world.sched.tick(world.now, full=False)
    assert world.store.get(big).pending_code == "Resources"
    late = world.add(n_gpus_per_node=2, time_limit="3h")
    world.clock.advance(0.1)
    world.sched.tick(world.now, full=False)
    assert world.state(late) == "QUEUED"  # left to the full pass, which keeps big's reservation
    world.tick()
    assert world.store.get(late).pending_code == "Priority"


def test_where_ray_placed_a_running_gang_wins_over_argus_book(world):
    """Argus booked the gang on one node, Ray placed it on the other: the booked node is free
    at once (the probe's "0 free on 2 node(s)" with 4 GPUs idle)."""
    a = world.add(n_gpus_per_node=4)
    world.tick()
    booked = next(iter(eval_placement(world, a)))
    other = "w2" if booked == "w1" else "w1"
    world.jobs.run(f"{a}--a01")
    world.snaps.free = {booked: 4, other: 0}  # Ray placed it on the other node
    world.tick()
    b = world.add(n_gpus_per_node=4)
    world.tick()
    assert world.state(b) == "SUBMITTED"
    assert eval_placement(world, b) == {booked: 4}


def test_a_started_gang_ray_has_not_placed_yet_keeps_its_gpus(world):
    a = world.add(n_gpus_per_node=4)
    world.tick()
    booked = next(iter(eval_placement(world, a)))
    world.jobs.run(f"{a}--a01")  # its driver runs, but has not created its placement group
    world.tick()
    b = world.add(n_gpus_per_node=4)
    c = world.add(n_gpus_per_node=4)
    world.tick()
    assert world.state(b) == "SUBMITTED" and booked not in eval_placement(world, b)
    assert world.state(c) == "PENDING_RESOURCES"  # a's GPUs are not offered twice
    assert "0 free on 2 node(s)" in world.store.get(c).pending_reason
    world.tick(130)  # past the grace Ray's view alone counts (nothing ever took a's GPUs)
    assert world.state(c) == "SUBMITTED"


def test_a_cancelled_task_whose_submission_was_never_confirmed_gets_its_job_stopped(world):
    tid = world.add()
    world.tick()
    sid = f"{tid}--a01"
    forget_submission(world, sid)  # Ray's reply was lost
    world.jobs.run(sid)
    world.store.cancel(tid, world.now, "cancelled while Ray was away")
    world.tick()
    assert world.jobs.jobs[sid].status == "STOPPED"


def test_gpu_shortages_do_not_use_up_the_retries_of_real_failures(sandbox, tmp_path):
    world = World(sandbox, tmp_path, max_attempts=2, retry_interval_s=5)
    tid = world.add(n_gpus_per_node=4)
    for n in (1, 2):
        world.tick(6)
        world.jobs.fail(f"{tid}--a{n:02d}", "exit 1", log=f"RuntimeError: {GPU_MSG}\n")
        world.tick()
        assert world.state(tid) == "PENDING_RESOURCES"
    world.tick(6)
    world.jobs.fail(f"{tid}--a03", "exit 1", log="NCCL error: unhandled system error\n")
    world.tick()
    assert world.state(tid) == "QUEUED" or world.state(tid) == "SUBMITTED"  # retried: 1 of 2 used


def test_a_pool_task_runs_only_in_its_pool_and_its_driver_is_pinned_there(world):
    world.snaps.gpus = {"w1": 4, "w2": 4, "w3": 4}
    world.snaps.labels = {"w1": {"pool": "h20"}, "w2": {"pool": "a100"}, "w3": {}}
    first = world.add(pool="a100", n_gpus_per_node=4, time_limit="10h")  # 40 GPU-hours: first
    second = world.add(pool="a100", n_gpus_per_node=2)  # 2 x 24 h = 48 GPU-hours
    anywhere = world.add(n_gpus_per_node=4)
    world.tick()
    assert world.state(first) == "SUBMITTED"
    [attempt] = world.store.attempts(first)
    assert attempt.placement == {"w2": 4}  # the pool's only node, though w1 and w3 are free
    req = world.jobs.jobs[f"{first}--a01"].request
    assert req["entrypoint_label_selector"] == {"pool": "a100"}
    assert req["entrypoint_resources"] == {"worker_node": 1.0}
    # The pool is full: the second waits, naming its pool, while nodes elsewhere are free.
    task = world.store.get(second)
    assert task.state == "PENDING_RESOURCES" and task.pending_code == "Resources"
    assert task.pending_reason.startswith(
        "in pool a100: needs 1 node(s) x 2 GPU(s); largest free bundle is 0 GPU(s) (0 free on 1 node(s))"
    )
    assert world.state(anywhere) == "SUBMITTED"  # no pool: any node (w1 or w3)
    assert world.jobs.jobs[f"{anywhere}--a01"].request["entrypoint_label_selector"] is None
    # When the pool frees up, the waiting task takes it.
    sid = f"{first}--a01"
    world.jobs.run(sid)
    world.tick()
    world.jobs.finish(sid)
    world.tick()
    world.tick()
    assert world.state(second) == "SUBMITTED"
    assert world.store.attempts(second)[0].placement == {"w2": 2}


def test_a_pool_with_no_alive_node_says_so(world):
    world.snaps.labels = {"w1": {"pool": "h20"}, "w2": {"pool": "h20"}}
    tid = world.add(pool="v100")
    world.tick()
    task = world.store.get(tid)
    assert task.state == "PENDING_RESOURCES"
    assert task.pending_reason.startswith("no schedulable worker node is alive in pool v100")


def test_an_attempt_carries_its_driver_node_named_as_argus_knows_it(world):
    """Ray's driver node id, with that node's IP and `argus.io/node` label from one snapshot
    taken only when the driver node is new; the API shows all three (seed 001 §3.3)."""
    world.snaps.gpus = {"node-1": 4, "w2": 4}  # the fake job server runs every driver on node-1
    world.snaps.labels = {"node-1": {NODE_LABEL: "gpu-a"}, "w2": {NODE_LABEL: "gpu-b"}}
    tid = world.add()
    world.tick()
    sid = f"{tid}--a01"
    taken = []
    snapshot = world.snaps.snapshot
    world.snaps.snapshot = lambda: taken.append(1) or snapshot()
    world.jobs.run(sid)
    world.tick()
    new_driver = len(taken)
    [attempt] = world.store.attempts(tid)
    assert (attempt.driver_node_id, attempt.driver_node_ip, attempt.driver_node_name) == (
        "node-1",
        "127.0.1.1",  # the node's address in the snapshot, not the one the job reports
        "gpu-a",
    )
    world.snaps.labels = {"node-1": {NODE_LABEL: "renamed"}}
    taken.clear()
    world.tick()
    assert new_driver == len(taken) + 1  # the sync took one snapshot for the new driver node, then none
    world.jobs.finish(sid)
    world.tick()
    assert world.state(tid) == "SUCCEEDED"
    service = TaskService(
        world.settings, world.store, world.jobs, nudge=lambda **_: None, clock=world.clock, check_pool=object()
    )
    alice = Identity("alice", False)
    shown = service.get(alice, tid)["latest_attempt"]
    assert service.attempts(alice, tid)["attempts"] == [shown]
    assert (shown["driver_node_id"], shown["driver_node_ip"], shown["driver_node_name"]) == (
        "node-1",
        "127.0.1.1",  # the node's address in the snapshot, not the one the job reports
        "gpu-a",
    )


def test_a_driver_node_is_recorded_once_its_name_can_be_read(world):
    world.snaps.gpus = {"node-1": 4}
    world.snaps.labels = {"node-1": {NODE_LABEL: "gpu-a"}}
    tid = world.add()
    world.tick()
    world.jobs.run(f"{tid}--a01")
    snapshot = world.snaps.snapshot

    def gcs_away():
        raise ClusterUnavailable("GCS away")

    world.snaps.snapshot = gcs_away  # the job server answers, the GCS does not
    world.tick()
    [attempt] = world.store.attempts(tid)
    assert attempt.ray_status == "RUNNING" and attempt.driver_node_id is None
    world.snaps.snapshot = snapshot
    world.tick()
    [attempt] = world.store.attempts(tid)
    assert (attempt.driver_node_id, attempt.driver_node_name) == ("node-1", "gpu-a")


def test_a_driver_node_gone_from_the_snapshot_keeps_the_address_ray_reported(world):
    tid = world.add()  # the fake job server runs every driver on node-1 (127.0.0.1), not a node here
    world.tick()
    world.jobs.run(f"{tid}--a01")
    world.tick()
    [attempt] = world.store.attempts(tid)
    assert (attempt.driver_node_id, attempt.driver_node_ip, attempt.driver_node_name) == ("node-1", "127.0.0.1", None)
