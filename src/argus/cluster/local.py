"""A local Ray cluster for the embedded default, the demo and the tests, run the production way.

Owns `argus cluster up|status|down` (and the cluster half of `argus up|down`): the head is
`argus.cluster.head.start` (cluster name `local`, 0 CPU and 0 GPU, its head.json published on
`shared_root`), and each worker is a detached `argus node-agent` that finds the head through
head.json and joins with its GPUs (logical where the machine has none; on a machine with GPUs
each worker gets its own slice through CUDA_VISIBLE_DEVICES): what production runs.

Several Ray nodes on one host work only when each node has
- its own loopback address (127.0.X.k, X from the GCS port): a driver attaches to a raylet by
  IP, and the job log endpoint is reached through the driver node's agent;
- its own dashboard-agent, metrics, runtime-env-agent, node-manager, object-manager and worker
  ports: each node looks for free ones in a port region of its own at each (re)join;
- the same temp dir as the head, so every agent reads job logs where the drivers write them.
The head's record, the agents' pids and the layout are in `<shared_root>/ray/local/cluster.json`,
which `status` and `down` read. `down` stops the agents (each stops its raylet), then the head,
then whatever still names this cluster's temp dir; never `ray stop`, which would kill every Ray
on the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from argus.cluster import head as head_mod
from argus.cluster.errors import ClusterError, PortInUse
from argus.cluster.procs import (
    alive_node_ips,
    by_temp_dir,
    default_port_start,
    detect_gpus,
    log_tail,
    node_env,
    node_workdir,
    owned,
    pid_alive,  # noqa: F401  (callers use local.pid_alive and local.port_free)
    port_free,
    spawn,
    stop_trees,
    wait_gone,
)

# Ray's usual GCS port is 6379, which is Redis's too (and Redis often runs on these machines).
DEFAULT_GCS_PORT = head_mod.DEFAULT_GCS_PORT
DEFAULT_DASHBOARD_PORT = head_mod.DEFAULT_DASHBOARD_PORT
LOCAL_CLUSTER = "local"
OBJECT_STORE_BYTES = 256 * 1024 * 1024
AGENT_POLL_S = 1.0
START_TIMEOUT_S = 90.0

_by_temp_dir = by_temp_dir  # the name the tests use


@dataclass
class NodeState:
    name: str
    ip: str
    is_head: bool
    gpus: int
    cpus: int
    port_start: int  # where the node looks for its free ports at each (re)join
    cuda_visible_devices: str | None = None
    pid: int | None = None  # the head's `ray start`, or the worker's node agent
    labels: dict[str, str] = field(default_factory=dict)  # the worker's Ray labels (`pool`, ...)


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
    cluster: str = LOCAL_CLUSTER

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
    def from_json(cls, text: str) -> ClusterState:
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


def ray_temp_dir(shared_root: str | Path) -> str:
    """The local head's temp dir: short, one per shared root (not per port)."""
    return head_mod.temp_dir_for(shared_root, LOCAL_CLUSTER)


def loopback_prefix(gcs_port: int) -> str:
    """127.0.X. with X from the GCS port, so two local clusters never share node IPs."""
    return f"127.0.{gcs_port % 250 + 2}."


# -- planning (pure) -----------------------------------------------------------------------
def plan_cluster(
    shared_root: str,
    workers: int,
    gpus_per_worker: int,
    cpus_per_worker: int,
    gcs_port: int = DEFAULT_GCS_PORT,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    drivers_per_worker: int = 100,
    is_free: Callable[[int], bool] = port_free,
    gpu_slices: list[str] | None = None,
    worker_labels: Sequence[Mapping[str, str]] | None = None,
) -> ClusterState:
    """Lay out the nodes of a new cluster: names, addresses, port regions, GPU slices, labels
    (`worker_labels[k]` for worker k+1; workers without an entry have none).

    Raises:
        PortInUse: the GCS or dashboard port is taken.
    """
    for port, what, flag in (
        (gcs_port, "Ray GCS", "--port"),
        (dashboard_port, "Ray dashboard", "--dashboard-port"),
    ):
        if not is_free(port):
            raise PortInUse(
                f"port {port} ({what}) is already in use by another process; stop it or choose another port with {flag}"
            )
    prefix = loopback_prefix(gcs_port)
    nodes = []
    for k in range(workers + 1):
        is_head = k == 0
        ip = f"{prefix}{k + 1}"
        nodes.append(
            NodeState(
                name="head" if is_head else f"worker-{k}",
                ip=ip,
                is_head=is_head,
                gpus=0 if is_head else gpus_per_worker,
                cpus=0 if is_head else cpus_per_worker,
                port_start=default_port_start(ip),
                cuda_visible_devices=None if is_head or gpu_slices is None else gpu_slices[k - 1],
                labels={} if is_head or not worker_labels or k > len(worker_labels) else dict(worker_labels[k - 1]),
            )
        )
    return ClusterState(
        shared_root=shared_root,
        temp_dir=ray_temp_dir(shared_root),
        gcs_port=gcs_port,
        dashboard_port=dashboard_port,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        drivers_per_worker=drivers_per_worker,
        nodes=nodes,
    )


def agent_args(state: ClusterState, node: NodeState) -> list[str]:
    """The `argus node-agent` arguments of one worker (no head address: it reads head.json)."""
    labels = ["--labels", ",".join(f"{k}={v}" for k, v in node.labels.items())] if node.labels else []
    return [
        "node-agent",
        "--shared-root",
        state.shared_root,
        "--cluster",
        state.cluster,
        "--name",
        node.name,
        "--node-ip",
        node.ip,
        "--gpus",
        str(node.gpus),
        "--cpus",
        str(node.cpus),
        "--temp-dir",
        state.temp_dir,
        "--drivers",
        str(state.drivers_per_worker),
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        "--port-start",
        str(node.port_start),
        "--poll-s",
        str(AGENT_POLL_S),
        *labels,
    ]


def gpu_slices(workers: int, gpus_per_worker: int, physical: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES per worker when real GPUs exist, None for logical GPUs."""
    if physical == 0:
        return None
    need = workers * gpus_per_worker
    if need > physical:
        raise ClusterError(f"{workers} workers x {gpus_per_worker} GPUs need {need} GPUs; this machine has {physical}")
    return [",".join(str(i) for i in range(k * gpus_per_worker, (k + 1) * gpus_per_worker)) for k in range(workers)]


# -- state ---------------------------------------------------------------------------------
def load_state(shared_root: str | Path) -> ClusterState | None:
    path = state_file(shared_root)
    if not path.exists():
        return None
    try:
        return ClusterState.from_json(path.read_text())
    except (ValueError, TypeError, KeyError):
        return None


def _save(state: ClusterState) -> None:
    state_file(state.shared_root).write_text(state.to_json())


def write_config(state: ClusterState) -> Path:
    """A RayConfig for this cluster, so `argus run --config` finds it."""
    path = config_file(state.shared_root)
    cfg = {
        "address": state.dashboard_url,
        "cluster_name": state.cluster,
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
    processes_alive: dict[str, bool]  # head: its `ray start` and its publisher; workers: agents
    nodes_alive: set[str]

    @property
    def healthy(self) -> bool:
        return all(self.processes_alive.values()) and all(n.ip in self.nodes_alive for n in self.state.nodes)


def status(shared_root: str | Path) -> ClusterStatus | None:
    """The recorded cluster and what is alive of it; None when none was started here."""
    state = load_state(shared_root)
    if state is None:
        return None
    hs = head_mod.status(state.shared_root, state.cluster)
    procs = {"head": hs is not None and hs.head_alive and hs.publisher_alive}
    for n in state.nodes[1:]:
        procs[n.name] = owned(n.pid, "node-agent")
    alive = alive_node_ips(state.dashboard_url) if procs["head"] else set()
    return ClusterStatus(state, procs, alive)


# -- up and down ---------------------------------------------------------------------------
def _start_agent(state: ClusterState, node: NodeState, log_dir: Path) -> subprocess.Popen:
    """A worker's node agent: the allow-list environment (its GPU slice included), umask 027,
    an empty working directory of its own; never the caller's environment or directory."""
    return spawn(
        [sys.executable, "-m", "argus.client.cli", *agent_args(state, node)],
        log_dir / f"{node.name}.log",
        node_env(node.cuda_visible_devices, keep_pass_list=True),
        cwd=node_workdir(state.temp_dir, f"agent-{node.name}"),
    )


def _wait_workers(state: ClusterState, agents: dict[str, subprocess.Popen], log_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    want = {n.ip: n.name for n in state.nodes[1:]}
    while time.monotonic() < deadline:
        for name, proc in agents.items():
            if proc.poll() is not None:
                log = log_dir / f"{name}.log"
                raise ClusterError(
                    f"the node agent of {name} exited with code {proc.returncode}; end of {log}:\n{log_tail(log)}"
                )
        if set(want) <= alive_node_ips(state.dashboard_url):
            return
        time.sleep(0.5)
    missing = sorted(set(want) - alive_node_ips(state.dashboard_url))
    raise ClusterError(
        f"{', '.join(want[ip] for ip in missing)} did not join within {timeout:.0f}s; "
        f"see the logs in {log_dir} and {head_mod.log_dir(state.shared_root, state.cluster)}"
    )


def up(
    shared_root: str,
    workers: int = 2,
    gpus_per_worker: int = 4,
    cpus_per_worker: int = 4,
    gcs_port: int = DEFAULT_GCS_PORT,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    drivers_per_worker: int = 100,
    timeout: float = START_TIMEOUT_S,
    worker_labels: Sequence[Mapping[str, str]] | None = None,
) -> tuple[ClusterState, bool]:
    """Start the cluster (head, then one node agent per worker), or find it running.

    Returns:
        (state, started_now), once every worker is ALIVE in Ray.

    Raises:
        PortInUse: a port it needs is taken by something else.
        ClusterError: a node failed to start, or a different cluster runs here.
    """
    shared_root = str(Path(shared_root).resolve())
    current = status(shared_root)
    if current is not None and current.healthy:
        return _reuse_running(current.state, shared_root, workers, gpus_per_worker, cpus_per_worker), False
    if current is not None:
        down(shared_root)  # a half-dead cluster: clear it, then start clean
    slices = gpu_slices(workers, gpus_per_worker, detect_gpus())
    state = plan_cluster(
        shared_root,
        workers,
        gpus_per_worker,
        cpus_per_worker,
        gcs_port,
        dashboard_port,
        drivers_per_worker,
        gpu_slices=slices,
        worker_labels=worker_labels,
    )
    log_dir = state_dir(shared_root) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    _start_nodes(state, log_dir, timeout)
    write_config(state)
    return state, True


def _reuse_running(
    s: ClusterState, shared_root: str, workers: int, gpus_per_worker: int, cpus_per_worker: int
) -> ClusterState:
    """The running cluster, its RayConfig rewritten, when it has this shape (ClusterError if not)."""
    if (s.workers, s.gpus_per_worker, s.cpus_per_worker) != (workers, gpus_per_worker, cpus_per_worker):
        raise ClusterError(
            f"a cluster with {s.workers} workers x {s.gpus_per_worker} GPUs x "
            f"{s.cpus_per_worker} CPUs already runs for {shared_root}; "
            "run `argus cluster down` first to change its shape"
        )
    write_config(s)
    return s


def _start_nodes(state: ClusterState, log_dir: Path, timeout: float) -> None:
    """Start the head, then the agents, and wait for every worker; on failure stop what started."""
    state.started_at = time.time()
    deadline = time.monotonic() + timeout
    try:
        _save(state)
        _start_head(state, timeout)
        agents = _start_agents(state, log_dir)
        _wait_workers(state, agents, log_dir, max(deadline - time.monotonic(), 10.0))
    except BaseException:
        _save(state)
        down(state.shared_root)
        raise


def _start_head(state: ClusterState, timeout: float) -> None:
    """Start the head (`argus.cluster.head.start`) and record its pid and temp dir."""
    rec = head_mod.start(
        state.shared_root, state.cluster, state.gcs_port, state.dashboard_port, node_ip=state.head.ip, timeout=timeout
    )
    state.head.pid, state.temp_dir = rec.head_pid, rec.temp_dir
    _save(state)


def _start_agents(state: ClusterState, log_dir: Path) -> dict[str, subprocess.Popen]:
    """Start one node agent per worker, recording each pid as it starts."""
    agents = {}
    for node in state.nodes[1:]:
        agents[node.name] = _start_agent(state, node, log_dir)
        node.pid = agents[node.name].pid
        _save(state)
    return agents


def down(shared_root: str | Path, grace_s: float = 10.0) -> bool:
    """Stop the agents (each stops its raylet), the head and its publisher, then whatever
    still names this cluster's temp dir. Returns False when no cluster was recorded."""
    shared_root = str(Path(shared_root).resolve())
    state = load_state(shared_root)
    if state is None:
        return False
    agents = [n.pid for n in state.nodes[1:] if owned(n.pid, "node-agent")]
    stop_trees(agents, grace_s + 5.0)  # an agent gives its raylet up to 10 s
    head_mod.stop(shared_root, state.cluster, grace_s)
    left = by_temp_dir(state.temp_dir)
    for p in left:
        try:
            p.terminate()
        except Exception:
            pass
    for p in wait_gone(left, 3.0):
        try:
            p.kill()
        except Exception:
            pass
    state_file(shared_root).unlink(missing_ok=True)
    config_file(shared_root).unlink(missing_ok=True)
    return True
