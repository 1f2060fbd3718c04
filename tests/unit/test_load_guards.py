"""The guards that keep the API answering under load: the fair check pool and the per-user
submission rate (argus.service.checks, argus.service.ratelimit). Pure: a thread executor and a
fake check stand in for the worker processes, the rate's clock is a counter (the shared buckets
of several API processes: tests/unit/test_shared_state.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from argus.service.checks import CheckBacklog, CheckPool
from argus.service.ratelimit import RateLimited, RateLimiter
from argus.service.shared_state import SharedState
from argus.testing import FakeClock


class GatedCheck:
    """A fake check: records the order checks start in, and holds each until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()
        self.began = threading.Semaphore(0)
        self._lock = threading.Lock()

    def __call__(self, name: str) -> list:
        with self._lock:
            self.started.append(name)
        self.began.release()
        assert self.release.wait(30), "never released"
        return []


@pytest.fixture
def gated():
    check = GatedCheck()
    executor = ThreadPoolExecutor(2)
    pool = CheckPool(2, run=check, executor=executor, max_queued=100)
    yield check, pool
    check.release.set()
    pool.close()
    executor.shutdown(wait=True)


def test_one_users_flood_does_not_queue_another_user_behind_it(gated):
    check, pool = gated
    flood = [pool.submit("alice", f"a{i}", f"a{i}") for i in range(20)]
    assert check.began.acquire(timeout=30)
    assert pool.waiting("alice") == 19  # one worker is kept for the other users
    bob = pool.submit("bob", "b0", "b0")
    assert check.began.acquire(timeout=30)  # bob's starts while alice's first still runs
    assert check.started == ["a0", "b0"] and pool.waiting("bob") == 0
    check.release.set()
    assert bob.result(timeout=30) == []
    for f in flood:
        assert f.result(timeout=30) == []
    assert sorted(check.started) == sorted([f"a{i}" for i in range(20)] + ["b0"])


def test_alone_a_user_holds_all_but_one_worker():
    check = GatedCheck()
    executor = ThreadPoolExecutor(3)
    pool = CheckPool(3, run=check, executor=executor)
    try:
        for i in range(5):
            pool.submit("alice", i, f"a{i}")
        assert check.began.acquire(timeout=30) and check.began.acquire(timeout=30)
        assert pool.waiting("alice") == 3 and sorted(check.started) == ["a0", "a1"]
    finally:
        check.release.set()
        pool.close()
        executor.shutdown(wait=True)


def test_users_take_turns_in_order():
    check = GatedCheck()
    executor = ThreadPoolExecutor(1)
    pool = CheckPool(1, run=check, executor=executor)
    try:
        futures = [pool.submit("a", "a0", "a0")]
        assert check.began.acquire(timeout=30)
        futures += [
            pool.submit(u, f"{u}{i}", f"{u}{i}") for u in ("a", "b", "c") for i in range(3) if (u, i) != ("a", 0)
        ]
        check.release.set()
        for f in futures:
            f.result(timeout=30)
        # a0 starts at once; then one of each user's in turn (first come, first served
        # would run a1, a2 before any of b's and c's).
        assert check.started == ["a0", "a1", "b0", "c0", "a2", "b1", "c1", "b2", "c2"]
    finally:
        pool.close()
        executor.shutdown(wait=True)


def test_the_same_check_is_shared_by_one_user_not_queued_behind_another(gated):
    check, pool = gated
    running = pool.submit("alice", "k-running", "k-running")
    assert check.began.acquire(timeout=30)
    assert pool.submit("bob", "k-running", "k-running") is running  # running: shared
    pool.submit("alice", "a-other", "a-other")
    waiting = pool.submit("alice", "k", "k-alice")
    assert pool.submit("alice", "k", "k-again") is waiting  # the same user's: shared
    bobs = pool.submit("bob", "k", "k-bob")
    assert bobs is not waiting  # not put behind alice's queue
    assert not waiting.cancel()  # one waiter going away does not cancel it for the others
    check.release.set()
    for f in (running, waiting, bobs):
        assert f.result(timeout=30) == []
    assert "k-again" not in check.started and "k-bob" in check.started


def test_a_users_backlog_is_bounded(gated):
    check, pool = gated
    small = CheckPool(1, run=check, executor=ThreadPoolExecutor(1), max_queued=3)
    try:
        small.submit("alice", 0, "x0")
        assert check.began.acquire(timeout=30)  # one runs
        for i in range(1, 4):  # three wait
            small.submit("alice", i, f"x{i}")
        with pytest.raises(CheckBacklog) as info:
            small.submit("alice", 99, "x99")
        assert info.value.waiting == 3
        small.submit("bob", 0, "y0")  # another user is not refused
    finally:
        check.release.set()
        small.close()


def test_a_failing_check_fails_its_future_and_the_pool_goes_on():
    def run(x: int) -> list:
        if x == 1:
            raise ValueError("boom")
        return []

    executor = ThreadPoolExecutor(1)
    pool = CheckPool(1, run=run, executor=executor)
    try:
        bad = pool.submit("u", 1, 1)
        with pytest.raises(ValueError):
            bad.result(timeout=30)
        assert pool.submit("u", 2, 2).result(timeout=30) == []
    finally:
        pool.close()
        executor.shutdown()


# -- the per-user submission rate --------------------------------------------------------------
def test_token_bucket_allows_the_burst_then_says_when_to_retry():
    clock = FakeClock(100.0)
    rate = RateLimiter(2.0, 3, clock)
    assert [rate.wait_s("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.wait_s("alice") == pytest.approx(0.5)
    assert rate.wait_s("bob") == 0.0  # another user has a bucket of their own
    clock.advance(0.5)
    assert rate.wait_s("alice") == 0.0
    assert rate.wait_s("alice") == pytest.approx(0.5)
    clock.advance(100)
    assert [rate.wait_s("alice") for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]  # capped


def test_past_the_rate_take_raises_429_naming_the_limit():
    clock = FakeClock(100.0)
    rate = RateLimiter(0.25, 1, clock)
    rate.take("alice")
    with pytest.raises(RateLimited) as info:
        rate.take("alice")
    exc = info.value
    assert exc.status == 429 and exc.retry_after == "4"
    assert "0.25 a second" in exc.message and "burst 1" in exc.message
    assert exc.problems[0].field == "service.submit_rate_per_s"


def test_no_rate_means_no_limit():
    rate = RateLimiter(None, 1, FakeClock(100.0))
    assert all(rate.wait_s("alice") == 0.0 for _ in range(1000))


def test_two_limiters_over_one_shared_file_share_one_budget(tmp_path):
    clock = FakeClock(100.0)
    with SharedState.create(tmp_path / "state") as one, SharedState.open(tmp_path / "state") as two:
        a, b = RateLimiter(0.5, 3, clock, shared=one), RateLimiter(0.5, 3, clock, shared=two)
        assert [a.wait_s("alice"), b.wait_s("alice"), a.wait_s("alice")] == [0.0, 0.0, 0.0]
        assert b.wait_s("alice") == pytest.approx(2.0)  # the burst is spent, whichever took it
        with pytest.raises(RateLimited):
            a.take("alice")
        assert b.wait_s("bob") == 0.0
        clock.advance(2.0)
        b.take("alice")
        assert a.wait_s("alice") == pytest.approx(2.0)


def _never_ends(stop: threading.Event) -> list:
    stop.wait(30)
    return []


def test_a_check_that_never_ends_is_reported_as_a_problem_not_awaited_forever():
    stop = threading.Event()
    executor = ThreadPoolExecutor(2)
    pool = CheckPool(2, run=_never_ends, executor=executor, timeout_s=0.2)
    try:
        problems = pool.submit("alice", "k", stop).result(timeout=10)
        assert [p.field for p in problems] == ["overrides"]
        assert "took over 0.2 s" in problems[0].reason
    finally:
        stop.set()
        pool.close()
        executor.shutdown()


def test_a_closed_pool_starts_no_worker_processes():
    pool = CheckPool(1)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool._get_executor()
    assert pool._executor is None


def _sleep_then_clean(seconds: float) -> list:
    import time as _time

    _time.sleep(seconds)
    return []


def test_a_hung_check_is_stopped_and_the_others_on_its_pool_run_again_not_fail():
    """Real worker processes: mallory's check hangs past the timeout and her pool is stopped;
    bob's check, running on that pool at the time, is run again on a fresh one."""
    import time as _time

    pool = CheckPool(3, run=_sleep_then_clean, timeout_s=6.0)
    try:
        pool.submit("warm", "w", 0.0).result(timeout=60)  # the processes are up
        hung = pool.submit("mallory", "m", 60.0)
        _time.sleep(4.5)
        bob = pool.submit("bob", "b", 2.5)  # still running when mallory's pool is stopped
        assert "took over 6 s" in hung.result(timeout=60)[0].reason
        assert bob.result(timeout=60) == []
    finally:
        pool.close()
