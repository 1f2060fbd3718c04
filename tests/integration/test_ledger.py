"""The GPU-hour ledger over a real database (SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set), written by the real scheduler driving faked Ray jobs on a fake
clock.

The invariant: over any window, the sum of the per-user GPU-seconds of `report(by="user")` is the
integral over the window of the GPUs allocated (the total GPUs of the tasks in SUBMITTED or
RUNNING), recorded independently at every step of a long random run of admissions, runs, ends,
retries, cancels and time-outs of several users. The ledger's rows cannot be changed or deleted.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import migrate_to, open_backend

from argus.domain.task import ACTIVE_STATES
from argus.domain.usage import GROUPS, NO_POOL, Allocation, gpu_seconds, gpu_seconds_by_user_day, report, total
from argus.scheduler.loop import Scheduler
from argus.settings import parse_settings
from argus.spec.entrypoint import driver_gpus
from argus.spec.loader import load_yaml_mapping
from argus.spec.taskspec import parse_task_spec
from argus.store.db import open_database
from argus.store.ledger import SETTLE_S, STEP_S, LedgerStore
from argus.store.schema import gpu_ledger
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import prepare, task_yaml

MIDNIGHT = 1_800_057_600.0  # a UTC midnight (2027-01-16 00:00)
T0 = MIDNIGHT - 3 * 3600.0  # the runs cross it
GPU_MSG = "Total available GPUs 2 is less than total desired GPUs 4"
USERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("shared"))


class Ledgered:
    """The real scheduler over a real store, faked Ray jobs and a fake clock; every change of
    the allocated GPUs is recorded as (time, GPUs per (user, pool))."""

    def __init__(self, sandbox, url: str, **sched):
        self.sandbox = sandbox
        self.settings = parse_settings(
            {
                "ray": {"shared_root": str(sandbox.shared_root)},
                "service": {"db_url": url},
                "scheduler": {"retry_interval_s": 30, **sched},
            },
            environ={},
        )
        self.db = open_database(self.settings.db_url)
        self.store = TaskStore(self.db)
        self.ledger = LedgerStore(self.db)
        self.clock = FakeClock(T0)
        self.jobs = FakeJobs(clock=self.clock)
        self.snaps = FakeSnapshots(
            {"w1": 4, "w2": 4, "w3": 8}, labels={"w1": {"pool": "h20"}, "w2": {"pool": "h20"}, "w3": {"pool": "a100"}}
        )
        self.sched = Scheduler(self.settings, self.store, self.jobs, self.snaps, clock=self.clock)
        self.steps: list[tuple[float, dict[tuple[str, str], float]]] = []
        self.n = 0

    @property
    def now(self) -> float:
        return self.clock()

    def add(self, user: str = "alice", workload: str = "ppo", **fields) -> str:
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

    def record(self) -> None:
        """The GPUs allocated now, per (user, pool), read from the tasks' states."""
        held: dict[tuple[str, str], float] = defaultdict(float)
        for t in self.store.in_states([s.value for s in ACTIVE_STATES]):
            held[(t.user_id, t.pool or "-")] += t.total_gpus
        if self.steps and self.steps[-1][0] == self.now:
            self.steps.pop()
        self.steps.append((self.now, dict(held)))

    def tick(self, dt: float = 1.0) -> None:
        self.sched.tick(self.clock.advance(dt))
        self.record()

    def cancel(self, tid: str) -> None:
        """As the API does: the task is cancelled, then its Ray job stopped."""
        task = self.store.get(tid)
        sid = f"{tid}--a{task.attempts:02d}"
        if self.store.cancel(tid, self.now, "cancelled by test") and sid in self.jobs.jobs:
            self.jobs.stop(sid)
        self.record()

    def integral(self, lo: float, hi: float, now: float, key=None) -> float:
        """The GPU-seconds allocated in [lo, hi) (up to `now`), from the recorded steps."""
        out = 0.0
        for i, (t, held) in enumerate(self.steps):
            nxt = self.steps[i + 1][0] if i + 1 < len(self.steps) else now
            seg = max(0.0, min(nxt, hi, now) - max(t, lo))
            out += seg * sum(g for k, g in held.items() if key is None or key(k))
        return out


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, sandbox, tmp_path: Path) -> Iterator[Ledgered]:
    with open_backend(request.param, tmp_path) as backend:
        w = Ledgered(sandbox, backend.url, max_attempts=3)
        yield w
        w.db.dispose()


def _drive(w: Ledgered, rng: random.Random, steps: int) -> None:
    """A long random run: users submit, Ray runs, finishes, fails (config, GPUs short, head
    lost), users cancel, tasks run into their time limit; the clock moves by 1 s to 20 min."""
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.3:
            fields = {"nnodes": rng.choice([1, 1, 2]), "n_gpus_per_node": rng.choice([1, 2, 4])}
            if rng.random() < 0.5:
                fields["pool"] = rng.choice(["h20", "a100"])
            if rng.random() < 0.2:
                fields["time_limit"] = f"{rng.choice([60, 300, 900])}s"
            w.add(rng.choice(USERS), rng.choice(["ppo", "grpo", "sft"]), **fields)
            w.record()
        jobs = [j for j in w.jobs.jobs.values() if j.status in ("PENDING", "RUNNING")]
        if jobs and rng.random() < 0.7:
            job = rng.choice(jobs)
            what = rng.random()
            if what < 0.4:
                w.jobs.run(job.submission_id)
            elif what < 0.65:
                w.jobs.finish(job.submission_id)
            elif what < 0.75:
                w.jobs.fail(job.submission_id, "exit code 1", log="omegaconf.errors.ConfigAttributeError: Key 'x'\n")
            elif what < 0.85:
                w.jobs.fail(job.submission_id, "exit code 1", log=f"RuntimeError: {GPU_MSG}\n")
            else:
                tid = job.submission_id.rsplit("--", 1)[0]
                w.cancel(tid)
        if rng.random() < 0.03:
            w.jobs.lose_all()  # the head restarted: platform failures, retried
        if rng.random() < 0.1:
            waiting = w.store.in_states(["QUEUED", "PENDING_RESOURCES"])
            if waiting:
                w.cancel(rng.choice(waiting).task_id)
        w.tick(rng.choice([1, 7, 30, 120, 600, 1200]))


def _windows(rng: random.Random, lo: float, hi: float, n: int) -> list[tuple[float, float]]:
    out = [(lo - 100, hi + 100), (lo, hi), (MIDNIGHT - 1800, MIDNIGHT + 1800), (lo + 5, lo + 5)]
    for _ in range(n):
        a, b = sorted(rng.uniform(lo - 600, hi + 600) for _ in range(2))
        out.append((a, b))
    return out


def test_per_user_gpu_seconds_equal_the_integral_of_allocated_gpus_over_any_window(world):
    rng = random.Random(1307)
    world.record()
    _drive(world, rng, 220)
    now = world.now
    states = {t.state.value for t in world.store.list(None, limit=1000)}
    assert {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"} <= states, states  # every way out was taken
    assert states & {"SUBMITTED", "RUNNING"}  # and some still hold GPUs: counted up to now
    everything = world.ledger.allocations(-1e12, 1e12)
    assert any(a.attempt_no > 1 for a in everything) and any(a.end is None for a in everything)
    assert len({a.user for a in everything}) == len(USERS)
    for lo, hi in _windows(rng, T0, now, 60):
        expected = world.integral(lo, hi, now)
        windowed = world.ledger.allocations(lo, hi)
        for allocs in (everything, windowed):
            per_user = report(allocs, lo, hi, now, "user")
            assert abs(sum(r.gpu_seconds for r in per_user) - expected) <= 1.0, (lo, hi)
            for by in GROUPS:
                rows = report(allocs, lo, hi, now, by)
                assert abs(sum(r.gpu_seconds for r in rows) - expected) <= 1.0, (by, lo, hi)
            assert abs(total(allocs, lo, hi, now).gpu_seconds - expected) <= 1.0
        for row in report(windowed, lo, hi, now, "user"):
            assert abs(row.gpu_seconds - world.integral(lo, hi, now, key=lambda k, u=row.key: k[0] == u)) <= 1.0
        # The console's chart: bare spans per user and day give the report's per-day figures.
        chart = gpu_seconds_by_user_day(world.ledger.spans(lo, hi), lo, hi, now)
        assert abs(sum(chart.values()) - expected) <= 1.0
        for user in USERS:
            mine = [a for a in windowed if a.user == user]
            for r in report(mine, lo, hi, now, "day"):
                assert abs(chart.get((user, r.key), 0.0) - r.gpu_seconds) <= 1e-6, (user, r.key)
        for user in USERS:  # one user's own allocations, read by the store's filter
            mine = report(world.ledger.allocations(lo, hi, user=user), lo, hi, now, "user")
            assert [r.key for r in mine] in ([], [user])
            assert abs(sum(r.gpu_seconds for r in mine) - world.integral(lo, hi, now, lambda k, u=user: k[0] == u)) <= 1
    totals = world.ledger.gpu_seconds_by_user_pool(now)
    for (user, pool), seconds in totals.items():
        assert abs(seconds - world.integral(T0, now, now, key=lambda k, u=user, p=pool: k == (u, p))) <= 1.0
    assert abs(sum(totals.values()) - world.integral(T0, now, now)) <= 1.0
    for tid in {a.task_id for a in everything}:
        figures = world.ledger.task_figures(tid, now)
        mine = [a for a in everything if a.task_id == tid]
        assert abs(figures.gpu_seconds - sum(gpu_seconds(a, -1e12, 1e12, now) for a in mine)) <= 1e-6
        assert figures.wait_s == min(mine, key=lambda a: a.start).start - world.store.get(tid).created_at


def test_a_window_that_cuts_attempts_in_half_reports_half(world):
    a = world.add("alice", n_gpus_per_node=4, pool="h20")  # 4 GPUs
    b = world.add("bob", "sft", n_gpus_per_node=2)  # 2 GPUs and the driver's 1
    world.tick(10)  # both admitted at T0 + 10
    start = world.now
    world.jobs.run(f"{a}--a01")
    world.jobs.run(f"{b}--a01")
    world.tick(90)
    world.jobs.finish(f"{a}--a01")
    world.tick(100)  # a ends at start + 190 (seen by this pass)
    end_a = world.now
    world.clock.advance(210)  # b still runs at start + 400
    now = world.now
    allocs = world.ledger.allocations(start, now)
    assert [(x.task_id, x.gpus, x.start, x.end) for x in allocs] == [(a, 4.0, start, end_a), (b, 3.0, start, None)]
    lo, hi = start + 95, end_a + 200  # half of a's 190 s; b from +95 to +390
    rows = {r.key: r for r in report(allocs, lo, hi, now, "user")}
    assert rows["alice"].gpu_seconds == 4 * 95 and rows["alice"].run_s == 95
    assert rows["bob"].gpu_seconds == 3 * 295 and rows["bob"].run_s == 295
    assert (rows["alice"].tasks, rows["alice"].attempts, rows["alice"].wait_s) == (1, 1, None)  # started before lo
    first_half = {r.key: r for r in report(allocs, start, start + 95, now, "pool")}
    assert first_half["h20"].gpu_seconds == 4 * 95 and first_half["h20"].wait_s == 10
    assert first_half["-"].gpu_seconds == 3 * 95
    # a running attempt counts up to now, never past it
    assert report(allocs, now - 10, now + 1000, now, "task")[0].gpu_seconds == 3 * 10
    figures = world.ledger.task_figures(b, now)
    assert (figures.gpu_seconds, figures.wait_s, figures.run_s) == (3 * 400, 10, 400)
    world.cancel(b)  # cancelling a running task ends its allocation at the cancel time
    assert world.ledger.allocations(start, now + 1)[-1].end == now
    assert world.ledger.task_figures(b, now + 500).gpu_seconds == 3 * 400


def test_intervals_over_midnight_are_split_by_utc_day(world):
    world.clock.set(MIDNIGHT - 600)
    tid = world.add("alice", n_gpus_per_node=2)
    world.tick(0)
    world.clock.set(MIDNIGHT + 300)
    world.cancel(tid)
    allocs = world.ledger.allocations(MIDNIGHT - 3600, MIDNIGHT + 3600)
    rows = report(allocs, MIDNIGHT - 3600, MIDNIGHT + 3600, world.now, "day")
    assert [(r.key, r.gpu_seconds, r.attempts, r.tasks) for r in rows] == [
        ("2027-01-15", 2 * 600, 1, 1),
        ("2027-01-16", 2 * 300, 1, 1),
    ]
    assert rows[0].wait_s == 0 and rows[1].wait_s is None  # it started (and waited) the day before


def test_the_ledger_is_append_only(world):
    tid = world.add("alice")
    world.tick()
    world.cancel(tid)
    with world.db.read.connect() as conn:
        rows = conn.execute(sa.text("SELECT kind, task_id, attempt_no, gpus FROM gpu_ledger ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("start", tid, 1, 2.0), ("end", tid, 1, 2.0)]
    for statement in (
        "UPDATE gpu_ledger SET gpus = 0",
        "UPDATE gpu_ledger SET at = at + 1 WHERE kind = 'end'",
        "DELETE FROM gpu_ledger",
        "DELETE FROM gpu_ledger WHERE kind = 'start'",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="gpu_ledger is append-only"), world.db.write.begin() as conn:
            conn.execute(sa.text(statement))
    if not world.db.is_sqlite:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), world.db.write.begin() as conn:
            conn.execute(sa.text("TRUNCATE gpu_ledger"))
    with world.db.read.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM gpu_ledger")).scalar_one() == 2


def test_attempts_that_hold_gpus_when_the_ledger_is_added_get_their_start_row(sandbox, tmp_path):
    """Migration 0008 on a database with a running, an ended and a waiting task: the running
    one's attempt gets its start row (at the attempt's creation), so its end pairs with it."""
    from argus.store.schema import attempts, tasks

    w = Ledgered(sandbox, f"sqlite:///{tmp_path}/old.sqlite3")

    def migrate(to: str) -> None:
        migrate_to(w.db, to, down=to == "0007")

    held, ended, waiting = (w.add("alice", n_gpus_per_node=n) for n in (2, 4, 1))  # then taken back to 0007
    migrate("0007")
    with w.db.write.begin() as conn:  # as a server before 0008 left them
        for tid, state in ((held, "RUNNING"), (ended, "SUCCEEDED")):
            conn.execute(tasks.update().where(tasks.c.task_id == tid).values(state=state, attempts=1))
            conn.execute(
                attempts.insert().values(
                    task_id=tid,
                    attempt_no=1,
                    ray_submission_id=f"{tid}--a01",
                    job_root="/x",
                    placement='{"w1": 2}',
                    created_at=T0 + 5,
                )
            )
    migrate("head")
    [alloc] = w.ledger.allocations(-1e12, 1e12)
    assert (alloc.task_id, alloc.gpus, alloc.nodes, alloc.start, alloc.end, alloc.accepted_at) == (
        held,
        2.0,
        {"w1": 2},
        T0 + 5,
        None,
        T0,
    )
    w.clock.set(T0 + 100)
    w.cancel(held)
    assert w.ledger.task_figures(held, T0 + 1000).gpu_seconds == 2 * 95
    assert w.ledger.task_figures(waiting, T0 + 1000).wait_s is None
    w.db.dispose()


def test_allocation_is_a_plain_record():
    a = Allocation("u", "t", 1, None, "ppo", 2.0, {"w1": 2.0}, 10.0, None, 5.0)
    assert gpu_seconds(a, 0, 100, 50) == 80 and gpu_seconds(a, 0, 100, 5) == 0


def test_the_migrations_create_exactly_the_tables_of_the_schema(world):
    """schema.py and the migrations are kept in step (gpu_ledger's columns and indexes included)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from argus.store.schema import metadata

    with world.db.read.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("gpu_ledger")}
    assert {"ix_gpu_ledger_task", "ix_gpu_ledger_kind_at", "ix_gpu_ledger_user_kind_at"} <= indexes


def _full_sum(w: Ledgered, now: float) -> dict[tuple[str, str], float]:
    """GPU-seconds per (user, pool) from scratch: every allocation, by `argus.domain.usage`."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for a in w.ledger.allocations(0, math.inf):
        out[(a.user, a.pool or NO_POOL)] += gpu_seconds(a, 0, math.inf, now)
    return dict(out)


def _same(got: dict[tuple[str, str], float], want: dict[tuple[str, str], float]) -> None:
    assert sorted(got) == sorted(want)
    assert all(got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-6) for k in want), (got, want)


def test_the_incremental_gpu_seconds_equal_a_full_sum_at_every_call(world):
    """Over ~18 hours of random starts and ends, with `now` also a little back and ahead."""
    rng = random.Random(4111)
    ledger = LedgerStore(world.db)  # one instance: its settled totals carry over the calls
    last: dict[tuple[str, str], float] = {}
    for _ in range(50):
        _drive(world, rng, 4)
        for now in (world.now, world.now - 7, world.now + 2):
            _same(ledger.gpu_seconds_by_user_pool(now), _full_sum(world, now))
        got = ledger.gpu_seconds_by_user_pool(world.now)
        assert all(got[k] >= v for k, v in last.items())  # a counter: never down while `now` is not
        last = got
    assert world.now - T0 > 12 * 3600
    assert any(a.end is None for a in world.ledger.allocations(0, math.inf))


def test_ends_just_before_and_after_the_watermark_are_counted_once(world):
    ledger = LedgerStore(world.db)
    a, b = world.add("alice", n_gpus_per_node=2), world.add("bob", pool="h20", n_gpus_per_node=2)
    world.add("carol", pool="a100", n_gpus_per_node=1)
    world.tick(0)  # all three start at T0 (2, 2 and 1 GPUs)
    mark = T0 + 12 * STEP_S
    world.clock.set(mark - 0.5)
    world.cancel(a)  # settles when the watermark reaches `mark`
    world.clock.set(mark + 0.5)
    world.cancel(b)  # one step later
    for now, settled in (
        (mark + SETTLE_S - 1, 1),  # the watermark just behind `mark`: a and b still live
        (mark + SETTLE_S + 1, 2),  # at `mark`: a settled, b not
        (mark + SETTLE_S - 2, 2),  # `now` back a little: the watermark stays, a counted once
        (mark + SETTLE_S + STEP_S, 3),  # b settled too
        (mark + SETTLE_S + STEP_S + 15, 3),
    ):
        with ThreadPoolExecutor(4) as pool:  # concurrent scrapes: the watermark moves once
            answers = list(pool.map(ledger.gpu_seconds_by_user_pool, [now] * 4))
        got = answers[0]
        assert all(x == got for x in answers) and got == {
            ("alice", "-"): 2 * (mark - 0.5 - T0),
            ("bob", "h20"): 2 * (mark + 0.5 - T0),
            ("carol", "a100"): 1 * (now - T0),  # still held: up to `now`
        }
        _same(got, _full_sum(world, now))
        assert ledger._settled._w == mark + (settled - 2) * STEP_S


def test_each_call_reads_the_ends_since_the_watermark_by_index_not_the_history(world):
    """Thousands of settled allocations: after the first call, a call reads the live ones only
    (one statement), and each statement reaches the tables by their indexes, the end rows by a
    range of `at`."""
    rows = [dict(task_id=f"old-{i}", attempt_no=1, user_id=USERS[i % 3], workload="ppo", gpus=2.0) for i in range(3000)]
    with world.db.write.begin() as conn:
        conn.execute(gpu_ledger.insert(), [dict(r, at=T0 - 1e6 + i, kind="start") for i, r in enumerate(rows)])
        conn.execute(gpu_ledger.insert(), [dict(r, at=T0 - 1e6 + i + 60, kind="end") for i, r in enumerate(rows)])
        if not world.db.is_sqlite:
            conn.exec_driver_sql("ANALYZE gpu_ledger")
    world.add("alice", n_gpus_per_node=4)
    world.tick(0)  # and one held
    ledger, seen, calls = LedgerStore(world.db), [], []
    sa.event.listen(world.db.read, "before_cursor_execute", lambda *a: seen.append(a[2:4]))
    for now in (world.now, world.now + 15, world.now + 30, world.now + STEP_S):
        n = len(seen)
        got = ledger.gpu_seconds_by_user_pool(now)
        calls.append([(q, p) for q, p in seen[n:] if q.startswith("SELECT")])  # not SQLite's BEGIN
        _same(got, _full_sum(world, now))
    assert [len(c) for c in calls] == [2, 1, 1, 2]  # settled + live; then live only until the watermark moves
    with world.db.read.connect() as conn:
        for statement, parameters in [x for c in calls[1:] for x in c]:  # the first reads all, once
            if world.db.is_sqlite:
                plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
                assert not [x for x in plan if x.startswith("SCAN")], plan
                assert any(x.startswith("SEARCH e USING INDEX ix_gpu_ledger_kind_at (kind=? AND at>?") for x in plan)
            else:
                plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
                assert not [x for x in plan if "Seq Scan on gpu_ledger" in x], plan
                assert any("Index Cond" in x and "at >=" in x for x in plan), plan
