"""The Ray head of a cluster and its publisher of head.json (`argus head start|stop|status`).

Owns, per (shared_root, cluster name):
- the head: `ray start --head --block` with 0 CPU and 0 GPU (control only, seed principle 4),
  its dashboard / job server on `node_ip:dashboard_port`, ports of its own found free at start,
  and a temp dir that depends only on (shared_root, cluster), so a head started again on
  another port keeps it (every node on the head's host must share it);
- the publisher: `python -m argus.cluster.head publish …`, a detached process that rewrites
  `<shared_root>/ray/discovery/<cluster>/head.json` atomically (temp file + rename) every
  `refresh_s` while the head process lives and its GCS port accepts connections, so the file
  goes stale (past `ttl_s`) when the head dies, and says `stopped: true` after a clean stop;
- the record `head-state.json` next to head.json (pids, ports), which `stop` and `status` read
  (its format, its paths and head.json's reading and writing: `argus.cluster.head_record`).
Both processes get the allow-list environment, umask and an empty working directory of their
own (`argus.cluster.nodeenv`), never the caller's.
`stop` ends exactly the recorded process trees (never `ray stop`, which would kill every Ray on
the host).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argus.cluster.errors import ClusterError, PortInUse
from argus.cluster.head_record import (
    HeadRecord,
    check_cluster_name,
    load_record,
    log_dir,
    read_head,
    save_record,
    state_file,
    temp_dir_for,
    write_head,
)
from argus.cluster.procs import (
    PortFinder,
    alive_node_ips,
    default_port_start,
    log_tail,
    node_env,
    node_ports,
    node_workdir,
    owned,
    pid_alive,
    port_args,
    port_free,
    routable_ip,
    spawn,
    start_ray,
    stop_trees,
    tcp_open,
)
from argus.domain.discovery import HeadInfo
from argus.domain.discovery import discovery_file as discovery_file  # `head.discovery_file` for the CLI

DEFAULT_GCS_PORT = 6380  # Ray's usual 6379 is Redis's too
DEFAULT_DASHBOARD_PORT = 8265
OBJECT_STORE_BYTES = 256 * 1024 * 1024
log = logging.getLogger("argus.head")


@dataclass(frozen=True)
class HeadStatus:
    record: HeadRecord
    head_alive: bool
    publisher_alive: bool
    published: HeadInfo | None
    problem: str | None  # why `published` is None or not this head's
    now: float

    @property
    def fresh(self) -> bool:
        return self.published is not None and self.published.fresh(self.now)

    @property
    def healthy(self) -> bool:
        return self.head_alive and self.publisher_alive and self.fresh and self.problem is None


def _same_host(rec: HeadRecord, what: str) -> None:
    """The record's pids are those of the host that started it: act on them only there.

    Raises:
        ClusterError: the head was started on another machine.
    """
    here = socket.gethostname()
    if rec.host and rec.host != here:
        raise ClusterError(
            f"the head of cluster {rec.cluster!r} was started on {rec.host}, not on this machine "
            f"({here}); run this there to {what} (if that machine is gone for good, remove "
            f"{state_file(rec.shared_root, rec.cluster)})"
        )


# -- processes ---------------------------------------------------------------------------
def head_start_args(rec: HeadRecord) -> list[str]:
    """The `ray start --head --block` command line of this head."""
    return [
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address",
        rec.head_ip,
        "--port",
        str(rec.gcs_port),
        "--temp-dir",
        rec.temp_dir,
        "--num-cpus",
        "0",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        "--include-dashboard",
        "true",
        "--dashboard-host",
        rec.head_ip,
        "--dashboard-port",
        str(rec.dashboard_port),
        *port_args(rec.ports, rec.min_worker_port, rec.max_worker_port),
    ]


def _wait(what: str, ready, proc: subprocess.Popen, log_path: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"{what} exited with code {proc.returncode}; end of {log_path}:\n{log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.3)
    raise ClusterError(f"{what} was not up in time; see {log_path}")


# -- the API -----------------------------------------------------------------------------
def start(
    shared_root: str,
    cluster: str,
    port: int = DEFAULT_GCS_PORT,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    node_ip: str | None = None,
    ttl_s: float = 30.0,
    refresh_s: float = 5.0,
    timeout: float = 90.0,
) -> HeadRecord:
    """Start the head and its publisher; return once Ray sees the head and head.json is out.

    Args:
        shared_root: the shared storage root (head.json goes under `ray/discovery/<cluster>`).
        cluster: the cluster's name.
        port, dashboard_port: the GCS and the dashboard / job server ports.
        node_ip: the head's IP; default this host's routable IP.
        ttl_s, refresh_s: how long head.json is trusted, and how often it is rewritten.
        timeout: seconds for the head and the first publication.

    Returns:
        The record of the head (the running one when the same head already runs).

    Raises:
        ValueError: a bad cluster name, TTL or refresh interval.
        PortInUse: the GCS or dashboard port is taken.
        ClusterError: another head of this cluster runs, or the head failed to start.
    """
    check_cluster_name(cluster)
    if not 0 < refresh_s < ttl_s:
        raise ValueError(f"refresh_s ({refresh_s:g}) must be positive and below ttl_s ({ttl_s:g})")
    root = str(Path(shared_root).resolve())
    ip = node_ip or routable_ip()
    running = _running_head(root, cluster, ip, port, dashboard_port)
    if running is not None:
        return running
    _check_ports_free(port, dashboard_port)
    rec = _plan_head(root, cluster, ip, port, dashboard_port, ttl_s, refresh_s)
    deadline = time.monotonic() + timeout
    try:
        _start_head_process(rec, deadline)
        _start_publisher(rec, deadline)
    except BaseException:
        stop(root, cluster, grace_s=5.0)
        raise
    return rec


def _running_head(root: str, cluster: str, ip: str, port: int, dashboard_port: int) -> HeadRecord | None:
    """The recorded head when this very head runs healthy; else None, what is left of a dead one cleared.

    Raises:
        ClusterError: the recorded head runs on another machine, or another head of this cluster runs.
    """
    current = status(root, cluster)
    if current is None:
        return None
    old = current.record
    _same_host(old, "start another head")
    if current.head_alive:
        if current.healthy and (old.head_ip, old.gcs_port, old.dashboard_port) == (ip, port, dashboard_port):
            return old
        raise ClusterError(
            f"a head of cluster {cluster!r} already runs at {old.address} (pid {old.head_pid}); "
            f"stop it first: argus head stop --shared-root {root} --cluster {cluster}"
        )
    stop(root, cluster, grace_s=5.0)  # what is left of a head that died
    return None


def _check_ports_free(port: int, dashboard_port: int) -> None:
    """Raises: PortInUse when the GCS or the dashboard port is taken."""
    for p, what, flag in ((port, "Ray GCS", "--port"), (dashboard_port, "Ray dashboard", "--dashboard-port")):
        if not port_free(p):
            raise PortInUse(
                f"port {p} ({what}) is already in use by another process; stop it or choose another port with {flag}"
            )


def _plan_head(
    root: str, cluster: str, ip: str, port: int, dashboard_port: int, ttl_s: float, refresh_s: float
) -> HeadRecord:
    """The record of the head to start: its other ports found free, its temp dir, this host."""
    finder = PortFinder(default_port_start(ip), {port, dashboard_port})
    ports, lo, hi = node_ports(finder, ("ray_client_server_port",))
    return HeadRecord(
        root,
        cluster,
        ip,
        port,
        dashboard_port,
        temp_dir_for(root, cluster),
        ttl_s,
        refresh_s,
        ports,
        lo,
        hi,
        started_at=time.time(),
        host=socket.gethostname(),
    )


def _start_head_process(rec: HeadRecord, deadline: float) -> None:
    """Start `ray start --head`, record its pid, and wait until Ray sees the head alive."""
    head_log = log_dir(rec.shared_root, rec.cluster) / "head.log"
    proc = start_ray(
        head_start_args(rec),
        head_log,
        node_env(),
        rec.temp_dir,
        timeout=max(deadline - time.monotonic(), 1.0),
        cwd=node_workdir(rec.temp_dir, "head-ray"),
    )
    rec.head_pid = proc.pid
    save_record(rec)
    _wait("the Ray head", lambda: rec.head_ip in alive_node_ips(rec.dashboard_url), proc, head_log, deadline)


def _start_publisher(rec: HeadRecord, deadline: float) -> None:
    """Start the head.json publisher, record its pid, and wait for its first fresh head.json."""
    pub_log = log_dir(rec.shared_root, rec.cluster) / "publisher.log"
    pub = spawn(
        [
            sys.executable,
            "-m",
            "argus.cluster.head",
            "publish",
            "--shared-root",
            rec.shared_root,
            "--cluster",
            rec.cluster,
        ],
        pub_log,
        node_env(),
        cwd=node_workdir(rec.temp_dir, "head-publisher"),
    )
    rec.publisher_pid = pub.pid
    save_record(rec)
    _wait("the head.json publisher", lambda: _published(rec), pub, pub_log, deadline)


def _published(rec: HeadRecord) -> bool:
    """Whether head.json names this head, not stopped, and is fresh."""
    info, _ = read_head(rec.shared_root, rec.cluster)
    return info is not None and info.address == rec.address and not info.stopped and info.fresh(time.time())


def stop(shared_root: str, cluster: str, grace_s: float = 10.0) -> bool:
    """Stop the publisher, then the head (their process trees), and mark head.json stopped.

    Returns:
        False when no head was recorded for this cluster.
    """
    root = str(Path(shared_root).resolve())
    rec = load_record(root, cluster)
    if rec is None:
        return False
    _same_host(rec, "stop it")
    if owned(rec.publisher_pid, "argus.cluster.head"):
        stop_trees([rec.publisher_pid], grace_s)
    if owned(rec.head_pid, rec.temp_dir):
        stop_trees([rec.head_pid], grace_s)
    write_head(root, cluster, rec.info(time.time(), stopped=True))
    state_file(root, cluster).unlink(missing_ok=True)
    return True


def status(shared_root: str, cluster: str) -> HeadStatus | None:
    """The recorded head, whether its processes live and what head.json says; None if none."""
    root = str(Path(shared_root).resolve())
    rec = load_record(root, cluster)
    if rec is None:
        return None
    info, problem = read_head(root, cluster)
    if info is not None and info.address != rec.address:
        problem = f"head.json names {info.address}, not {rec.address}"
    elif info is not None and info.stopped:
        problem = "head.json says the head stopped"
    return HeadStatus(
        rec,
        owned(rec.head_pid, rec.temp_dir),
        owned(rec.publisher_pid, "argus.cluster.head"),
        info,
        problem,
        time.time(),
    )


# -- the publisher process ----------------------------------------------------------------
def publish(shared_root: str, cluster: str, stop_event: threading.Event) -> int:
    """Rewrite head.json every refresh_s while the head lives and its GCS answers.

    Returns:
        0 when asked to stop, 1 when the head is gone or no head is recorded.
    """
    rec = load_record(shared_root, cluster)
    if rec is None:
        log.error("no head recorded for cluster %s under %s", cluster, shared_root)
        return 1
    reachable = None
    while not stop_event.is_set():
        if not pid_alive(rec.head_pid):
            log.error("the head (pid %s) is gone: no longer publishing", rec.head_pid)
            return 1
        ok = tcp_open(rec.head_ip, rec.gcs_port)
        if ok:
            write_head(shared_root, cluster, rec.info(time.time()))
        if ok != reachable:
            log.info(
                "GCS %s %s",
                rec.address,
                "answers: publishing head.json" if ok else "does not answer: not refreshing head.json",
            )
            reachable = ok
        stop_event.wait(rec.refresh_s)
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m argus.cluster.head")
    parser.add_argument("command", choices=["publish"])
    parser.add_argument("--shared-root", required=True)
    parser.add_argument("--cluster", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    return publish(args.shared_root, args.cluster, done)


if __name__ == "__main__":
    sys.exit(_main())
