"""Several API processes for one server (`service.api_processes` > 1).

One interpreter serves a burst of submissions at about one core: its lock, not the machine, sets
the ceiling. With `service.api_processes: N`, N processes serve one address, each on a listening
socket of its own, all with `SO_REUSEPORT`: `argus server` binds the first (once without it
before, so an address in use is refused, never shared) and starts N - 1 children (each an
`argus.service.children.Supervised`, started again when it dies), each of which binds its own
once its app is built. The kernel spreads new connections over the sockets by a hash of their
addresses: with one shared socket, whichever process woke first took a burst of new connections,
and one process could end up with nearly all of a client pool's keep-alive connections.

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
    """One API process besides the first. It binds a socket of its own to the server's address
    once its app is built, just before it serves: no socket is ever in the kernel's spread
    without a process accepting on it (a child that dies takes its socket with it, and the
    connections in its backlog are reset)."""

    name = "API process"
    stop_timeout_s = 30.0

    def __init__(self, settings: ArgusSettings, address: tuple[str, int], link: ProcessLink):
        super().__init__(settings, os.environ)
        self.address, self.link = address, link

    def command(self) -> list[str]:
        host, port = self.address
        cmd = [sys.executable, "-P", "-m", "argus.service.api_processes", "--host", host, "--port", str(port)]
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
        sock.close()
        shared.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _watch_parent(parent: int) -> None:
    """Stop this process (as SIGTERM would) once the first one is gone."""
    while os.getppid() == parent:
        threading.Event().wait(1.0)
    log.warning("the server (pid %d) is gone: this API process stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(
    address: tuple[str, int], run_dir: Path, parent: int, scheduler_dir: Path | None, settings_text: str
) -> int:
    """An API process other than the first: serve a socket of its own until stopped."""
    from argus.service.app import create_app

    if not die_with_parent(parent):
        return 0
    settings = parse_settings(yaml.safe_load(settings_text) or {}, "the server's settings", environ={})
    link = ProcessLink(run_dir, SharedState.open(run_dir / SHARED_FILE), primary=False, scheduler_dir=scheduler_dir)
    app = create_app(settings, processes=link, run_scheduler=False, run_nodes=False)
    stop = threading.Event()
    writer = RequestsWriter(run_dir, app.state.metrics.request_registry)
    threading.Thread(target=writer.run, args=(stop,), name="argus-requests-writer", daemon=True).start()
    threading.Thread(target=_watch_parent, args=(parent,), name="argus-parent-watch", daemon=True).start()
    _freeze()
    sock = listen(*address, first=False)  # only now: it accepts from the first connection on
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
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--scheduler-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded request
    return run_worker((args.host, args.port), args.run_dir, args.parent, args.scheduler_dir, sys.stdin.read())


if __name__ == "__main__":
    from argus.service import api_processes  # the module's own classes, not __main__'s copies

    sys.exit(api_processes.main())
