"""Fair share: one formula (argus.domain.fairshare) read by the live scheduler and the simulator.

The same history of finished and running attempts, fed to the live path (attempt rows in a
real SQLite store, read by `Scheduler.usage`) and to the simulator's `FairShare`, gives the
same decayed GPU-hours and the same fair-share order.
"""

from __future__ import annotations

import math

import pytest

from argus.domain.fairshare import Usage, decayed_gpu_hours, fair_share
from argus.domain.scheduling import Job, order
from argus.scheduler.loop import Scheduler
from argus.settings import parse_settings
from argus.sim import FairShare
from argus.store.db import open_database
from argus.store.schema import attempts
from argus.store.tasks import TaskStore
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeSnapshots

H = 3600.0 * 168  # the default half-life, 7 days
T0 = 1_800_000_000.0
NOW = T0 + 20 * 86400

# (user, nnodes, GPUs per node, driver GPUs, start, end or None: still running), relative to T0
HISTORY = [
    ("alice", 1, 4, 0.0, 0.0, 2 * 86400.0),  # 4 GPUs for 2 days, long ago
    ("alice", 2, 4, 1.0, 19 * 86400.0, None),  # 9 GPUs, running for a day
    ("bob", 1, 8, 0.0, 10 * 86400.0, 12 * 86400.0),  # 8 GPUs for 2 days, mid-way
    ("bob", 1, 1, 0.0, 19.5 * 86400.0, 19.9 * 86400.0),
    ("carol", 1, 2, 0.0, 5 * 86400.0, None),  # 2 GPUs for 15 days, still running
    ("dave", 1, 8, 0.0, 19.99 * 86400.0, None),  # just started
    ("erin", 1, 8, 0.0, -200 * 86400.0, -150 * 86400.0),  # ended more than 10 half-lives ago
]


def live_usage(tmp_path) -> tuple[dict[str, float], dict[str, float]]:
    settings = parse_settings(
        {"ray": {"shared_root": str(tmp_path)}, "service": {"db_url": f"sqlite:///{tmp_path}/argus.sqlite3"}},
        environ={},
    )
    db = open_database(settings.db_url)
    store = TaskStore(db)
    for i, (user, nnodes, per_node, driver, start, end) in enumerate(HISTORY):
        tid = f"t{i}"
        store.create(
            task_id=tid,
            user_id=user,
            workload="ppo",
            jobspec_yaml="{}",
            nnodes=nnodes,
            n_gpus_per_node=per_node,
            driver_gpus=driver,
            now=T0 + start - 60,
        )
        with db.write.begin() as conn:
            conn.execute(
                attempts.insert().values(
                    task_id=tid,
                    attempt_no=1,
                    ray_submission_id=f"{tid}--a01",
                    job_root="/x",
                    created_at=T0 + start - 10,
                    start_time=T0 + start,
                    end_time=None if end is None else T0 + end,
                )
            )
    clock = FakeClock(NOW)
    sched = Scheduler(settings, store, FakeJobs(clock=clock), FakeSnapshots({}), clock=clock)
    try:
        return sched.usage(clock())
    finally:
        db.dispose()


def sim_usage() -> dict[str, float]:
    """The simulator's path: each attempt's start and end as replay events, in time order."""
    fs = FairShare(H)
    events = []
    for i, (user, nnodes, per_node, driver, start, end) in enumerate(HISTORY):
        events.append((T0 + start, 1, f"t{i}", user, nnodes * per_node + driver))
        if end is not None:
            events.append((T0 + end, 0, f"t{i}", user, 0.0))
    for t, starts, key, user, gpus in sorted(events):
        fs.hours(t)  # a pass at every event time, as a replay does
        if starts:
            fs.start(key, user, gpus, t)
        else:
            fs.end(key, t)
    return fs.hours(NOW)


def test_live_and_simulated_usage_agree_and_give_the_same_order(tmp_path):
    live, day = live_usage(tmp_path)
    sim = sim_usage()
    assert set(live) == set(sim) == {"alice", "bob", "carol", "dave"}  # erin is past the horizon
    for user in live:
        assert sim[user] == pytest.approx(live[user], rel=1e-9), user
    queue = [Job(f"j-{u}", u, 1, 1.0, NOW - 100, 3600.0) for u in ("alice", "bob", "carol", "dave", "erin")]
    live_order = [j.user for j in order(queue, "default", live, NOW)]
    assert live_order == [j.user for j in order(queue, "default", sim, NOW)]
    assert live_order == ["erin", "dave", "bob", "alice", "carol"], live  # least decayed usage first
    # the last 24 h, undecayed: alice 9 GPUs x 24 h, bob 1 x 9.6 h, carol 2 x 24 h, dave 8 x 0.24 h
    assert day == pytest.approx({"alice": 216.0, "bob": 9.6, "carol": 48.0, "dave": 1.92})


def test_running_usage_decays_from_when_it_was_used():
    # 1 GPU held for one half-life: the integral of 2^(-(now - t)/H), not H undecayed hours.
    got = decayed_gpu_hours(Usage("a", 1.0, 0.0, None), H, H)
    assert got == pytest.approx(0.5 * H / math.log(2) / 3600)
    assert got < H / 3600
    # the same hours, ended one half-life ago, are worth half
    assert decayed_gpu_hours(Usage("a", 1.0, 0.0, H), 2 * H, H) == pytest.approx(got / 2)
    # a short recent usage is worth about its GPU-hours
    assert decayed_gpu_hours(Usage("a", 2.0, 0.0, 3600.0), 3600.0, H) == pytest.approx(2.0, rel=3e-3)


def test_the_horizon_future_and_empty_usages_count_nothing():
    assert decayed_gpu_hours(Usage("a", 8.0, 0.0, 3600.0), 3600.0 + 10 * H + 1, H) == 0.0
    assert decayed_gpu_hours(Usage("a", 8.0, 3600.0 + 10 * H - 1, 3600.0 + 10 * H + 1), 3600 + 11 * H, H) > 0
    assert decayed_gpu_hours(Usage("a", 8.0, 100.0, None), 50.0, H) == 0.0  # starts after now
    got = fair_share([Usage("a", 8.0, 100.0, 100.0), Usage("b", 1.0, 0.0, 7200.0)], 3600.0, H)
    assert set(got.decayed) == {"b"}  # a zero-length usage leaves its user out
    assert got.day == {"b": pytest.approx(1.0)}  # only the part before now
    with pytest.raises(ValueError, match="half-life"):
        fair_share([], 0.0, 0.0)
