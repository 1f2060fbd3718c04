"""A local Ray cluster for the embedded default, the demo and the tests.

Owns `argus cluster up|status|down`: a head with 0 CPU and 0 GPU (control only, seed
principle 4) and N worker nodes, each offering the `worker_node` resource and G GPUs (logical
where the machine has none; on a machine with GPUs each worker gets its own slice through
CUDA_VISIBLE_DEVICES).

Several Ray nodes on one host work only when each node has
- its own loopback address (127.0.X.k): a driver attaches to a raylet by IP, and the job log
  endpoint is reached through the driver node's agent;
- its own dashboard-agent, metrics, runtime-env-agent, node-manager, object-manager and worker
  ports (found free at start and recorded);
- the same temp dir as the head, so every agent reads job logs where the drivers write them.
Each node runs as `ray start --block` in its own session; its pid and ports are recorded in
`<shared_root>/ray/local/cluster.json`, which `status` and `down` read. `down` stops exactly
these processes and their descendants (never `ray stop`, which would kill every Ray on the host).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from argus.cluster.errors import ClusterError, PortInUse

NODE_PORT_KEYS = (
    "dashboard_agent_listen_port",
    "dashboard_agent_grpc_port",
    "metrics_export_port",
    "runtime_env_agent_port",
    "node_manager_port",
    "object_manager_port",
)
# Ray's usual GCS port is 6379, which is Redis's too (and Redis often runs on these machines).
DEFAULT_GCS_PORT = 6380
DEFAULT_DASHBOARD_PORT = 8265
WORKER_PORTS_PER_NODE = 100
OBJECT_STORE_BYTES = 256 * 1024 * 1024
START_TIMEOUT_S = 90.0


@dataclass
class NodeState:
    name: str
    ip: str
    is_head: bool
    gpus: int
    cpus: int
    ports: dict[str, int]
    min_worker_port: int
    max_worker_port: int
    cuda_visible_devices: str | None = None
    pid: int | None = None


@dataclass
class ClusterState:
    shared_root: str
    temp_dir: str
    gcs_port: int
    dashboard_port: int
    workers: int
    gpus_per_worker: int
    cpus_per_worker: int
    drivers_per_worker: int
    nodes: list[NodeState] = field(default_factory=list)
    started_at: float | None = None

    @property
    def head(self) -> NodeState:
        return self.nodes[0]

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head.ip}:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"{self.head.ip}:{self.gcs_port}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ClusterState":
        data = json.loads(text)
        data["nodes"] = [NodeState(**n) for n in data["nodes"]]
        return cls(**data)


# -- paths -------------------------------------------------------------------------------
def state_dir(shared_root: str | Path) -> Path:
    return Path(shared_root) / "ray" / "local"


def state_file(shared_root: str | Path) -> Path:
    return state_dir(shared_root) / "cluster.json"


def config_file(shared_root: str | Path) -> Path:
    """A RayConfig YAML for this cluster, written by `up` (`argus run --config <this>`)."""
    return state_dir(shared_root) / "ray_config.yaml"


def ray_temp_dir(shared_root: str | Path, gcs_port: int) -> str:
    """Short (unix socket paths are limited to 107 bytes) and unique per cluster."""
    digest = hashlib.sha1(f"{Path(shared_root).resolve()}:{gcs_port}".encode()).hexdigest()[:8]
    return f"/tmp/argus-ray-{digest}"


def loopback_prefix(gcs_port: int) -> str:
    """127.0.X. with X from the GCS port, so two local clusters never share node IPs."""
    return f"127.0.{gcs_port % 250 + 2}."


# -- ports -------------------------------------------------------------------------------
def port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortFinder:
    """Hands out free ports from `start` upward, never the same one twice."""

    def __init__(self, start: int, taken: set[int], is_free: Callable[[int], bool] = port_free):
        self.next = start
        self.taken = set(taken)
        self.is_free = is_free

    def one(self) -> int:
        while self.next in self.taken or not self.is_free(self.next):
            self.next += 1
            if self.next > 65000:
                raise ClusterError("no free port left below 65000")
        port = self.next
        self.taken.add(port)
        self.next += 1
        return port

    def block(self, size: int) -> tuple[int, int]:
        """`size` consecutive free ports."""
        while True:
            start = self.one()
            ok = all(p not in self.taken and self.is_free(p) for p in range(start + 1, start + size))
            if ok:
                self.taken.update(range(start, start + size))
                self.next = start + size
                return start, start + size - 1
            self.next = start + 1


def plan_cluster(
    shared_root: str,
    workers: int,
    gpus_per_worker: int,
    cpus_per_worker: int,
    gcs_port: int = DEFAULT_GCS_PORT,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    drivers_per_worker: int = 100,
    port_start: int = 20000,
    is_free: Callable[[int], bool] = port_free,
    gpu_slices: list[str] | None = None,
) -> ClusterState:
    """Lay out the nodes of a new cluster: addresses, ports, GPU slices.

    Raises:
        PortInUse: the GCS or dashboard port is taken.
    """
    for port, what, flag in ((gcs_port, "Ray GCS", "--port"), (dashboard_port, "Ray dashboard", "--dashboard-port")):
        if not is_free(port):
            raise PortInUse(
                f"port {port} ({what}) is already in use by another process; "
                f"stop it or choose another port with {flag}"
            )
    finder = PortFinder(port_start, {gcs_port, dashboard_port}, is_free)
    prefix = loopback_prefix(gcs_port)
    nodes = []
    for k in range(workers + 1):
        head = k == 0
        ports = {key: finder.one() for key in NODE_PORT_KEYS}
        if head:
            ports["ray_client_server_port"] = finder.one()
        lo, hi = finder.block(WORKER_PORTS_PER_NODE)
        nodes.append(
            NodeState(
                name="head" if head else f"worker-{k}",
                ip=f"{prefix}{k + 1}",
                is_head=head,
                gpus=0 if head else gpus_per_worker,
                cpus=0 if head else cpus_per_worker,
                ports=ports,
                min_worker_port=lo,
                max_worker_port=hi,
                cuda_visible_devices=None if head or gpu_slices is None else gpu_slices[k - 1],
            )
        )
    return ClusterState(
        shared_root=shared_root,
        temp_dir=ray_temp_dir(shared_root, gcs_port),
        gcs_port=gcs_port,
        dashboard_port=dashboard_port,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        drivers_per_worker=drivers_per_worker,
        nodes=nodes,
    )


def ray_start_args(state: ClusterState, node: NodeState) -> list[str]:
    """The `ray start --block` command line of one node."""
    args = [
        "start", "--block", "--disable-usage-stats",
        "--node-ip-address", node.ip,
        "--temp-dir", state.temp_dir,
        "--num-cpus", str(node.cpus),
        "--num-gpus", str(node.gpus),
        "--object-store-memory", str(OBJECT_STORE_BYTES),
        "--min-worker-port", str(node.min_worker_port),
        "--max-worker-port", str(node.max_worker_port),
    ]
    for key, port in node.ports.items():
        args += ["--" + key.replace("_", "-"), str(port)]
    if node.is_head:
        args += [
            "--head", "--port", str(state.gcs_port),
            "--dashboard-host", node.ip, "--dashboard-port", str(state.dashboard_port),
            "--include-dashboard", "true",
        ]
    else:
        args += [
            "--address", state.gcs_address,
            "--resources", json.dumps({"worker_node": state.drivers_per_worker}),
        ]
    return args


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


def gpu_slices(workers: int, gpus_per_worker: int, physical: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES per worker when real GPUs exist, None for logical GPUs."""
    if physical == 0:
        return None
    need = workers * gpus_per_worker
    if need > physical:
        raise ClusterError(
            f"{workers} workers x {gpus_per_worker} GPUs need {need} GPUs; this machine has {physical}"
        )
    return [
        ",".join(str(i) for i in range(k * gpus_per_worker, (k + 1) * gpus_per_worker))
        for k in range(workers)
    ]


# -- processes ---------------------------------------------------------------------------
def _ray_exe() -> str:
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _node_env(node: NodeState) -> dict[str, str]:
    env = dict(os.environ)
    # Drivers run `python3 -m verl...`: make it this environment's Python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(name, None)
    if node.cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = node.cuda_visible_devices
    return env


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _alive_node_ips(dashboard_url: str) -> set[str]:
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=dashboard_url, timeout=5, raise_on_missing_output=False)
    except Exception:
        return set()
    return {n.node_ip for n in nodes if n.state == "ALIVE"}


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return ""


def _start_node(state: ClusterState, node: NodeState, log_dir: Path, timeout: float) -> None:
    log = log_dir / f"{node.name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [_ray_exe(), *ray_start_args(state, node)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_node_env(node), start_new_session=True,
        )
    node.pid = proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(
                f"ray start for {node.name} exited with code {proc.returncode}; "
                f"end of {log}:\n{_log_tail(log)}"
            )
        if node.ip in _alive_node_ips(state.dashboard_url):
            return
        time.sleep(0.5)
    raise ClusterError(f"{node.name} did not join within {timeout:.0f}s; see {log}")


def load_state(shared_root: str | Path) -> ClusterState | None:
    path = state_file(shared_root)
    if not path.exists():
        return None
    try:
        return ClusterState.from_json(path.read_text())
    except (ValueError, TypeError, KeyError):
        return None


def write_config(state: ClusterState) -> Path:
    """A RayConfig for this cluster, so `argus run --config` finds it."""
    path = config_file(state.shared_root)
    cfg = {
        "address": state.dashboard_url,
        "shared_root": state.shared_root,
        "entrypoint_num_cpus": 1,
        "entrypoint_resources": {"worker_node": 1},
        "runtime_env": {"env_vars": {}},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@dataclass(frozen=True)
class ClusterStatus:
    state: ClusterState
    processes_alive: dict[str, bool]
    nodes_alive: set[str]

    @property
    def healthy(self) -> bool:
        return all(self.processes_alive.values()) and all(
            n.ip in self.nodes_alive for n in self.state.nodes
        )


def status(shared_root: str | Path) -> ClusterStatus | None:
    """The recorded cluster and what is alive of it; None when none was started here."""
    state = load_state(shared_root)
    if state is None:
        return None
    procs = {n.name: pid_alive(n.pid) for n in state.nodes}
    alive = _alive_node_ips(state.dashboard_url) if procs.get("head") else set()
    return ClusterStatus(state, procs, alive)


def up(
    shared_root: str,
    workers: int = 2,
    gpus_per_worker: int = 4,
    cpus_per_worker: int = 4,
    gcs_port: int = DEFAULT_GCS_PORT,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    drivers_per_worker: int = 100,
    timeout: float = START_TIMEOUT_S,
) -> tuple[ClusterState, bool]:
    """Start the cluster, or find it running; returns (state, started_now).

    Raises:
        PortInUse: a port it needs is taken by something else.
        ClusterError: a node failed to start, or a different cluster runs here.
    """
    shared_root = str(Path(shared_root).resolve())
    current = status(shared_root)
    if current is not None and current.healthy:
        s = current.state
        if (s.workers, s.gpus_per_worker, s.cpus_per_worker) != (workers, gpus_per_worker, cpus_per_worker):
            raise ClusterError(
                f"a cluster with {s.workers} workers x {s.gpus_per_worker} GPUs x "
                f"{s.cpus_per_worker} CPUs already runs for {shared_root}; "
                "run `argus cluster down` first to change its shape"
            )
        write_config(s)
        return s, False
    if current is not None:
        down(shared_root)  # a half-dead cluster: clear it, then start clean
    slices = gpu_slices(workers, gpus_per_worker, detect_gpus())
    state = plan_cluster(
        shared_root, workers, gpus_per_worker, cpus_per_worker,
        gcs_port, dashboard_port, drivers_per_worker, gpu_slices=slices,
    )
    sdir = state_dir(shared_root)
    (sdir / "logs").mkdir(parents=True, exist_ok=True)
    state.started_at = time.time()
    try:
        for node in state.nodes:
            _start_node(state, node, sdir / "logs", timeout)
            state_file(shared_root).write_text(state.to_json())
    except BaseException:
        state_file(shared_root).write_text(state.to_json())
        down(shared_root)
        raise
    write_config(state)
    return state, True


def _descendants(pid: int) -> list:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _by_temp_dir(temp_dir: str) -> list:
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


def _wait_gone(procs: list, timeout: float) -> list:
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


def down(shared_root: str | Path, grace_s: float = 10.0) -> bool:
    """Stop the recorded cluster's processes and their descendants; False when none was recorded."""
    import psutil

    shared_root = str(Path(shared_root).resolve())
    state = load_state(shared_root)
    if state is None:
        return False
    procs = {}
    for node in reversed(state.nodes):
        for p in _descendants(node.pid) if node.pid else []:
            procs[p.pid] = p
    for p in _by_temp_dir(state.temp_dir):
        procs.setdefault(p.pid, p)
    # `ray start --block` stops its own children on SIGTERM; then anything left is killed.
    for node in reversed(state.nodes):
        if node.pid and node.pid in procs:
            try:
                procs[node.pid].send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
    alive = _wait_gone(list(procs.values()), grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(alive, 5.0)
    state_file(shared_root).unlink(missing_ok=True)
    config_file(shared_root).unlink(missing_ok=True)
    return True
