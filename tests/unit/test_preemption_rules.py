"""Preemption's pure rules (`argus.domain.preemption`): which running tasks are stopped for a
blocked head, with hand-worked cases; the settings and the TaskSpec field; PREEMPTED attempts
never using up `max_attempts`."""

from __future__ import annotations

import pytest
import yaml

from argus.domain import preemption
from argus.domain.admission import Demand
from argus.domain.failure import FailureCause
from argus.domain.outcome import attempts_used
from argus.domain.preemption import Candidate, choose_victims, eligible
from argus.settings import parse_settings

NOW = 100_000.0
MIN_RUN = 600.0


def cand(
    id: str,
    gpus: dict[str, float],
    saved_ago: float | None = None,
    started_ago: float = 3600.0,
    priority: int = 100,
    preemptible: bool = True,
    preempted_before: bool = False,
    user: str = "bob",
) -> Candidate:
    saved = None if saved_ago is None else NOW - saved_ago
    return Candidate(id, user, priority, preemptible, gpus, NOW - started_ago, saved, preempted_before)


def ids(victims: list[Candidate] | None) -> list[str] | None:
    return None if victims is None else sorted(v.id for v in victims)


def choose(head: Demand, cands: list[Candidate], free: dict[str, float], pools=None, priority: int = 900):
    return choose_victims(head, priority, cands, free, pools or {}, NOW, MIN_RUN)


def test_lost_work_is_gpus_times_the_time_since_the_last_checkpoint_or_the_start():
    assert cand("a", {"w1": 4}, saved_ago=100).lost_work(NOW) == 400
    assert cand("a", {"w1": 2, "w2": 2}, saved_ago=None, started_ago=50).lost_work(NOW) == 200
    # A checkpoint older than the attempt (an earlier attempt's) does not count: since the start.
    assert cand("a", {"w1": 4}, saved_ago=500, started_ago=30).lost_work(NOW) == 120


def test_the_victim_that_loses_the_least_work_is_chosen():
    a = cand("a", {"w1": 4}, saved_ago=100)  # 400 GPU-s
    b = cand("b", {"w2": 4}, saved_ago=10)  # 40 GPU-s
    c = cand("c", {"w3": 4}, saved_ago=None, started_ago=20)  # 80 GPU-s
    assert ids(choose(Demand(1, 4), [a, b, c], {"w1": 0, "w2": 0, "w3": 0})) == ["b"]


def test_no_more_victims_than_the_gang_needs():
    # 1x2 on w1 where two 2-GPU tasks run: one of them is enough, the one that loses less.
    a1 = cand("a1", {"w1": 2}, saved_ago=30)
    a2 = cand("a2", {"w1": 2}, saved_ago=20)
    assert ids(choose(Demand(1, 2), [a1, a2], {"w1": 0})) == ["a2"]
    # Free GPUs count: 1 free + one 1-GPU victim make the 2 needed, not two of them.
    one, two = cand("one", {"w1": 1}, saved_ago=300), cand("two", {"w1": 1}, saved_ago=200)
    assert ids(choose(Demand(1, 2), [one, two], {"w1": 1})) == ["two"]
    # Least lost work, not fewest GPUs: a 4-GPU task that saved lately (40 GPU-s) beats them.
    big = cand("big", {"w1": 4}, saved_ago=10)
    assert ids(choose(Demand(1, 2), [one, two, big], {"w1": 1})) == ["big"]


def test_the_set_with_least_lost_work_wins_over_a_greedy_one():
    # 1x8: either node's two tasks. Greedy by lost work takes a1 (1), b1 (2), b2 (2.5), then
    # drops a1: 4.5; the best set is a1 + a2: 4.
    a1, a2 = cand("a1", {"A": 4}, saved_ago=0.25), cand("a2", {"A": 4}, saved_ago=0.75)
    b1, b2 = cand("b1", {"B": 4}, saved_ago=0.5), cand("b2", {"B": 4}, saved_ago=0.625)
    assert ids(choose(Demand(1, 8), [a1, a2, b1, b2], {"A": 0, "B": 0})) == ["a1", "a2"]


def test_beyond_the_exact_search_the_greedy_choice_keeps_only_needed_victims(monkeypatch):
    monkeypatch.setattr(preemption, "EXACT_UP_TO", 0)
    a1, a2 = cand("a1", {"A": 4}, saved_ago=0.25), cand("a2", {"A": 4}, saved_ago=0.75)
    b1, b2 = cand("b1", {"B": 4}, saved_ago=0.5), cand("b2", {"B": 4}, saved_ago=0.625)
    victims = choose(Demand(1, 8), [a1, a2, b1, b2], {"A": 0, "B": 0})
    assert ids(victims) == ["b1", "b2"]  # a1 was taken first, then dropped: not needed


def test_a_task_preempted_lately_is_not_preempted_again_before_min_run():
    recent = cand("recent", {"w1": 4}, saved_ago=None, started_ago=MIN_RUN - 1, preempted_before=True)
    other = cand("other", {"w2": 4}, saved_ago=3000)  # loses far more, but may be stopped
    assert ids(choose(Demand(1, 4), [recent, other], {"w1": 0, "w2": 0})) == ["other"]
    assert choose(Demand(1, 4), [recent], {"w1": 0, "w2": 0}) is None
    ran = cand("ran", {"w1": 4}, saved_ago=None, started_ago=MIN_RUN, preempted_before=True)
    assert ids(choose(Demand(1, 4), [ran, other], {"w1": 0, "w2": 0})) == ["ran"]
    # A task never preempted may be stopped however short its run.
    fresh = cand("fresh", {"w1": 4}, saved_ago=None, started_ago=5)
    assert eligible(fresh, 900, NOW, MIN_RUN)
    assert not eligible(recent, 900, NOW, MIN_RUN)


def test_equal_or_higher_priority_and_non_preemptible_tasks_are_never_chosen():
    free = {"w1": 0, "w2": 0, "w3": 0}
    equal = cand("equal", {"w1": 4}, saved_ago=1, priority=900)
    higher = cand("higher", {"w2": 4}, saved_ago=1, priority=950)
    pinned = cand("pinned", {"w3": 4}, saved_ago=1, preemptible=False)
    assert choose(Demand(1, 4), [equal, higher, pinned], free) is None
    lower = cand("lower", {"w3": 4}, saved_ago=5000, priority=899)
    assert ids(choose(Demand(1, 4), [equal, higher, pinned, lower], free)) == ["lower"]


def test_pools_are_respected():
    pools = {"a1": "a", "b1": "b"}
    in_b = cand("in_b", {"b1": 4}, saved_ago=1)  # loses almost nothing, but frees pool b
    in_a = cand("in_a", {"a1": 4}, saved_ago=1000)
    head = Demand(1, 4, pool="a")
    assert ids(choose(head, [in_b, in_a], {"a1": 0, "b1": 0}, pools)) == ["in_a"]
    assert choose(head, [in_b], {"a1": 0, "b1": 0}, pools) is None


def test_none_when_no_set_fits_and_none_needed_when_it_fits():
    a = cand("a", {"w1": 2}, saved_ago=1)
    b = cand("b", {"w2": 2}, saved_ago=1)
    # 1x4 needs 4 on one node: stopping both frees 2 + 2 on two nodes.
    assert choose(Demand(1, 4), [a, b], {"w1": 1, "w2": 1}) is None
    assert choose(Demand(2, 4), [a, b], {"w1": 1, "w2": 1}) is None  # 2x4: 3 + 3 at most
    assert choose(Demand(1, 2), [a, b], {"w1": 2}) == []  # it fits now: nobody is stopped


def test_a_gang_over_nodes_takes_the_victims_of_each_node_it_needs():
    a = cand("a", {"w1": 4}, saved_ago=10)
    b = cand("b", {"w2": 4}, saved_ago=20)
    c = cand("c", {"w3": 4}, saved_ago=30)
    # 2x4 with a driver GPU: two whole nodes and one more GPU, found free on w4.
    assert ids(choose(Demand(2, 4, 1), [a, b, c], {"w1": 0, "w2": 0, "w3": 0, "w4": 1})) == ["a", "b"]


def test_preempted_attempts_never_use_up_max_attempts():
    pre, nccl = FailureCause.PREEMPTED.value, FailureCause.NCCL.value
    assert attempts_used([]) == 1
    assert attempts_used([pre, pre, pre]) == 1
    assert attempts_used([pre, nccl, None, "INSUFFICIENT_RESOURCES"]) == 2


def test_preemption_settings_default_off_and_min_run_parses_like_durations():
    cfg = parse_settings({}, environ={}).scheduler
    assert cfg.preemption == "off" and cfg.min_run_before_preempt_s == 600
    cfg = parse_settings({"scheduler": {"preemption": "priority", "min_run_before_preempt": "1h30m"}}, environ={})
    assert cfg.scheduler.min_run_before_preempt_s == 5400
    bare_off = yaml.safe_load("scheduler: {preemption: off}")  # YAML 1.1 reads it as false
    assert parse_settings(bare_off, environ={}).scheduler.preemption == "off"
    with pytest.raises(ValueError):
        parse_settings({"scheduler": {"preemption": "always"}}, environ={})
    with pytest.raises(ValueError):
        parse_settings({"scheduler": {"min_run_before_preempt": "soon"}}, environ={})


@pytest.mark.parametrize("policy", ["fifo", "easy"])
def test_preemption_needs_the_default_order(policy):
    # fifo and easy order by submission time: the preempted task would restart first, for ever.
    with pytest.raises(ValueError, match=r"scheduler\.preemption: needs policy: default"):
        parse_settings({"scheduler": {"policy": policy, "preemption": "priority"}}, environ={})
    assert parse_settings({"scheduler": {"policy": policy}}, environ={}).scheduler.preemption == "off"
