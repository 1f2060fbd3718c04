"""`bench/sim_orders.py`: its variant orders on hand-worked queues, and one replay per variant."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import argus.domain.scheduling as scheduling
from argus.domain import ordering
from argus.domain.scheduling import Job
from argus.sim.cases import Case
from argus.sim.trace import TraceJob

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("sim_orders")
    finally:
        sys.path.remove(str(BENCH))


def _queue() -> list[Job]:
    # At now = 1000: "small" (1 GPU, limit 1500) waited 1000 s, "big" (8 GPUs, limit 1000) 900 s.
    return [
        Job("small", "u1", 1, 1.0, 0.0, 1500.0),
        Job("big", "u2", 1, 8.0, 100.0, 1000.0),
    ]


def test_default_is_the_shipped_order(bench):
    assert bench.make_order("default") is ordering.order


@pytest.mark.parametrize(
    ("variant", "first"),
    [
        # rate 2 for both: big 8 x max(0, 1000 - 1800) = 0, small max(0, 1500 - 2000) = 0; oldest first
        ("default", "small"),
        ("fair-1.25", "small"),
        # area: small 1500 < big 8000
        ("area", "small"),
        # big asks the most GPUs: rate 2, score 0; small rate 0.5: 1500 - 500 = 1000
        ("largest-2-0.5", "big"),
        # small's rate 0.5 + 1.5 x 1/8 = 0.6875: 1500 - 687.5 > 0; big's rate 2: 0
        ("share-2-0.5", "big"),
        # small's rate 1.5 + 0.5 x 1/8 = 1.5625: max(0, 1500 - 1562.5) = 0, older than big
        ("share-2-1.5", "small"),
    ],
)
def test_variant_orders_a_hand_worked_queue(bench, variant, first):
    got = bench.make_order(variant)(_queue(), "default", None, 1000.0, None)
    assert [j.id for j in got][0] == first


@pytest.mark.parametrize(
    ("variant", "first"),
    [
        # mean wait (1000 + 900) / 2 = 950. K = 1: small waited 1000 >= 950, big 900 x 2 nodes >= 950:
        # both overdue, oldest first
        ("qage-1-1", "small"),
        # K = 1.2 (1140): small 1000 is not overdue (area 1500), big 1800 is: big first
        ("qage-1.2-1", "big"),
        # P = 0: big 900 < 1140 is not overdue either; areas 1500 < 8000
        ("qage-1.2-0", "small"),
        # cap-1 ignores nodes: small max(0, 1500 - 1000) = 500 < big 8 x max(0, 1000 - 900) = 800
        ("cap-1", "small"),
        # guard-1-0.9: big (2 nodes) waited 900 >= 0.9 x 950: overdue, first; small is not (500)
        ("guard-1-0.9", "big"),
        # guard-1-1: 900 < 950, so as cap-1
        ("guard-1-1", "small"),
    ],
)
def test_queue_wait_variants(bench, variant, first):
    queue = [Job("small", "u1", 1, 1.0, 0.0, 1500.0), Job("big", "u2", 2, 4.0, 100.0, 1000.0)]
    got = bench.make_order(variant)(queue, "default", None, 1000.0, None)
    assert [j.id for j in got][0] == first


def test_fifo_and_easy_keep_submission_order(bench):
    got = bench.make_order("area")(list(reversed(_queue())), "easy", None, 1000.0, None)
    assert [j.id for j in got] == ["small", "big"]


@pytest.mark.parametrize("name", ["nope", "largest-2", "area-1", "share-a-b", "fair", "cap-1-2", "guard-1"])
def test_unknown_variant_is_refused(bench, name):
    with pytest.raises(SystemExit, match="--variants"):
        bench.make_order(name)


def test_replay_plans_with_the_variant_order(bench, monkeypatch):
    # Two 1-GPU jobs on one 1-GPU node: the second waits for the first.
    jobs = [TraceJob("a", 0.0, 3600.0, 1, "u1"), TraceJob("b", 10.0, 600.0, 1, "u2")]
    case = Case("t", 0.7, "2x", 1, 1, 1.0, jobs, 2.0, None)
    calls: list[tuple[str, str]] = []

    real = bench.make_order

    def spy(variant):
        inner = real(variant)

        def order(queue, policy, *args):
            calls.append((variant, policy))
            return inner(queue, policy, *args)

        return order

    monkeypatch.setattr(scheduling, "order", scheduling.order)  # restored after the test
    monkeypatch.setattr(bench, "make_order", spy)
    label, policy, variant, m = bench._replay((case, "default", "area"))
    assert (label, policy, variant) == ("t load 0.7 limits 2x", "default", "area")
    assert calls and set(calls) == {("area", "default")}
    # Only one job ever waits, so any order gives this average: a check that the replay ran.
    assert m.avg_wait_s == pytest.approx((0 + 3590) / 2)


@pytest.mark.parametrize(("variant", "first"), [("default", "b"), ("fair-1.25", "a"), ("fair-1", "a")])
def test_fair_bound_scales_the_weights(bench, variant, first):
    # usage u1 3, u2 1 (mean 2): default weights 1 + (1 - 0.5 ** 1.5) = 1.646 and 1 + (1 - 0.5 ** 0.5) = 1.293,
    # so a scores 1646 > b's 1552; bounded by 1.25 they are 1.162 and 1.073: 1162 < 1288.
    queue = [Job("a", "u1", 1, 1.0, 0.0, 1000.0), Job("b", "u2", 1, 1.0, 0.0, 1200.0)]
    got = bench.make_order(variant)(queue, "default", {"u1": 3.0, "u2": 1.0}, 0.0, None)
    assert [j.id for j in got][0] == first


def test_area_ignores_waiting_where_the_shipped_order_does_not(bench):
    # "old" (8 GPUs, limit 1000) waited 1000 s: overdue under default (8 x max(0, 1000 - 2000) = 0),
    # so it goes first there; by area alone "new" (1 GPU, limit 100, just submitted) is first.
    queue = [Job("old", "u1", 1, 8.0, 0.0, 1000.0), Job("new", "u2", 1, 1.0, 1000.0, 100.0)]
    assert [j.id for j in bench.make_order("default")(queue, "default", None, 1000.0, None)] == ["old", "new"]
    assert [j.id for j in bench.make_order("area")(queue, "default", None, 1000.0, None)] == ["new", "old"]


def test_fair_2_is_the_shipped_order_with_priority_and_keep(bench):
    # fair-2 keeps the shipped curve and rate, so it must order exactly as `ordering.order`,
    # priority first and the kept reservation next.
    queue = [
        Job("a", "u1", 1, 1.0, 0.0, 5000.0),
        Job("b", "u2", 2, 8.0, 50.0, 3000.0),
        Job("c", "u3", 1, 4.0, 100.0, 800.0, priority=900),
        Job("d", "u1", 1, 2.0, 150.0, 2000.0),
        Job("e", "u2", 1, 1.0, 200.0, 300.0),
    ]
    usage = {"u1": 5.0, "u2": 1.0, "u3": 0.5}
    for keep in (None, "b", "d"):
        want = [j.id for j in ordering.order(queue, "default", usage, 400.0, keep)]
        got = [j.id for j in bench.make_order("fair-2")(queue, "default", usage, 400.0, keep)]
        assert got == want
        assert want[0] == "c"  # priority 900 first
        if keep:
            assert want[1] == keep
