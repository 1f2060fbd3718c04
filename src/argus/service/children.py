"""The server's child processes: started, watched, started again, stopped.

Owns `Supervised`, what every child of `argus server` shares (the scheduler process,
`argus.service.scheduler_process`, and the extra API processes, `argus.service.api_processes`):
it starts `command()` in a session of its own (a terminal's Ctrl-C goes to the server, which
stops it) with the given environment, hands it the settings on its standard
input (no copy of them on disk), starts it again when it exits or cannot be started (after 1 s,
doubling to at most 30 s while it keeps failing; back to 1 s once one ran `STEADY_S`), and stops
it with the server (SIGTERM, then SIGKILL after `stop_timeout_s`). The child's own side (its
parent-death signal, its stop signals) is `die_with_parent` and the child modules' mains.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping

from argus.settings import ArgusSettings, dump_settings

log = logging.getLogger("argus.service")

RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0
STEADY_S = 60.0  # a child that ran this long before it exited is restarted after RESTART_MIN_S
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """In a child: ask Linux for SIGTERM when the parent dies; whether the parent is still there."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the children's own pid checks still end them
        pass
    return os.getppid() == parent


class Supervised:
    """One child process of the server, kept running until `stop` (see the module docstring).

    Subclasses say what to run (`command`) and may act when a child ends (`exited`).
    """

    name = "child"
    stop_timeout_s = 40.0

    def __init__(self, settings: ArgusSettings, environ: Mapping[str, str]):
        self.settings = settings
        self.environ = dict(environ)
        self.restarts = 0
        self.last_exit: int | None = None
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def exited(self) -> None:
        """Called before a child is started (again) and after one ends."""

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _spawn(self) -> subprocess.Popen | None:
        """Start a child and hand it the settings; None when it could not be started."""
        self.exited()
        try:
            proc = subprocess.Popen(
                self.command(),
                env=self.environ,
                start_new_session=True,
                stdin=subprocess.PIPE,
            )
        except OSError as exc:
            log.error("the %s could not be started: %s", self.name, exc)
            return None
        assert proc.stdin is not None
        try:
            proc.stdin.write(dump_settings(self.settings).encode())
        except OSError:  # it died before reading them: it is started again
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
        return proc

    def start(self) -> None:
        if self._watch is not None:
            raise RuntimeError(f"the {self.name} was started already")
        with self._lock:
            self._proc = self._spawn()
        self._watch = threading.Thread(target=self._supervise, name=f"argus-watch-{self.name}", daemon=True)
        self._watch.start()

    def _supervise(self) -> None:
        delay = RESTART_MIN_S
        while not self._stop.is_set():
            try:
                delay = self._watch_once(delay)
            except Exception:  # the watch outlives any one failure (a child outlives its starter)
                log.exception("the %s's supervision failed; it goes on", self.name)
                self._stop.wait(RESTART_MIN_S)

    def _watch_once(self, delay: float) -> float:
        """Wait for the child to exit, then start another after `delay`; the next delay."""
        proc, started = self._proc, time.monotonic()
        if proc is not None:
            while proc.poll() is None:
                if self._stop.wait(0.5):
                    return delay
            if self._stop.is_set():
                return delay
            self.last_exit = proc.returncode
            self.exited()  # what the dead one said is not served while none runs
            if time.monotonic() - started >= STEADY_S:
                delay = RESTART_MIN_S
            log.error(
                "the %s (pid %d) exited with %s; starting it again in %.0f s",
                self.name,
                proc.pid,
                proc.returncode,
                delay,
            )
        if self._stop.wait(delay):
            return delay
        with self._lock:
            if not self._stop.is_set():
                self._proc = self._spawn()
                self.restarts += 1
        return min(delay * 2, RESTART_MAX_S)

    def signal_stop(self) -> None:
        """Ask the child to stop (SIGTERM) and start it no more; `stop()` waits for it."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def stop(self) -> None:
        """Stop the child (SIGKILL after `stop_timeout_s`)."""
        self.signal_stop()
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("the %s (pid %d) did not stop in %.0f s: killed", self.name, proc.pid, self.stop_timeout_s)
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    log.error("the %s (pid %d) does not die (uninterruptible I/O?)", self.name, proc.pid)
        if self._watch is not None:
            self._watch.join(timeout=5)
