"""The trace simulator: hand-made traces with hand-worked answers, the CLI, and invariants on
the first rows of a real ITP trace.

Placement rule used in the arithmetic below (argus.domain.admission.Capacity.fit): best fit,
the fullest node that still fits first, ties broken by node name (n000 before n001).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from argus.client.cli import app
from argus.sim import ClusterShape, FairShare, TraceError, TraceJob, load_trace, simulate
from argus.sim.metrics import percentile

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
REQUIRED_JSON_KEYS = {
    "avg_wait_s",
    "p50_wait_s",
    "p95_wait_s",
    "p99_wait_s",
    "avg_jct_s",
    "avg_bsld",
    "utilization",
    "makespan_s",
    "jobs",
    "policy",
    "nodes",
    "largest_jobs_max_wait_s",
    "jct_lower_bound_s",
    "makespan_lower_bound_s",
    "rejected",
    "sim_seconds",
}


def job(id: str, t: float, dur: float, gpus: int, user: str = "alice") -> TraceJob:
    return TraceJob(id=id, submitted_at=t, duration_s=dur, num_gpu=gpus, user=user)


def by_id(result) -> dict:
    return {r.job.id: r for r in result.records}


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- FIFO blocking and EASY backfill on 2 nodes x 4 GPUs ------------------------------------
# Factor 1: time limit = duration, so the reservation is exact.
#   a: t=0,  100 s, 1 GPU   -> starts at 0 on n000 (tie -> n000), ends 100
#   b: t=10,  50 s, 8 GPUs  -> gang 2 nodes x 4; n000 has 3 free, so it waits for a: 100..150
#   c: t=20,  30 s, 1 GPU   -> fifo: behind b, starts when b ends: 150..180
#                              easy: b is reserved for t=100 (a ends by 100); 20 + 30 = 50 <= 100,
#                              so c backfills now on n000 (fullest that fits): 20..50
#   d: t=30, 200 s, 1 GPU   -> fits now, but 30 + 200 = 230 > 100 and the reservation leaves no
#                              spare GPU at t=100 (b needs all 8), so it waits in easy as well;
#                              b starts at 100 and d starts when b ends: 150..350
TRACE_BLOCK = [job("a", 0, 100, 1), job("b", 10, 50, 8), job("c", 20, 30, 1), job("d", 30, 200, 1)]


def test_fifo_blocks_behind_the_large_job():
    r = simulate(TRACE_BLOCK, ClusterShape(2, 4), "fifo", time_limit_factor=1.0)
    got = {i: (rec.start, rec.end) for i, rec in by_id(r).items()}
    assert got == {"a": (0, 100), "b": (100, 150), "c": (150, 180), "d": (150, 350)}
    assert sorted(by_id(r)["b"].gpus_by_node.items()) == [("n000", 4.0), ("n001", 4.0)]
    m = r.metrics
    # waits 0, 90, 130, 120 -> 340 / 4; JCTs 100, 140, 160, 320 -> 720 / 4
    assert m.avg_wait_s == pytest.approx(85.0)
    assert m.avg_jct_s == pytest.approx(180.0)
    # the largest jobs (8 GPUs) are just b, which waited 90 s
    assert (m.largest_jobs_gpus, m.largest_jobs_max_wait_s) == (8, 90.0)
    # sorted waits 0, 90, 120, 130: p50 at rank 1.5 -> (90 + 120) / 2
    assert m.p50_wait_s == pytest.approx(105.0)


@pytest.mark.parametrize("policy", ["easy", "default"])
def test_easy_backfills_only_what_ends_before_the_reservation(policy):
    r = simulate(TRACE_BLOCK, ClusterShape(2, 4), policy, time_limit_factor=1.0)
    got = {i: (rec.start, rec.end) for i, rec in by_id(r).items()}
    assert got == {"a": (0, 100), "b": (100, 150), "c": (20, 50), "d": (150, 350)}
    assert by_id(r)["c"].gpus_by_node == {"n000": 1.0}
    # waits 0, 90, 0, 120 -> 210 / 4; JCTs 100, 140, 30, 320 -> 590 / 4
    assert r.metrics.avg_wait_s == pytest.approx(52.5)
    assert r.metrics.avg_jct_s == pytest.approx(147.5)
    assert r.metrics.largest_jobs_max_wait_s == 90.0


# -- time limits ----------------------------------------------------------------------------
def test_a_job_longer_than_its_limit_is_killed_at_the_limit():
    # 1 node x 4 GPUs, factor 0.5, fifo (order: submission time, then id):
    #   x: 100 s, 2 GPUs -> limit 50: 0..50, killed
    #   y:  40 s, 2 GPUs -> limit 20: 0..20, killed
    #   z:  10 s, 4 GPUs -> limit 5: waits for x (the 4 GPUs are free at 50): 50..55, killed
    #   w:  10 s, 1 GPU, submitted at 1 -> limit 5, behind z in fifo: 55..60, killed
    trace = [job("x", 0, 100, 2), job("y", 0, 40, 2), job("z", 0, 10, 4), job("w", 1, 10, 1)]
    r = simulate(trace, ClusterShape(1, 4), "fifo", time_limit_factor=0.5)
    got = {i: (rec.start, rec.end, rec.killed) for i, rec in by_id(r).items()}
    assert got == {"x": (0, 50, True), "y": (0, 20, True), "z": (50, 55, True), "w": (55, 60, True)}
    assert r.metrics.killed == 4
    assert r.metrics.makespan_s == 60.0
    # lower bound of JCT: mean run time (50 + 20 + 5 + 5) / 4
    assert r.metrics.jct_lower_bound_s == pytest.approx(20.0)


def test_a_job_within_its_limit_runs_its_duration():
    r = simulate([job("x", 0, 100, 1)], ClusterShape(1, 1), "easy", time_limit_factor=2.0)
    rec = r.records[0]
    assert (rec.start, rec.end, rec.killed) == (0, 100, False)


# -- utilisation, makespan, bounded slowdown -------------------------------------------------
def test_utilisation_and_makespan_on_a_trivial_trace():
    # 1 node x 4 GPUs:
    #   j1: t=100, 100 s, 2 GPUs -> 100..200
    #   j2: t=150, 150 s, 4 GPUs -> only 2 free until j1 ends: 200..350
    # makespan = 350 - 100 (first submission) = 250
    # GPU-seconds = 2*100 + 4*150 = 800; utilisation = 800 / (4 * 250) = 0.8
    # lower bounds: makespan >= 800 / 4 = 200; JCT >= (100 + 150) / 2 = 125
    # waits 0, 50 -> 25; JCTs 100, 200 -> 150
    r = simulate([job("j1", 100, 100, 2), job("j2", 150, 150, 4)], ClusterShape(1, 4), "default")
    m = r.metrics
    assert m.makespan_s == 250.0
    assert m.utilization == pytest.approx(0.8)
    assert m.makespan_lower_bound_s == pytest.approx(200.0)
    assert m.jct_lower_bound_s == pytest.approx(125.0)
    assert (m.avg_wait_s, m.avg_jct_s) == (25.0, 150.0)
    assert (m.jobs, m.finished, m.rejected) == (2, 2, 0)


def test_bounded_slowdown_uses_a_10_second_floor():
    # 1 node x 1 GPU, fifo:
    #   a: t=0, 100 s -> 0..100,   bsld max(1, (0 + 100) / max(100, 10)) = 1
    #   b: t=0,   5 s -> 100..105, bsld max(1, (100 + 5) / max(5, 10)) = 10.5
    # average (1 + 10.5) / 2 = 5.75 (without the floor, b alone would be 105 / 5 = 21)
    r = simulate([job("a", 0, 100, 1), job("b", 0, 5, 1)], ClusterShape(1, 1), "fifo")
    assert r.metrics.avg_bsld == pytest.approx(5.75)


def test_percentile_interpolates_between_ranks():
    values = [0.0, 10.0, 20.0, 30.0]
    assert percentile(values, 50) == pytest.approx(15.0)  # rank 1.5
    assert percentile(values, 99) == pytest.approx(29.7)  # rank 2.97: 20 + 0.97 * 10
    assert percentile([], 50) == 0.0


# -- shapes, rejections, fair share ----------------------------------------------------------
def test_large_jobs_take_whole_nodes_and_impossible_jobs_are_rejected():
    # 2 nodes x 4: 6 GPUs -> ceil(6/4) = 2 whole nodes of 4; 9 GPUs -> 3 nodes > 2: rejected
    trace = [job("big", 0, 10, 6), job("huge", 0, 10, 9), job("small", 5, 10, 3)]
    r = simulate(trace, ClusterShape(2, 4), "fifo")
    assert [j.id for j in r.rejected] == ["huge"]
    recs = by_id(r)
    assert recs["big"].gpus_by_node == {"n000": 4.0, "n001": 4.0}
    assert (recs["small"].start, recs["small"].end) == (10, 20)
    assert (r.metrics.jobs, r.metrics.finished, r.metrics.rejected) == (3, 2, 1)
    # utilisation counts the GPUs held: (8*10 + 3*10) / (8 * 20)
    assert r.metrics.utilization == pytest.approx(110 / 160)


def test_default_orders_by_decayed_usage():
    # 1 node x 1 GPU. alice runs a1 (0..1000); a2 (alice, t=20, listed first) and b1 (bob,
    # t=20) arrive in the same pass. alice has used ~0.006 GPU-hours by then and bob none, so
    # default reserves b1 and starts it first at 1000; fifo keeps the trace's order.
    trace = [job("a1", 0, 1000, 1, "alice"), job("a2", 20, 10, 1, "alice"), job("b1", 20, 10, 1, "bob")]
    fair = by_id(simulate(trace, ClusterShape(1, 1), "default"))
    assert (fair["b1"].start, fair["a2"].start) == (1000, 1010)
    fifo = by_id(simulate(trace, ClusterShape(1, 1), "fifo"))
    assert (fifo["a2"].start, fifo["b1"].start) == (1000, 1010)


def test_fair_share_usage_decays_with_the_half_life():
    h = 7 * 86400.0
    fs = FairShare(h)
    fs.start("a1", "alice", 1, 0.0)
    # integral of 2^(-(h - s)/h) over [0, h] = (1 - 1/2) * h / ln 2 seconds, in hours
    once = 0.5 * h / math.log(2) / 3600
    assert fs.hours(h)["alice"] == pytest.approx(once)
    fs.end("a1", h)
    assert fs.hours(2 * h)["alice"] == pytest.approx(once / 2)  # nothing held: one more half-life halves it
    assert fs.hours(h * 10.5)["alice"] == pytest.approx(once * 2**-9.5)
    assert fs.hours(h * 11.5) == {}  # ended more than 10 half-lives ago: not counted
    short = FairShare(1e12)
    short.start("b1", "bob", 2, 0.0)
    assert short.hours(3600)["bob"] == pytest.approx(2.0)  # no visible decay: 2 GPUs for an hour


# -- loading ----------------------------------------------------------------------------------
def test_load_trace_sorts_and_derives_stable_users(tmp_path):
    p = write_csv(tmp_path / "t.csv", "job_id,submission_time,duration,num_gpu\nb,20,5,1\na,10,5,2\n")
    t1, t2 = load_trace(p, users=4), load_trace(p, users=4)
    assert [j.id for j in t1.jobs] == ["a", "b"]
    assert t1.synthetic_users == 4
    assert [j.user for j in t1.jobs] == [j.user for j in t2.jobs]
    assert all(j.user in {"u00", "u01", "u02", "u03"} for j in t1.jobs)
    q = write_csv(tmp_path / "u.csv", "job_id,user,submission_time,duration,num_gpu\na,carol,0,5,1\n")
    assert load_trace(q).jobs[0].user == "carol" and load_trace(q).synthetic_users is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("job_id,submission_time,num_gpu\na,1,2\n", "line 1: missing column(s) duration"),
        ("job_id,submission_time,duration,num_gpu\na,1,5,2\nb,x,5,2\n", "line 3, column submission_time"),
        ("job_id,submission_time,duration,num_gpu\na,1,-5,2\n", "line 2, column duration"),
        ("job_id,submission_time,duration,num_gpu\na,1,5,1.5\n", "line 2, column num_gpu"),
        ("job_id,submission_time,duration,num_gpu\na,1,5,0\n", "line 2, column num_gpu"),
        ("job_id,submission_time,duration,num_gpu\na,1,5\n", "line 2: 3 field(s)"),
        ("job_id,submission_time,duration,num_gpu\na,1,5,1\na,2,5,1\n", "line 3, column job_id"),
        ("", "empty file"),
    ],
)
def test_bad_traces_name_the_line_and_column(tmp_path, text, message):
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_trace(write_csv(tmp_path / "bad.csv", text))


@pytest.mark.parametrize("text", ["16", "0x8", "8x0", "x8", "16x8x2", "ax8"])
def test_bad_node_shapes(text):
    with pytest.raises(TraceError, match="--nodes"):
        ClusterShape.parse(text)


def test_node_shape_names_and_gangs():
    shape = ClusterShape.parse("16x8")
    assert (shape.nodes, shape.gpus_per_node, shape.total_gpus) == (16, 8, 128)
    assert shape.node_names()[:2] == ["n000", "n001"] and shape.node_names()[-1] == "n015"
    assert [shape.gang(g) for g in (1, 8, 16, 64, 129)] == [(1, 1), (1, 8), (2, 8), (8, 8), None]


# -- the CLI ----------------------------------------------------------------------------------
TINY = "job_id,submission_time,duration,num_gpu\na,0,100,1\nb,10,50,8\nc,20,30,1\nd,30,200,1\ne,0,10,64\n"


def test_cli_json_prints_one_object_with_the_metrics(tmp_path):
    p = write_csv(tmp_path / "t.csv", TINY)
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(p),
            "--nodes",
            "2x4",
            "--policy",
            "easy",
            "--time-limit-factor",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) >= REQUIRED_JSON_KEYS
    assert (data["policy"], data["nodes"], data["jobs"], data["rejected"]) == ("easy", "2x4", 5, 1)
    assert data["avg_wait_s"] == pytest.approx(52.5)  # as in the easy test above; e is rejected
    assert data["synthetic_users"] is True


def test_cli_per_job_factors_are_seeded(tmp_path):
    p = write_csv(tmp_path / "t.csv", TINY)

    def run(*extra: str) -> dict:
        args = ["simulate", "--trace", str(p), "--nodes", "2x4", "--policy", "easy", "--json", *extra]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        return {k: v for k, v in data.items() if k not in ("sim_seconds", "plan_seconds")}

    a = run("--time-limit-factor", "1.2:5", "--seed", "7")
    assert (a["time_limit_factor"], a["seed"]) == ("1.2:5", 7)
    assert run("--time-limit-factor", "1.2:5", "--seed", "7") == a
    assert run("--time-limit-factor", "3")["time_limit_factor"] == 3.0
    res = CliRunner().invoke(app, ["simulate", "--trace", str(p), "--nodes", "2x4", "--time-limit-factor", "1.2:5"])
    assert res.exit_code == 0 and "U[1.2, 5] (seed 1)" in res.stdout


def test_cli_table(tmp_path):
    p = write_csv(tmp_path / "t.csv", TINY)
    res = CliRunner().invoke(app, ["simulate", "--trace", str(p), "--nodes", "2x4"])
    assert res.exit_code == 0, res.output
    assert "avg wait" in res.stdout and "GPU utilisation" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trace", "missing.csv", "--nodes", "2x4"], "no such file"),
        (["--nodes", "16"], "--nodes '16'"),
        (["--nodes", "0x8"], "--nodes '0x8'"),
        (["--nodes", "2x4", "--policy", "sjf"], "--policy 'sjf'"),
        (["--nodes", "2x4", "--time-limit-factor", "0"], "--time-limit-factor"),
        (["--nodes", "2x4", "--time-limit-factor", "5:1.2"], "LOW <= HIGH"),
        (["--nodes", "2x4", "--time-limit-factor", "1:2:3"], "LOW:HIGH"),
        (["--nodes", "2x4", "--time-limit-factor", "two"], "--time-limit-factor 'two'"),
        (["--nodes", "2x4", "--users", "0"], "--users"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, args, message):
    p = write_csv(tmp_path / "t.csv", TINY)
    if "--trace" not in args:
        args = ["--trace", str(p), *args]
    res = CliRunner().invoke(app, ["simulate", *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr


def test_cli_bad_csv_exits_2_naming_the_line(tmp_path):
    p = write_csv(tmp_path / "t.csv", "job_id,submission_time,duration,num_gpu\na,0,100,1\nb,10,ten,8\n")
    res = CliRunner().invoke(app, ["simulate", "--trace", str(p), "--nodes", "2x4"])
    assert res.exit_code == 2
    assert "line 3, column duration" in res.stderr


# -- a real trace -----------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_first_rows_of_a_real_trace_keep_the_invariants(policy):
    path = TRACES / "cluster02.csv"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    trace = load_trace(path, limit=300)
    shape = ClusterShape.parse("4x8")  # 32 GPUs: the 64-GPU jobs are rejected, 32-GPU jobs take it all
    factor = 2.0
    r = simulate(trace.jobs, shape, policy, factor)
    assert {j.id for j in r.rejected} == {j.id for j in trace.jobs if j.num_gpu > 32}
    assert len(r.rejected) > 0
    # every job that fits finishes, exactly once
    assert sorted(x.job.id for x in r.records) == sorted(j.id for j in trace.jobs if j.num_gpu <= 32)
    events = []
    for x in r.records:
        assert x.start >= x.job.submitted_at
        assert x.run == pytest.approx(min(x.job.duration_s, x.job.duration_s * factor))
        nnodes, per_node = shape.gang(x.job.num_gpu)
        assert len(x.gpus_by_node) == nnodes and set(x.gpus_by_node.values()) == {per_node}
        events += [(x.start, 1, x.gpus_by_node), (x.end, 0, x.gpus_by_node)]
    # replay starts and ends (ends first at equal times): no node ever holds more than 8 GPUs
    used = {n: 0.0 for n in shape.node_names()}
    for _, kind, placement in sorted(events, key=lambda e: (e[0], e[1])):
        for node, g in placement.items():
            used[node] += g if kind else -g
            assert 0 <= used[node] <= shape.gpus_per_node
    assert all(v == 0 for v in used.values())
    if policy == "fifo":  # strict submission order: start times never go backwards
        starts = [x.start for x in sorted(r.records, key=lambda x: (x.job.submitted_at, x.job.id))]
        assert starts == sorted(starts)
    m = r.metrics
    assert 0 < m.utilization <= 1
    assert m.makespan_s >= m.makespan_lower_bound_s
    assert m.avg_jct_s >= m.jct_lower_bound_s


def test_a_reservation_is_kept_until_its_job_starts():
    # 1 node x 1 GPU. a1 (alice) runs 0..1000; a2 (alice) arrives at 10 and is reserved as the
    # only waiting job; b1 (bob, no usage) arrives at 20 and would come first by fair share,
    # but the reservation stays with a2: a2 starts at 1000, b1 at 1010.
    trace = [job("a1", 0, 1000, 1, "alice"), job("a2", 10, 10, 1, "alice"), job("b1", 20, 10, 1, "bob")]
    recs = by_id(simulate(trace, ClusterShape(1, 1), "default"))
    assert (recs["a2"].start, recs["b1"].start) == (1000, 1010)
