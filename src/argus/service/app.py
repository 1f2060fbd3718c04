"""`create_app(settings)`: the one place that wires the service together.

Picks the concrete adapters (database from the URL, Ray job tool, cluster snapshot source, SSH
connector, Ray drain) unless the caller hands its own in, so tests can wire theirs. The scheduler
loop and the node reconciler run in threads of the same process, started and stopped with the app
(FastAPI lifespan); the API nudges the scheduler when a task arrives or is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request

from argus.cluster.drain import RayDrain
from argus.cluster.jobs import RayJobTool
from argus.ports import Drainer, SSHRunner
from argus.scheduler.loop import Scheduler
from argus.scheduler.node_reconciler import NodeReconciler
from argus.service import errors
from argus.service.api_models import Health, JSONBody
from argus.service.api_models import errors as error_responses
from argus.service.auth import Authenticator
from argus.service.errors import error_response
from argus.service.node_service import NodeService
from argus.service.ratelimit import RateLimited
from argus.service.routes import nodes as node_routes
from argus.service.routes import tasks as task_routes
from argus.service.routes import users as user_routes
from argus.service.task_service import TaskService
from argus.service.users import UserService
from argus.service.views import iso
from argus.settings import ArgusSettings
from argus.store.db import Database, open_database
from argus.store.nodes import NodeStore
from argus.store.tasks import TaskStore
from argus.store.users import UserStore

log = logging.getLogger("argus.service")


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, by header or by counting."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = error_response(413, f"the body is over {self.limit} bytes (service.max_body_bytes)")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await too_large(scope, receive, send)
            return
        if length is not None:
            await self.app(scope, receive, send)  # the server stops reading at Content-Length
            return
        # A chunked body: read it here, up to the limit, and replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _checkpoints(db: Database, stop: threading.Event, every_s: float = 1.0) -> None:
    while not stop.wait(every_s):
        try:
            db.checkpoint()
        except Exception:  # a busy or failed checkpoint is retried at the next one
            log.debug("checkpoint failed", exc_info=True)


def create_app(
    settings: ArgusSettings,
    *,
    db: Database | None = None,
    jobs: RayJobTool | None = None,
    snapshots: Any = None,
    clock: Callable[[], float] = time.time,
    run_scheduler: bool | None = None,
    environ: Mapping[str, str] | None = None,
    ssh: SSHRunner | None = None,
    drainer: Drainer | None = None,
    run_nodes: bool | None = None,
) -> FastAPI:
    """Build the app; the database is migrated here, the scheduler starts with the app.

    Args:
        ssh: the SSH connector of managed nodes (default: `SSHConnector` over `nodes.key_dir`).
        drainer: what asks Ray to drain a node (default: `RayDrain` through `snapshots`).
        run_nodes: run the node reconciler thread (default: when the scheduler runs).
    """
    own_checkpoints = db is None
    db = db or open_database(settings.db_url, autocheckpoint=False, wal_max_bytes=settings.service.sqlite_wal_max_bytes)
    store = TaskStore(db)
    users = UserStore(db)
    jobs = jobs or RayJobTool(settings.ray)
    if snapshots is None:
        from argus.cluster.snapshot import RaySnapshotSource

        snapshots = RaySnapshotSource.for_config(settings.ray)
    scheduler = Scheduler(settings, store, jobs, snapshots, clock)
    run = settings.scheduler.enabled if run_scheduler is None else run_scheduler
    if ssh is None:
        from argus.cluster.ssh import SSHConnector

        ssh = SSHConnector(settings.nodes.key_dir, settings.nodes.ssh_connect_timeout_s)
    reconciler = NodeReconciler(settings, NodeStore(db), store, snapshots, ssh, drainer or RayDrain(snapshots), clock)
    nodes = NodeService(reconciler, pool_capacity=scheduler.pool_capacity)
    reconcile = run if run_nodes is None else run_nodes
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        thread = None
        # Threads that serve the synchronous routes (reads): a few, so that under a burst the
        # waiting requests queue on the loop rather than as threads contending for the
        # interpreter with the accept threads.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.service.read_threads
        if own_checkpoints and db.is_sqlite:
            threading.Thread(target=_checkpoints, args=(db, stop), name="argus-checkpoint", daemon=True).start()
        if run:
            thread = threading.Thread(target=scheduler.run, args=(stop,), name="argus-scheduler", daemon=True)
            thread.start()
        node_thread = None
        if reconcile:
            node_thread = threading.Thread(target=reconciler.run, args=(stop,), name="argus-nodes", daemon=True)
            node_thread.start()
        try:
            yield
        finally:
            stop.set()
            scheduler.nudge()
            reconciler.nudge()
            if thread is not None:
                thread.join(timeout=30)
            if node_thread is not None:
                node_thread.join(timeout=30)
            reconciler.close()
            app.state.tasks.close()

    app = FastAPI(
        title="Argus",
        version="2",
        lifespan=lifespan,
        description="Training tasks (verl PPO, GRPO, SFT) on a native Ray cluster. See docs/api.md.",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.scheduler_running = run
    app.state.auth = Authenticator(users, settings.admin_token(environ))
    app.state.users = UserService(users, app.state.auth, clock)
    app.state.tasks = TaskService(settings, store, jobs, scheduler.nudge, clock, pool_capacity=scheduler.pool_capacity)
    app.state.nodes = nodes
    app.state.node_reconciler = reconciler
    errors.install(app)

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> Any:
        return error_response(429, exc.message, exc.problems, {"Retry-After": exc.retry_after})

    app.include_router(task_routes.router)
    app.include_router(user_routes.router)
    app.include_router(node_routes.router)

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness: the database and the scheduler",
        response_model=Health,
        responses=error_responses(503),
    )
    async def healthz(request: Request) -> Any:  # on the loop: one indexed read, no thread to wait for
        try:
            store.get("-")
            db_state = "ok"
        except Exception as exc:  # report, do not raise
            db_state = f"error: {type(exc).__name__}"
        # Ray as the scheduler's last pass found it (never a Ray call here): unreachable makes
        # the service degraded, still 200 (the process and its database work; tasks wait).
        if not run:
            ray_state = "not checked: the scheduler is off"
        elif scheduler.ray_error is not None:
            ray_state = f"unreachable: {scheduler.ray_error}"
        else:
            ray_state = "ok" if scheduler.ray_ok_at is not None else "unknown: no pass yet"
        ok = db_state == "ok" and not ray_state.startswith("unreachable")
        body = {
            "status": "ok" if ok else "degraded",
            "db": db_state,
            "ray": ray_state,
            "scheduler": {
                "running": run,
                "reconciled": scheduler.reconciled,
                "last_tick_at": iso(scheduler.last_tick_at),
                "ray_ok_at": iso(scheduler.ray_ok_at),
                "last_error": scheduler.last_error,
            },
            "nodes": {"reconciling": reconcile, "last_error": reconciler.last_error},
        }
        return JSONBody(body) if db_state == "ok" else error_response(503, "database unavailable")

    app.add_middleware(BodyLimit, limit=settings.service.max_body_bytes)
    return app
