"""`make demo`: Argus end to end through its service.

`argus up` brings up a local Ray cluster (head with 0 CPU and 0 GPU, 2 workers x 4 GPUs) and
the Argus server in the background. The admin creates the user `demo` and issues a token; as
that user the demo pushes a code snapshot (the CPU stand-in for verl with a reward function of
its own, `argus code push`) and submits a PPO, a GRPO and an SFT task through the REST API: PPO
and SFT on shared code under `common/`, GRPO on the pushed snapshot (`code:`) with its reward,
checked on a worker node before the task is accepted. It follows them to the end and prints a
table with each run's last `reward/mean`, then the user's GPU-hours per task (`argus usage`).
The server and the cluster keep running; `make down` (or `argus down`) stops both.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.cluster import local
from argus.cluster.errors import ClusterError
from argus.service import launcher
from argus.testing.sandbox import prepare, task_yaml

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
RUNS = [("ppo", "sim-a"), ("grpo", "sim-b"), ("sft", "sim-a")]
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}
REWARD_MEAN = re.compile(r"reward/mean:([0-9.eE+-]+)")
# The demo user's reward: 1 when the response's last number is the ground truth, 0.2 for giving
# a number at all (a format reward), else 0 (verl's signature). The stand-in's default scorer
# gives no format reward, so the table shows this function ran in the job.
REWARD_PY = """\
\"\"\"The demo's reward function (verl's signature).\"\"\"
import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    numbers = re.findall(r"-?[0-9]+", solution_str)
    if not numbers:
        return 0.0
    return 1.0 if numbers[-1] == str(ground_truth).strip() else 0.2
"""


def push_project(client: ArgusClient, sandbox_code: Path) -> dict:
    """The demo user's project (the stand-in as training code, plus a reward) in a working
    directory of their own, pushed as a snapshot."""
    with tempfile.TemporaryDirectory(prefix="argus-demo-") as work:
        project = Path(work) / "grpo-project"
        shutil.copytree(sandbox_code, project)
        (project / "reward.py").write_text(REWARD_PY)
        return client.push_code(str(project), name="demo-grpo")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared-root", required=True)
    ap.add_argument("--port", type=int, default=8080, help="the Argus server's port")
    ap.add_argument("--gcs-port", type=int, default=local.DEFAULT_GCS_PORT)
    ap.add_argument("--dashboard-port", type=int, default=local.DEFAULT_DASHBOARD_PORT)
    args = ap.parse_args()
    root = str(Path(args.shared_root).resolve())

    console.rule("[bold]Argus demo: verl PPO, GRPO and SFT through the Argus service")
    t0 = time.monotonic()
    try:
        info = launcher.up(
            root,
            workers=2,
            gpus_per_worker=4,
            port=args.port,
            gcs_port=args.gcs_port,
            dashboard_port=args.dashboard_port,
        )
    except ClusterError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 1
    console.print(
        f"argus up in {time.monotonic() - t0:.1f}s: server {info.url} "
        f"({'started' if info.started_now else 'already running'}), "
        f"Ray dashboard {info.dashboard_url}, 2 workers x 4 GPUs"
    )
    if info.admin_token is None:
        console.print(
            "[bold red]error:[/] a server already runs with an admin token not known here; "
            "set MVP_INTERNAL_TOKEN to it, or run `make down` first"
        )
        return 1
    sandbox = prepare(root)

    admin = ArgusClient(info.url, info.admin_token)
    try:
        admin.create_user("demo")
    except ArgusAPIError as exc:
        if exc.status != 409:
            raise
    token = admin.issue_token("demo")["token"]
    demo = ArgusClient(info.url, token)
    console.print("user 'demo' created; token issued by the admin")

    pushed = push_project(demo, sandbox.code["sim-b"])
    state = "unchanged" if pushed.get("unchanged") else f"{pushed['bytes_uploaded']} bytes uploaded"
    console.print(f"code snapshot 'demo-grpo' pushed: {pushed['sha256'][:12]} ({state}) at {pushed['path']}")

    spec_dir = Path(root) / "common" / "demo-specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    submitted = []
    for workload, marker in RUNS:
        extra: dict = {}
        if workload == "grpo":
            extra = {"code": "demo-grpo", "code_path": None, "reward": {"path": "reward.py"}}
        text = task_yaml(
            sandbox, workload, marker, total_training_steps=6, env_vars={"VERL_SIM_STEP_SECONDS": "0.5"}, **extra
        )
        (spec_dir / f"{workload}.yaml").write_text(text)
        tid = demo.submit(text)["task_id"]
        submitted.append((workload, marker, tid))
        console.print(f"submitted {workload:<4} ({marker}): {tid}")

    console.print("following the tasks to the end ...")
    seen_state: dict[str, str] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        tasks = {tid: demo.task(tid) for _, _, tid in submitted}
        for tid, t in tasks.items():
            if seen_state.get(tid) != t["state"]:
                seen_state[tid] = t["state"]
                console.print(f"  {tid}: {t['state']}")
        if all(t["state"] in FINAL for t in tasks.values()):
            break
        time.sleep(1)

    table = Table(
        "task", "workload", "state", "checkpoints (global_step_N)", "marker", "last reward/mean", title="Argus demo"
    )
    table.columns[0].no_wrap = True
    ok = True
    for workload, marker, tid in submitted:
        t = demo.task(tid)
        attempt = t["latest_attempt"] or {}
        job_root = Path(attempt.get("job_root") or "/nonexistent")
        ckpts = sorted(p.name for p in (job_root / "checkpoints").glob("global_step_*"))
        log = demo.logs(tid) if attempt else ""
        markers = re.findall(r"^MARKER (\S+)", log, re.M)
        rewards = REWARD_MEAN.findall(log)
        state = t["state"] if not t["failure_cause"] else f"{t['state']} ({t['failure_cause']})"
        ok &= t["state"] == "SUCCEEDED" and markers == [marker] and (workload == "sft" or bool(rewards))
        table.add_row(
            tid,
            workload,
            state,
            ", ".join(c.removeprefix("global_step_") for c in ckpts) or "-",
            ",".join(markers) or "-",
            rewards[-1] if rewards else "-",
        )
    console.print(table)
    console.print(f"outputs: {Path(root) / 'users' / 'demo' / 'jobs'}")
    # What the three tasks cost, from the GPU-hour ledger: the user's own `argus usage`.
    console.print("GPU-hours of user 'demo' (`argus usage --by task`):")
    env = {**os.environ, "ARGUS_URL": info.url, "ARGUS_TOKEN": token}
    argus = Path(sys.executable).with_name("argus")
    usage = subprocess.run([str(argus), "usage", "--by", "task"], env=env, capture_output=True, text=True, timeout=60)
    console.print(usage.stdout.rstrip() or usage.stderr.rstrip())
    ok &= usage.returncode == 0
    console.print("try it yourself:")
    console.print(f"  .venv/bin/argus login --url {info.url} --token {token}")
    console.print(f"  .venv/bin/argus submit {spec_dir / 'ppo.yaml'}")
    console.print("  .venv/bin/argus tasks")
    console.print(f"the server keeps running at [bold]{info.url}[/] (admin token: {info.admin_token});")
    console.print("stop it and the cluster with:  [bold]make down[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
