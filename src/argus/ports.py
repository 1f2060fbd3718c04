"""The ports: what the core (the two loops and the services) needs from the outside world.

Owns the `typing.Protocol`s the scheduler, the node reconciler and the services are written
against. The Ray adapters in `argus.cluster` (`RayJobTool`, `RaySnapshotSource`, `RayDrain`,
`SSHConnector`, `RayGpuReader`) and the fakes in `argus.testing` (`FakeJobs`, `FakeSnapshots`,
`FakeRayNodes`, `FakeSSH`, `FakeGpuStats`, `FakeClock`) both satisfy them; mypy checks both
sides (`argus.testing.conformance`).

Only the wiring (`argus.service.app.create_app`, the CLI) picks a concrete adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from argus.cluster.gpu_metrics import NodeGpuReading
from argus.cluster.jobs import JobView
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.cluster.ssh import CommandResult, SSHTarget
from argus.domain.reward import RewardCheck, RewardVerdict
from argus.spec.render import Rendered


class Clock(Protocol):
    """Seconds since the epoch, as `time.time` returns them."""

    def __call__(self) -> float: ...


class JobTool(Protocol):
    """Ray's Jobs API as the scheduler uses it (`argus.cluster.jobs.RayJobTool`).

    Every method raises `argus.cluster.errors.ClusterUnavailable` when Ray cannot be reached.
    """

    def submit(self, rendered: Rendered, spec_text: str) -> str:
        """Submit under `rendered.submission_id`; returns it.

        Raises:
            SubmissionRefused: Ray already has a job of that id.
        """
        ...

    def status(self, sid: str, diagnose: bool = True) -> JobView:
        """The job's status, message, times and driver node; with `diagnose`, its failure cause.

        Raises:
            JobNotFound: Ray does not know the id.
        """
        ...

    def stop(self, sid: str) -> bool:
        """Ask Ray to stop the job; False when it had already ended."""
        ...

    def logs(self, sid: str, tail: int | None = None) -> str:
        """The driver's log (its last `tail` lines)."""
        ...

    def gpus_by_job(self) -> dict[str, dict[str, float]]:
        """Where Ray put each running job's GPUs: `{submission_id: {ray_node_id: gpus}}` (the
        bundles of its live placement groups; a job holding none there is left out). One call
        serves a whole listing."""
        ...


class ClusterView(Protocol):
    """Ray's view of the nodes (`argus.cluster.snapshot.RaySnapshotSource`)."""

    def snapshot(self) -> ClusterSnapshot:
        """Alive nodes with their free and total resources, labels and draining flags.

        Raises:
            ClusterUnavailable: the GCS cannot be read.
        """
        ...


class GpuStats(Protocol):
    """GPU utilisation and memory per node, where Ray reports them (`argus.cluster.gpu_metrics.RayGpuReader`)."""

    def read(self, nodes: Iterable[NodeCapacity]) -> Mapping[str, NodeGpuReading]:
        """The reading of each of `nodes` that reports GPUs, by Ray node id; a node without GPU
        series or that cannot be read is left out. Never raises for one node's failure."""
        ...


class Drainer(Protocol):
    """Asks Ray to drain a node (`argus.cluster.drain.RayDrain`)."""

    def drain(self, node_id: str, reason: str) -> None:
        """Raises: ClusterUnavailable (Ray not reached), DrainRefused (Ray refused)."""
        ...


class SSHSession(Protocol):
    """One open SSH connection to a node."""

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult: ...

    def close(self) -> None: ...


class SSHRunner(Protocol):
    """Opens SSH sessions to managed nodes (`argus.cluster.ssh.SSHConnector`)."""

    def connect(self, target: SSHTarget) -> SSHSession:
        """Raises: SSHError (cannot connect or authenticate)."""
        ...


class RewardChecker(Protocol):
    """Runs a reward function's check where user code runs anyway, never in the server process
    or with its environment (`argus.cluster.reward_check`: a short CPU job on a worker node, or
    a subprocess with a scrubbed environment)."""

    def check(self, request: RewardCheck, timeout_s: float) -> RewardVerdict:
        """Import and call the function; `timeout_s` bounds the whole check (start included).

        Raises:
            argus.domain.errors.Unavailable: the check could not be run (Ray unreachable, no
                worker within `timeout_s`); says nothing about the function itself.
        """
        ...


class SchedulerObserver(Protocol):
    """Told of the scheduler's passes and admissions (`argus.service.metrics.SchedulerMetrics`)."""

    def pass_done(self, seconds: float, full: bool) -> None:
        """A pass took `seconds` (`full`: sync and archive too, not only admission)."""
        ...

    def admitted(self, n: int) -> None:
        """A pass started `n` attempts (n >= 1)."""
        ...
