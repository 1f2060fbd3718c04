"""`RecentSnapshots`: a light pass may reuse a snapshot up to its age bound; nothing else does."""

from __future__ import annotations

import pytest

from argus.cluster.errors import ClusterUnavailable
from argus.scheduler.ray_view import RecentSnapshots
from argus.testing.fakes import FakeSnapshots


class Counting(FakeSnapshots):
    reads: int = 0

    def snapshot(self):
        self.reads += 1
        return super().snapshot()


def free_of(snap, node: str) -> float:
    return next(n.available_gpus for n in snap.nodes if n.node_id == node)


def test_a_snapshot_is_reused_only_within_its_age_and_only_when_asked():
    ray = Counting(gpus={"w1": 4})
    view = RecentSnapshots(ray)
    assert free_of(view.snapshot(100.0, 0.0), "w1") == 4
    ray.free = {"w1": 1}
    assert free_of(view.snapshot(100.5, 1.0), "w1") == 4  # half a second old: reused
    assert ray.reads == 1 and view.taken_at == 100.0  # when Ray was last read
    assert free_of(view.snapshot(100.5, 0.0), "w1") == 1  # no age allowed: read afresh
    assert free_of(view.snapshot(100.0, 1.0), "w1") == 1  # the clock went back: that one counts
    assert free_of(view.snapshot(101.1, 1.0), "w1") == 1 and ray.reads == 4  # 1.1 s old: read
    assert free_of(view.snapshot(), "w1") == 1 and ray.reads == 5  # no time given: always fresh


def test_an_unreachable_ray_is_not_hidden_by_an_old_snapshot():
    ray = Counting(gpus={"w1": 4})
    view = RecentSnapshots(ray)
    view.snapshot(100.0, 0.0)
    ray.down = True
    view.snapshot(100.5, 1.0)  # within the bound: the light pass plans on what it has
    with pytest.raises(ClusterUnavailable):
        view.snapshot(102.0, 1.0)
