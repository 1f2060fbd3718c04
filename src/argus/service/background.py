"""The server's background work: the scheduler loop, the node reconciler, the GPU sampler and
SQLite checkpoints, in threads, or the scheduler and the sampler in a child process.

Owns starting them with the app and stopping them with it (FastAPI lifespan): `start()` starts
what the settings ask for (the GPU sampler runs where the scheduler runs, when its interval is
not 0; with a `SchedulerChild`, both run in it), `stop()` sets the shared stop event, nudges the
loops so a waiting pass returns at once, joins them and stops the child. Each loop paces itself
(`argus.scheduler.pacing`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from argus.scheduler.gpu_sampler import GpuSampler
from argus.scheduler.loop import Scheduler
from argus.scheduler.node_reconciler import NodeReconciler
from argus.service.scheduler_process import SchedulerChild
from argus.store.db import Database

log = logging.getLogger("argus.service")
JOIN_TIMEOUT_S = 30.0


def checkpoints(db: Database, stop: threading.Event, every_s: float = 1.0) -> None:
    """Copy SQLite's write-ahead log into the database every `every_s` until `stop` (off the
    request path, so no request pays for a checkpoint's fsync)."""
    while not stop.wait(every_s):
        try:
            db.checkpoint()
        except Exception:  # a busy or failed checkpoint is retried at the next one
            log.debug("checkpoint failed", exc_info=True)


class Background:
    """The threads of one server process."""

    def __init__(
        self,
        scheduler: Scheduler,
        reconciler: NodeReconciler,
        *,
        run_scheduler: bool,
        run_nodes: bool,
        checkpoint_db: Database | None,
        gpu_sampler: GpuSampler | None = None,
        child: SchedulerChild | None = None,
    ):
        """Args:
        run_scheduler, run_nodes: whether to run each loop.
        checkpoint_db: the SQLite database whose checkpoints this process runs (None: none).
        gpu_sampler: samples running attempts' GPUs beside the scheduler (None: none).
        child: the process the scheduler and the sampler run in instead (None: threads, when
            `run_scheduler`).
        """
        self.scheduler = scheduler
        self.reconciler = reconciler
        self.run_scheduler = run_scheduler
        self.run_nodes = run_nodes
        self.checkpoint_db = checkpoint_db
        self.gpu_sampler = gpu_sampler
        self.child = child
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start(self) -> None:
        if self.checkpoint_db is not None and self.checkpoint_db.is_sqlite:
            # Never joined: it only waits on the stop event and ends with it.
            threading.Thread(
                target=checkpoints, args=(self.checkpoint_db, self.stop_event), name="argus-checkpoint", daemon=True
            ).start()
        if self.run_scheduler:
            self._spawn("argus-scheduler", self.scheduler.run)
            if self.gpu_sampler is not None and self.gpu_sampler.enabled:
                self._spawn("argus-gpu-sampler", self.gpu_sampler.run)
        if self.run_nodes:
            self._spawn("argus-nodes", self.reconciler.run)
        if self.child is not None:
            self.child.start()

    def stop(self) -> None:
        if self.child is not None:
            self.child.signal_stop()  # it winds down while the threads here do
        self.stop_event.set()
        self.scheduler.nudge()
        self.reconciler.nudge()
        if self.gpu_sampler is not None:
            self.gpu_sampler.nudge()
        for thread in self._threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
        self._threads.clear()
        self.reconciler.close()
        if self.child is not None:
            self.child.stop()
