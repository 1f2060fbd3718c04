"""`make demo`: the seeds' v1 / v1.1 on a local Ray cluster, end to end.

Brings up a head (0 CPU, 0 GPU) and 2 workers x 4 GPUs, places two snapshots of the verl
stand-in with different markers under `<shared_root>/common/code/verl/`, submits a PPO, a GRPO
and an SFT run through the job tool (Ray's Jobs SDK), follows them to the end and prints a
table. The cluster is left running; `make down` stops it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ray.util.state import list_nodes
from rich.console import Console
from rich.table import Table

from argus.cluster import local
from argus.cluster.errors import ClusterError
from argus.cluster.jobs import RayJobTool
from argus.spec.config import load_ray_config
from argus.spec.render import prepare_submission
from argus.testing.sandbox import prepare, task_yaml

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
RUNS = [("ppo", "sim-a"), ("grpo", "sim-b"), ("sft", "sim-a")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared-root", required=True)
    ap.add_argument("--port", type=int, default=local.DEFAULT_GCS_PORT)
    ap.add_argument("--dashboard-port", type=int, default=local.DEFAULT_DASHBOARD_PORT)
    args = ap.parse_args()

    console.rule("[bold]Argus demo: verl PPO, GRPO and SFT on a local Ray cluster")
    t0 = time.monotonic()
    try:
        state, started = local.up(args.shared_root, workers=2, gpus_per_worker=4, cpus_per_worker=4,
                                  gcs_port=args.port, dashboard_port=args.dashboard_port)
    except ClusterError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 1
    console.print(f"cluster {'started' if started else 'already running'} in {time.monotonic() - t0:.1f}s: "
                  f"head {state.gcs_address} (0 CPU, 0 GPU), 2 workers x 4 GPUs, dashboard {state.dashboard_url}")
    sandbox = prepare(state.shared_root)
    console.print(f"code snapshots: {', '.join(str(p) for p in sandbox.code.values())}")

    cfg, _ = load_ray_config(local.config_file(state.shared_root))
    tool = RayJobTool(cfg)
    spec_dir = Path(state.shared_root) / "common" / "demo-specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    submitted = []
    for workload, marker in RUNS:
        text = task_yaml(sandbox, workload, marker, total_training_steps=6,
                         env_vars={"VERL_SIM_STEP_SECONDS": "0.5"})
        (spec_dir / f"{workload}.yaml").write_text(text)
        _, rendered = prepare_submission(cfg, text, datetime.now(timezone.utc), workload)
        sid = tool.submit(rendered, text)
        submitted.append((workload, marker, sid, rendered.job_root))
        console.print(f"submitted {workload:<4} on {marker}: {sid}")

    console.print("following the runs to the end ...")
    views = {}
    deadline = time.monotonic() + 300
    while len(views) < len(submitted) and time.monotonic() < deadline:
        for _, _, sid, _ in submitted:
            if sid not in views:
                v = tool.status(sid)
                if v.status in ("SUCCEEDED", "FAILED", "STOPPED"):
                    views[sid] = v
                    console.print(f"  {sid}: {v.status}")
        time.sleep(1)

    names = {n.node_id: n for n in list_nodes(address=cfg.address, detail=True)}
    ip_to_name = {n.ip: n.name for n in state.nodes}
    table = Table("task", "workload", "driver node", "state", "checkpoints (global_step_N)", "marker",
                  title="Argus demo")
    table.columns[0].no_wrap = True
    ok = True
    for workload, marker, sid, root in submitted:
        v = views.get(sid) or tool.status(sid)
        node = names.get(v.driver_node_id)
        where = f"{ip_to_name.get(node.node_ip, node.node_ip)}" if node else "-"
        ckpts = sorted(p.name for p in Path(str(root), "checkpoints").glob("global_step_*"))
        seen = re.findall(r"^MARKER (\S+)", tool.logs(sid), re.M)
        state_txt = v.status if not v.diagnosis else f"{v.status} ({v.diagnosis.cause.value})"
        ok &= v.status == "SUCCEEDED" and seen == [marker]
        table.add_row(sid, workload, where, state_txt,
                      ", ".join(c.removeprefix("global_step_") for c in ckpts) or "-", ",".join(seen) or "-")
    console.print(table)
    console.print(f"job directories: {Path(state.shared_root) / 'jobs'}")
    console.print("try it yourself:")
    console.print(f"  .venv/bin/argus run --config {local.config_file(state.shared_root)} \\\n"
                  f"      --jobspec {spec_dir / 'ppo.yaml'} --action submit", soft_wrap=True)
    console.print("the cluster keeps running; stop it with:  [bold]make down[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
