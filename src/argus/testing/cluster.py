"""Test support for the local Ray cluster: bring it back to idle between test modules."""

from __future__ import annotations

import time

from argus.cluster.local import ClusterState


def quiesce(state: ClusterState, timeout: float = 120.0) -> None:
    """Stop every Ray job still live on the cluster and wait until all its GPUs are free.

    A module's server may end while jobs it submitted still run (a test does not wait for the
    tasks it leaves behind); the next module's server must start on an idle cluster.

    Raises:
        RuntimeError: the cluster is not idle within `timeout` seconds.
    """
    from ray.job_submission import JobSubmissionClient

    from argus.cluster.snapshot import RaySnapshotSource

    client = JobSubmissionClient(state.dashboard_url)
    source = RaySnapshotSource(state.dashboard_url, gcs_address=state.gcs_address)
    gpus = state.workers * state.gpus_per_worker
    deadline = time.monotonic() + timeout
    while True:
        jobs = [j for j in client.list_jobs() if not j.status.is_terminal()]
        live = [j.submission_id or j.job_id for j in jobs]
        for job in jobs:
            if job.submission_id is not None:  # a driver started without the Jobs API has none
                client.stop_job(job.submission_id)
        snap = source.snapshot()
        if not live and snap.available_gpus == snap.total_gpus == gpus:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the cluster is not idle after {timeout:g}s: live jobs {live}, "
                f"{snap.available_gpus:g} of {snap.total_gpus:g} GPUs free ({gpus:g} expected)"
            )
        time.sleep(0.5)
