"""What joins the API process to a scheduler running in a process of its own.

Owns the two channels, both in a private run directory (mode 0700) the server makes for its
child (`argus.service.scheduler_process`):

- **nudges**, API -> scheduler: `NudgeSender` sends one datagram per nudge over a Unix datagram
  socket (`nudge.sock`): `a` (a task arrived: admit) or `s` (one was cancelled: sync first).
  Sending never blocks and never fails the request: with no scheduler listening (starting,
  restarting) the nudge is dropped and the next full pass, which reads the whole queue, serves
  it. `NudgeListener`, in the scheduler's process, hands each datagram to the scheduler's own
  `nudge`; a burst of them is served by one pass (`argus.scheduler.pacing`).
- **status**, scheduler -> API: `StatusWriter`, in the scheduler's process, writes
  `status.json` (what `/healthz` shows of the scheduler, the fair share its last full pass
  ordered by, and its pass metrics as JSON samples) at most every `every_s` when it has
  changed, replacing the file atomically.
  `StatusReader`, in the API process, reads it back (once per change of the file) and has the
  same health attributes as an in-process `Scheduler`, so `/healthz` reads either alike; as a
  Prometheus collector in the API's registry it serves the child's metrics on `/metrics`.

Nothing here calls Ray or the database.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

log = logging.getLogger("argus.scheduler")

NUDGE_SOCKET = "nudge.sock"
STATUS_FILE = "status.json"
ADMIT, SYNC = b"a", b"s"


class SchedulerState(Protocol):
    """What `/healthz` reads of a scheduler (an in-process `Scheduler` or a `StatusReader`)."""

    reconciled: bool
    last_tick_at: float | None
    last_error: str | None
    ray_error: str | None
    ray_ok_at: float | None

    @property
    def last_fair_share(self) -> dict[str, float] | None:
        """Per user, the decayed GPU-hours its last full pass ordered by (None: none yet)."""
        ...


class NudgeSender:
    """The API's `nudge(sync=False)` for a scheduler in another process."""

    def __init__(self, run_dir: str | Path):
        self.path = str(Path(run_dir) / NUDGE_SOCKET)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.dropped = 0  # nudges no scheduler was listening for (or whose queue was full)

    def __call__(self, sync: bool = False) -> None:
        try:
            self._sock.sendto(SYNC if sync else ADMIT, self.path)
        except OSError:  # none listening, or its queue is full: a pass is coming anyway
            self.dropped += 1

    def close(self) -> None:
        self._sock.close()


class NudgeListener:
    """Receives nudges in the scheduler's process and hands them to `nudge(sync)`."""

    def __init__(self, run_dir: str | Path, nudge: Callable[..., None]):
        self.path = Path(run_dir) / NUDGE_SOCKET
        self.path.unlink(missing_ok=True)  # a socket left by an earlier child
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.5)
        self._nudge = nudge

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    data = self._sock.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    if stop.is_set():
                        return
                    raise
                self._nudge(sync=SYNC in data)
        finally:
            self._sock.close()
            self.path.unlink(missing_ok=True)


class StatusWriter:
    """Writes the scheduler's health and metrics to `status.json` while it runs."""

    def __init__(self, run_dir: str | Path, health: SchedulerState, metrics: Callable[[], list], every_s: float = 0.25):
        """Args:
        health: the running scheduler.
        metrics: its pass metrics (`metric_samples` of its registry).
        every_s: the shortest time between two writes.
        """
        self.path = Path(run_dir) / STATUS_FILE
        self.health, self.metrics, self.every_s = health, metrics, every_s
        self._last: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        h = self.health
        return {
            "pid": os.getpid(),
            "reconciled": h.reconciled,
            "last_tick_at": h.last_tick_at,
            "last_error": h.last_error,
            "ray_error": h.ray_error,
            "ray_ok_at": h.ray_ok_at,
            "fair_share": h.last_fair_share,
            "metrics": self.metrics(),
        }

    def write(self) -> bool:
        """Write the status if it changed since the last write; whether it did."""
        status = self.snapshot()
        if status == self._last:
            return False
        tmp = self.path.with_name(f".{STATUS_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.path)
        self._last = status
        return True

    def run(self, stop: threading.Event) -> None:
        """Write every `every_s` until `stop`, then once more (set it after the last pass)."""
        while True:
            last = stop.wait(self.every_s)
            try:
                self.write()
            except OSError:  # the run directory went away: the server is gone
                log.warning("cannot write the scheduler's status to %s", self.path, exc_info=True)
            if last:
                return


class StatusReader:
    """The API's view of a scheduler in another process, from its `status.json`.

    Each attribute is read from the file as the child last wrote it (the file is read again only
    when it has changed). Before the child's first write: not reconciled, no pass yet.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / STATUS_FILE
        self._stamp: tuple[int, int, int] | None = None
        self._status: dict[str, Any] = {}

    def status(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp != self._stamp:
            try:
                self._status = json.loads(self.path.read_text())
            except (OSError, ValueError):  # replaced while read: the last one read stands
                return self._status
            self._stamp = stamp
        return self._status

    def forget(self) -> None:
        """Drop what an earlier child wrote (a new one starts from nothing)."""
        self.path.unlink(missing_ok=True)
        self._stamp, self._status = None, {}

    @property
    def reconciled(self) -> bool:
        return bool(self.status().get("reconciled", False))

    @property
    def last_tick_at(self) -> float | None:
        return self.status().get("last_tick_at")

    @property
    def last_error(self) -> str | None:
        return self.status().get("last_error")

    @property
    def ray_error(self) -> str | None:
        return self.status().get("ray_error")

    @property
    def ray_ok_at(self) -> float | None:
        return self.status().get("ray_ok_at")

    @property
    def last_fair_share(self) -> dict[str, float] | None:
        return self.status().get("fair_share")

    def collect(self) -> Iterator[Metric]:
        """The child's pass metrics as it last wrote them (a Prometheus collector)."""
        for name, kind, doc, samples in self.status().get("metrics", []):
            family = Metric(name, doc, kind)
            for sample, labels, value in samples:
                family.add_sample(sample, labels, value)
            yield family


def metric_samples(registry: CollectorRegistry) -> list:
    """Every family of `registry` as JSON-able lists: [name, type, help, [[sample, labels, value]]]."""
    return [
        [m.name, m.type, m.documentation, [[s.name, s.labels, s.value] for s in m.samples]] for m in registry.collect()
    ]
