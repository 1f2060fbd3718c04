"""The scheduling policy (pure): gang fit, order, fair share, limits, EASY backfill, reasons."""

from __future__ import annotations

import pytest

from argus.domain.scheduling import Job, Limits, PendingCode, RunningJob, order, plan

NOW = 1000.0


def job(jid, gpus=1, nnodes=1, at=0.0, limit=3600.0, user="u", priority=500, **kw):
    return Job(jid, user, nnodes, gpus, at, limit, priority, **kw)


def started(p):
    return [j.id for j, _ in p.start]


def test_gang_needs_whole_bundles_on_distinct_nodes():
    p = plan(NOW, [job("big", gpus=8)], [], {"a": 4, "b": 4}, "easy")
    assert started(p) == []
    w = p.waits["big"]
    assert w.code == PendingCode.RESOURCES
    assert "needs 1 node(s) x 8 GPU(s); largest free bundle is 4" in w.detail
    p = plan(NOW, [job("two", gpus=4, nnodes=2)], [], {"a": 4, "b": 4}, "easy")
    assert started(p) == ["two"]
    assert p.start[0][1].gpus_by_node == {"a": 4, "b": 4}


def test_fifo_blocks_everything_behind_the_first_that_does_not_fit():
    q = [job("small0", at=0), job("big", gpus=4, nnodes=2, at=1), job("small1", at=2)]
    p = plan(NOW, q, [], {"a": 4, "b": 4}, "fifo")
    assert started(p) == ["small0"]
    assert p.waits["small1"].code == PendingCode.PRIORITY
    assert "behind big" in p.waits["small1"].detail


def test_easy_backfills_a_job_that_ends_before_the_reservation():
    # a and b each have 2 GPUs held by jobs ending at 2000 and 5000; "big" needs 4 on one node.
    running = [RunningJob("r1", "x", {"a": 2}, 2000.0), RunningJob("r2", "x", {"b": 2}, 5000.0)]
    free = {"a": 2, "b": 2}
    q = [
        job("big", gpus=4, at=0),
        job("short", gpus=2, at=1, limit=500),
        job("long", gpus=2, at=2, limit=5000),
    ]
    p = plan(NOW, q, running, free, "easy")
    assert p.reserved == ("big", 2000.0)
    assert p.waits["big"].estimated_start == 2000.0
    # short ends by 1500 < 2000: it may use node a; long would still hold a GPU of a at 2000,
    # but b's GPUs are not needed by big's reservation (big goes on a), so long takes b.
    assert started(p) == ["short", "long"]
    placements = {j.id: pl.gpus_by_node for j, pl in p.start}
    assert placements["long"] == {"b": 2}


def test_easy_refuses_a_backfill_that_would_delay_the_reserved_job():
    running = [RunningJob("r1", "x", {"a": 2}, 2000.0)]
    free = {"a": 2}
    q = [job("big", gpus=4, at=0), job("long", gpus=2, at=1, limit=5000)]
    p = plan(NOW, q, running, free, "easy")
    assert started(p) == []
    assert p.waits["long"].code == PendingCode.PRIORITY
    assert "would delay big" in p.waits["long"].detail


def test_a_job_that_can_never_fit_reserves_nothing_and_blocks_nobody():
    q = [job("huge", gpus=16, at=0), job("small", at=1)]
    p = plan(NOW, q, [], {"a": 8}, "easy")
    assert started(p) == ["small"]
    assert "cannot fit on the current nodes" in p.waits["huge"].detail
    assert p.reserved is None


def test_default_orders_by_priority_then_fair_share_then_time():
    q = [
        job("old", at=0, user="heavy"),
        job("light", at=5, user="light"),
        job("urgent", at=9, priority=900, user="heavy"),
    ]
    assert [j.id for j in order(q, "default", {"heavy": 100.0, "light": 1.0})] == ["urgent", "light", "old"]
    assert [j.id for j in order(q, "easy", {"heavy": 100.0})] == ["old", "light", "urgent"]
    p = plan(NOW, q, [], {"a": 1}, "default", usage={"heavy": 100.0, "light": 1.0})
    assert started(p) == ["urgent"]


def test_default_backfills_shortest_limits_first_behind_the_head():
    # 2 of node a's 4 GPUs are held until 5000: the head (overdue, so first) is reserved for 5000.
    # In the queue order `long` (area 1 x 1000) comes before `wide` (2 x 600 = 1200), but
    # behind the head the shortest limit goes first: `wide` takes both free GPUs.
    running = [RunningJob("r", "x", {"a": 2}, 5000.0)]
    q = [
        job("head", gpus=4, at=0, limit=10),
        job("long", gpus=1, at=NOW, limit=1000),
        job("wide", gpus=2, at=NOW, limit=600),
    ]
    assert [j.id for j in order(q, "default", now=NOW)] == ["head", "long", "wide"]
    p = plan(NOW, q, running, {"a": 2}, "default")
    assert p.reserved == ("head", 5000.0)
    assert started(p) == ["wide"]
    assert p.waits["long"].code == PendingCode.RESOURCES


def test_default_puts_the_smallest_area_first():
    # GPUs x time limit: a 1 x 3600 = 3600, b 8 x 600 = 4800, c 1 x 7200 = 7200.
    q = [job("c", gpus=1, limit=7200, at=NOW), job("b", gpus=8, limit=600, at=NOW), job("a", limit=3600, at=NOW)]
    assert [j.id for j in order(q, "default", now=NOW)] == ["a", "b", "c"]
    assert [j.id for j in order(q, "easy", now=NOW)] == ["a", "b", "c"]  # equal times: by id
    q2 = [job("c", gpus=1, limit=7200, at=1), job("b", gpus=8, limit=600, at=2), job("a", limit=3600, at=3)]
    assert [j.id for j in order(q2, "easy", now=3)] == ["c", "b", "a"]


def test_default_puts_a_light_users_equal_job_before_a_heavy_users():
    heavy = job("heavy", at=NOW - 10, user="h")  # submitted first
    light = job("light", at=NOW, user="l")
    # mean usage 5: weights 1 + (1 - 0.5 ** 2) = 1.75 for h, 1 + (1 - 0.5 ** 0) = 1 for l.
    assert [j.id for j in order([heavy, light], "default", {"h": 10.0, "l": 0.0}, now=NOW)] == ["light", "heavy"]
    # With no usage at all the older one goes first (equal areas).
    assert [j.id for j in order([heavy, light], "default", {}, now=NOW)] == ["heavy", "light"]
    # Fair share is bounded: a heavy user's job half the area of a light user's still goes first.
    small = job("small", at=NOW, user="h", limit=1800)
    assert [j.id for j in order([light, small], "default", {"h": 10.0, "l": 0.0}, now=NOW)] == ["small", "light"]


def test_an_old_large_job_overtakes_new_small_ones_once_overdue():
    # big: 2 nodes x 8 GPUs, limit 36,000 s: score 16 x (36,000 - 2 x waited x 2 nodes), overdue
    # (0) after 9,000 s; small: 1 GPU x 3,600 s = 3,600, submitted at the pass.
    big = job("big", gpus=8, nnodes=2, at=0, limit=36_000)
    assert [j.id for j in order([big, job("small", at=8_000)], "default", now=8_000)] == ["small", "big"]
    assert [j.id for j in order([big, job("small", at=9_000)], "default", now=9_000)] == ["big", "small"]
    # Overdue jobs go oldest first, whatever their size.
    old_small = job("old_small", at=-50_000)
    assert [j.id for j in order([big, old_small], "default", now=20_000)] == ["old_small", "big"]


def test_priority_and_the_kept_reservation_come_before_the_score():
    tiny = job("tiny", limit=60, at=NOW)
    huge = job("huge", gpus=8, nnodes=4, limit=86_400, at=NOW, priority=600)
    kept = job("kept", gpus=8, nnodes=2, limit=86_400, at=NOW)
    q = [tiny, huge, kept]
    assert [j.id for j in order(q, "default", now=NOW)] == ["huge", "tiny", "kept"]
    assert [j.id for j in order(q, "default", now=NOW, keep="kept")] == ["huge", "kept", "tiny"]


def test_per_user_gpu_limit_and_daily_hours():
    running = [RunningJob("r", "alice", {"a": 3}, 5000.0)]
    q = [job("a1", gpus=2, user="alice", at=0), job("b1", gpus=2, user="bob", at=1)]
    p = plan(NOW, q, running, {"a": 5}, "easy", Limits(user_max_gpus=4))
    assert started(p) == ["b1"]
    assert p.waits["a1"].code == PendingCode.QUOTA_USER
    assert "holds 3 GPU(s); the limit is 4" in p.waits["a1"].detail
    p = plan(NOW, q, [], {"a": 8}, "easy", Limits(user_gpu_hours_per_day=10), day_usage={"bob": 12.5})
    assert started(p) == ["a1"] and p.waits["b1"].code == PendingCode.QUOTA_USER


def test_max_running_and_begin_time():
    q = [job("later", at=0, not_before=NOW + 30), job("a", at=1), job("b", at=2)]
    p = plan(NOW, q, [RunningJob("r", "x", {"n": 1}, 9e9)], {"n": 7}, "easy", Limits(max_running=2))
    assert started(p) == ["a"]
    assert p.waits["later"].code == PendingCode.BEGIN_TIME and p.waits["later"].estimated_start == NOW + 30
    assert p.waits["b"].code == PendingCode.MAX_RUNNING


def test_the_driver_gpu_counts_in_the_gang():
    p = plan(NOW, [job("sft", gpus=2, driver_gpus=1)], [], {"a": 2}, "easy")
    assert started(p) == [] and "+ 1 for the driver" in p.waits["sft"].detail
    p = plan(NOW, [job("sft", gpus=2, driver_gpus=1)], [], {"a": 2, "b": 1}, "easy")
    assert p.start[0][1].gpus_by_node == {"a": 2, "b": 1}


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_nothing_admitted_exceeds_free_gpus(policy):
    free = {"a": 8, "b": 8, "c": 4}
    q = [
        job(f"j{i}", gpus=g, nnodes=n, at=i)
        for i, (g, n) in enumerate([(8, 2), (4, 1), (2, 1), (8, 1), (1, 1), (4, 2)])
    ]
    p = plan(NOW, q, [], free, policy)
    used = {}
    for _, pl in p.start:
        for node, g in pl.gpus_by_node.items():
            used[node] = used.get(node, 0) + g
    assert all(used.get(n, 0) <= free[n] for n in free)
    assert set(started(p)) | set(p.waits) == {j.id for j in q}


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown policy"):
        plan(NOW, [], [], {}, "lottery")


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_a_job_too_big_for_every_node_blocks_nobody(policy):
    p = plan(NOW, [job("x", gpus=4, nnodes=2, at=0), job("y", at=1)], [], {"n0": 4}, policy)
    assert started(p) == ["y"]
    assert "cannot fit on the current nodes" in p.waits["x"].detail and p.blocked_by is None


def test_the_reservation_counts_jobs_started_earlier_in_the_same_pass():
    # A starts on one node; B (2x4) must then wait for A (ends by 110), and C (a 1000 s job)
    # would hold the other node past 110, so it must not start.
    q = [
        job("A", gpus=4, at=0, limit=100),
        job("B", gpus=4, nnodes=2, at=1, limit=100),
        job("C", gpus=4, at=2, limit=1000),
    ]
    p = plan(10.0, q, [], {"n0": 4, "n1": 4}, "easy")
    assert started(p) == ["A"]
    assert p.reserved == ("B", 110.0)
    assert p.waits["C"].code == PendingCode.PRIORITY


def test_a_reservation_is_kept_against_a_lighter_users_newcomer():
    running = [RunningJob("r1", "carol", {"n0": 4}, 100.0), RunningJob("r2", "carol", {"n1": 4}, 200.0)]
    b = Job("B", "alice", 2, 4.0, submitted_at=50, time_limit_s=100)
    s = Job("S", "bob", 1, 4.0, submitted_at=50, time_limit_s=150)
    # Weighted areas (weight 1 + (1 - 0.5 ** (usage / mean))): B 8 x 100 x 1 = 800 before S
    # 4 x 150 x 1.75 = 1050.
    first = plan(50.0, [b, s], running, {"n0": 0, "n1": 0}, "default", usage={"alice": 0, "bob": 1})
    assert first.reserved == ("B", 200.0)
    # alice has now used more than bob: B 8 x 100 x 1.60 = 1283 after S 4 x 150 x 1.37 = 822, so
    # without `keep` S would take the reservation.
    usage = {"alice": 2, "bob": 1}
    assert plan(50.0, [b, s], running, {"n0": 0, "n1": 0}, "default", usage=usage).reserved[0] == "S"
    kept = plan(50.0, [b, s], running, {"n0": 0, "n1": 0}, "default", usage=usage, keep="B")
    assert kept.reserved == ("B", 200.0)
    # A higher priority still goes first.
    urgent = Job("U", "bob", 1, 4.0, submitted_at=6, time_limit_s=10, priority=900)
    assert plan(50.0, [b, s, urgent], running, {"n0": 0, "n1": 0}, "default", usage=usage, keep="B").reserved[0] == "U"


def test_age_lifts_a_heavy_users_job_that_has_waited_long():
    old = job("old", at=0, user="heavy")
    new = job("new", at=90_000, user="light")
    usage = {"heavy": 10.0, "light": 0.0}
    assert [j.id for j in order([old, new], "default", usage, now=90_000)] == ["old", "new"]
    recent = job("recent", at=500, user="light")
    assert [j.id for j in order([old, recent], "default", usage, now=1_000)] == ["recent", "old"]


# -- pools ------------------------------------------------------------------------------------
POOLS = {"a1": "h20", "a2": "h20", "b1": "a100", "c1": None}


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_a_pool_task_is_placed_only_on_its_pool(policy):
    free = {"a1": 4, "a2": 4, "b1": 8, "c1": 8}
    p = plan(NOW, [job("t", gpus=4, nnodes=2, pool="h20")], [], free, policy, pools=POOLS)
    assert started(p) == ["t"]
    assert p.start[0][1].gpus_by_node == {"a1": 4, "a2": 4}
    # One node of 8 would be the best fit by size, but it is in another pool.
    p = plan(NOW, [job("t", gpus=8, pool="a100")], [], free, policy, pools=POOLS)
    assert p.start[0][1].gpus_by_node == {"b1": 8}


def test_a_full_pool_waits_for_resources_naming_the_pool_while_others_are_free():
    free = {"a1": 0, "a2": 2, "b1": 8, "c1": 8}
    p = plan(
        NOW,
        [job("t", gpus=4, pool="h20")],
        [RunningJob("r", "x", {"a1": 4, "a2": 2}, 5000.0)],
        free,
        "default",
        pools=POOLS,
    )
    assert started(p) == []
    w = p.waits["t"]
    assert w.code == PendingCode.RESOURCES
    assert w.detail.startswith("in pool h20: needs 1 node(s) x 4 GPU(s); largest free bundle is 2")
    assert "(2 free on 2 node(s))" in w.detail  # counts only the pool's nodes
    assert w.estimated_start == 5000.0


@pytest.mark.parametrize("policy", ["fifo", "easy", "default"])
def test_many_jobs_that_can_never_fit_each_get_their_own_reason_and_none_becomes_the_head(policy):
    # The "fits on no empty node" answer is remembered per demand within a pass: the second
    # and later jobs of a demand (and of a pool's demand) get the same wait, the first job that
    # can fit is still reserved, and a demand that does fit is not caught by the memory.
    free = {"a1": 1, "b1": 2}  # b1, the one a100 node, holds 8 GPUs: 6 of them until NOW + 500
    running = [RunningJob("r", "v", {"b1": 6.0}, NOW + 500)]
    q = [job(f"huge{i}", gpus=16, at=i, priority=900) for i in range(3)]  # first in every order
    q += [job(f"pool{i}", gpus=16, pool="a100", at=10 + i, priority=900) for i in range(2)]
    q += [job("fits-later", gpus=4, pool="a100", at=20), job("now", gpus=2, at=21)]
    p = plan(NOW, q, running, free, policy, pools=POOLS)
    for jid in ("huge0", "huge1", "huge2", "pool0", "pool1"):
        assert p.waits[jid].code == PendingCode.RESOURCES
        assert p.waits[jid].detail.endswith("it cannot fit on the current nodes"), jid
    assert p.blocked_by == "fits-later"  # the first job that could fit on empty nodes
    assert "cannot fit" not in p.waits["fits-later"].detail
    assert started(p) == ([] if policy == "fifo" else ["now"])


def test_a_pool_with_no_node_says_so_and_reserves_nothing():
    free = {"a1": 4, "b1": 8}
    q = [job("t", gpus=1, pool="v100", at=0), job("u", gpus=8, at=1)]
    p = plan(NOW, q, [], free, "fifo", pools=POOLS)
    assert p.waits["t"].detail.startswith("no schedulable worker node is alive in pool v100")
    assert started(p) == ["u"]  # a task that cannot fit anywhere blocks nobody, even in FIFO


def test_a_task_without_pool_uses_any_node_and_a_waiting_pool_does_not_block_another():
    free = {"a1": 0, "a2": 0, "b1": 8, "c1": 8}
    running = [RunningJob("r", "x", {"a1": 4, "a2": 4}, 9000.0)]
    q = [
        job("h20-wait", gpus=4, pool="h20", at=0, limit=86400),
        job("a100", gpus=8, pool="a100", at=1, limit=86400),
        job("any", gpus=8, at=2, limit=86400),
    ]
    p = plan(NOW, q, running, free, "default", pools=POOLS)
    assert p.reserved == ("h20-wait", 9000.0)
    assert started(p) == ["a100", "any"]
    assert {j.id: pl.gpus_by_node for j, pl in p.start} == {"a100": {"b1": 8}, "any": {"c1": 8}}
