"""Ray node processes on this host: free ports, the `ray` executable, process trees.

Shared by the head (`argus.cluster.head`), the node agent (`argus.cluster.agent`) and the local
cluster (`argus.cluster.local`). Invariants:
- a process is stopped only through its own process tree (the pid we started and its
  descendants) or by naming its cluster's temp dir; never with `ray stop`, which kills every
  Ray on the host, other people's clusters included;
- ports are handed out by a `PortFinder` that checks each one is free when it is picked;
- `ray start`s that share a temp dir on this host run one at a time (`start_ray`): Ray names
  each node's sockets and log files there by probing which names exist, so two nodes starting
  at once take the same ones and one raylet dies ("bind: Address already in use");
- `ray start` runs with the environment, umask and working directory of
  `argus.cluster.nodeenv`, never the caller's.
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeGuard

from argus.cluster.errors import ClusterError
from argus.cluster.nodeenv import (  # noqa: F401  (re-exported for the node modules)
    DEFAULT_RAY_TEMP_DIR,
    NODE_UMASK,
    node_env,
    node_workdir,
    spawn,
)

NODE_PORT_KEYS = (
    "dashboard_agent_listen_port",
    "dashboard_agent_grpc_port",
    "metrics_export_port",
    "runtime_env_agent_port",
    "node_manager_port",
    "object_manager_port",
)
WORKER_PORTS_PER_NODE = 100
PORT_BASE = 20000
PORT_SLOT = 200  # ports per node region: its NODE_PORT_KEYS, a worker block and room to skip
PORT_SLOTS = 60  # 20000..32000: below Linux's ephemeral range (32768-)


# -- ports -------------------------------------------------------------------------------
def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def default_port_start(node_ip: str | None) -> int:
    """Where a node's ports start: a region of its own per IP, so that nodes started at the
    same time on one host (127.0.X.k) do not pick the same still-unbound worker ports."""
    if not node_ip:
        return PORT_BASE
    try:
        octets = [int(part) for part in node_ip.split(".")]
    except ValueError:
        return PORT_BASE
    if len(octets) != 4:
        return PORT_BASE
    slot = (octets[2] * 7 + octets[3]) % PORT_SLOTS
    return PORT_BASE + slot * PORT_SLOT


class PortFinder:
    """Hands out free ports from `start` upward, never the same one twice."""

    def __init__(self, start: int, taken: set[int], is_free: Callable[[int], bool] = port_free):
        self.next = start
        self.taken = set(taken)
        self.is_free = is_free

    def one(self) -> int:
        """Raises: ClusterError when no port below 65000 is free."""
        while self.next in self.taken or not self.is_free(self.next):
            self.next += 1
            if self.next > 65000:
                raise ClusterError("no free port left below 65000")
        port = self.next
        self.taken.add(port)
        self.next += 1
        return port

    def block(self, size: int) -> tuple[int, int]:
        """`size` consecutive free ports, as (first, last)."""
        while True:
            start = self.one()
            ok = all(p not in self.taken and self.is_free(p) for p in range(start + 1, start + size))
            if ok:
                self.taken.update(range(start, start + size))
                self.next = start + size
                return start, start + size - 1
            self.next = start + 1


def node_ports(finder: PortFinder, extra: Iterable[str] = ()) -> tuple[dict[str, int], int, int]:
    """Free ports for one Ray node: {flag key: port} for NODE_PORT_KEYS (+ `extra`), and a
    worker port block (min, max)."""
    ports = {key: finder.one() for key in (*NODE_PORT_KEYS, *extra)}
    lo, hi = finder.block(WORKER_PORTS_PER_NODE)
    return ports, lo, hi


def port_args(ports: dict[str, int], min_worker_port: int, max_worker_port: int) -> list[str]:
    """`ray start` flags for these ports."""
    args = ["--min-worker-port", str(min_worker_port), "--max-worker-port", str(max_worker_port)]
    for key, port in ports.items():
        args += ["--" + key.replace("_", "-"), str(port)]
    return args


def routable_ip() -> str:
    """This host's outgoing IP (the UDP-connect trick: nothing is sent); 127.0.0.1 without a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- GPUs --------------------------------------------------------------------------------
def detect_gpus() -> int:
    """Physical NVIDIA GPUs on this machine (0 without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


# -- processes ---------------------------------------------------------------------------
def ray_exe() -> str:
    """The `ray` of this environment."""
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def pid_alive(pid: int | None) -> TypeGuard[int]:
    """Whether `pid` runs (a zombie does not); True narrows `pid` to an int."""
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def owned(pid: int | None, marker: str) -> TypeGuard[int]:
    """Alive and still the process we started: its command line names `marker` (a recorded
    pid may have been reused by an unrelated process since). True narrows `pid` to an int."""
    if not pid_alive(pid):
        return False
    try:
        import psutil

        return any(marker in part for part in psutil.Process(pid).cmdline())
    except Exception:
        return False


def log_tail(path: Path, n: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return ""


def descendants(pid: int) -> list:
    """The process and all its descendants (psutil.Process), or [] when it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def by_temp_dir(temp_dir: str) -> list:
    """Processes whose command line names this cluster's temp dir (orphans included)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part for part in (proc.info["cmdline"] or [])):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_gone(procs: list, timeout: float) -> list:
    """Wait until each process has exited (a zombie counts as exited); returns those left."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        left = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.Error:
                pass
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def stop_trees(roots: list[int], grace_s: float, extra: Iterable = ()) -> None:
    """SIGTERM each root pid (its tree collected first; `ray start --block` then stops its
    children in order, faster than when each is signalled), wait up to `grace_s`, then kill
    whatever is left of the trees and of `extra` (psutil processes)."""
    import psutil

    procs = {}
    for pid in roots:
        for p in descendants(pid):
            procs[p.pid] = p
    for p in extra:
        procs.setdefault(p.pid, p)
    for pid in roots:
        if pid in procs:
            try:
                procs[pid].send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
    alive = wait_gone(list(procs.values()), grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    wait_gone(alive, 5.0)


# -- ray start ---------------------------------------------------------------------------
RAY_STARTED = "Ray runtime started"


@contextmanager
def start_lock(temp_dir: str | None, timeout: float = 120.0) -> Iterator[None]:
    """Hold this host's lock on `temp_dir` (Ray's default when None) for one `ray start`.

    Raises:
        ClusterError: another start held it for `timeout` seconds.
    """
    directory = Path(temp_dir or DEFAULT_RAY_TEMP_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".argus-start.lock", "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"another `ray start` in {directory} held its lock for {timeout:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_ray(
    args: list[str],
    log_path: Path,
    env: dict[str, str],
    temp_dir: str | None,
    timeout: float = 60.0,
    cwd: Path | str | None = None,
) -> subprocess.Popen:
    """Run `ray <args>` (a `ray start --block`) in its own session, its output appended to
    `log_path`, under the temp dir's start lock until it says it started, exits or `timeout`
    passes. It runs with `env`, umask NODE_UMASK and in `cwd` (give it `node_workdir(...)`;
    default `/`), never in the caller's working directory. The caller checks whether it lives."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with start_lock(temp_dir, timeout=max(timeout * 2, 120.0)):
        offset = log_path.stat().st_size if log_path.exists() else 0
        proc = spawn([ray_exe(), *args], log_path, env, cwd)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(offset)
                if RAY_STARTED.encode() in f.read():
                    break
            time.sleep(0.2)
    return proc


def alive_nodes(dashboard_url: str) -> list:
    """Ray's ALIVE nodes (ray.util.state NodeState) seen through the dashboard; [] on failure."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=dashboard_url, timeout=5, raise_on_missing_output=False)
    except Exception:
        return []
    return [n for n in nodes if n.state == "ALIVE"]


def alive_node_ips(dashboard_url: str) -> set[str]:
    """The IPs of Ray's ALIVE nodes; empty when the dashboard cannot be reached."""
    return {n.node_ip for n in alive_nodes(dashboard_url)}
