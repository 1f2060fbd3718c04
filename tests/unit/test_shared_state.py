"""The state the server's API processes share (argus.service.shared_state): the buckets mean what
`RateLimiter`'s in-process ones mean, the table never overflows, and the file is one state for
every process and thread that maps it (real processes, spawned)."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading

import pytest

from argus.service.ratelimit import RateLimiter
from argus.service.shared_state import SLOTS, SharedState
from argus.testing import FakeClock

NEVER = 1e-9  # a rate that adds no token during a test


@pytest.fixture
def state(tmp_path):
    with SharedState.create(tmp_path / "state") as shared:
        yield shared


def test_the_file_is_private_and_zeroed(tmp_path, state):
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o600
    assert state.generation() == 0
    with pytest.raises(FileExistsError):
        SharedState.create(tmp_path / "state")
    (tmp_path / "other").write_bytes(b"x" * 10)
    with pytest.raises(ValueError):
        SharedState.open(tmp_path / "other")


def test_buckets_mean_what_the_in_process_ones_mean(state):
    clock = FakeClock(100.0)
    local = RateLimiter(1.0, 3, clock)
    steps = [(0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.5, 0.0), (0.0, 1.0)]
    steps += [(0.25, 0.75), (10.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 1.0)]  # refilled, capped at 3
    for advance, wait in steps:
        clock.advance(advance)
        assert state.take_token("alice", 1.0, 3, clock()) == pytest.approx(wait)
        assert local.wait_s("alice") == pytest.approx(wait)
    assert state.take_token("bob", 1.0, 3, clock()) == 0.0  # a user not seen starts full


def test_more_users_than_slots_never_overflow_and_the_limited_stay_limited(state):
    assert [state.take_token("alice", NEVER, 2, 0.0) for _ in range(3)][2] > 0
    for i in range(2 * SLOTS):
        assert state.take_token(f"user-{i}", NEVER, 2, 1.0) == 0.0
    assert state.take_token("alice", NEVER, 2, 2.0) > 0  # emptier than all others: kept
    assert [state.take_token("user-5", NEVER, 2, 2.0) for _ in range(3)][2] > 0  # refused right after


def test_generation_bumps_and_two_mappings_see_each_others_writes(tmp_path, state):
    other = SharedState.open(tmp_path / "state")
    try:
        assert state.bump() == 1 and other.bump() == 2
        assert state.generation() == other.generation() == 2
        assert state.take_token("alice", NEVER, 1, 0.0) == 0.0
        assert other.take_token("alice", NEVER, 1, 0.0) > 0
    finally:
        other.close()


def test_threads_over_two_mappings_grant_exactly_the_burst(tmp_path, state):
    other = SharedState.open(tmp_path / "state")
    granted: list[int] = []
    start = threading.Barrier(4)

    def take(shared: SharedState) -> None:
        start.wait()
        granted.append(sum(shared.take_token("alice", NEVER, 37, 0.0) == 0.0 for _ in range(50)))

    try:
        threads = [threading.Thread(target=take, args=(s,)) for s in (state, other, state, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(granted) == 37
    finally:
        other.close()


def _take(path: str, takes: int, burst: int, start, granted) -> None:
    with SharedState.open(path) as shared:
        start.wait(60)
        granted.put(sum(shared.take_token("alice", NEVER, burst, 0.0) == 0.0 for _ in range(takes)))


@pytest.mark.parametrize(("takes", "burst"), [(50, 37), (2000, 3001)])  # the second: a longer race
def test_processes_grant_exactly_the_burst_between_them(tmp_path, state, takes, burst):
    ctx = multiprocessing.get_context("spawn")
    start, granted = ctx.Barrier(4), ctx.Queue()
    args = (str(tmp_path / "state"), takes, burst, start, granted)
    procs = [ctx.Process(target=_take, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        counts = [granted.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(counts) == burst
