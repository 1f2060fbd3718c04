"""Parts of the metrics that need no app: the Ray probe's time bound and the history cursor."""

from __future__ import annotations

import threading
import time

from argus.service.metrics_collect import Bounded, RayProbe
from argus.store.metrics_reads import GAP_S, Cursor
from argus.testing.fakes import FakeSnapshots


class HangingRay:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def snapshot(self):
        self.calls += 1
        self.release.wait(10)
        return FakeSnapshots({"w1": 4}).snapshot()


def test_a_hanging_ray_costs_a_scrape_the_wait_and_no_second_read_piles_up():
    ray = HangingRay()
    probe = RayProbe(ray, lambda: ({}, {}, {}), wait_s=0.2)
    t0 = time.monotonic()
    view = probe.read()
    assert time.monotonic() - t0 < 1 and view.snapshot is None and view.error == "timed out"
    again = probe.read()
    assert again.snapshot is None and "has not returned" in (again.error or "") and ray.calls == 1
    ray.release.set()
    time.sleep(0.1)
    ok = probe.read()
    assert ok.snapshot is not None and ok.capacity == {} and ray.calls == 2


def test_a_down_ray_is_reported_by_name_not_raised():
    view = RayProbe(FakeSnapshots({"w1": 4}, down=True), lambda: ({}, {}, {})).read()
    assert view.snapshot is None and view.error == "ClusterUnavailable"


def test_ids_skipped_over_are_asked_for_again_for_a_while():
    c = Cursor()
    c.seen([1, 2, 5], now=100.0)
    assert c.last == 5 and set(c.gaps) == {3, 4}
    c.seen([4, 6], now=101.0)  # a late commit fills a gap
    assert c.last == 6 and set(c.gaps) == {3}
    c.seen([], now=100.0 + GAP_S)  # a gap never filled (a rollback) is given up
    assert c.gaps == {}
    c.seen([5000], now=200.0)  # a jump too far is not waited for
    assert c.last == 5000 and c.gaps == {}


def test_a_read_that_hangs_is_cut_at_its_wait_and_not_started_again_meanwhile():
    release = threading.Event()
    calls = []

    def slow() -> float:
        calls.append(1)
        release.wait(10)
        return 12.5

    bounded = Bounded(slow, wait_s=0.2)
    t0 = time.monotonic()
    assert bounded.read() == (None, "timed out") and time.monotonic() - t0 < 1
    assert bounded.read() == (None, "an earlier read has not returned") and len(calls) == 1
    release.set()
    time.sleep(0.1)
    assert bounded.read() == (12.5, None) and len(calls) == 2
    assert Bounded(lambda: 1 / 0).read() == (None, "ZeroDivisionError")
