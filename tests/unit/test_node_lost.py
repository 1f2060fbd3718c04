"""NODE_LOST: a node that died under a job (`argus.domain.failure`, `argus.domain.outcome`,
`argus.scheduler.ray_view.with_node_loss`), on the message Ray 2.60 gave when the raylet of a
running task's driver node was SIGKILLed in tests/ray/test_node_lost_on_ray.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from argus.cluster.jobs import JobView
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.domain.failure import Diagnosis, FailureCause, classify_failure
from argus.domain.outcome import decide_outcome
from argus.domain.records import Attempt
from argus.domain.task import TaskState
from argus.scheduler.ray_view import RayNodes, with_node_loss

DEAD_ID = "b130dfdee46874324015a230850815f66d684f973e0e0e121f40b648"
OTHER_ID = "ead00eb8b527e17bd97f8eb99a17c01e2ca55e4be7e4ea00b0ef65b1"
NODE_DIED = f"The actor died because its node has died. Node Id: {DEAD_ID}"
# JobInfo.message of the job, as Ray 2.60 set it (error_type JOB_SUPERVISOR_ACTOR_DIED).
RAY_MESSAGE = (
    "Job supervisor actor died: The actor died unexpectedly before finishing this task.\n"
    "\tclass_name: JobSupervisor\n"
    "\tactor_id: 5d48aabfefcb676e3039999401000000\n"
    "\tpid: 27557\n"
    "\tname: _ray_internal_job_actor_mvp2-carol-ppo-20261130-112240-7e08--a01\n"
    "\tnamespace: SUPERVISOR_ACTOR_RAY_NAMESPACE\n"
    "\tip: 127.0.222.2\n"
    f"{NODE_DIED}\n"
    "\tthe actor's node was terminated unexpectedly: health check failed due to missing too many heartbeats"
)
SUPERVISOR_DIED = "JOB_SUPERVISOR_ACTOR_DIED"


def test_rays_message_for_a_dead_driver_node_is_node_lost():
    diag = classify_failure("FAILED", RAY_MESSAGE, None, SUPERVISOR_DIED)
    assert diag == Diagnosis(FailureCause.NODE_LOST, NODE_DIED)


def test_a_worker_actor_lost_with_its_node_in_the_drivers_traceback_is_node_lost():
    log = (
        "Traceback (most recent call last):\n"
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
        f"The actor died because its node has died. Node Id: {OTHER_ID}\n"
    )
    diag = classify_failure("FAILED", "Job entrypoint command failed with exit code 1", log)
    assert diag == Diagnosis(FailureCause.NODE_LOST, f"The actor died because its node has died. Node Id: {OTHER_ID}")


def test_a_supervisor_that_died_for_another_reason_stays_platform():
    message = "Job supervisor actor died: The actor died unexpectedly before finishing this task."
    diag = classify_failure("FAILED", message, None, SUPERVISOR_DIED)
    assert diag is not None and diag.cause is FailureCause.PLATFORM


def _view(diag: Diagnosis | None, status: str = "FAILED", message: str = RAY_MESSAGE) -> JobView:
    return JobView("t--a01", status, message, DEAD_ID, "127.0.222.1", SUPERVISOR_DIED, 1.0, 2.0, "python", {}, diag)


@pytest.mark.parametrize(("attempts", "state"), [(1, TaskState.QUEUED), (2, TaskState.QUEUED), (3, TaskState.FAILED)])
def test_node_lost_is_retried_while_attempts_remain(attempts, state):
    outcome = decide_outcome(_view(Diagnosis(FailureCause.NODE_LOST, NODE_DIED)), attempts, max_attempts=3)
    assert (outcome.state, outcome.cause) == (state, FailureCause.NODE_LOST)


def _node(node_id: str, ip: str, alive: bool, name: str | None) -> NodeCapacity:
    labels = {"argus.io/node": name} if name else {}
    return NodeCapacity(node_id, ip, False, alive, False, 4.0, 4.0, 4.0, 4.0, labels=labels)


class _Snapshots:
    def __init__(self, *nodes: NodeCapacity):
        self.nodes, self.reads = nodes, 0

    def snapshot(self) -> ClusterSnapshot:
        self.reads += 1
        return ClusterSnapshot(self.nodes, 0.0)


ATTEMPT = Attempt(
    1, "t", 1, "t--a01", "RUNNING", None, None, "/j", {}, 0.0, 0.0, 1.0, None, False,
    driver_node_id=DEAD_ID, driver_node_ip="127.0.222.2", driver_node_name="worker-1",
)  # fmt: skip


def test_the_evidence_names_the_driver_node_as_recorded_while_it_was_alive():
    snaps = _Snapshots(_node(DEAD_ID, "127.0.222.2", False, None), _node(OTHER_ID, "127.0.222.3", True, "worker-2"))
    diag = classify_failure("FAILED", RAY_MESSAGE, None, SUPERVISOR_DIED)
    seen = with_node_loss(_view(diag), ATTEMPT, RayNodes(snaps))
    assert seen.diagnosis == Diagnosis(
        FailureCause.NODE_LOST, f"node worker-1 (127.0.222.2) was lost under the job: {NODE_DIED}"
    )


def test_a_node_named_in_the_message_other_than_the_drivers_is_named_from_the_snapshot():
    snaps = _Snapshots(
        _node(DEAD_ID, "127.0.222.2", True, "worker-1"), _node(OTHER_ID, "127.0.222.3", False, "worker-2")
    )
    line = f"The actor died because its node has died. Node Id: {OTHER_ID}"
    seen = with_node_loss(
        _view(Diagnosis(FailureCause.NODE_LOST, line), message="exit code 1"), ATTEMPT, RayNodes(snaps)
    )
    assert seen.diagnosis == Diagnosis(
        FailureCause.NODE_LOST, f"node worker-2 (127.0.222.3) was lost under the job: {line}"
    )


@pytest.mark.parametrize(("alive", "cause"), [(False, FailureCause.NODE_LOST), (True, FailureCause.PLATFORM)])
def test_a_generic_supervisor_failure_is_node_lost_only_when_the_driver_node_is_dead(alive, cause):
    message = "Unexpected error occurred: failed to get job supervisor."
    snaps = _Snapshots(_node(DEAD_ID, "127.0.222.2", alive, "worker-1"))
    view = _view(Diagnosis(FailureCause.PLATFORM, message), message=message)
    seen = with_node_loss(view, ATTEMPT, RayNodes(snaps))
    assert seen.diagnosis is not None and seen.diagnosis.cause is cause
    if alive:
        assert seen == view
    else:
        assert seen.diagnosis.evidence == f"node worker-1 (127.0.222.2) was lost under the job: {message}"


def test_other_views_are_left_alone_and_need_no_snapshot():
    snaps = _Snapshots(_node(DEAD_ID, "127.0.222.2", False, "worker-1"))
    running = _view(None, status="RUNNING")
    user = _view(Diagnosis(FailureCause.USER_CODE, "KeyError: 'reward'"))
    for view in (running, user, dataclasses.replace(user, diagnosis=None)):
        assert with_node_loss(view, ATTEMPT, RayNodes(snaps)) is view
    assert snaps.reads == 0
