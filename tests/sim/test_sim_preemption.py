"""Preemption in the trace simulator: hand-worked replays (victim choice, lost work, end times
after the requeue, the min-run rule) and invariants over a random trace, with it on and off.

Checkpoints every 600 s of an attempt; time limits 2 x duration (factor 2, the default), so no
job here is killed. Placement: best fit, the fullest node that fits first, ties by node name.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from argus.client.cli import app
from argus.sim import ClusterShape, TraceJob, simulate
from argus.sim.preempt import NORMAL_PRIORITY, PreemptionModel

HIGH = 900


def job(id: str, t: float, dur: float, gpus: int, user: str = "alice") -> TraceJob:
    return TraceJob(id=id, submitted_at=t, duration_s=dur, num_gpu=gpus, user=user)


def model(high: tuple[str, ...], preempt: bool = True, min_run_s: float = 600.0) -> PreemptionModel:
    return PreemptionModel(
        high_fraction=0.0,
        checkpoint_every_s=600.0,
        min_run_s=min_run_s,
        preempt=preempt,
        priorities={j: HIGH for j in high},
    )


def by_id(result) -> dict:
    return {r.job.id: r for r in result.records}


# -- one node of 4 GPUs: high h preempts low l ---------------------------------------------
#   l: t=0,   3000 s, 4 GPUs, priority 500 -> starts 0; checkpoints at 600 (next would be 1200)
#   h: t=900, 1000 s, 4 GPUs, priority 900 -> blocked head at 900; l is stopped: it keeps its
#      600 s checkpoint and loses 4 GPUs x (900 - 600) = 1200 GPU-s; h starts at 900 (a second
#      pass at the same time), ends 1900; l resumes at 1900 with 3000 - 600 = 2400 s left, ends 4300.
#   l held GPUs 900 + 2400 = 3300 s; it waited 0 before its first start, 1000 s in all.
#   Without preemption (same priorities): h waits for l's end, 3000..4000.
TWO = [job("l", 0, 3000, 4), job("h", 900, 1000, 4, user="bob")]


def test_a_high_priority_job_preempts_a_low_one_with_its_lost_work_counted():
    r = simulate(TWO, ClusterShape(1, 4), "default", preemption=model(("h",)))
    rec = by_id(r)
    assert (rec["h"].start, rec["h"].end, rec["h"].preemptions) == (900, 1900, 0)
    assert (rec["l"].start, rec["l"].end, rec["l"].preemptions) == (0, 4300, 1)
    assert rec["l"].lost_gpu_s == 1200
    assert rec["l"].run == 3300 and rec["l"].wait == 0 and rec["l"].queued == 1000
    assert (rec["l"].priority, rec["h"].priority) == (NORMAL_PRIORITY, HIGH)
    m = r.metrics
    assert (m.preemptions, m.high_priority_jobs) == (1, 1)
    assert m.lost_gpu_hours == pytest.approx(1200 / 3600)
    assert (m.high_priority_avg_wait_s, m.others_avg_wait_s, m.avg_queued_s, m.others_avg_queued_s) == (0, 0, 500, 1000)
    assert m.utilization == pytest.approx(1.0)  # 4 GPUs busy from 0 to 4300, lost work included
    out = r.to_json()
    assert out["preemptions"] == 1 and out["preemption"]["checkpoint_every_s"] == 600.0


def test_without_preemption_the_same_priorities_make_the_head_wait():
    r = simulate(TWO, ClusterShape(1, 4), "default", preemption=model(("h",), preempt=False))
    rec = by_id(r)
    assert (rec["l"].start, rec["l"].end) == (0, 3000)
    assert (rec["h"].start, rec["h"].end) == (3000, 4000)
    assert (r.metrics.preemptions, r.metrics.lost_gpu_hours, r.metrics.high_priority_avg_wait_s) == (0, 0.0, 2100)


def test_a_job_killed_at_its_limit_after_a_requeue_counts_its_remaining_work():
    # Factor 0.5: l's limit is 1500 s per attempt, h's 500 s. h runs 900..1400 (killed); l,
    # preempted at 900 with 600 s saved, resumes at 1400 with 2400 s left and is killed at its
    # limit: 1400 + 1500 = 2900.
    r = simulate(TWO, ClusterShape(1, 4), "default", time_limit_factor=0.5, preemption=model(("h",)))
    rec = by_id(r)
    assert (rec["h"].end, rec["h"].killed) == (1400, True)
    assert (rec["l"].end, rec["l"].killed, rec["l"].preemptions, rec["l"].run) == (2900, True, 1, 900 + 1500)


# -- victim choice: two low jobs on two nodes of 4 GPUs, a 4-GPU high job -------------------
#   a: t=0,   4 GPUs on n000 -> checkpoint at 600
#   b: t=500, 4 GPUs on n001 -> checkpoint at 1100
#   h at 1000: a loses 4 x 400 = 1600, b (no checkpoint yet) 4 x 500 = 2000 -> a is stopped
#   h at 1150: a loses 4 x 550 = 2200, b 4 x 50 = 200                       -> b is stopped
@pytest.mark.parametrize(("arrives", "victim", "lost"), [(1000, "a", 1600), (1150, "b", 200)])
def test_the_victim_is_the_job_that_loses_least_work(arrives, victim, lost):
    jobs = [job("a", 0, 5000, 4), job("b", 500, 5000, 4), job("h", arrives, 100, 4, user="bob")]
    r = simulate(jobs, ClusterShape(2, 4), "default", preemption=model(("h",)))
    rec = by_id(r)
    assert {k: v.preemptions for k, v in rec.items()} == {"a": int(victim == "a"), "b": int(victim == "b"), "h": 0}
    assert rec[victim].lost_gpu_s == lost
    assert rec["h"].start == arrives
    assert r.metrics.preemptions == 1


# -- no thrash: l is preempted by h1 at 900 and resumes at 1000; h2 arrives at 1300 ----------
#   min run 700: l's attempt has run 300 s, so h2 waits; the replay passes again at 1000 + 700 =
#   1700, when l may be stopped: its checkpoint at 1600 kept (600 + 600 s saved), it loses
#   4 x 100 = 400 more; h2 runs 1700..1800; l resumes at 1800 with 8800 s left, ends 10600.
#   min run 200: h2 stops l again at 1300; l saved nothing since 1000 and loses 4 x 300 = 1200
#   more; it resumes at 1400 with 9400 s left and ends at 10800.
THRASH = [job("l", 0, 10000, 4), job("h1", 900, 100, 4, user="bob"), job("h2", 1300, 100, 4, user="bob")]


def test_a_job_preempted_before_is_not_stopped_again_before_its_min_run():
    r = simulate(THRASH, ClusterShape(1, 4), "default", preemption=model(("h1", "h2"), min_run_s=700))
    rec = by_id(r)
    assert (rec["h1"].start, rec["h2"].start, rec["h2"].end) == (900, 1700, 1800)
    assert (rec["l"].preemptions, rec["l"].lost_gpu_s, rec["l"].end) == (2, 1600, 10600)


def test_after_its_min_run_a_job_preempted_before_may_be_stopped_again():
    r = simulate(THRASH, ClusterShape(1, 4), "default", preemption=model(("h1", "h2"), min_run_s=200))
    rec = by_id(r)
    assert (rec["l"].preemptions, rec["l"].lost_gpu_s, rec["l"].end) == (2, 2400, 10800)
    assert (rec["h2"].start, rec["h2"].end) == (1300, 1400)
    assert rec["l"].run == 900 + 300 + 9400


# -- a random trace: off is the replay without a model; on keeps the books -----------------
def random_trace(n: int = 300, seed: int = 3) -> list[TraceJob]:
    rng = random.Random(seed)
    return [
        job(f"j{i:03d}", rng.uniform(0, 40000), rng.uniform(60, 8000), rng.choice((1, 1, 1, 2, 4, 8, 16)), f"u{i % 5}")
        for i in range(n)
    ]


def plain(records) -> list:
    return [(r.job.id, r.start, r.end, r.gpus_by_node, r.killed) for r in records]


OLD_METRICS = [  # every Metrics field before preemption's
    "jobs",
    "finished",
    "rejected",
    "killed",
    "avg_wait_s",
    "p50_wait_s",
    "p95_wait_s",
    "p99_wait_s",
    "max_wait_s",
    "avg_jct_s",
    "avg_bsld",
    "utilization",
    "makespan_s",
    "largest_jobs_gpus",
    "largest_jobs_max_wait_s",
    "jct_lower_bound_s",
    "makespan_lower_bound_s",
]


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_a_model_that_neither_raises_priorities_nor_preempts_changes_nothing(policy):
    jobs, shape = random_trace(), ClusterShape(4, 8)
    base = simulate(jobs, shape, policy)
    off = simulate(jobs, shape, policy, preemption=PreemptionModel(high_fraction=0.0, preempt=False))
    on = simulate(jobs, shape, policy, preemption=PreemptionModel(high_fraction=0.0, preempt=True))
    assert plain(off.records) == plain(base.records) == plain(on.records)  # nothing has a lower priority
    for name in OLD_METRICS:
        assert getattr(off.metrics, name) == getattr(base.metrics, name), name
    assert base.metrics.preemptions == 0
    assert base.metrics.others_avg_wait_s == pytest.approx(base.metrics.avg_wait_s)
    assert "preemption" not in base.to_json()


def test_preemption_on_a_random_trace_keeps_the_books():
    jobs, shape = random_trace(), ClusterShape(4, 8)
    pm = PreemptionModel(high_fraction=0.2, checkpoint_every_s=600.0, min_run_s=600.0, seed=5)
    on = simulate(jobs, shape, "default", preemption=pm)
    off = simulate(jobs, shape, "default", preemption=PreemptionModel(**{**vars(pm), "preempt": False}))
    assert len(on.records) == len(off.records) == len(jobs)
    assert on.metrics.preemptions > 0 and off.metrics.preemptions == 0
    assert on.metrics.high_priority_avg_wait_s < off.metrics.high_priority_avg_wait_s
    for r in on.records:
        gpus = sum(r.gpus_by_node.values())
        assert r.run - r.lost_gpu_s / gpus == pytest.approx(r.job.duration_s)  # work done: its duration
        if r.preemptions == 0:
            assert (r.run, r.lost_gpu_s) == (pytest.approx(r.end - r.start), 0.0)
        if r.priority == HIGH:
            assert r.preemptions == 0
    assert on.metrics.lost_gpu_hours == pytest.approx(sum(r.lost_gpu_s for r in on.records) / 3600)


# -- argus simulate --preemption -----------------------------------------------------------
def write_trace(path: Path, jobs: list[TraceJob]) -> Path:
    lines = ["job_id,submission_time,duration,num_gpu,user"]
    lines += [f"{j.id},{j.submitted_at},{j.duration_s},{j.num_gpu},{j.user}" for j in jobs]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_cli_replays_with_preemption_and_reports_its_figures(tmp_path):
    trace = write_trace(tmp_path / "t.csv", random_trace(120))
    args = ["simulate", "--trace", str(trace), "--nodes", "2x8", "--preemption", "--high-fraction", "0.3"]
    res = CliRunner().invoke(app, [*args, "--checkpoint-every", "600", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["preemption"]["high_fraction"] == 0.3 and out["preemption"]["checkpoint_every_s"] == 600
    assert out["high_priority_jobs"] > 0 and out["preemptions"] > 0 and out["lost_gpu_hours"] > 0
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "preemptions / GPU-hours lost" in table.output


def test_the_cli_rejects_a_share_of_high_priority_jobs_outside_0_1(tmp_path):
    trace = write_trace(tmp_path / "t.csv", random_trace(10))
    res = CliRunner().invoke(
        app, ["simulate", "--trace", str(trace), "--nodes", "2x8", "--preemption", "--high-fraction", "2"]
    )
    assert res.exit_code == 2 and "high_fraction" in res.output
