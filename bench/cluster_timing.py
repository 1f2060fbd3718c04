"""How long `argus cluster up` and submit -> RUNNING take on this machine.

Prints numbers, asserts nothing (speed is recorded in docs/benchmarks.md, not tested). Uses its
own shared root and ports, so a demo cluster can keep running beside it.

    .venv/bin/python bench/cluster_timing.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from argus.cluster import local
from argus.cluster.jobs import RayJobTool
from argus.spec.config import load_ray_config
from argus.spec.render import prepare_submission
from argus.testing.sandbox import prepare, task_yaml


def _free_port(start: int) -> int:
    while not (local.port_free(start) and local.port_free(start + 1900)):
        start += 1
    return start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="argus-bench-"))
    gcs = _free_port(6450)
    up_s, cli_up_s, running_s, pending_s = [], [], [], []
    try:
        for i in range(args.repeats):
            t0 = time.monotonic()
            local.up(
                str(root),
                workers=2,
                gpus_per_worker=4,
                cpus_per_worker=4,
                gcs_port=gcs,
                dashboard_port=gcs + 1900,
            )
            up_s.append(time.monotonic() - t0)
            t0 = time.monotonic()  # the idempotent second `up`, as a user types it
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "argus.client.cli",
                    "cluster",
                    "up",
                    "--shared-root",
                    str(root),
                    "--port",
                    str(gcs),
                    "--dashboard-port",
                    str(gcs + 1900),
                ],
                check=True,
                capture_output=True,
            )
            cli_up_s.append(time.monotonic() - t0)
            sandbox = prepare(root)
            cfg, _ = load_ray_config(local.config_file(root))
            tool = RayJobTool(cfg)
            for j in range(3):
                text = task_yaml(sandbox, "ppo", total_training_steps=1)
                _, rendered = prepare_submission(cfg, text, datetime.now(UTC), "bench")
                t0 = time.monotonic()
                sid = tool.submit(rendered, text)
                t_sub = time.monotonic()
                while tool.status(sid, diagnose=False).status not in ("RUNNING", "SUCCEEDED", "FAILED"):
                    time.sleep(0.05)
                running_s.append(time.monotonic() - t0)
                pending_s.append(t_sub - t0)
                while tool.status(sid, diagnose=False).status == "RUNNING":
                    time.sleep(0.2)
            local.down(str(root))
    finally:
        local.down(str(root))

    def row(name: str, xs: list[float]) -> str:
        return f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |"

    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}")
    print("| what | n | median s | min s | max s |")
    print("|---|---|---|---|---|")
    print(row("`cluster up` (head + 2 workers, cold)", up_s))
    print(row("`argus cluster up` again (already running)", cli_up_s))
    print(row("submit() call (artifacts + submit_job)", pending_s))
    print(row("submit -> RUNNING", running_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
