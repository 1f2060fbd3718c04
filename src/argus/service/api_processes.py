"""Several API processes for one server (`service.api_processes` > 1).

One interpreter serves a burst of submissions at about one core: its lock, not the machine, sets
the ceiling. With `service.api_processes: N`, `argus server` binds N listening sockets to its
address itself, all with `SO_REUSEPORT` (the first is bound without it before, so an address in
use is refused, never shared), serves the first and starts N - 1 children, each with one of the
others inherited (an `argus.service.children.Supervised`, started again on a fresh socket when it
dies). The kernel spreads new connections over the sockets by a hash of their addresses: with
one shared socket, whichever process woke first took a burst of new connections, and one
process could end up with nearly all of a client pool's keep-alive connections.

What they share lives in a private run directory (mode 0700) the first process makes:

- `shared`: an `argus.service.shared_state.SharedState` (the per-user submission buckets, and the
  generation that makes every process forget the token -> user memory when a user changes);
- `primary.sock`: the first process also serves the app on this Unix socket; the others forward
  to it what only it can serve (`argus.service.to_primary`: the node routes, `/healthz`,
  `/metrics`);
- `requests-<pid>.json`: each other process writes its request metrics there every
  `WRITE_EVERY_S`; the first sums them with its own on `/metrics`. A file stays after its process
  died, so the sums never go down (a restarted process writes a file of its own).

The console's session key is the same in all of them: the first makes a random one when none is
configured, and the others inherit it. Nudges reach the scheduler process from every API process
(its socket's path is handed on); SQLite's writers of all processes queue on the database's OS
write lock (`argus.store.db`).

Owns `ProcessLink` (what `create_app` is told about the others), `ApiProcess`, `serve` (the
first process) and `main` (the others).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from prometheus_client import CollectorRegistry

from argus.scheduler.link import metric_samples
from argus.service.children import Supervised, die_with_parent
from argus.service.shared_state import SharedState
from argus.settings import ArgusSettings, parse_settings

if TYPE_CHECKING:
    from argus.service.scheduler_process import SchedulerChild

log = logging.getLogger("argus.service")

PRIMARY_SOCKET = "primary.sock"
SHARED_FILE = "shared"
WRITE_EVERY_S = 1.0
BACKLOG = 2048


@dataclass(frozen=True)
class ProcessLink:
    """What one API process of several is told about the others (see the module docstring)."""

    run_dir: Path
    shared: SharedState
    primary: bool
    scheduler_dir: Path | None = None  # the scheduler process's run directory (its nudge socket)

    @property
    def primary_socket(self) -> Path:
        return self.run_dir / PRIMARY_SOCKET

    def other_requests(self) -> list[list]:
        """The request metrics the other processes last wrote (for the first one's `/metrics`)."""
        out = []
        for path in sorted(self.run_dir.glob("requests-*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # being replaced, or the run directory is going
                continue
        return out


class RequestsWriter:
    """In an API process other than the first: writes its request metrics for the first."""

    def __init__(self, run_dir: Path, registry: CollectorRegistry):
        self.path = run_dir / f"requests-{os.getpid()}.json"
        self.registry = registry

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}")
        tmp.write_text(json.dumps(metric_samples(self.registry)))
        os.replace(tmp, self.path)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(WRITE_EVERY_S):
            try:
                self.write()
            except OSError:  # the run directory went away: the server is stopping
                return


def _socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart beside TIME_WAIT sockets
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def listen(host: str, port: int, first: bool = True) -> socket.socket:
    """A listening socket of the server, with `SO_REUSEPORT` so that its other API processes
    bind the same port.

    Args:
        first: the server's first socket: the port is first bound without `SO_REUSEPORT`, so that
            an address another server (or another `argus server` of the same user) listens on
            is refused as taken, never shared.
    Raises:
        OSError: the address is taken or cannot be bound.
    """
    if first:
        probe = _socket(host, port, reuse_port=False)
        port = probe.getsockname()[1]  # the one the kernel picked, when asked for any
        probe.close()
    sock = _socket(host, port, reuse_port=True)
    sock.listen(BACKLOG)
    return sock


class ApiProcess(Supervised):
    """One API process besides the first, serving a socket of its own that it inherits.

    When it dies, its socket is closed, and another is bound just before it is started again:
    a socket nobody accepts on would keep its share of new connections waiting (the kernel
    hashes them to it all the same) for as long as the restart takes; closed, the connections in
    its backlog are reset and new ones go to the other processes. (Those that come to a new one
    during its child's start-up wait for it, a second or two.)
    """

    name = "API process"
    stop_timeout_s = 30.0

    def __init__(self, settings: ArgusSettings, address: tuple[str, int], link: ProcessLink):
        self.address, self.link = address, link
        self.sock: socket.socket | None = listen(*address, first=False)
        self._served = False  # a child was started on `sock`
        super().__init__(settings, os.environ)

    def _spawn(self) -> subprocess.Popen | None:
        self.exited()
        if self.sock is None:  # bound just before its child starts (which accepts at once)
            self.sock = listen(*self.address, first=False)
        self.pass_fds = (self.sock.fileno(),)
        proc = super()._spawn()
        self._served = True
        if proc is None:  # not started: nobody would accept on it until the next try
            self.exited()
        return proc

    def exited(self) -> None:
        if self._served and self.sock is not None:  # its child is gone: out of the kernel's spread
            self.sock.close()
            self.sock = None
        self._served = False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def command(self) -> list[str]:
        assert self.sock is not None
        cmd = [sys.executable, "-P", "-m", "argus.service.api_processes", "--fd", str(self.sock.fileno())]
        cmd += ["--run-dir", str(self.link.run_dir), "--parent", str(os.getpid())]
        if self.link.scheduler_dir is not None:
            cmd += ["--scheduler-dir", str(self.link.scheduler_dir)]
        return cmd


def _uvicorn_server(app: object, settings: ArgusSettings):
    import uvicorn

    config = uvicorn.Config(app, log_level=settings.service.log_level, access_log=False)  # type: ignore[arg-type]
    return uvicorn.Server(config)


class _Stopped(Exception):
    """SIGTERM, raised once uvicorn has shut down (it raises the signal again when it is done)."""


def _stopped(*_: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up that follows is not cut short
    raise _Stopped


def _run(app: object, settings: ArgusSettings, sockets: list[socket.socket]) -> bool:
    """Serve `app` on `sockets` until SIGTERM or SIGINT, then return (uvicorn's own shutdown
    first: requests in flight are answered); whether it started (False: its start-up failed)."""
    signal.signal(signal.SIGTERM, _stopped)
    server = _uvicorn_server(app, settings)
    try:
        server.run(sockets=sockets)
    except (_Stopped, KeyboardInterrupt):
        pass
    return bool(server.started)


def _freeze() -> None:
    # What start-up made lives as long as the process: frozen, a full collection under load
    # scans only what requests made (see `argus.client.server_cli`).
    gc.collect()
    gc.freeze()


def serve(settings: ArgusSettings, child: SchedulerChild | None, sock: socket.socket) -> None:
    """The first API process: serve `sock` (from `listen`), start the others on sockets of their
    own bound to the same address, serve until stopped, stop them."""
    from argus.service.app import create_app

    svc = settings.service
    if not os.environ.get(svc.ui_session_key_env):  # one key for all, passed on to the others
        os.environ[svc.ui_session_key_env] = secrets.token_hex(32)
    run_dir = Path(tempfile.mkdtemp(prefix="argus-api-"))  # 0700
    shared = SharedState.create(run_dir / SHARED_FILE)
    link = ProcessLink(run_dir, shared, primary=True, scheduler_dir=child.run_dir if child else None)
    workers: list[ApiProcess] = []
    address = sock.getsockname()[:2]  # the port `listen` got (when asked for any)
    try:
        app = create_app(settings, scheduler_child=child, processes=link)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(link.primary_socket))
        unix.listen(BACKLOG)
        workers = [ApiProcess(settings, address, link) for _ in range(svc.api_processes - 1)]
        _freeze()
        for worker in workers:
            worker.start()
        if not _run(app, settings, [sock, unix]):
            raise SystemExit(3)  # its start-up failed (said in the log), as `uvicorn.run` exits
    finally:
        for worker in workers:
            worker.signal_stop()
        for worker in workers:
            worker.stop()
            worker.close()
        sock.close()
        shared.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _watch_parent(parent: int) -> None:
    """Stop this process (as SIGTERM would) once the first one is gone."""
    while os.getppid() == parent:
        threading.Event().wait(1.0)
    log.warning("the server (pid %d) is gone: this API process stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(fd: int, run_dir: Path, parent: int, scheduler_dir: Path | None, settings_text: str) -> int:
    """An API process other than the first: serve the inherited socket until stopped."""
    from argus.service.app import create_app

    if not die_with_parent(parent):
        return 0
    settings = parse_settings(yaml.safe_load(settings_text) or {}, "the server's settings", environ={})
    link = ProcessLink(run_dir, SharedState.open(run_dir / SHARED_FILE), primary=False, scheduler_dir=scheduler_dir)
    app = create_app(settings, processes=link, run_scheduler=False, run_nodes=False)
    sock = socket.socket(fileno=fd)
    stop = threading.Event()
    writer = RequestsWriter(run_dir, app.state.metrics.request_registry)
    threading.Thread(target=writer.run, args=(stop,), name="argus-requests-writer", daemon=True).start()
    threading.Thread(target=_watch_parent, args=(parent,), name="argus-parent-watch", daemon=True).start()
    _freeze()
    try:
        if not _run(app, settings, [sock]):
            return 3  # its start-up failed (said in the log): the server starts it again
    finally:
        stop.set()
        try:
            writer.write()  # its last counts
        except OSError:
            pass
        if os.getppid() != parent:  # the server was killed: nobody else removes what it made
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An API process of an `argus server` (started by it).")
    parser.add_argument("--fd", required=True, type=int)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--scheduler-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded request
    return run_worker(args.fd, args.run_dir, args.parent, args.scheduler_dir, sys.stdin.read())


if __name__ == "__main__":
    from argus.service import api_processes  # the module's own classes, not __main__'s copies

    sys.exit(api_processes.main())
