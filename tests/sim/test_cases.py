"""The benchmark's cases (argus.sim.cases): cluster sizing, the load scaling of the submission
times, and the per-job time-limit factors, with hand-worked numbers; and the simulator's
per-job limit factors (argus.sim.engine.simulate(limit_factors=...))."""

from __future__ import annotations

import pytest

from argus.sim import ClusterShape, TraceError, TraceJob, simulate
from argus.sim.cases import all_cases, make_case, offered_load, scale_submissions, size_cluster, user_limit_factors


def job(id: str, t: float, dur: float, gpus: int, user: str = "alice") -> TraceJob:
    return TraceJob(id=id, submitted_at=t, duration_s=dur, num_gpu=gpus, user=user)


# Work W = 1000*8 + 1000*8 + 2000*4 = 24,000 GPU-s over a span of 100 s.
TRACE = [job("a", 100, 1000, 8), job("b", 150, 1000, 8), job("c", 200, 2000, 4)]


def test_offered_load_is_work_over_gpus_times_span():
    assert offered_load(TRACE, 240) == pytest.approx(1.0)  # 24,000 / (240 x 100)
    with pytest.raises(TraceError, match="span"):
        offered_load([job("x", 5, 10, 1), job("y", 5, 10, 1)], 8)


def test_size_rounds_to_nodes_and_scales_time_to_the_exact_load():
    # G = 24,000 / (100 x 0.9) = 266.7 GPUs -> round(33.3) = 33 nodes; natural load at 264 GPUs
    # = 24,000 / (264 x 100) = 0.9091; k = 0.9091 / 0.9 = 1.0101.
    nodes, k = size_cluster(TRACE, 0.9)
    assert nodes == 33
    assert k == pytest.approx(24_000 / (264 * 100) / 0.9)
    scaled = scale_submissions(TRACE, k)
    assert [j.submitted_at for j in scaled] == pytest.approx([100, 100 + 50 * k, 100 + 100 * k])
    assert [j.duration_s for j in scaled] == [1000, 1000, 2000]
    assert offered_load(scaled, nodes * 8) == pytest.approx(0.9)


def test_the_largest_job_sets_a_floor_on_the_nodes_and_time_is_compressed():
    # 64 GPUs over 1000 s in a span of 10,000 s: G = 64,000 / (10,000 x 0.7) = 9.1 -> 1 node,
    # but the 64-GPU job needs 8 nodes; natural load 64,000 / (64 x 10,000) = 0.1, k = 0.1 / 0.7.
    trace = [job("big", 0, 1000, 64), job("late", 10_000, 1, 0 + 1)]
    nodes, k = size_cluster(trace, 0.7)
    assert nodes == 8
    assert k == pytest.approx((64_001 / (64 * 10_000)) / 0.7)
    case = make_case("t", trace, 0.7, "2x")
    assert case.nodes == 8 and case.k == pytest.approx(k)
    assert offered_load(case.jobs, 64) == pytest.approx(0.7)
    assert case.jobs[1].submitted_at == pytest.approx(10_000 * k)


def test_a_bad_load_is_refused():
    with pytest.raises(TraceError, match="positive"):
        size_cluster(TRACE, 0)


def test_user_like_factors_are_in_range_seeded_and_per_job():
    f1 = user_limit_factors(TRACE, seed=3)
    assert set(f1) == {"a", "b", "c"}
    assert all(1.2 <= f <= 5.0 for f in f1.values())
    assert user_limit_factors(TRACE, seed=3) == f1
    assert user_limit_factors(TRACE[1:], seed=3) == {k: f1[k] for k in ("b", "c")}  # no other job matters
    assert user_limit_factors(TRACE, seed=4) != f1
    with pytest.raises(TraceError):
        user_limit_factors(TRACE, 1, low=5, high=1.2)


def test_all_cases_cover_every_trace_load_and_limit_kind():
    cases = all_cases({"x": TRACE, "y": TRACE}, loads=(0.7, 0.9))
    assert [(c.trace, c.load, c.limit_kind) for c in cases] == [
        (t, load, kind) for t in ("x", "y") for load in (0.7, 0.9) for kind in ("2x", "user")
    ]
    assert all((c.limit_factors is None) == (c.limit_kind == "2x") for c in cases)
    with pytest.raises(TraceError, match="limit kind"):
        make_case("x", TRACE, 0.7, "3x")


def test_per_job_limit_factors_bound_the_reservation_and_kill_at_the_limit():
    # 1 node x 4 GPUs: a (limit 100 x 3) runs its 100 s in full, b (factor 1) runs 100..110,
    # and d's factor 0.5 gives it a limit of 20 s: killed at 110 + 20.
    trace = [job("a", 0, 100, 4), job("b", 1, 10, 4), job("d", 2, 40, 4)]
    r = simulate(trace, ClusterShape(1, 4), "easy", 1.0, limit_factors={"a": 3.0, "d": 0.5})
    got = {rec.job.id: rec for rec in r.records}
    assert (got["a"].start, got["a"].end) == (0, 100)
    assert (got["b"].start, got["b"].end) == (100, 110)
    assert (got["d"].start, got["d"].end, got["d"].killed) == (110, 130, True)
    assert not got["a"].killed and not got["b"].killed


def test_per_job_limit_factors_change_what_backfills():
    # 2 nodes x 4 GPUs. a (4 GPUs, 100 s) holds n000; b (8 GPUs) is reserved at a's limit.
    # c (4 GPUs, 50 s) fits on n001 now; it may backfill only if it ends by b's reserved start.
    trace = [job("a", 0, 100, 4), job("b", 1, 10, 8), job("c", 2, 50, 4)]
    # a's limit 100 x 1 = 100 -> b reserved for 100; c's limit 50 x 1.2 = 60: 2 + 60 <= 100, backfills.
    short = simulate(trace, ClusterShape(2, 4), "easy", 1.0, limit_factors={"c": 1.2})
    assert {r.job.id: r.start for r in short.records}["c"] == 2
    # c's limit 50 x 2 = 100: 2 + 100 > 100 and b needs n001 too: c waits until b ends at 110.
    long = simulate(trace, ClusterShape(2, 4), "easy", 1.0, limit_factors={"c": 2.0})
    assert {r.job.id: r.start for r in long.records}["c"] == 110


def test_a_bad_per_job_factor_is_refused():
    with pytest.raises(TraceError, match="positive"):
        simulate(TRACE, ClusterShape(1, 8), "easy", 2.0, limit_factors={"a": 0.0})
