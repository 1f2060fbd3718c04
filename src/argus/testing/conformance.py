"""Conformance of the adapters and the fakes to the ports, checked by mypy (never run).

Owns one function that assigns each Ray adapter (`argus.cluster`) and each fake
(`argus.testing`) to its port type (`argus.ports`); the reward checker's two adapters (a job on
a Ray worker, a scrubbed subprocess) both stand for `RewardChecker`. A signature that drifts from its port, on
either side, is a mypy error here, so the fakes the tests use stay faithful to what the core
is written against.
"""

from __future__ import annotations

from argus.cluster.drain import RayDrain
from argus.cluster.gpu_metrics import RayGpuReader
from argus.cluster.jobs import RayJobTool
from argus.cluster.reward_check import LocalRewardChecker, RayRewardChecker
from argus.cluster.snapshot import RaySnapshotSource
from argus.cluster.ssh import SSHConnector
from argus.ports import Clock, ClusterView, Drainer, GpuStats, JobTool, RewardChecker, SSHRunner, SSHSession
from argus.testing.clock import FakeClock
from argus.testing.fakes import FakeGpuStats, FakeJobs, FakeRayNodes, FakeSnapshots, FakeSSH, FakeSSHSession


def _ports(
    ray_jobs: RayJobTool,
    ray_snapshots: RaySnapshotSource,
    ray_drain: RayDrain,
    ssh_connector: SSHConnector,
    fake_ssh: FakeSSH,
    fake_session: FakeSSHSession,
    ray_rewards: RayRewardChecker,
    local_rewards: LocalRewardChecker,
) -> None:
    """Each assignment is a claim that the right side satisfies the port on the left."""
    clock: Clock = FakeClock()
    jobs: JobTool = ray_jobs
    jobs = FakeJobs()
    view: ClusterView = ray_snapshots
    view = FakeSnapshots()
    view = FakeRayNodes()
    drainer: Drainer = ray_drain
    drainer = FakeRayNodes()
    runner: SSHRunner = ssh_connector
    runner = fake_ssh
    session: SSHSession = fake_session
    rewards: RewardChecker = ray_rewards
    rewards = local_rewards
    gpus: GpuStats = RayGpuReader()
    gpus = FakeGpuStats()
    del clock, jobs, view, drainer, runner, session, rewards, gpus
