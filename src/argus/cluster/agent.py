"""The node agent (`argus node-agent`): keeps this worker in whichever cluster head.json names.

Owns the loop around the pure `argus.domain.discovery.decide`: each poll it reads head.json and
this node's hold file, asks `decide`, and acts through a runner: JOIN starts
`ray start --block --address <head>` (this node's GPUs and CPUs, the `worker_node` resource,
the labels as Ray node labels, ports found free at each join) as a child in its own session;
LEAVE and REJOIN stop that child's process tree first (this node's `ray stop`; never the
global one, which would kill every Ray on the host). On stop (SIGTERM / SIGINT) it stops its
raylet, then returns 0. Its log has one line per change: what it did and why.

Invariants: the agent holds at most one raylet; a raylet that keeps dying right after its start
is started again only after a growing back-off; clock, file reads and processes are injected,
so `tests/unit/test_agent.py` drives it with fakes and no sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from argus.cluster.errors import ClusterError
from argus.cluster.procs import (
    PortFinder,
    default_port_start,
    node_env,
    node_ports,
    node_workdir,
    port_args,
    start_ray,
    stop_trees,
)
from argus.domain.discovery import (
    Action,
    Decision,
    HeadFileError,
    HeadInfo,
    decide,
    discovery_file,
    hold_file,
    parse_head,
)

NODE_LABEL = "argus.io/node"
POOL_LABEL = "pool"
DEFAULT_DRIVERS = 100
STABLE_AFTER_S = 30.0  # a raylet that lived this long did not fail at start
MAX_BACKOFF_S = 60.0


# -- what this node offers -----------------------------------------------------------------
def parse_labels(text: str | None) -> dict[str, str]:
    """`k=v,k2=v2` into a dict, checked against Ray's (Kubernetes-style) label syntax.

    Raises:
        ValueError: bad syntax, a bad key or value, a key reserved by Ray or by Argus.
    """
    from ray._private.label_utils import parse_node_labels_string, validate_node_labels

    if not text or not text.strip():
        return {}
    try:
        labels = parse_node_labels_string(text.strip())
    except ValueError as exc:
        raise ValueError(f"{exc} Use k=v,k2=v2") from None
    validate_node_labels(labels)
    if NODE_LABEL in labels:
        raise ValueError(f"{NODE_LABEL} is set from --name")
    return labels


def check_node_name(name: str) -> None:
    """Raises: ValueError unless `name` is a valid Ray label value and file name."""
    from ray._private.label_utils import validate_label_value

    if not name:
        raise ValueError("the node name is empty")
    validate_label_value(name)


@dataclass(frozen=True)
class NodeSpec:
    """What this node brings to any head it joins."""

    name: str
    gpus: int
    cpus: int | None = None  # None: Ray counts them
    labels: dict[str, str] = field(default_factory=dict)
    node_ip: str | None = None  # None: Ray chooses
    temp_dir: str | None = None  # None: the head's (from head.json), else Ray's
    drivers: int = DEFAULT_DRIVERS  # the `worker_node` resource: drivers it may host
    object_store_memory: int | None = None  # bytes; None: Ray's default
    port_start: int | None = None  # None: a region derived from node_ip

    def all_labels(self) -> dict[str, str]:
        return {**self.labels, NODE_LABEL: self.name}


def worker_start_args(
    spec: NodeSpec,
    address: str,
    temp_dir: str | None,
    ports: dict[str, int],
    min_worker_port: int,
    max_worker_port: int,
) -> list[str]:
    """The `ray start --block --address …` command line of this node."""
    args = [
        "start",
        "--block",
        "--disable-usage-stats",
        "--address",
        address,
        "--num-gpus",
        str(spec.gpus),
        "--resources",
        json.dumps({"worker_node": spec.drivers}),
        "--labels",
        ",".join(f"{k}={v}" for k, v in spec.all_labels().items()),
    ]
    if spec.node_ip:
        args += ["--node-ip-address", spec.node_ip]
    if spec.cpus is not None:
        args += ["--num-cpus", str(spec.cpus)]
    if temp_dir:
        args += ["--temp-dir", temp_dir]
    if spec.object_store_memory:
        args += ["--object-store-memory", str(spec.object_store_memory)]
    return args + port_args(ports, min_worker_port, max_worker_port)


# -- acting ------------------------------------------------------------------------------------
class Runner(Protocol):
    def start(self, address: str, head: HeadInfo) -> Any: ...
    def alive(self, handle: Any) -> bool: ...
    def stop(self, handle: Any, graceful: bool = True) -> None: ...


class RayNodeRunner:
    """Runs this node's `ray start --block` as a child in its own session, with the allow-list
    environment, umask 027 and an empty working directory of this node's own
    (`argus.cluster.nodeenv`).

    Its stop SIGTERMs the `ray start` (which stops its raylet and agents in order), and kills
    the tree after `grace_s`, or after `quick_s` when the head is gone: a raylet that cannot
    reach its GCS does not stop on SIGTERM.
    """

    def __init__(self, spec: NodeSpec, log_path: Path, grace_s: float = 10.0, quick_s: float = 1.0):
        self.spec = spec
        self.log_path = log_path
        self.grace_s = grace_s
        self.quick_s = quick_s

    def start(self, address: str, head: HeadInfo) -> subprocess.Popen:
        """Start `ray start --block --address …` on free ports; returns once it started or
        failed (one start at a time per temp dir on this host)."""
        finder = PortFinder(self.spec.port_start or default_port_start(self.spec.node_ip), set())
        ports, lo, hi = node_ports(finder)
        temp_dir = self.spec.temp_dir or head.temp_dir
        args = worker_start_args(self.spec, address, temp_dir, ports, lo, hi)
        # The agent's own GPU slice (its environment is the node's) is the raylet's too.
        env = node_env(os.environ.get("CUDA_VISIBLE_DEVICES"))
        cwd = node_workdir(temp_dir, f"node-{self.spec.name}")
        return start_ray(args, self.log_path, env, temp_dir, cwd=cwd)

    def alive(self, handle: subprocess.Popen) -> bool:
        """Whether this node's raylet still runs. `ray start --block` outlives a raylet that
        exits cleanly (as a drained raylet does once idle), so the raylet itself is looked for
        among its descendants."""
        if handle.poll() is not None:  # poll() reaps: no zombie counts as alive
            return False
        return raylet_running(handle.pid)

    def stop(self, handle: subprocess.Popen, graceful: bool = True) -> None:
        stop_trees([handle.pid], self.grace_s if graceful else self.quick_s)
        handle.poll()


def raylet_running(pid: int) -> bool:
    """Whether a live `raylet` process descends from `pid`."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return False
    for child in children:
        try:
            if child.name() == "raylet" and child.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def read_text_or_none(path: str) -> str | None:
    """The file's text, None when it does not exist (other errors raise OSError)."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


class NodeAgent:
    """Polls head.json and keeps at most one raylet joined to the head it names."""

    def __init__(
        self,
        shared_root: str,
        cluster: str,
        name: str,
        runner: Runner,
        *,
        clock: Callable[[], float] = time.time,
        read_text: Callable[[str], str | None] = read_text_or_none,
        poll_s: float = 2.0,
        logger: logging.Logger | None = None,
        wait: Callable[[float], bool] | None = None,
    ):
        self.head_path = str(discovery_file(shared_root, cluster))
        self.hold_path = str(hold_file(shared_root, cluster, name))
        self.runner = runner
        self.clock = clock
        self.read_text = read_text
        self.poll_s = poll_s
        self.log = logger or logging.getLogger("argus.node-agent")
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self.handle: Any = None
        self.joined_to: str | None = None
        self._started_at = 0.0
        self._failures = 0
        self._not_before = 0.0
        self._last_line: str | None = None
        self._head_usable = False  # the last poll saw a fresh head.json
        self._last_good: HeadInfo | None = None  # the last valid head.json read

    # one poll ---------------------------------------------------------------------------
    def _read(self) -> tuple[HeadInfo | None, str | None, str | None]:
        problem: str | None
        try:
            text = self.read_text(self.head_path)
        except OSError as exc:
            text, problem = None, f"cannot read {self.head_path}: {exc}"
        else:
            problem = None if text is not None else f"{self.head_path} does not exist"
        head = None
        if text is not None:
            try:
                head = parse_head(text)
            except HeadFileError as exc:
                problem = f"{self.head_path}: {exc}"
        try:
            held = self.read_text(self.hold_path)
        except OSError as exc:  # unreadable hold file: safer to stay out
            held = f"cannot read {self.hold_path}: {exc}"
        return head, problem, held

    def poll(self) -> Decision:
        """Read, decide, act once; returns the decision."""
        now = self.clock()
        head, problem, held = self._read()
        if head is None and self._last_good is not None and not self._last_good.stopped:
            # A failed read (a shared filesystem's hiccup, a rename in flight) is not a head
            # gone: the last good record stands until its own TTL runs out.
            self._say(f"wait: {problem}; using the last record read", always=False)
            head = self._last_good
        elif head is not None:
            self._last_good = head
        alive = self.handle is not None and self.runner.alive(self.handle)
        if self.handle is not None and not alive and self._started_at:
            self._failures = self._failures + 1 if now - self._started_at < STABLE_AFTER_S else 0
            self._not_before = now + min(self.poll_s * 2**self._failures, MAX_BACKOFF_S) if self._failures else 0.0
            self._started_at = 0.0
        elif alive and now - self._started_at >= STABLE_AFTER_S:
            self._failures = 0
        d = decide(now, head, problem, self.joined_to, alive, held=held)
        self._head_usable = head is not None and head.fresh(now)
        if d.action in (Action.JOIN, Action.REJOIN):
            if now < self._not_before:
                self._say(
                    f"wait: the raylet failed {self._failures}x right after its start; "
                    f"joining again in {self._not_before - now:.0f}s"
                )
                if self.handle is not None and not alive:
                    self._drop(graceful=False)
                return Decision(Action.WAIT, d.reason)
            if self.handle is not None:  # its head moved, or it died: nothing to wait for
                self._drop(graceful=False)
            assert head is not None and d.address is not None
            self._say(f"{d.action.value} {d.address}: {d.reason}", always=True)
            self.handle = self.runner.start(d.address, head)
            self.joined_to, self._started_at = d.address, now
        elif d.action == Action.LEAVE:
            self._say(f"leave {self.joined_to}: {d.reason}", always=True)
            self._drop(graceful=False)
        else:
            if self.handle is not None and not alive:
                self._say(f"the raylet joined to {self.joined_to} exited", always=True)
                self._drop(graceful=False)
            self._say(f"wait: {d.reason}")
        return d

    def _drop(self, graceful: bool) -> None:
        """Stop the raylet: gracefully while its head lives, quickly when it is gone."""
        handle, self.handle, self.joined_to = self.handle, None, None
        if handle is not None:
            self.runner.stop(handle, graceful=graceful)

    def _say(self, line: str, always: bool = False) -> None:
        key = re.sub(r"\d+", "#", line)  # "stale (31s old…)" and "(32s old…)" are one state
        if always or key != self._last_line:
            self.log.info("%s", line)
        self._last_line = key

    # the loop ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask `run` to end (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> int:
        """Poll until `stop`; then stop the raylet. Returns the exit code (0)."""
        try:
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception as exc:  # keep watching: the next poll may do better
                    self.log.exception("poll failed: %s", exc)
                self._wait(self.poll_s)
        finally:
            if self.handle is not None:
                self.log.info("stopping the raylet joined to %s: the agent is stopping", self.joined_to)
                self._drop(graceful=self._head_usable)
        self.log.info("node agent stopped")
        return 0


def run_agent(shared_root: str, cluster: str, spec: NodeSpec, poll_s: float = 2.0) -> int:
    """The `argus node-agent` process: logs to stderr, stops on SIGTERM / SIGINT."""
    import signal

    from argus.cluster.head import log_dir

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s node-agent[{spec.name}]: %(message)s")
    root = str(Path(shared_root).resolve())
    try:
        node_env()  # a bad ARGUS_NODE_ENV_PASS stops the agent now, not at each join
    except ClusterError as exc:
        logging.getLogger("argus.node-agent").error("%s", exc)
        return 2
    runner = RayNodeRunner(spec, log_dir(root, cluster) / f"node-{spec.name}.log")
    agent = NodeAgent(root, cluster, spec.name, runner, poll_s=poll_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    agent.log.info(
        "watching %s as %s (%d GPUs, labels %s)",
        agent.head_path,
        spec.name,
        spec.gpus,
        ",".join(f"{k}={v}" for k, v in spec.all_labels().items()),
    )
    return agent.run()


def default_name() -> str:
    return socket.gethostname().split(".")[0] or "node"
