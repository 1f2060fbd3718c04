"""The scheduler in a process of its own: the server's side of it, and the process itself.

`argus server` runs the scheduler loop and the GPU sampler in a child process (with
`scheduler.own_process`, the default), so that their passes never hold the API's interpreter:
a full pass over a long queue takes a quarter of a second of Python, which requests would wait
for behind the lock.

Owns:

- `SchedulerChild`, in the API process: makes a private run directory (mode 0700), writes the
  settings there, starts the child (`python -m argus.service.scheduler_process`) in a session of
  its own (a terminal's Ctrl-C goes to the server, which stops it), starts it again when it
  exits (after 1 s, doubling to at most 30 s while it keeps failing at once), and stops it with
  the server (SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`). Its `nudge` and `health` are
  `argus.scheduler.link`'s sender and reader.
- `run_child`, the child's main: the scheduler and the GPU sampler as threads (as in the server
  when `own_process` is false), the nudge listener and the status writer beside them. It ends on
  SIGTERM or SIGINT, and when its parent dies (Linux's parent-death signal, and a check of its
  parent's pid every second), so a killed server never leaves a second scheduler behind.
- `build_scheduler`: the one wiring of a `Scheduler`, for both shapes.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from argus.cluster.gpu_metrics import RayGpuReader
from argus.cluster.jobs import RayJobTool
from argus.ports import Clock, ClusterView, JobTool, SchedulerObserver
from argus.scheduler.gpu_sampler import GpuSampler
from argus.scheduler.link import NudgeListener, NudgeSender, StatusReader, StatusWriter, metric_samples
from argus.scheduler.loop import Scheduler
from argus.scheduler.secrets import JobSecrets
from argus.service.metrics import SchedulerMetrics
from argus.settings import ArgusSettings, dump_settings, load_settings
from argus.store.code import CodeStore
from argus.store.db import Database, open_database
from argus.store.secrets import SecretStore
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.service")

SETTINGS_FILE = "settings.yaml"
STOP_TIMEOUT_S = 15.0
RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0
STEADY_S = 60.0  # a child that ran this long before it exited is restarted after RESTART_MIN_S
PR_SET_PDEATHSIG = 1


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


class SchedulerChild:
    """The scheduler process of one server (see the module docstring)."""

    def __init__(self, settings: ArgusSettings, environ: Mapping[str, str] | None = None):
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.run_dir = Path(tempfile.mkdtemp(prefix="argus-scheduler-"))  # 0700
        (self.run_dir / SETTINGS_FILE).write_text(dump_settings(settings))
        self.nudge = NudgeSender(self.run_dir)
        self.health = StatusReader(self.run_dir)
        self.restarts = 0
        self.last_exit: int | None = None
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

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

    def _spawn(self) -> subprocess.Popen:
        self.health.forget()
        return subprocess.Popen(self.command(), env=self.environ, start_new_session=True, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        with self._lock:
            self._proc = self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="argus-scheduler-child", daemon=True)
        self._watch.start()

    def _supervise(self) -> None:
        delay = RESTART_MIN_S
        while not self._stop.is_set():
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            while proc.poll() is None:
                if self._stop.wait(0.5):
                    return
            if self._stop.is_set():
                return
            self.last_exit = proc.returncode
            delay = RESTART_MIN_S if time.monotonic() - started >= STEADY_S else delay
            log.error(
                "the scheduler process (pid %d) exited with %s; starting it again in %.0f s",
                proc.pid,
                proc.returncode,
                delay,
            )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_S)
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = self._spawn()
                self.restarts += 1

    def stop(self) -> None:
        """Stop the child (and its supervision) and remove the run directory."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("the scheduler process (pid %d) did not stop in %.0f s: killed", proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()
        if self._watch is not None:
            self._watch.join(timeout=5)
        self.nudge.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _die_with_parent(parent: int) -> bool:
    """Ask Linux for SIGTERM when the parent dies; whether the parent is still there."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the pid check below still ends the child
        pass
    return os.getppid() == parent


def run_child(run_dir: Path, parent: int) -> int:
    """The scheduler process's main (see the module docstring); its exit status."""
    if not _die_with_parent(parent):
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = load_settings(run_dir / SETTINGS_FILE, environ={})
    db = open_database(settings.db_url, autocheckpoint=False, wal_max_bytes=settings.service.sqlite_wal_max_bytes)
    from argus.cluster.snapshot import RaySnapshotSource

    snapshots = RaySnapshotSource.for_config(settings.ray)
    jobs = RayJobTool(settings.ray)
    registry = CollectorRegistry(auto_describe=False)
    scheduler = build_scheduler(settings, db, jobs, snapshots, time.time, SchedulerMetrics(registry))
    sampler = GpuSampler(
        scheduler.store, snapshots, RayGpuReader(), time.time, settings.scheduler.gpu_sample_interval_s, jobs
    )
    listener = NudgeListener(run_dir, scheduler.nudge)
    status = StatusWriter(run_dir, scheduler, lambda: metric_samples(registry))
    loops = [("scheduler", scheduler.run), ("nudges", listener.run)]
    if sampler.enabled:
        loops.append(("gpu-sampler", sampler.run))
    threads = [threading.Thread(target=run, args=(stop,), name=f"argus-{name}", daemon=True) for name, run in loops]
    for thread in threads:
        thread.start()
    writer = threading.Thread(target=status.run, args=(stop,), name="argus-status", daemon=True)
    writer.start()
    log.info("scheduler process %d started (server %d)", os.getpid(), parent)
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("the server (pid %d) is gone: the scheduler process stops", parent)
            stop.set()
    scheduler.nudge()
    sampler.nudge()
    for thread in threads:
        thread.join(timeout=30)
    writer.join(timeout=5)
    db.dispose()
    if os.getppid() != parent:  # nobody is left to remove the run directory
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The scheduler process of an `argus server` (started by it).")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_child(args.run_dir, args.parent)


if __name__ == "__main__":
    sys.exit(main())
