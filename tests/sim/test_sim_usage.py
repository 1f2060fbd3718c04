"""`argus simulate`'s GPU-hours per user: the GPU-hour ledger's `report` over the replay's
allocations, adding up to the GPU-seconds the replay ran (sum of GPUs x run time)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from argus.client.cli import app
from argus.domain.usage import report
from argus.sim import ClusterShape, TraceJob, simulate
from argus.sim.usage import allocations, per_user, rows_json

TRACE = "job_id,submission_time,duration,num_gpu,user\na,0,100,1,ann\nb,10,50,8,ben\nc,20,30,1,ann\nd,30,200,1,ben\n"


def _jobs(seed: int, n: int) -> list[TraceJob]:
    rng = random.Random(seed)
    return [
        TraceJob(
            f"j{i}", rng.uniform(0, 5000), rng.uniform(1, 2000), rng.choice([1, 2, 4, 8, 12]), f"u{rng.randrange(5)}"
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_per_user_figures_are_the_ledger_report_and_add_up_to_gpus_times_run(policy):
    result = simulate(_jobs(13, 200), ClusterShape(4, 8), policy, time_limit_factor=1.5)
    rows = per_user(result.records)
    lo, hi = min(r.start for r in result.records), max(r.end for r in result.records)
    assert rows == report(allocations(result.records), lo, hi + 1, hi, "user")
    ran = sum(sum(r.gpus_by_node.values()) * r.run for r in result.records)
    assert sum(r.gpu_seconds for r in rows) == pytest.approx(ran, abs=1e-6)
    for row in rows:
        mine = [r for r in result.records if r.job.user == row.key]
        assert row.gpu_seconds == pytest.approx(sum(sum(r.gpus_by_node.values()) * r.run for r in mine))
        assert row.tasks == row.attempts == len(mine)
        assert row.wait_s == pytest.approx(sum(r.wait for r in mine) / len(mine))
        assert row.run_s == pytest.approx(sum(r.run for r in mine))
    # a job of 12 GPUs on nodes of 8 holds two whole nodes: 16 GPUs are counted
    big = next(r for r in result.records if r.job.num_gpu == 12)
    assert allocations([big])[0].gpus == 16.0


def test_cli_prints_gpu_hours_per_user_in_the_table_and_the_json(tmp_path: Path):
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    args = ["simulate", "--trace", str(trace), "--nodes", "2x4", "--policy", "fifo", "--time-limit-factor", "1"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    # fifo (see test_simulator): a 0..100 (1 GPU), b 100..150 (8), c 150..180 (1), d 150..350 (1)
    assert data["gpu_hours_by_user"] == [
        {
            "user": "ann",
            "gpu_hours": round(130 / 3600, 6),
            "gpu_seconds": 130.0,
            "jobs": 2,
            "wait_s": 65.0,
            "run_s": 130.0,
        },
        {
            "user": "ben",
            "gpu_hours": round(600 / 3600, 6),
            "gpu_seconds": 600.0,
            "jobs": 2,
            "wait_s": 105.0,
            "run_s": 250.0,
        },
    ]
    result = simulate([TraceJob("a", 0, 100, 1, "ann")], ClusterShape(1, 1), "fifo")
    assert rows_json(per_user(result.records))[0]["gpu_seconds"] == 100.0
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "GPU-hours per user" in table.stdout and "ann" in table.stdout and "0.17" in table.stdout
