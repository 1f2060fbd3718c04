"""Console benchmark: how fast the `/ui` pages answer with 10,000 tasks in the store.

Fills a fresh database with TASKS tasks of USERS users through the store's own methods (49 in
50 ended, with an attempt, its events and its GPU-hour ledger rows; the others waiting for more
GPUs than any node has), starts its own local Ray cluster (2 workers x 4 GPUs) and an
`argus server` process on that database, logs in to the console as the admin and as one user
(the form, as a browser does), and asks for every page REQUESTS times, one request at a time
over one keep-alive connection. It prints p50, p95 and max per page, for the admin (every task)
and the user (their own), next to the same requests to a bare FastAPI endpoint answering a
fixed page of the same size, served by uvicorn on the same machine (the baseline).

Usage:
    python bench/ui_pages.py [--tasks 10000] [--requests 60] [--db sqlite|postgres --postgres-url URL]
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api_load import ADMIN, free_port, start_server

from argus.cluster import local
from argus.domain.task import TaskState, new_task_id
from argus.store.db import open_database
from argus.store.tasks import TaskStore
from argus.store.users import UserStore
from argus.testing.sandbox import prepare, task_yaml

USERS = 16
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def fill(db_url: str, sandbox, n_tasks: int) -> tuple[dict[str, str], list[str]]:
    """`n_tasks` tasks over USERS users (tokens returned); returns the tokens and some task ids."""
    db = open_database(db_url)
    users, store = UserStore(db), TaskStore(db)
    now = time.time() - 14 * 86400
    tokens = {}
    for i in range(USERS):
        uid = f"user{i:02d}"
        users.create(uid, now)
        tokens[uid] = users.issue_token(uid, now) or ""
    text = task_yaml(sandbox, "ppo", n_gpus_per_node=2)
    ids: list[str] = []
    t0 = time.monotonic()
    for k in range(n_tasks):
        uid = f"user{k % USERS:02d}"
        at = now + k * 100.0
        workload = ("ppo", "grpo", "sft")[k % 3]
        tid = new_task_id(uid, workload, datetime.fromtimestamp(at, tz=UTC), secrets.token_hex(2))
        gpus = 64 if k % 50 == 0 else 2  # one task in 50 waits for more GPUs than any node has
        store.create(
            task_id=tid,
            user_id=uid,
            workload=workload,
            jobspec_yaml=text,
            nnodes=1,
            n_gpus_per_node=gpus,
            driver_gpus=0,
            now=at,
        )
        ids.append(tid)
        if gpus > 8:
            continue
        # Every other task ran and ended (a running one would have to be a real Ray job: the
        # server's first pass would find no such job, and retry it on the cluster).
        store.start_attempt(tid, 0, f"/tmp/bench/{tid}--a01", {"node-a": float(gpus)}, at + 30)
        store.mark_running(tid, at + 40, "running", 1)
        ended = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELED)[k % 3]
        store.finish(tid, ended, at + 600, "done", 1, "USER_CODE" if ended == TaskState.FAILED else None)
    print(f"filled {n_tasks} tasks of {USERS} users in {time.monotonic() - t0:.1f}s")
    db.dispose()
    return tokens, ids


def login(url: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    form = client.get("/ui/login")
    r = client.post("/ui/login", data={"token": token, "csrf": CSRF.search(form.text).group(1)})
    assert r.status_code == 303, r.text
    return client


def measure(client: httpx.Client, path: str, n: int) -> tuple[list[float], int]:
    client.get(path)  # warm
    lat, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        lat.append(time.perf_counter() - t0)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        size = len(r.content)
    return lat, size


def row(name: str, lat: list[float], size: int) -> str:
    p50, p95, top = statistics.median(lat) * 1000, statistics.quantiles(lat, n=20)[18] * 1000, max(lat) * 1000
    return f"| {name} | {p50:.1f} | {p95:.1f} | {top:.1f} | {size / 1024:.0f} |"


BARE = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    app = FastAPI()
    PAGE = "<html><body>" + "x" * int(sys.argv[2]) + "</body></html>"
    @app.get("/page")
    def page():
        return HTMLResponse(PAGE)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def bare_baseline(size: int, n: int) -> tuple[list[float], int]:
    port = free_port(18800)
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port), str(size)])
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.get("/page")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        return measure(client, "/page", n)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="argus-bench-ui-"))
    root = work / "shared"
    sandbox = prepare(root)
    if args.db == "sqlite":
        db_url = f"sqlite:///{work / 'argus.sqlite3'}"
    else:
        schema = "bench_ui_" + secrets.token_hex(4)
        db_url = f"{args.postgres_url}?options=-csearch_path%3D{schema}"
        import sqlalchemy as sa

        with sa.create_engine(args.postgres_url).begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    tokens, ids = fill(db_url, sandbox, args.tasks)
    gcs, dash = free_port(6500), free_port(8500)
    cluster, _ = local.up(str(root), workers=2, gpus_per_worker=4, gcs_port=gcs, dashboard_port=dash)
    server = None
    clients: list[httpx.Client] = []
    try:
        port = free_port(18700)
        server = start_server(cluster, work, db_url, port)
        url = f"http://127.0.0.1:{port}"
        admin, user = login(url, ADMIN), login(url, tokens["user03"])
        clients += [admin, user]
        mine = next(t for t in ids if "-user03-" in t)
        pages = [
            ("tasks", "/ui/tasks"),
            ("tasks, state=SUCCEEDED", "/ui/tasks?state=SUCCEEDED"),
            ("a task", f"/ui/tasks/{mine}"),
            ("queue", "/ui/queue"),
            ("nodes", "/ui/nodes"),
            ("usage", "/ui/usage"),
        ]
        print(f"\n{args.tasks} tasks, {args.db}, {args.requests} requests per page, one at a time\n")
        print("| page (who) | p50 ms | p95 ms | max ms | KiB |")
        print("|---|---|---|---|---|")
        sizes = []
        for name, path in pages:
            for who, client in (("admin", admin), ("user", user)):
                lat, size = measure(client, path, args.requests)
                sizes.append(size)
                print(row(f"{name} ({who})", lat, size))
        lat, size = measure(admin, "/ui/users", args.requests)
        print(row("users (admin)", lat, size))
        lat, size = bare_baseline(int(statistics.median(sizes)), args.requests)
        print(row("bare FastAPI page (baseline)", lat, size))
    finally:
        for client in clients:
            client.close()
        if server is not None:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        local.down(str(root))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
