"""The loops' pacing (`argus.scheduler.pacing.Pacer`): which passes are full, nudges coalesced,
a failing pass recorded and the loop going on, stop ending it. Two FakeClocks: the wall clock
and the monotonic time; the only real waits are a few milliseconds of `min_gap_s`."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from argus.scheduler.pacing import FULL_SPACING_MAX, Pacer
from argus.testing import FakeClock

INTERVAL = 60.0  # never waited out here: every wake-up is a nudge or stop
NOW = 1_800_000_000.0  # what the wall clock shows throughout


class Passes:
    """A loop's tick that records `(now, full)` of each pass; `fail` passes raise."""

    def __init__(self, fail: int = 0) -> None:
        self.seen: list[tuple[float, bool]] = []
        self.errors: list[str] = []
        self.fail = fail
        self.during: list[Callable[[], object]] = []  # called during the next passes, in order
        self.changed = threading.Condition()

    def tick(self, now: float, full: bool) -> None:
        with self.changed:
            self.seen.append((now, full))
            self.changed.notify_all()
        if self.during:
            self.during.pop(0)()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("boom")

    def failed(self, error: str) -> None:
        self.errors.append(error)

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.seen) >= n, timeout), self.seen


def pacer(mono: FakeClock | None = None, gap: float = 0.0) -> Pacer:
    """A pacer whose wall clock stays at NOW and whose monotonic time is `mono` (moved by the test)."""
    return Pacer("test pass", INTERVAL, min_gap_s=gap, clock=FakeClock(NOW), monotonic=mono or FakeClock(1000.0))


def test_the_first_pass_is_full_nudged_ones_are_light_and_the_interval_makes_them_full():
    mono = FakeClock(1000.0)
    p, passes = pacer(mono), Passes()
    p.one_pass(passes.tick, passes.failed)
    mono.advance(1)
    p.one_pass(passes.tick, passes.failed)  # a nudge 1 s later: admits only
    mono.advance(INTERVAL * 0.9)
    p.one_pass(passes.tick, passes.failed)  # the interval's wake-up: full
    mono.advance(1)
    p.nudge(full=True)
    p.one_pass(passes.tick, passes.failed)  # asked for a full pass
    mono.advance(1)
    p.one_pass(passes.tick, passes.failed)
    assert [full for _, full in passes.seen] == [True, False, True, True, False]
    assert {now for now, _ in passes.seen} == {NOW}  # the injected clock


def test_a_failing_pass_is_recorded_and_a_failed_full_pass_waits_for_the_interval():
    mono = FakeClock(1000.0)
    p, passes = pacer(mono), Passes(fail=1)
    p.one_pass(passes.tick, passes.failed)
    assert passes.errors == ["RuntimeError: boom"]
    mono.advance(1)
    p.one_pass(passes.tick, passes.failed)
    assert [full for _, full in passes.seen] == [True, False]
    assert passes.errors == ["RuntimeError: boom"]


def run_in_thread(p: Pacer, passes: Passes) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=p.run, args=(stop, passes.tick, passes.failed), daemon=True)
    thread.start()
    return thread, stop


def stop_it(p: Pacer, thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    p.nudge()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_loop_goes_on_after_a_failing_pass_and_stop_ends_it():
    p, passes = pacer(), Passes(fail=1)
    thread, stop = run_in_thread(p, passes)
    passes.wait_for(1)
    p.nudge()
    passes.wait_for(2)
    assert passes.errors == ["RuntimeError: boom"]
    stop_it(p, thread, stop)  # long before the interval
    assert len(passes.seen) == 2


def test_nudges_during_a_pass_are_served_by_one_pass():
    p, passes = pacer(gap=0.005), Passes()
    # Three nudges arrive while the first pass runs: one pass serves them all.
    passes.during.append(lambda: [p.nudge() for _ in range(3)])
    thread, stop = run_in_thread(p, passes)
    passes.wait_for(2)
    with passes.changed:  # no third pass comes: the loop waits for the interval
        assert not passes.changed.wait_for(lambda: len(passes.seen) > 2, 0.02)
    stop_it(p, thread, stop)
    assert [full for _, full in passes.seen] == [True, False]


def test_stop_set_during_a_pass_ends_the_loop_after_it():
    p, passes = pacer(), Passes()
    thread, stop = run_in_thread(p, passes)
    passes.wait_for(1)
    passes.during.append(stop.set)
    p.nudge()
    thread.join(timeout=5)
    assert not thread.is_alive() and len(passes.seen) == 2


@pytest.mark.parametrize("gap,expected", [(0.0, 0.0), (5.0, 5.0), (120.0, INTERVAL)])
def test_the_gap_is_at_most_the_interval(gap, expected):
    assert pacer(gap=gap).min_gap_s == expected


def test_full_passes_are_spaced_by_their_cpu_with_a_full_share():
    mono, cpu = FakeClock(1000.0), FakeClock(0.0)
    p = Pacer("test pass", 2.0, full_share=0.1, clock=FakeClock(NOW), monotonic=mono, cpu=cpu)
    seen: list[bool] = []

    def tick(now: float, full: bool) -> None:
        seen.append(full)
        if full:
            mono.advance(0.5)  # a full pass over a long queue takes half a second of CPU
            cpu.advance(0.5)

    p.one_pass(tick, lambda e: None)  # full: 0.5 s, so the next is due 5 s after it started
    assert p.full_spacing_s == 5.0
    for _ in range(5):
        mono.advance(1.0)  # wake-ups before then are light
        p.one_pass(tick, lambda e: None)
    assert seen == [True, False, False, False, False, True]  # at 0, then 1.5, 2.5, 3.5, 4.5 and 5.5 s
    p.nudge(full=True)  # a nudge that asks for a full pass still gets one at once
    p.one_pass(tick, lambda e: None)
    assert seen[-1] is True


def test_waits_do_not_count_a_cheap_pass_keeps_the_interval_and_the_spacing_is_capped():
    mono, cpu = FakeClock(1000.0), FakeClock(0.0)
    p = Pacer("test pass", 2.0, full_share=0.1, clock=FakeClock(NOW), monotonic=mono, cpu=cpu)
    p.one_pass(lambda now, full: (mono.advance(30.0), cpu.advance(0.01)), lambda e: None)
    assert p.full_spacing_s == 2.0 * 0.9  # 30 s waiting on Ray, 0.01 s of CPU: the interval stands
    mono.advance(2.0)
    p.one_pass(lambda now, full: cpu.advance(60.0), lambda e: None)  # full again: the interval came
    assert p.full_spacing_s == FULL_SPACING_MAX * 2.0  # a minute of CPU: still a sync every 10 s
    q = Pacer("test pass", 2.0, clock=FakeClock(NOW), monotonic=mono, cpu=cpu)
    q.one_pass(lambda now, full: cpu.advance(30.0), lambda e: None)
    assert q.full_spacing_s == 2.0 * 0.9  # no share: no spacing
