"""Pending reasons name only the waiting user's own tasks (pure policy, every policy).

A reason is shown to the task's owner; when the task that holds it up is another user's, the
reason says so without its id ("would delay a higher-priority task", "behind an earlier task").
"""

from __future__ import annotations

import pytest

from argus.domain.scheduling import Job, PendingCode, RunningJob, plan

NOW = 1000.0


def job(jid, user, gpus=1, at=0.0, limit=3600.0, priority=500):
    return Job(jid, user, 1, gpus, at, limit, priority)


def _blocked(policy: str, waiting_user: str):
    """bob's big task is reserved (or blocks, in fifo); `waiting_user`'s long one waits."""
    running = [RunningJob("r1", "carol", {"a": 2}, 2000.0)]
    q = [
        job("mvp2-bob-big", "bob", gpus=4, at=0, limit=1800),  # overdue by NOW in `default`: first
        job(f"mvp2-{waiting_user}-long", waiting_user, gpus=2, at=1, limit=5000),
    ]
    p = plan(NOW, q, running, {"a": 2}, policy)
    return p.waits[f"mvp2-{waiting_user}-long"]


@pytest.mark.parametrize("policy", ["easy", "default"])
def test_a_backfill_refused_for_another_users_reservation_does_not_name_it(policy):
    w = _blocked(policy, "alice")
    assert w.code == PendingCode.PRIORITY
    assert w.detail == "would delay a higher-priority task, reserved to start by 2000"
    assert "bob" not in w.detail and "carol" not in w.detail


@pytest.mark.parametrize("policy", ["easy", "default"])
def test_the_users_own_reserved_task_is_named(policy):
    w = _blocked(policy, "bob")
    assert w.detail == "would delay mvp2-bob-big, reserved to start by 2000"


def test_fifo_names_the_blocking_task_only_to_its_owner():
    q = [
        job("mvp2-bob-big", "bob", gpus=8, at=0),
        job("mvp2-alice-s", "alice", at=1),
        job("mvp2-bob-s", "bob", at=2),
    ]
    p = plan(NOW, q, [RunningJob("r1", "carol", {"a": 4}, 2000.0)], {"a": 4}, "fifo")
    assert p.waits["mvp2-alice-s"].detail == "behind an earlier task, which waits for resources"
    assert p.waits["mvp2-bob-s"].detail == "behind mvp2-bob-big, which waits for resources"


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_no_reason_names_another_users_task_or_user(policy):
    """A crowd of users in one pass: every reason mentions at most its own user's tasks."""
    users = ["alice", "bob", "carol", "dave"]
    running = [RunningJob(f"mvp2-{u}-run", u, {n: 2}, 2000.0 + 500 * i) for i, (u, n) in enumerate(zip(users, "abcd"))]
    q = [
        job(f"mvp2-{u}-{k}", u, gpus=g, at=10 * i + k, limit=lim, priority=500 + 100 * (k == 0))
        for i, u in enumerate(users)
        for k, (g, lim) in enumerate([(4, 3600), (2, 9000), (1, 9000), (3, 60)])
    ]
    p = plan(NOW, q, running, {n: 2 for n in "abcd"}, policy, usage={u: float(i) for i, u in enumerate(users)})
    assert p.waits, "nothing waited: the case tests nothing"
    assert any(w.code == PendingCode.PRIORITY for w in p.waits.values()), p.waits
    for jid, w in p.waits.items():
        owner = jid.split("-")[1]
        for other in users:
            if other != owner:
                assert other not in w.detail, (policy, jid, w.detail)
