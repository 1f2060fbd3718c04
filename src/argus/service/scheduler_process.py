"""The scheduler in a process of its own: the server's side of it, and the process itself.

`argus server` runs the scheduler loop and the GPU sampler in a child process (with
`scheduler.own_process`, the default), so that their passes never hold the API's interpreter:
a full pass over a long queue takes a quarter of a second of Python, which requests would wait
for behind the lock.

Owns:

- `SchedulerChild`, in the API process: makes a private run directory (mode 0700) and runs the
  child (`python -m argus.service.scheduler_process`) as an `argus.service.children.Supervised`
  (settings on its standard input, started again when it exits, stopped with the server: SIGTERM,
  then SIGKILL after `STOP_TIMEOUT_S`) with an environment without the admin, metrics and console
  keys. Its
  `nudge` and `health` are `argus.scheduler.link`'s sender and reader; as a Prometheus
  collector it serves `argus_scheduler_process_up`, `argus_scheduler_process_restarts_total`
  and the child's own pass metrics.
- `run_child`, the child's main: the scheduler and the GPU sampler as threads (as in the server
  when `own_process` is false), the nudge listener and the status writer beside them. SIGTERM
  and SIGINT stop it: the first one raises in its main thread (which, once the loops run, does
  nothing but sleep and check), and it stops the loops, lets the pass in progress end, writes
  its last status and exits; later ones are ignored unless the server is gone. When its server dies
  (Linux's parent-death signal, and a check of its parent's pid every second) it exits at once,
  cutting a pass short as a crash would, so that a server started again never finds a second
  scheduler still at work (the next one reconciles with Ray before it admits). A loop thread
  that dies makes it exit 1, for the server to start it again.
- `build_scheduler`: the one wiring of a `Scheduler`, for both shapes.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from argus.cluster.gpu_metrics import RayGpuReader
from argus.cluster.jobs import RayJobTool
from argus.ports import Clock, ClusterView, JobTool, SchedulerObserver
from argus.scheduler.gpu_sampler import GpuSampler
from argus.scheduler.link import NudgeListener, NudgeSender, StatusReader, StatusWriter, metric_samples
from argus.scheduler.loop import Scheduler
from argus.scheduler.secrets import JobSecrets
from argus.service.children import Supervised, die_with_parent
from argus.service.metrics import SchedulerMetrics
from argus.settings import ArgusSettings, parse_settings
from argus.store.code import CodeStore
from argus.store.db import Database, connect
from argus.store.secrets import SecretStore
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.service")

STOP_TIMEOUT_S = 40.0  # the child's own joins (JOIN_S in all, then 5 s) end well within it
JOIN_S = 20.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def build_scheduler(
    settings: ArgusSettings,
    db: Database,
    jobs: JobTool,
    snapshots: ClusterView,
    clock: Clock,
    observer: SchedulerObserver | None,
    environ: Mapping[str, str] | None = None,
) -> Scheduler:
    """A scheduler over `db`, with the code snapshots and the users' secrets it submits with."""
    secrets = SecretStore(db, settings.secrets_key(environ))
    return Scheduler(
        settings,
        TaskStore(db),
        jobs,
        snapshots,
        clock,
        code=CodeStore(db),
        secrets=JobSecrets(settings.shared_root, secrets),
        observer=observer,
    )


class SchedulerChild(Supervised):
    """The scheduler process of one server (see the module docstring)."""

    name = "scheduler process"
    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, settings: ArgusSettings, environ: Mapping[str, str] | None = None):
        env = dict(os.environ if environ is None else environ)
        svc = settings.service
        for name in (svc.admin_token_env, svc.metrics_token_env, svc.ui_session_key_env):
            env.pop(name, None)  # the scheduler needs none of them (the secrets key it does)
        super().__init__(settings, env)
        self.run_dir = Path(tempfile.mkdtemp(prefix="argus-scheduler-"))  # 0700
        self.nudge = NudgeSender(self.run_dir)
        self.health = StatusReader(self.run_dir)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-P",
            "-m",
            "argus.service.scheduler_process",
            "--run-dir",
            str(self.run_dir),
            "--parent",
            str(os.getpid()),
        ]

    def exited(self) -> None:
        self.health.forget()

    def stop(self) -> None:
        """Stop the child (SIGKILL after STOP_TIMEOUT_S) and remove the run directory."""
        super().stop()
        self.nudge.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def collect(self) -> Iterator[Metric]:
        """The process's own metrics, then the child's pass metrics (a Prometheus collector)."""
        yield GaugeMetricFamily("argus_scheduler_process_up", "Whether the scheduler process runs", self.running)
        yield CounterMetricFamily(
            "argus_scheduler_process_restarts",
            "Times the server started its scheduler process again (or tried to)",
            self.restarts,
        )
        yield from self.health.collect()


class _Stop(BaseException):
    """SIGTERM or SIGINT, raised in the child's main thread. A BaseException, so that no
    `except Exception` on the way (logging's handlers have one) swallows it."""


class _StopSignals:
    """The handler of SIGTERM and SIGINT in the child: the first raises `_Stop`, later ones only
    end the process when its server is gone. (Linux sends the parent-death signal when the
    *thread* that started the child ends: when the server stops a child it started again, that
    comes with its SIGTERM; when the server is killed, it may come while the server's other
    threads still live, so the stop that follows keeps checking for the server.)"""

    def __init__(self, parent: int, run_dir: Path):
        self.parent, self.run_dir, self.stopping = parent, run_dir, False

    def __call__(self, *_: object) -> None:
        _exit_if_orphaned(self.parent, self.run_dir)
        if not self.stopping:
            self.stopping = True
            raise _Stop


def run_child(run_dir: Path, parent: int, settings_text: str) -> int:
    """The scheduler process's main (see the module docstring); its exit status.

    Raises:
        _Stop: a stop signal came before its loops started (nothing to wind down).
    """
    if not die_with_parent(parent):  # (settings from a server that died while writing them: unused)
        return 0
    settings = parse_settings(yaml.safe_load(settings_text) or {}, "the server's settings", environ={})
    # The server has migrated the database already.
    db = connect(settings.db_url, autocheckpoint=False, wal_max_bytes=settings.service.sqlite_wal_max_bytes)
    from argus.cluster.snapshot import RaySnapshotSource

    snapshots = RaySnapshotSource.for_config(settings.ray)
    jobs = RayJobTool(settings.ray)
    registry = CollectorRegistry(auto_describe=False)
    scheduler = build_scheduler(settings, db, jobs, snapshots, time.time, SchedulerMetrics(registry))
    sampler = GpuSampler(
        scheduler.store, snapshots, RayGpuReader(), time.time, settings.scheduler.gpu_sample_interval_s, jobs
    )
    stop, written = threading.Event(), threading.Event()
    listener = NudgeListener(run_dir, scheduler.nudge)
    loops = [("scheduler", scheduler.run), ("nudges", listener.run)]
    if sampler.enabled:
        loops.append(("gpu-sampler", sampler.run))
    status = StatusWriter(run_dir, scheduler, lambda: metric_samples(registry))
    threads = [threading.Thread(target=run, args=(stop,), name=f"argus-{name}", daemon=True) for name, run in loops]
    threads.append(threading.Thread(target=status.run, args=(written,), name="argus-status", daemon=True))
    code = 0
    try:
        for thread in threads:
            thread.start()
        log.info("scheduler process %d started (server %d)", os.getpid(), parent)
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                raise _Stop
            dead = [t.name for t in threads if not t.is_alive()]
            if dead:
                log.error("the scheduler process's thread(s) %s died: it exits to be started again", dead)
                code = 1
                break
    except _Stop:  # from here a stop signal only ends the process if the server is gone
        pass
    _exit_if_orphaned(parent, run_dir)
    stop.set()
    scheduler.nudge()
    sampler.nudge()
    # The server may be dying rather than stopping us (the parent-death signal comes when the
    # thread that started us ends, which can be before the whole server is gone): every wait
    # below checks for that, and cuts the stop short once it is so.
    _join_watching(threads[:-1], time.monotonic() + JOIN_S, parent, run_dir)
    written.set()  # the status writer's last write follows the last pass
    _join_watching(threads[-1:], time.monotonic() + 5, parent, run_dir)
    db.dispose()
    _exit_if_orphaned(parent, run_dir)
    log.info("scheduler process %d stopped", os.getpid())
    return code


def _join_watching(threads: list[threading.Thread], deadline: float, parent: int, run_dir: Path) -> None:
    """Join `threads` until `deadline`, exiting at once if the server goes meanwhile."""
    for thread in threads:
        while thread.ident is not None and thread.is_alive():  # (a stop may come before all started)
            _exit_if_orphaned(parent, run_dir)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            thread.join(timeout=min(0.1, left))


def _exit_if_orphaned(parent: int, run_dir: Path) -> None:
    """Exit at once when the server is gone (a pass in progress is cut short, as by a crash)."""
    if os.getppid() != parent:
        log.warning("the server (pid %d) is gone: the scheduler process exits now", parent)
        shutil.rmtree(run_dir, ignore_errors=True)
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The scheduler process of an `argus server` (started by it).")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = _StopSignals(args.parent, args.run_dir)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        return run_child(args.run_dir, args.parent, sys.stdin.read())
    except _Stop:  # stopped before its loops started
        _exit_if_orphaned(args.parent, args.run_dir)
        return 0


if __name__ == "__main__":
    sys.exit(main())
