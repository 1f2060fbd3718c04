"""Scheduler benchmark: one live pass (`Scheduler.tick`) with thousands of waiting tasks.

Builds a real store (SQLite, or PostgreSQL with --db postgres) holding WAITING tasks from several
users with mixed shapes, and RUNNING tasks that fill a fake cluster (argus.testing.fakes: every
GPU taken, as Ray would show it), then times full passes (sync, archive, admission, the waits
written) and nudged passes (admission only). Next to them, in the same run, the baseline: the
pure policy `argus.domain.scheduling.plan` on the same demands, with no database.

Usage:
    python bench/scheduler_pass.py                       # SQLite, 2,000 waiting tasks
    python bench/scheduler_pass.py --db postgres --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/scheduler_pass.py --profile             # cProfile of one full pass, top 25
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from argus.domain.scheduling import Job, Limits, RunningJob, plan
from argus.domain.task import TaskState
from argus.scheduler.loop import Scheduler
from argus.settings import parse_settings
from argus.store.db import open_database
from argus.store.schema import task_events, tasks
from argus.store.tasks import TaskStore
from argus.testing.fakes import FakeJob, FakeJobs, FakeSnapshots
from argus.testing.sandbox import prepare, task_yaml

T0 = 1_800_000_000.0
SHAPES = ((1, 1), (1, 2), (1, 4), (1, 8), (2, 4), (2, 8), (4, 8))


def _ms(xs: list[float]) -> str:
    return f"p50 {statistics.median(xs) * 1000:7.1f} ms   max {max(xs) * 1000:7.1f} ms   (n={len(xs)})"


def build(args: argparse.Namespace, work: Path, db_url: str):
    sandbox = prepare(work / "shared")
    settings = parse_settings(
        {
            "ray": {"shared_root": str(sandbox.shared_root)},
            "service": {"db_url": db_url},
            "scheduler": {"policy": args.policy},
        },
        environ={},
    )
    db = open_database(settings.db_url)
    store = TaskStore(db)
    now = T0
    nodes = {f"w{i:02d}": 8.0 for i in range(args.nodes)}
    jobs = FakeJobs(clock=lambda: now)
    snaps = FakeSnapshots(dict(nodes), free={n: 0.0 for n in nodes})  # the cluster is full
    spec = task_yaml(sandbox, "ppo")
    rows, events = [], []
    users = [f"user{u}" for u in range(args.users)]
    for i in range(args.waiting + args.nodes):
        user = users[i % len(users)]
        nnodes, gpn = SHAPES[i % len(SHAPES)] if i < args.waiting else (1, 8)
        tid = f"mvp2-{user}-ppo-20270115-080000-{i:04x}"
        rows.append(
            dict(
                task_id=tid,
                user_id=user,
                workload="ppo",
                state=TaskState.QUEUED.value,
                jobspec_yaml=spec,
                nnodes=nnodes,
                n_gpus_per_node=gpn,
                driver_gpus=0.0,
                attempts=0,
                created_at=now - args.waiting + i,
                updated_at=now,
                priority=500 + (i % 3) * 100,
                time_limit_s=3600.0 * (1 + i % 24),
                pool=None,
            )
        )
        events.append(dict(task_id=tid, at=now, from_state=None, to_state="QUEUED", reason="accepted"))
    with db.write.begin() as conn:
        conn.execute(tasks.insert(), rows)
        conn.execute(task_events.insert(), events)
    # One 1x8 task running on every node (the cluster is full), started an hour ago.
    for node, row in zip(nodes, rows[args.waiting :]):
        tid = row["task_id"]
        attempt = store.start_attempt(tid, 0, str(work / tid), {node: 8.0}, now - 3600)
        sid = attempt.attempt.ray_submission_id
        jobs.jobs[sid] = FakeJob(sid, {"entrypoint": "python -m verl"}, "RUNNING", start_time=now - 3600)
        store.mark_submitted(sid, now - 3600)
        store.record_ray_view(
            sid,
            ray_status="RUNNING",
            message=None,
            start_time=now - 3600,
            end_time=None,
            failure_kind=None,
            driver_node_id=None,
            driver_node_ip=None,
            driver_node_name=None,
        )
        store.mark_running(tid, now - 3600, "Ray: RUNNING", 1)
    sched = Scheduler(settings, store, jobs, snaps, clock=lambda: now)
    return settings, db, store, sched, snaps


def churn(store: TaskStore, sched: Scheduler, now: float) -> None:
    """Between passes, as on a live cluster: the submitted jobs start, the oldest running one
    ends, and Ray's free GPUs follow (so every estimate and reason may change)."""
    jobs, snaps = sched.jobs, sched.snapshots
    alive = [j for j in jobs.jobs.values() if j.status in ("PENDING", "RUNNING")]
    for j in alive:
        if j.status == "PENDING":
            jobs.run(j.submission_id)
    if alive:
        oldest = min(alive, key=lambda j: j.start_time or now)
        jobs.finish(oldest.submission_id, "done\n")
    used: dict[str, float] = {}
    active = store.in_states(["SUBMITTED", "RUNNING"])
    for a in store.latest_attempts([t.task_id for t in active]).values():
        if jobs.jobs[a.ray_submission_id].status == "RUNNING":
            for node, g in a.placement.items():
                used[node] = used.get(node, 0.0) + g
    snaps.free = {n: g - used.get(n, 0.0) for n, g in snaps.gpus.items()}


def write_loop(store: TaskStore, stop: threading.Event) -> None:
    """Short write transactions back to back (a priority change of a task that does not exist:
    the row is read under the write lock, as a submission's insert holds it)."""
    while not stop.is_set():
        store.set_priority("no-such-task", 500, T0, "bench")


def baseline(store: TaskStore, sched: Scheduler, settings, now: float, passes: int) -> list[float]:
    """The pure policy on the same demands, the inputs read once beforehand (no database)."""
    cfg = settings.scheduler
    waiting = store.in_states(["QUEUED", "PENDING_RESOURCES"])
    active = store.in_states(["SUBMITTED", "RUNNING"])
    latest = store.latest_attempts([t.task_id for t in active])
    free = {n.node_id: n.available_gpus for n in sched.snapshots.snapshot().schedulable()}
    usage = sched.usage(now)
    running = [RunningJob(t.task_id, t.user_id, latest[t.task_id].placement, now + 3600) for t in active]
    jobs = [Job.of(t) for t in waiting]
    limits = Limits(cfg.max_running_tasks, cfg.user_max_gpus, cfg.user_gpu_hours_per_day)
    out = []
    for _ in range(passes):
        t = time.perf_counter()
        plan(now, jobs, running, free, cfg.policy, limits, *usage)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--waiting", type=int, default=2000)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--nodes", type=int, default=16)
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--policy", default="default", choices=("fifo", "easy", "default"))
    p.add_argument(
        "--churn",
        action="store_true",
        help="between passes one running task ends and the submitted ones start",
    )
    p.add_argument(
        "--writers",
        type=int,
        default=0,
        help="threads that keep taking the write connection, as API submitters do",
    )
    p.add_argument("--profile", action="store_true")
    p.add_argument("--sort", default="cumulative", help="the profile's order (cumulative, tottime)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="argus-bench-sched-"))
    schema = None
    if args.db == "sqlite":
        db_url = f"sqlite:///{work / 'argus.sqlite3'}"
    else:
        schema = "argus_bench_" + secrets.token_hex(4)
        admin = sa.create_engine(args.postgres_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        sep = "&" if "?" in args.postgres_url else "?"
        db_url = f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}"
    try:
        t = time.perf_counter()
        settings, db, store, sched, _ = build(args, work, db_url)
        print(
            f"{args.db}: {args.waiting} waiting tasks from {args.users} users, {args.nodes} nodes x 8 GPUs "
            f"all taken, policy {args.policy} (set up in {time.perf_counter() - t:.1f} s)"
        )
        now = T0
        t = time.perf_counter()
        sched.tick(now, full=True)  # the first pass parks every task (writes them all)
        first = time.perf_counter() - t
        if args.profile:
            if args.churn:
                churn(store, sched, now + 1)
            prof = cProfile.Profile()
            prof.enable()
            sched.tick(now + 1, full=True)
            prof.disable()
            pstats.Stats(prof).sort_stats(args.sort).print_stats(30)
            return 0
        stop = threading.Event()
        writers = [threading.Thread(target=write_loop, args=(store, stop), daemon=True) for _ in range(args.writers)]
        for w in writers:
            w.start()
        full, nudged = [], []
        for i in range(args.passes):
            now += 2.0
            if args.churn:
                churn(store, sched, now)
            t = time.perf_counter()
            sched.tick(now, full=True)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            sched.tick(now + 0.1, full=False)
            nudged.append(time.perf_counter() - t)
        stop.set()
        for w in writers:
            w.join()
        parked = sum(1 for r in store.in_states(["PENDING_RESOURCES"]))
        base = baseline(store, sched, settings, now, args.passes)
        print(f"first pass (parks every task):   {first * 1000:7.1f} ms")
        print(f"full pass (sync+archive+admit):  {_ms(full)}")
        print(f"nudged pass (admit only):        {_ms(nudged)}")
        print(f"baseline plan() alone, no db:    {_ms(base)}")
        print(f"tasks parked in PENDING_RESOURCES: {parked}")
        db.dispose()
    finally:
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
