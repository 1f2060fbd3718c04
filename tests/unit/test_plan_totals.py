"""`plan(totals=...)`: whether a job could ever fit is judged on the nodes' own GPUs, so a gang
that Ray placed on another node than the one Argus counted it on hides no node's capacity."""

from __future__ import annotations

from argus.domain.scheduling import Job, PendingCode, RunningJob, plan

NOW = 10_000.0


def big() -> Job:
    return Job("big", "bob", 2, 4.0, NOW - 60, 3600.0)


def test_a_gang_counted_on_another_node_than_ray_placed_it_still_lets_the_head_reserve():
    # Ray put the running 1x4 job on n2 (n2 shows nothing free); Argus had counted it on n1.
    running = [RunningJob("r", "ann", {"n1": 4.0}, NOW + 1800)]
    free = {"n1": 4.0, "n2": 0.0}
    without = plan(NOW, [big()], running, free, "default", explain=True)
    assert "cannot fit on the current nodes" in without.waits["big"].detail  # n1 "has 8", n2 "has 0"
    assert without.reserved is None
    fixed = plan(NOW, [big()], running, free, "default", explain=True, totals={"n1": 4.0, "n2": 4.0})
    wait = fixed.waits["big"]
    assert wait.code == PendingCode.RESOURCES and "cannot fit" not in wait.detail
    assert fixed.reserved is not None and fixed.reserved[0] == "big"


def test_a_job_larger_than_the_nodes_is_still_refused_with_totals():
    free = {"n1": 4.0, "n2": 4.0}
    p = plan(NOW, [Job("huge", "bob", 3, 4.0, NOW, 3600.0)], [], free, "default", totals=free)
    assert "cannot fit on the current nodes" in p.waits["huge"].detail and p.reserved is None
