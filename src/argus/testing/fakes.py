"""Faithful fakes of what the scheduler talks to: Ray's job server and the cluster snapshot.

For fast tests of the scheduler's decisions (and, later, the simulator), never a substitute for
the tests against the real local Ray cluster. `FakeJobs` has the job tool's interface and Ray's
rules: a duplicate submission id is refused, a stopped job ends STOPPED, logs of an unknown id
raise `JobNotFound`; a test moves jobs along with `run`, `finish`, `fail` and `lose_all` (a head
restart that forgets every job). `FakeSnapshots` holds GPUs per node and can be made unreachable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from argus.cluster.errors import ClusterUnavailable, JobNotFound, SubmissionRefused
from argus.cluster.jobs import JobView, tail_lines
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.domain.failure import classify_failure


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

    def _up(self) -> None:
        if self.down:
            raise ClusterUnavailable("cannot reach the Ray job server (fake: down)")

    def submit(self, rendered: Any, spec_text: str) -> str:
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
        return JobView(sid, job.status, job.message, "node-1", "127.0.0.1", None,
                       job.start_time, job.end_time, job.request.get("entrypoint"), {}, diag)

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

    def snapshot(self) -> ClusterSnapshot:
        if self.down:
            raise ClusterUnavailable("cannot reach the GCS (fake: down)")
        free = self.free if self.free is not None else self.gpus
        head = NodeCapacity("head", "127.0.0.1", True, True, False, 0, 0, 0, 0)
        nodes = [NodeCapacity(n, f"127.0.1.{i + 1}", False, True, n in self.draining, g,
                              free.get(n, g), 4, 4, {"GPU": g, "worker_node": 100})
                 for i, (n, g) in enumerate(sorted(self.gpus.items()))]
        return ClusterSnapshot((head, *nodes), time.time())


def with_free(snap: FakeSnapshots, **free: float) -> FakeSnapshots:
    return replace(snap, free={**snap.gpus, **free})
