"""Control-plane benchmark: task submissions per second, their latency, and acceptance -> submit_job.

Starts its own local Ray cluster (2 workers x 4 GPUs) and an `argus server` process (scheduler
on) over a fresh database, then:

1. acceptance -> submission: submits small tasks one at a time while the GPUs are free and reads,
   per task, the time from acceptance (`created_at`) to the attempt row (`attempts[].created_at`,
   written just before `submit_job`) and to Ray's acceptance (`submitted_at`);
2. throughput: CLIENTS concurrent clients, each with one keep-alive connection and one request in
   flight, post TaskSpec YAML for DURATION seconds; it prints accepted tasks per second and the
   p50/p95/p99/max latency. These tasks ask for more GPUs than any node has, so the scheduler
   takes each one, finds it cannot fit, and parks it in PENDING_RESOURCES, as in production.

Usage:
    python bench/api_load.py --db sqlite
    python bench/api_load.py --db postgres --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from argus.client.sdk import ArgusClient
from argus.cluster import local
from argus.testing.sandbox import prepare, task_yaml

ADMIN = "bench-admin-" + secrets.token_hex(8)


def free_port(start: int) -> int:
    while not local.port_free(start):
        start += 1
    return start


def start_server(cluster: local.ClusterState, workdir: Path, db_url: str, port: int) -> subprocess.Popen:
    ray = yaml.safe_load(local.config_file(cluster.shared_root).read_text())
    config = workdir / "server.yaml"
    config.write_text(yaml.safe_dump({"ray": ray, "service": {"port": port, "db_url": db_url},
                                      "scheduler": {"retry_interval_s": 30}}))
    log = open(workdir / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "argus.client.cli", "server", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MVP_INTERNAL_TOKEN": ADMIN})
    admin = ArgusClient(f"http://127.0.0.1:{port}", ADMIN, timeout=5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            admin.health()
            return proc
        except Exception:
            if proc.poll() is not None:
                raise SystemExit((workdir / "server.log").read_text()[-3000:])
            time.sleep(0.2)
    raise SystemExit("server did not start")


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def accept_to_submit(client: ArgusClient, sandbox, samples: int) -> None:
    spec = task_yaml(sandbox, "ppo", n_gpus_per_node=1, total_training_steps=1, save_freq=-1,
                     env_vars={"VERL_SIM_STEP_SECONDS": "0"})
    client.submit(spec)  # warm the verl check cache and Ray's job path once
    time.sleep(3)
    to_row, to_ray = [], []
    for _ in range(samples):
        tid = client.submit(spec)["task_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            att = client.attempts(tid)["attempts"]
            if att and att[0]["submitted_at"]:
                break
            time.sleep(0.02)
        task = client.task(tid)
        to_row.append(ts(att[0]["created_at"]) - ts(task["created_at"]))
        to_ray.append(ts(att[0]["submitted_at"]) - ts(task["created_at"]))
        client.wait(tid, timeout_s=120, poll_s=0.2)  # the GPUs are free again for the next one
    ms = lambda xs: f"p50 {statistics.median(xs) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms"
    print(f"acceptance -> attempt written (just before submit_job): {ms(to_row)}  (n={samples})")
    print(f"acceptance -> submit_job returned:                     {ms(to_ray)}  (n={samples})")


async def one_client(host: str, port: int, request: bytes, stop_at: float, lat: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            status = int(head.split(b" ", 2)[1])
            if status == 201:
                lat.append(time.perf_counter() - t0)
            else:
                errors.append(f"{status} {body[:200]!r}")
    finally:
        writer.close()


async def load(port: int, token: str, spec: str, clients: int, duration: float) -> tuple[list[float], list[str], float]:
    body = spec.encode()
    request = (f"POST /api/v2/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/yaml\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    lat: list[float] = []
    errors: list[str] = []
    t0 = time.monotonic()
    await asyncio.gather(*(one_client("127.0.0.1", port, request, t0 + duration, lat, errors)
                           for _ in range(clients)))
    return lat, errors, time.monotonic() - t0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--postgres-url", default=os.environ.get("ARGUS_TEST_DATABASE_URL",
                                                            "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--samples", type=int, default=10, help="acceptance -> submission samples")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="argus-bench-"))
    schema = None
    if args.db == "postgres":
        import sqlalchemy as sa

        schema = f"argus_bench_{secrets.token_hex(4)}"
        engine = sa.create_engine(args.postgres_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.postgres_url else "?"
        db_url = f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}"
    else:
        db_url = f"sqlite:///{workdir}/argus.sqlite3"
    gcs = free_port(6500)
    cluster, _ = local.up(str(workdir), workers=2, gpus_per_worker=4, gcs_port=gcs, dashboard_port=free_port(8500))
    proc = None
    try:
        sandbox = prepare(workdir)
        port = free_port(18600)
        proc = start_server(cluster, workdir, db_url, port)
        admin = ArgusClient(f"http://127.0.0.1:{port}", ADMIN)
        admin.create_user("bench")
        token = admin.issue_token("bench")["token"]
        client = ArgusClient(f"http://127.0.0.1:{port}", token)
        print(f"machine: {os.cpu_count()} cores; database: {args.db}; server: 1 process (API + scheduler), "
              f"Ray: head + 2 workers x 4 GPUs")
        accept_to_submit(client, sandbox, args.samples)

        spec = task_yaml(sandbox, "ppo", n_gpus_per_node=64)  # fits no node: parked by the scheduler
        client.submit(spec)  # warm the verl check cache
        lat, errors, elapsed = asyncio.run(load(port, token, spec, args.clients, args.duration))
        n = len(lat)
        print(f"throughput: {n} tasks accepted in {elapsed:.1f}s by {args.clients} clients = "
              f"{n / elapsed:.0f} tasks/s; errors {len(errors)}")
        print(f"latency: p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms")
        if errors:
            print("first error:", errors[0])
        queue = client.queue()
        parked = sum(1 for t in queue["pending"] if t["state"] == "PENDING_RESOURCES")
        print(f"scheduler: {parked} of {len(queue['pending'])} waiting tasks already parked in PENDING_RESOURCES")
        return 0 if not errors else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        local.down(str(workdir))
        shutil.rmtree(workdir, ignore_errors=True)
        if schema:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    sys.exit(main())
