"""Faithful fakes of what the scheduler talks to: Ray's job server and the cluster snapshot.

For fast tests of the scheduler's decisions (and, later, the simulator), never a substitute for
the tests against the real local Ray cluster. `FakeJobs` has the job tool's interface and Ray's
rules: a duplicate submission id is refused, a stopped job ends STOPPED, logs of an unknown id
raise `JobNotFound`; a test moves jobs along with `run`, `finish`, `fail` and `lose_all` (a head
restart that forgets every job). `FakeSnapshots` holds GPUs per node (metrics ports from 9100,
head first) and can be made unreachable.
`FakeRayNodes` (labelled nodes, Ray's drain) and `FakeSSH` (a connector whose node agents join
and leave `FakeRayNodes`) stand in for the managed nodes' side.
`FakeGpuStats` holds GPU readings per Ray node id (what `RayGpuReader` would read from the nodes'
metrics agents) and records which nodes each read asked for.

Each satisfies its port in `argus.ports` with the port's exact signatures (`FakeJobs`: `JobTool`;
`FakeSnapshots`, `FakeRayNodes`: `ClusterView`; `FakeRayNodes`: `Drainer`; `FakeSSH`:
`SSHRunner`, its sessions `SSHSession`; `FakeGpuStats`: `GpuStats`); `argus.testing.conformance` has mypy check that.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from argus.cluster.errors import ClusterUnavailable, JobNotFound, SubmissionRefused
from argus.cluster.gpu_metrics import NodeGpuReading
from argus.cluster.jobs import JobView, tail_lines
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.cluster.ssh import CommandResult, SSHTarget
from argus.domain.failure import classify_failure
from argus.spec.render import Rendered


@dataclass
class FakeJob:
    submission_id: str
    request: dict[str, Any]
    status: str = "PENDING"
    message: str | None = None
    log: str = ""
    start_time: float | None = None
    end_time: float | None = None


@dataclass
class FakeJobs:
    """The job tool's interface over an in-memory job server."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)
    submits: list[str] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    status_calls: int = 0
    clock: Callable[[], float] = time.time
    down: bool = False
    fail_next_submit: Exception | None = None
    # Where "Ray" put each job's GPUs ({submission_id: {ray_node_id: gpus}}), as a test sets it.
    placed: dict[str, dict[str, float]] = field(default_factory=dict)
    gpus_by_job_calls: int = 0

    def _up(self) -> None:
        if self.down:
            raise ClusterUnavailable("cannot reach the Ray job server (fake: down)")

    def submit(self, rendered: Rendered, spec_text: str) -> str:
        self._up()
        sid = rendered.submission_id
        self.submits.append(sid)
        if self.fail_next_submit is not None:
            exc, self.fail_next_submit = self.fail_next_submit, None
            raise exc
        if sid in self.jobs:
            raise SubmissionRefused(f"Job with submission_id {sid} already exists.")
        self.jobs[sid] = FakeJob(sid, rendered.request.as_dict())
        return sid

    def _job(self, sid: str) -> FakeJob:
        self._up()
        if sid not in self.jobs:
            raise JobNotFound(f"no Ray job with submission id {sid}")
        return self.jobs[sid]

    def status(self, sid: str, diagnose: bool = True) -> JobView:
        self.status_calls += 1
        job = self._job(sid)
        diag = None
        if diagnose and job.status == "FAILED":
            diag = classify_failure(job.status, job.message, job.log, None)
        return JobView(
            sid,
            job.status,
            job.message,
            "node-1",
            "127.0.0.1",
            None,
            job.start_time,
            job.end_time,
            job.request.get("entrypoint"),
            {},
            diag,
        )

    def stop(self, sid: str) -> bool:
        job = self._job(sid)
        self.stops.append(sid)
        if job.status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return False
        job.status = "STOPPED"
        job.end_time = self.clock()
        return True

    def logs(self, sid: str, tail: int | None = None) -> str:
        return tail_lines(self._job(sid).log, tail)

    def gpus_by_job(self) -> dict[str, dict[str, float]]:
        self.gpus_by_job_calls += 1
        self._up()
        return {sid: dict(by_node) for sid, by_node in self.placed.items() if by_node}

    # -- what a test does to the "cluster" ---------------------------------------------
    def run(self, sid: str, log: str = "") -> None:
        job = self.jobs[sid]
        job.status = "RUNNING"
        job.start_time = job.start_time or self.clock()
        job.log += log

    def _end(self, sid: str, status: str, log: str) -> FakeJob:
        job = self.jobs[sid]
        job.status = status
        job.start_time = job.start_time or self.clock()
        job.end_time = self.clock()
        job.log += log
        return job

    def finish(self, sid: str, log: str = "") -> None:
        self._end(sid, "SUCCEEDED", log)

    def fail(self, sid: str, message: str, log: str = "") -> None:
        self._end(sid, "FAILED", log).message = message

    def lose_all(self) -> None:
        """The head restarted without persistence: Ray forgets every job."""
        self.jobs.clear()


@dataclass
class FakeSnapshots:
    """Worker nodes with GPUs; `free` (node -> GPUs) is what Ray would say is available."""

    gpus: dict[str, float] = field(default_factory=dict)
    free: dict[str, float] | None = None
    draining: set[str] = field(default_factory=set)
    down: bool = False
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> its Ray labels

    def snapshot(self) -> ClusterSnapshot:
        if self.down:
            raise ClusterUnavailable("cannot reach the GCS (fake: down)")
        free = self.free if self.free is not None else self.gpus
        head = NodeCapacity("head", "127.0.0.1", True, True, False, 0, 0, 0, 0, metrics_export_port=9100)
        nodes = [
            NodeCapacity(
                n,
                f"127.0.1.{i + 1}",
                False,
                True,
                n in self.draining,
                g,
                free.get(n, g),
                4,
                4,
                {"GPU": g, "worker_node": 100},
                dict(self.labels.get(n, {})),
                metrics_export_port=9101 + i,
            )
            for i, (n, g) in enumerate(sorted(self.gpus.items()))
        ]
        return ClusterSnapshot((head, *nodes), time.time())


def with_free(snap: FakeSnapshots, **free: float) -> FakeSnapshots:
    return replace(snap, free={**snap.gpus, **free})


@dataclass
class FakeGpuStats:
    """GPU readings by Ray node id; nodes without one report no GPUs (as on a CPU-only node or
    one whose metrics agent does not answer). `asked` records each read's node ids."""

    readings: dict[str, NodeGpuReading] = field(default_factory=dict)
    asked: list[list[str]] = field(default_factory=list)

    def set(self, node_id: str, util_pct: float | None, mem_bytes: float | None, gpus: int = 1) -> None:
        self.readings[node_id] = NodeGpuReading(util_pct, mem_bytes, gpus)

    def read(self, nodes: Iterable[NodeCapacity]) -> Mapping[str, NodeGpuReading]:
        ids = [n.node_id for n in nodes]
        self.asked.append(ids)
        return {i: self.readings[i] for i in ids if i in self.readings}


# -- managed nodes: Ray's node view with labels and drains, and SSH to the nodes ----------------
@dataclass
class FakeRayNodes:
    """Ray's view of worker nodes with labels (a snapshot source) and Ray's drain (a drainer).

    `join` adds an alive node (as an agent joining does), `leave` makes it dead, `drain` marks it
    DRAINING (as Ray's DrainNode does) and records the call; `down` makes both unreachable.
    """

    nodes: dict[str, NodeCapacity] = field(default_factory=dict)
    drains: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    _serial: int = 0

    def join(
        self,
        name: str | None = None,
        gpus: float = 4,
        cpus: float = 4,
        labels: dict[str, str] | None = None,
        node_ip: str = "127.0.0.1",
    ) -> str:
        """A new alive Ray node labelled `argus.io/node=<name>` (when named); its node id."""
        self._serial += 1
        node_id = f"{self._serial:02x}" * 28
        all_labels = {**(labels or {}), **({"argus.io/node": name} if name else {})}
        self.nodes[node_id] = NodeCapacity(
            node_id,
            node_ip,
            False,
            True,
            False,
            gpus,
            gpus,
            cpus,
            cpus,
            {"GPU": gpus, "CPU": cpus, "worker_node": 100},
            all_labels,
        )
        return node_id

    def by_name(self, name: str) -> NodeCapacity | None:
        return next((n for n in self.nodes.values() if n.labels.get("argus.io/node") == name and n.alive), None)

    def leave(self, node_id: str) -> None:
        self.nodes[node_id] = replace(self.nodes[node_id], alive=False, draining=False)

    def use(self, node_id: str, gpus: float = 0, cpus: float = 0) -> None:
        """Work takes `gpus` and `cpus` of the node (0, 0 frees it)."""
        n = self.nodes[node_id]
        self.nodes[node_id] = replace(n, available_gpus=n.total_gpus - gpus, available_cpus=n.total_cpus - cpus)

    def snapshot(self) -> ClusterSnapshot:
        if self.down:
            raise ClusterUnavailable("cannot reach the GCS (fake: down)")
        head = NodeCapacity("ff" * 28, "127.0.0.1", True, True, False, 0, 0, 0, 0)
        return ClusterSnapshot((head, *self.nodes.values()), time.time())

    def drain(self, node_id: str, reason: str) -> None:
        if self.down:
            raise ClusterUnavailable("cannot reach the GCS (fake: down)")
        self.drains.append((node_id, reason))
        if node_id in self.nodes:
            self.nodes[node_id] = replace(self.nodes[node_id], draining=True)


@dataclass
class FakeSSH:
    """SSH to managed nodes: the connector and its sessions, with the node agent's effects.

    Scripts are recognised by what they run: the host check answers `host=<host>` (or exits
    `check_rc`), the agent start answers a new pid and, when `ray` is given, the node joins it
    with its labels (`join=False`: it never joins), the agent stop answers `stopped` and the node
    leaves Ray. `fail[host]` is the `SSHError` that connecting to that host raises; `gate`, when
    set, holds every connect until it is set. `commands` records (host, script).
    """

    ray: FakeRayNodes | None = None
    fail: dict[str, Exception] = field(default_factory=dict)
    check_rc: int = 0
    join: bool = True
    stop_rc: int = 0
    gate: threading.Event | None = None
    commands: list[tuple[str, str]] = field(default_factory=list)
    agents: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # pid -> (name, node id)
    _pid: int = 4000

    def connect(self, target: SSHTarget) -> FakeSSHSession:
        if self.gate is not None:
            self.gate.wait(30)
        if target.host in self.fail:
            raise self.fail[target.host]
        return FakeSSHSession(self, target)


@dataclass
class FakeSSHSession:
    ssh: FakeSSH
    target: SSHTarget
    closed: bool = False

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult:
        s = self.ssh
        s.commands.append((self.target.host, command))
        if "uname -n" in command:
            return CommandResult(s.check_rc, f"host={self.target.host}\n", "")
        if "nohup setsid" in command:
            argv = shlex.split(command.split("nohup setsid", 1)[1].split(" > ", 1)[0])
            opts = dict(zip(argv[argv.index("node-agent") + 1 :: 2], argv[argv.index("node-agent") + 2 :: 2]))
            s._pid += 1
            node_id = None
            if s.ray is not None and s.join:
                labels = dict(p.split("=", 1) for p in opts.get("--labels", "").split(",") if p)
                node_id = s.ray.join(opts["--name"], float(opts.get("--gpus", 0)), labels=labels)
            s.agents[s._pid] = (opts["--name"], node_id)
            return CommandResult(0, f"{s._pid}\n", "")
        if "kill -TERM" in command:
            pid = int(command.split("p=", 1)[1].split(";", 1)[0])
            if s.stop_rc:
                return CommandResult(s.stop_rc, "", f"the agent (pid {pid}) is still running")
            gone = s.agents.pop(pid, None)
            if gone and gone[1] and s.ray is not None and gone[1] in s.ray.nodes:
                s.ray.leave(gone[1])
            return CommandResult(0, "stopped\n" if gone else "gone\n", "")
        return CommandResult(0, "", "")

    def close(self) -> None:
        self.closed = True
