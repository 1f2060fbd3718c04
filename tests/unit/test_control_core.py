"""The control plane's pure core: states, ids, admission, outcomes, inputs, server config."""

from __future__ import annotations

from datetime import UTC, datetime, timezone

import pytest

from argus.cluster.jobs import JobView
from argus.domain.admission import Booked, Capacity, Demand, free_gpus
from argus.domain.failure import Diagnosis, FailureCause
from argus.domain.outcome import decide_outcome
from argus.domain.task import (
    ALLOWED_FROM,
    FINAL_STATES,
    TaskState,
    attempt_submission_id,
    can_transition,
    check_user_id,
    new_task_id,
    parse_submission_id,
    parse_task_id,
)
from argus.settings import parse_settings
from argus.spec.errors import SpecError
from argus.spec.inputs import input_problems
from argus.spec.taskspec import parse_task_spec

NOW = datetime(2026, 11, 25, 14, 32, 1, tzinfo=UTC)


# -- states and ids ------------------------------------------------------------------------
@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_a_final_state_is_never_left(final):
    assert not any(can_transition(final, target) for target in TaskState)


def test_every_state_but_queued_has_a_way_in_and_cancel_works_from_every_live_state():
    for state in TaskState:
        assert ALLOWED_FROM[state], state
    for live in set(TaskState) - FINAL_STATES:
        assert can_transition(live, TaskState.CANCELED)
    assert not can_transition(TaskState.QUEUED, TaskState.RUNNING)  # only via SUBMITTED


def test_task_and_attempt_ids_have_the_seeds_shape_and_parse_back():
    tid = new_task_id("alice_2", "grpo", NOW, "7f3a")
    assert tid == "mvp2-alice_2-grpo-20261125-143201-7f3a"
    assert parse_task_id(tid) == ("alice_2", "grpo")
    sid = attempt_submission_id(tid, 3)
    assert sid == f"{tid}--a03"
    assert parse_submission_id(sid) == (tid, 3)
    assert parse_task_id("mvp2-Alice-ppo-20261125-143201-7f3a") is None
    with pytest.raises(ValueError):
        attempt_submission_id(tid, 0)


@pytest.mark.parametrize("bad", ["", "Alice", "1abc", "a-b", "a b", "a" * 33, "é"])
def test_user_ids_are_refused_with_the_rule(bad):
    with pytest.raises(ValueError, match="lower-case letters"):
        check_user_id(bad)


# -- admission -----------------------------------------------------------------------------
def test_eight_free_gpus_on_two_nodes_do_not_run_a_one_by_eight_gang():
    cap = Capacity.of({"w1": 4, "w2": 4})
    assert cap.fit(Demand(1, 8)) is None
    assert "largest free bundle is 4 GPU(s) (8 free on 2 node(s))" in cap.why_not(Demand(1, 8))
    assert cap.fit(Demand(2, 4)).gpus_by_node == {"w1": 4, "w2": 4}


def test_best_fit_packs_the_fullest_node_first_and_counts_the_driver():
    cap = Capacity.of({"w1": 4, "w2": 2})
    assert cap.fit(Demand(1, 2)).gpus_by_node == {"w2": 2}
    assert cap.fit(Demand(1, 2, driver_gpus=1)).gpus_by_node == {"w2": 2, "w1": 1}
    assert Capacity.of({"w1": 2}).fit(Demand(1, 2, driver_gpus=1)) is None


def test_free_gpus_follow_ray_less_only_the_gangs_it_has_not_placed():
    total = {"w1": 4, "w2": 4}
    # Booked on w1, placed by Ray on w2 (Ray shows 4 taken): w1 is free.
    assert free_gpus({"w1": 4, "w2": 0}, total, [Booked({"w1": 4}, None)]) == {"w1": 4.0, "w2": 0.0}
    assert free_gpus({"w1": 4, "w2": 0}, total, [Booked({"w1": 4}, True)]) == {"w1": 4.0, "w2": 0.0}
    # Not started, or started and not shown taken by Ray: taken off where Ray could place it
    # now, best fit (wherever Argus once counted it).
    assert free_gpus({"w1": 4, "w2": 4}, total, [Booked({"w1": 3}, False)]) == {"w1": 1.0, "w2": 4.0}
    assert free_gpus({"w1": 4, "w2": 4}, total, [Booked({"w2": 3}, None)]) == {"w1": 1.0, "w2": 4.0}
    assert free_gpus({"w1": 4, "w2": 1}, total, [Booked({"w1": 1}, False)]) == {"w1": 4.0, "w2": 0.0}
    # Two recent gangs, Ray shows one gang's worth taken: the older counts as placed, the
    # other still needs room.
    two = [Booked({"w1": 2}, None), Booked({"w2": 2}, None)]
    assert free_gpus({"w1": 4, "w2": 2}, total, two) == {"w1": 4.0, "w2": 0.0}
    # Ray put the older gang where Argus counted the younger one: the younger, not placed yet,
    # still needs a whole node, and gets the one left (no over-admission onto its GPUs).
    crossed = [Booked({"w1": 4}, None), Booked({"w2": 4}, None)]
    assert free_gpus({"w1": 4, "w2": 0}, total, crossed) == {"w1": 0.0, "w2": 0.0}
    # A gang that fits nowhere any more keeps every node it could use full.
    assert free_gpus({"w1": 2, "w2": 2}, total, [Booked({"w1": 4}, False)]) == {"w1": 0.0, "w2": 0.0}
    # An SFT gang (a 4-GPU bundle and its driver's GPU) fits where Ray would put it: the
    # driver's GPU on another node, not a 5-GPU bundle that no node has.
    three = {"w1": 4, "w2": 4, "w3": 4}
    sft = Booked({"w1": 5}, False, None, (1, 4.0, 1.0))
    assert sorted(free_gpus(three, three, [sft]).values()) == [0.0, 3.0, 4.0]
    # Pools: an unplaced gang of pool a is fitted in pool a only.
    pools = {"w1": "a", "w2": "b"}
    assert free_gpus({"w1": 4, "w2": 4}, total, [Booked({"w2": 2}, False, "a")], pools=pools) == {
        "w1": 2.0,
        "w2": 4.0,
    }
    assert free_gpus({"w1": 1, "w2": 4}, total, [Booked({"w1": 2}, False, "a")], pools=pools) == {
        "w1": 0.0,
        "w2": 4.0,
    }
    assert Capacity.of({}).why_not(Demand(1, 1)) == "no schedulable worker node is alive"


# -- outcomes of a Ray job -----------------------------------------------------------------
def _view(status, cause=None, evidence="x", message=None):
    diag = Diagnosis(cause, evidence) if cause else None
    return JobView("s", status, message, None, None, None, None, None, None, {}, diag)


@pytest.mark.parametrize(
    "status,state",
    [("PENDING", "SUBMITTED"), ("RUNNING", "RUNNING"), ("SUCCEEDED", "SUCCEEDED"), ("STOPPED", "CANCELED")],
)
def test_ray_status_maps_to_task_state(status, state):
    assert decide_outcome(_view(status), 1, 3).state == state


def test_failures_wait_retry_or_end_by_cause():
    gpu = decide_outcome(_view("FAILED", FailureCause.INSUFFICIENT_RESOURCES, "Total available GPUs 0 ..."), 5, 3)
    assert (gpu.state, gpu.cause) == (TaskState.PENDING_RESOURCES, None)
    assert decide_outcome(_view("FAILED", FailureCause.NCCL), 1, 3).state == TaskState.QUEUED
    last = decide_outcome(_view("FAILED", FailureCause.NCCL), 3, 3)
    assert (last.state, last.cause) == (TaskState.FAILED, FailureCause.NCCL)
    cfg = decide_outcome(_view("FAILED", FailureCause.CONFIG, "Key 'x' is not in struct"), 1, 3)
    assert (cfg.state, cfg.cause, cfg.evidence) == (
        TaskState.FAILED,
        FailureCause.CONFIG,
        "Key 'x' is not in struct",
    )
    lost = decide_outcome(None, 1, 3)
    assert (lost.state, lost.cause) == (TaskState.QUEUED, FailureCause.PLATFORM)
    unknown = decide_outcome(_view("FAILED", message="exit 1"), 1, 3)
    assert (unknown.state, unknown.cause, unknown.evidence) == (
        TaskState.FAILED,
        FailureCause.UNKNOWN,
        "exit 1",
    )


# -- inputs under common/ ------------------------------------------------------------------
def _spec(root, **fields):
    data = {
        "workload": "ppo",
        "code_path": f"{root}/common/code/v",
        "model_id": "Qwen/Qwen2.5-0.5B",
        "train_file": f"{root}/common/data/t.parquet",
        **fields,
    }
    return parse_task_spec(data, str(root))


def test_inputs_must_lie_under_common_after_dots_and_symlinks_without_a_user(tmp_path):
    common = tmp_path / "common"
    common.mkdir()
    (common / "escape").symlink_to("/etc")
    assert input_problems(_spec(tmp_path), str(tmp_path)) == []
    spec = _spec(
        tmp_path,
        code_path=f"{tmp_path}/common/../users/x",
        train_file=f"{tmp_path}/common/escape/passwd",
        val_file="/etc/hosts",
        model_id=f"{tmp_path}/models/m",
        reward={"path": f"{tmp_path}/users/y/r.py"},
    )
    fields = {p.field for p in input_problems(spec, str(tmp_path))}
    assert fields == {"code_path", "train_file", "val_file", "model_id", "reward.path"}
    assert input_problems(_spec(tmp_path, model_id=f"{tmp_path}/common/models/m"), str(tmp_path)) == []


# -- server config -------------------------------------------------------------------------
def test_server_config_sections_defaults_and_environment_overrides(tmp_path):
    s = parse_settings(
        {"ray": {"shared_root": str(tmp_path)}, "scheduler": {"retry_interval_s": 9}},
        environ={
            "ARGUS_SERVICE_PORT": "9001",
            "ARGUS_SCHEDULER_MAX_RUNNING_TASKS": "2",
            "ARGUS_RAY_ADDRESS": "http://10.0.0.1:8265",
            "ARGUS_UNRELATED": "x",
        },
    )
    assert (s.service.port, s.scheduler.max_running_tasks, s.scheduler.retry_interval_s) == (9001, 2, 9)
    assert s.ray.address == "http://10.0.0.1:8265"
    assert s.db_url == f"sqlite:///{tmp_path}/common/db/argus.sqlite3"
    assert s.admin_token({"MVP_INTERNAL_TOKEN": "t"}) == "t" and s.admin_token({}) is None


def test_server_config_errors_name_the_field(tmp_path):
    with pytest.raises(SpecError) as exc:
        parse_settings(
            {"ray": {"shared_root": str(tmp_path)}, "servce": {}, "scheduler": {"interval_s": 0}},
            environ={"ARGUS_SERVICE_PORT": "eighty"},
        )
    fields = {p.field for p in exc.value.problems}
    assert fields == {"servce", "scheduler.interval_s", "service.port"}
    assert any("did you mean 'service'" in p.reason for p in exc.value.problems)


def test_a_token_looked_up_while_its_user_is_disabled_is_not_remembered():
    from argus.service.auth import Authenticator
    from argus.service.errors import APIError

    class Users:
        active = True

        def user_for_token(self, token):
            answer = "alice" if self.active else None
            if self.active:  # the admin disables alice while this lookup is on its way
                self.active = False
                auth.forget()
            return answer

    users = Users()
    auth = Authenticator(users, admin_token=None, ttl_s=60)
    assert auth.identify("Bearer tok").user_id == "alice"  # answered before the disable
    with pytest.raises(APIError) as exc:
        auth.identify("Bearer tok")  # not served from memory: refused at once
    assert exc.value.status == 401


def test_a_forget_in_one_api_process_drops_the_memory_of_the_others(tmp_path):
    from argus.service.auth import Authenticator
    from argus.service.shared_state import SharedState

    class Users:
        lookups = 0

        def user_for_token(self, token):
            self.lookups += 1
            return "alice"

    users = Users()
    with SharedState.create(tmp_path / "state") as one, SharedState.open(tmp_path / "state") as two:
        a = Authenticator(users, admin_token=None, ttl_s=60, shared=one)
        b = Authenticator(users, admin_token=None, ttl_s=60, shared=two)
        assert [a.identify("Bearer tok").user_id for _ in range(3)] == ["alice"] * 3
        assert users.lookups == 1  # remembered
        b.forget()
        assert a.identify("Bearer tok").user_id == "alice" and users.lookups == 2  # asked again
        assert a.identify("Bearer tok").user_id == "alice" and users.lookups == 2  # and remembered


def test_a_lookup_that_raced_a_forget_in_another_process_is_not_remembered(tmp_path):
    from argus.service.auth import Authenticator
    from argus.service.shared_state import SharedState

    class Users:
        lookups = 0

        def user_for_token(self, token):
            self.lookups += 1
            if self.lookups == 1:  # another process disables alice while this lookup is on its way
                other.forget()
            return "alice"

    users = Users()
    with SharedState.create(tmp_path / "state") as one, SharedState.open(tmp_path / "state") as two:
        auth = Authenticator(users, admin_token=None, ttl_s=60, shared=one)
        other = Authenticator(users, admin_token=None, ttl_s=60, shared=two)
        auth.identify("Bearer tok")
        auth.identify("Bearer tok")
        assert users.lookups == 2  # the first answer was not kept


def test_durations_parse_and_refuse_clearly():
    from argus.domain.durations import format_duration, parse_duration

    assert [parse_duration(v) for v in ("90m", "2h", "1h30m", "45s", "2d", 30, "30")] == [
        5400,
        7200,
        5400,
        45,
        172800,
        30,
        30,
    ]
    assert format_duration(5400) == "1h30m" and format_duration(30) == "30s"
    for bad in ("soon", "1h1h", 0, -5, 10**400, True, "", "400d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
