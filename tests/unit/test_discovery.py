"""Head discovery and the node agent's decisions (pure; a fake clock)."""

from __future__ import annotations

import pytest

from argus.domain.discovery import (
    Action,
    HeadFileError,
    HeadInfo,
    decide,
    discovery_file,
    hold_file,
    parse_head,
)

HEAD = HeadInfo("prod", "10.0.0.5", 6380, "http://10.0.0.5:8265", updated_at=1000.0, ttl_s=30.0)


def test_the_file_lives_under_the_cluster_name_and_round_trips():
    assert str(discovery_file("/private", "prod")) == "/private/ray/discovery/prod/head.json"
    assert parse_head(HEAD.to_json()) == HEAD
    assert HEAD.address == "10.0.0.5:6380"


@pytest.mark.parametrize(
    "text,words",
    [
        ("", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"head_ip": "x"}', "missing key"),
        (
            '{"cluster_name": "c", "head_ip": "h", "gcs_port": "x", "dashboard_url": "u", "updated_at": 1, "ttl_s": 5}',
            "bad value",
        ),
        (
            '{"cluster_name": "c", "head_ip": "h", "gcs_port": 0, "dashboard_url": "u", "updated_at": 1, "ttl_s": 5}',
            "out of range",
        ),
    ],
)
def test_a_bad_file_is_refused_with_the_reason(text, words):
    with pytest.raises(HeadFileError, match=words):
        parse_head(text)


def test_missing_file_waits_and_a_joined_node_leaves():
    assert decide(1000, None, "no such file", None, False).action == Action.WAIT
    d = decide(1000, None, "no such file", "10.0.0.5:6380", True)
    assert d.action == Action.LEAVE and "no such file" in d.reason


def test_fresh_file_joins_and_then_stays():
    d = decide(1010, HEAD, None, None, False)
    assert (d.action, d.address) == (Action.JOIN, "10.0.0.5:6380")
    assert decide(1010, HEAD, None, "10.0.0.5:6380", True).action == Action.WAIT


def test_stale_or_stopped_head_makes_a_joined_node_leave():
    stale = decide(1031, HEAD, None, "10.0.0.5:6380", True)
    assert stale.action == Action.LEAVE and "stale (31s old, TTL 30s)" in stale.reason
    stopped = HeadInfo(**{**HEAD.__dict__, "stopped": True})
    d = decide(1001, stopped, None, "10.0.0.5:6380", True)
    assert d.action == Action.LEAVE and "stopped" in d.reason
    assert decide(1031, HEAD, None, None, False).action == Action.WAIT


def test_a_new_head_address_or_a_dead_raylet_rejoins():
    moved = HeadInfo(**{**HEAD.__dict__, "gcs_port": 6390, "updated_at": 2000.0})
    d = decide(2001, moved, None, "10.0.0.5:6380", True)
    assert (d.action, d.address) == (Action.REJOIN, "10.0.0.5:6390") and "moved" in d.reason
    d = decide(1001, HEAD, None, "10.0.0.5:6380", False)
    assert (d.action, d.reason) == (Action.REJOIN, "the local raylet died")


def test_the_temp_dir_round_trips_and_is_optional():
    with_temp = HeadInfo(**{**HEAD.__dict__, "temp_dir": "/tmp/argus-ray-1234abcd"})
    assert parse_head(with_temp.to_json()) == with_temp
    old = '{"cluster_name": "c", "head_ip": "h", "gcs_port": 1, "dashboard_url": "u", "updated_at": 1, "ttl_s": 5}'
    assert parse_head(old).temp_dir is None


def test_the_hold_file_is_per_node_and_refuses_paths():
    assert str(hold_file("/private", "prod", "gpu-7")) == "/private/ray/discovery/prod/hold/gpu-7"
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            hold_file("/private", "prod", bad)


def test_a_held_node_never_joins():
    d = decide(1010, HEAD, None, None, False, held="drained by admin")
    assert (d.action, d.reason) == (Action.WAIT, "held: drained by admin; not joining")
    moved = HeadInfo(**{**HEAD.__dict__, "gcs_port": 6390})
    assert decide(1010, moved, None, "10.0.0.5:6380", True, held="x").action == Action.WAIT
    # A raylet that Ray's drain shut down is not started again while held.
    d = decide(1010, HEAD, None, "10.0.0.5:6380", False, held="x")
    assert (d.action, d.reason) == (Action.WAIT, "held: x; not joining")


def test_a_held_joined_node_keeps_its_raylet_while_ray_drains_it():
    d = decide(1010, HEAD, None, "10.0.0.5:6380", True, held="drain #12\n")
    assert (d.action, d.reason) == (Action.WAIT, "held: drain #12; keeping the raylet while Ray drains it")
    assert decide(1010, HEAD, None, None, False, held="").reason == "held: no reason given; not joining"
    # Without the hold, the same node joins again.
    assert decide(1010, HEAD, None, None, False, held=None).action == Action.JOIN
