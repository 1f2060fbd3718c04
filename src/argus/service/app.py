"""`create_app(settings)`: the one place that wires the service together.

Picks the concrete adapters (database from the URL, Ray job tool, cluster snapshot source, SSH
connector, Ray drain) unless the caller hands its own in, so tests can wire theirs. The scheduler
loop and the node reconciler run in threads of the same process, started and stopped with the app
(FastAPI lifespan), the GPU sampler beside the scheduler; or the scheduler and the sampler run in
a child process (`argus.service.scheduler_process`, what `argus server` does by default). The API
nudges the scheduler when a task arrives or is cancelled. Metrics live in the app's own registry
(`argus.service.metrics`): the scheduler reports its passes there, or its process's are read in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request

from argus.cluster.drain import RayDrain
from argus.cluster.gpu_metrics import RayGpuReader
from argus.cluster.jobs import RayJobTool
from argus.cluster.reward_check import RayRewardChecker
from argus.ports import Clock, ClusterView, Drainer, GpuStats, JobTool, RewardChecker, SSHRunner
from argus.scheduler.gpu_sampler import GpuSampler
from argus.scheduler.link import NudgeSender, StatusReader
from argus.scheduler.loop import Scheduler
from argus.scheduler.node_reconciler import NodeReconciler
from argus.service import errors
from argus.service.api_processes import ProcessLink
from argus.service.auth import Authenticator
from argus.service.background import Background
from argus.service.code_service import CodeService
from argus.service.errors import error_response
from argus.service.metrics import ApiMetrics, Metrics
from argus.service.metrics_collect import ArgusCollector, RayProbe
from argus.service.middleware import BodyLimit
from argus.service.node_service import NodeService
from argus.service.ratelimit import RateLimited, RateLimiter
from argus.service.routes import code as code_routes
from argus.service.routes import health as health_routes
from argus.service.routes import metrics as metrics_routes
from argus.service.routes import nodes as node_routes
from argus.service.routes import secrets as secret_routes
from argus.service.routes import tasks as task_routes
from argus.service.routes import usage as usage_routes
from argus.service.routes import users as user_routes
from argus.service.scheduler_process import SchedulerChild, build_scheduler
from argus.service.secret_service import SecretService
from argus.service.task_inputs import TaskInputs
from argus.service.task_service import TaskService
from argus.service.to_primary import ToPrimary
from argus.service.ui import app as ui
from argus.service.ui.sessions import ConsoleSessions
from argus.service.usage_service import UsageService
from argus.service.users import UserService
from argus.settings import ArgusSettings
from argus.spec.inputs import ResolveCache
from argus.store.code import CodeStore
from argus.store.db import Database, open_database
from argus.store.ledger import LedgerStore
from argus.store.nodes import NodeStore
from argus.store.secrets import SecretStore
from argus.store.tasks import TaskStore
from argus.store.ui_sessions import UiSessionStore
from argus.store.users import UserStore


def _default_snapshots(settings: ArgusSettings) -> ClusterView:
    from argus.cluster.snapshot import RaySnapshotSource

    return RaySnapshotSource.for_config(settings.ray)


def _default_drainer(settings: ArgusSettings, snapshots: ClusterView) -> Drainer:
    """Ray's drain, through the GCS that `snapshots` reads (or the configured cluster's)."""
    from argus.cluster.snapshot import RaySnapshotSource

    source = snapshots if isinstance(snapshots, RaySnapshotSource) else RaySnapshotSource.for_config(settings.ray)
    return RayDrain(source)


def _default_ssh(settings: ArgusSettings) -> SSHRunner:
    from argus.cluster.ssh import SSHConnector

    return SSHConnector(settings.nodes.key_dir, settings.nodes.ssh_connect_timeout_s)


def _fair_share(status: StatusReader, scheduler: Scheduler) -> Callable[[], dict[str, float]]:
    """The fair share the scheduler process's last full pass ordered by (computed here until it
    has reported one)."""

    def now() -> dict[str, float]:
        reported = status.last_fair_share
        return reported if reported is not None else scheduler.fair_share_now()

    return now


def _scheduler_link(
    child: SchedulerChild | None, scheduler: Scheduler, processes: ProcessLink | None
) -> tuple[Callable[..., None], Callable[[], dict[str, float]]]:
    """How the API nudges the scheduler and reads the fair share it ordered by: in this process,
    through the child it runs, or (an API process other than the first) through the scheduler
    process's run directory (nudges dropped when there is none: the scheduler is off)."""
    if child is not None:
        return child.nudge, _fair_share(child.health, scheduler)
    if processes is None or processes.primary:
        return scheduler.nudge, scheduler.fair_share_now
    if processes.scheduler_dir is None:
        return (lambda sync=False: None), scheduler.fair_share_now
    return NudgeSender(processes.scheduler_dir), _fair_share(StatusReader(processes.scheduler_dir), scheduler)


def _install(app: FastAPI, max_body_bytes: int, code_max_bytes: int) -> None:
    """Error handlers, routers and the body limit."""
    errors.install(app)

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> Any:
        return error_response(429, exc.message, exc.problems, {"Retry-After": exc.retry_after})

    app.router.routes.insert(0, task_routes.plain_submit_route())  # ahead of the routers: see there
    for routes in (task_routes, user_routes, node_routes, secret_routes, code_routes, health_routes, usage_routes):
        app.include_router(routes.router)
    app.include_router(metrics_routes.router)
    ui.install(app)
    code_limit = {code_routes.CODE_PATH: (code_max_bytes, "service.code_max_bytes")}
    app.add_middleware(BodyLimit, limit=max_body_bytes, path_limits=code_limit)


def create_app(
    settings: ArgusSettings,
    *,
    db: Database | None = None,
    jobs: JobTool | None = None,
    snapshots: ClusterView | None = None,
    clock: Clock = time.time,
    run_scheduler: bool | None = None,
    environ: Mapping[str, str] | None = None,
    ssh: SSHRunner | None = None,
    drainer: Drainer | None = None,
    run_nodes: bool | None = None,
    rewards: RewardChecker | None = None,
    gpu_stats: GpuStats | None = None,
    scheduler_child: SchedulerChild | None = None,
    processes: ProcessLink | None = None,
) -> FastAPI:
    """Build the app; the database is migrated here, the loops start with the app.

    Args:
        db: the database (default: opened from `settings.db_url`; this process then runs its
            SQLite checkpoints).
        jobs, snapshots: Ray's job tool and cluster view (default: the Ray adapters).
        ssh: the SSH connector of managed nodes (default: `SSHConnector` over `nodes.key_dir`).
        drainer: what asks Ray to drain a node (default: `RayDrain` through `snapshots`).
        run_scheduler: run the scheduler thread (default: `scheduler.enabled`).
        run_nodes: run the node reconciler thread (default: when the scheduler runs).
        rewards: runs reward functions' checks (default: a short job on a Ray worker node).
        gpu_stats: reads the nodes' GPU utilisation and memory for the GPU sampler (default:
            `RayGpuReader`, Ray's metrics agents; it runs with the scheduler, every
            `scheduler.gpu_sample_interval_s`, never when that is 0).
        scheduler_child: the scheduler (and GPU sampler) run in this child process instead of
            threads (`argus server` with `scheduler.own_process`): it is started and stopped with
            the app, nudged through its socket, and `/healthz` and `/metrics` show what it
            reports. The app's own `Scheduler` then only answers the API's reads of capacity.
        processes: this is one of several API processes (`argus.service.api_processes`): the
            rate limit and the token memory are shared with the others; the first one sums their
            request metrics; the others run no loops and no checkpoints, nudge the scheduler
            process through its socket, and forward the node routes, `/healthz` and `/metrics`
            to the first.
    """
    secondary = processes is not None and not processes.primary
    shared = processes.shared if processes is not None else None
    own_db = db is None and not secondary
    db = db or open_database(settings.db_url, autocheckpoint=False, wal_max_bytes=settings.service.sqlite_wal_max_bytes)
    store, users = TaskStore(db), UserStore(db)
    jobs = jobs or RayJobTool(settings.ray)
    snapshots = snapshots or _default_snapshots(settings)
    code_store, secret_store = CodeStore(db), SecretStore(db, settings.secrets_key(environ))
    run = settings.scheduler.enabled if run_scheduler is None else run_scheduler
    child = scheduler_child if run else None
    metrics = Metrics(
        settings.admin_token(environ),
        settings.metrics_token(environ),
        scheduler=child is None and not secondary,
        other_processes=processes.other_requests if processes is not None and processes.primary else None,
    )
    scheduler = build_scheduler(settings, db, jobs, snapshots, clock, metrics.scheduler, environ)
    reconciler = NodeReconciler(
        settings,
        NodeStore(db),
        store,
        snapshots,
        ssh or _default_ssh(settings),
        drainer or _default_drainer(settings, snapshots),
        clock,
        jobs=jobs,
    )
    gpu_sampler = GpuSampler(
        store, snapshots, gpu_stats or RayGpuReader(), clock, settings.scheduler.gpu_sample_interval_s, jobs
    )
    background = Background(
        scheduler,
        reconciler,
        run_scheduler=run and child is None,
        run_nodes=run if run_nodes is None else run_nodes,
        checkpoint_db=db if own_db else None,
        gpu_sampler=gpu_sampler,
        child=child,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Threads that serve the synchronous routes (reads): a few, so that under a burst the
        # waiting requests queue on the loop rather than as threads contending for the
        # interpreter with the accept threads.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.service.read_threads
        background.start()
        try:
            yield
        finally:
            background.stop()
            app.state.tasks.close()

    app = FastAPI(
        title="Argus",
        version="2",
        lifespan=lifespan,
        description="Training tasks (verl PPO, GRPO, SFT) on a native Ray cluster. See docs/api.md.",
    )
    state = app.state
    state.settings, state.db, state.store = settings, db, store
    state.scheduler, state.scheduler_running, state.gpu_sampler = scheduler, run, gpu_sampler
    state.scheduler_child = background.child
    state.scheduler_health = background.child.health if background.child else scheduler
    state.node_reconciler, state.nodes_reconciling = reconciler, background.run_nodes
    state.auth = Authenticator(users, settings.admin_token(environ), shared=shared)
    state.users = UserService(users, state.auth, clock)
    state.console = ConsoleSessions(
        UiSessionStore(db),
        users,
        state.auth,
        settings.ui_session_key(environ),
        settings.service.ui_session_ttl_h * 3600,
        clock,
    )
    state.nodes = NodeService(reconciler, node_capacity=scheduler.node_capacity)
    state.secrets = SecretService(secret_store, clock, settings.service.secrets_key_env)
    state.code = CodeService(settings, code_store, clock)
    state.usage = UsageService(LedgerStore(db), clock)
    inputs = TaskInputs(
        settings.shared_root,
        state.code,
        state.code,
        secret_store,
        rewards or RayRewardChecker(settings.ray),
        settings.service.reward_check_timeout_s,
        resolve=ResolveCache(),
    )
    nudge, fair_share = _scheduler_link(background.child, scheduler, processes)
    svc = settings.service
    state.tasks = TaskService(
        settings,
        store,
        jobs,
        nudge,
        clock,
        pool_capacity=scheduler.pool_capacity,
        inputs=inputs,
        fair_share=fair_share,
        rate=RateLimiter(svc.submit_rate_per_s, svc.submit_burst, shared=shared),
    )
    _install(app, settings.service.max_body_bytes, settings.service.code_max_bytes)
    # Metrics: the scrape-time collector in the app's own registry; every request counted.
    probe = RayProbe(snapshots, scheduler.node_capacity)
    gpu_seconds = LedgerStore(db).gpu_seconds_by_user_pool
    metrics.registry.register(ArgusCollector(settings, store, NodeStore(db), probe, clock, gpu_seconds))
    if background.child is not None:
        metrics.registry.register(background.child)  # whether it runs, and its pass metrics
    state.metrics, state.snapshots = metrics, snapshots
    app.add_middleware(ApiMetrics, metrics=metrics.requests)
    if secondary:
        assert processes is not None
        app.add_middleware(ToPrimary, socket_path=processes.primary_socket)
    return app
