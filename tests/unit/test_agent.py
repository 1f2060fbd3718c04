"""The node agent's loop with a fake clock, fake files and a fake runner (no Ray, no sleeps)."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from argus.cluster.agent import NODE_LABEL, NodeAgent, NodeSpec, parse_labels, worker_start_args
from argus.domain.discovery import Action, HeadInfo, discovery_file, hold_file
from argus.testing import FakeClock

ROOT, CLUSTER, NAME = "/private", "prod", "gpu-1"
HEAD_PATH = str(discovery_file(ROOT, CLUSTER))
HOLD_PATH = str(hold_file(ROOT, CLUSTER, NAME))


def head(port: int = 6380, at: float = 1000.0, **extra) -> str:
    return HeadInfo(
        "prod",
        "10.0.0.5",
        port,
        "http://10.0.0.5:8265",
        updated_at=at,
        ttl_s=30.0,
        temp_dir="/tmp/argus-ray-x",
        **extra,
    ).to_json()


class FakeRunner:
    """Records every call; a started raylet lives until `die()` or `stop()`."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.live: set[int] = set()
        self.n = 0

    def start(self, address: str, info: HeadInfo) -> int:
        self.n += 1
        self.live.add(self.n)
        self.calls.append(("start", address, info.temp_dir))
        return self.n

    def alive(self, handle: int) -> bool:
        return handle in self.live

    def stop(self, handle: int, graceful: bool = True) -> None:
        self.live.discard(handle)
        self.calls.append(("stop", handle, graceful))

    def die(self) -> None:
        self.live.clear()


@pytest.fixture
def world(caplog):
    caplog.set_level(logging.INFO, logger="argus.node-agent")
    files: dict[str, str] = {}
    clock, runner = FakeClock(1000.0), FakeRunner()
    agent = NodeAgent(ROOT, CLUSTER, NAME, runner, clock=clock, read_text=files.get, poll_s=2.0)
    return agent, files, clock, runner, caplog


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_missing_file_waits_and_says_so_once(world):
    agent, files, clock, runner, caplog = world
    for _ in range(3):
        d = agent.poll()
        clock.now += 2
    assert d.action == Action.WAIT and runner.calls == []
    assert lines(caplog) == [f"wait: no usable head.json ({HEAD_PATH} does not exist)"]


def test_a_bad_file_is_named_in_the_log(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = "{not json"
    assert agent.poll().action == Action.WAIT
    assert "not JSON" in lines(caplog)[0] and runner.calls == []


def test_an_unreadable_file_is_a_problem_not_a_crash(world):
    agent, files, clock, runner, caplog = world

    def broken(path: str):
        raise PermissionError(13, "Permission denied")

    agent.read_text = broken
    assert agent.poll().action == Action.WAIT
    assert "cannot read" in lines(caplog)[0]


def test_a_published_head_is_joined_once_with_its_temp_dir(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    d = agent.poll()
    assert (d.action, d.address) == (Action.JOIN, "10.0.0.5:6380")
    assert runner.calls == [("start", "10.0.0.5:6380", "/tmp/argus-ray-x")]
    for _ in range(3):
        clock.now += 2
        assert agent.poll().action == Action.WAIT
    assert len(runner.calls) == 1 and agent.joined_to == "10.0.0.5:6380"
    assert lines(caplog) == [
        "join 10.0.0.5:6380: head 10.0.0.5:6380 published",
        "wait: joined to 10.0.0.5:6380",
    ]


def test_a_stale_file_makes_the_node_leave_quickly_then_wait(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    agent.poll()
    clock.now = 1031
    assert agent.poll().action == Action.LEAVE
    assert runner.calls[-1] == ("stop", 1, False)  # the head is gone: no graceful wait
    assert agent.joined_to is None and agent.handle is None
    for _ in range(3):
        clock.now += 2
        assert agent.poll().action == Action.WAIT
    assert len(runner.calls) == 2
    assert lines(caplog)[-2:] == [
        "leave 10.0.0.5:6380: head.json is stale (31s old, TTL 30s)",
        "wait: head.json is stale (33s old, TTL 30s)",
    ]  # later ages are the same state: not repeated


def test_a_stopped_head_makes_the_node_leave(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    agent.poll()
    files[HEAD_PATH] = head(stopped=True)
    assert agent.poll().action == Action.LEAVE
    assert "stopped" in lines(caplog)[-1]


def test_a_new_head_address_stops_the_old_raylet_then_joins_the_new_head(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    agent.poll()
    clock.now += 10
    files[HEAD_PATH] = head(port=6390, at=clock.now)
    d = agent.poll()
    assert (d.action, d.address) == (Action.REJOIN, "10.0.0.5:6390")
    assert runner.calls[1:] == [("stop", 1, False), ("start", "10.0.0.5:6390", "/tmp/argus-ray-x")]
    assert agent.joined_to == "10.0.0.5:6390" and runner.live == {2}
    assert lines(caplog)[-1] == "rejoin 10.0.0.5:6390: the head moved from 10.0.0.5:6380 to 10.0.0.5:6390"


def test_a_dead_raylet_is_started_again(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    agent.poll()
    clock.now += 60
    files[HEAD_PATH] = head(at=clock.now)
    runner.die()
    d = agent.poll()
    assert (d.action, d.reason) == (Action.REJOIN, "the local raylet died")
    assert runner.calls[1:] == [("stop", 1, False), ("start", "10.0.0.5:6380", "/tmp/argus-ray-x")]


def test_a_raylet_that_keeps_dying_at_start_is_retried_with_a_growing_back_off(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head(at=10_000)
    clock.now = 9_990
    agent.poll()
    starts = [clock.now]
    while clock.now < 10_025:
        clock.now += 1
        runner.die()
        if agent.poll().action in (Action.JOIN, Action.REJOIN):
            starts.append(clock.now)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[:3] == [5, 9, 17], starts  # dies 1 s after each start; waits 4, 8, 16 s
    waits = [line for line in lines(caplog) if line.startswith("wait: the raylet failed")]
    assert waits[:3] == [
        f"wait: the raylet failed {n}x right after its start; joining again in {2 * 2**n}s" for n in (1, 2, 3)
    ]


def test_a_held_node_does_not_join_and_keeps_a_draining_raylet(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    files[HOLD_PATH] = "drained by alice"
    assert agent.poll().reason == "held: drained by alice; not joining"
    assert runner.calls == []
    del files[HOLD_PATH]
    assert agent.poll().action == Action.JOIN
    files[HOLD_PATH] = "drained by alice"
    assert agent.poll().reason == "held: drained by alice; keeping the raylet while Ray drains it"
    assert runner.live == {1}
    runner.die()  # Ray's drain shut the idle raylet down
    clock.now += 1
    assert agent.poll().reason == "held: drained by alice; not joining"
    assert runner.calls[-1] == ("stop", 1, False) and agent.handle is None
    assert "the raylet joined to 10.0.0.5:6380 exited" in lines(caplog)
    clock.now += 1
    assert agent.poll().action == Action.WAIT and len(runner.calls) == 2


def test_stop_stops_the_raylet_before_run_returns(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    polls = []

    def wait(seconds: float) -> bool:
        polls.append(seconds)
        clock.now += seconds
        if len(polls) == 3:
            agent.stop()  # what the SIGTERM handler does
        return False

    agent._wait = wait
    assert agent.run() == 0
    assert polls == [2.0, 2.0, 2.0]
    assert runner.calls == [("start", "10.0.0.5:6380", "/tmp/argus-ray-x"), ("stop", 1, True)]
    assert lines(caplog)[-2:] == [
        "stopping the raylet joined to 10.0.0.5:6380: the agent is stopping",
        "node agent stopped",
    ]


def test_stop_with_nothing_joined_just_returns(world):
    agent, files, clock, runner, caplog = world
    agent.stop()
    assert agent.run() == 0 and runner.calls == []


def test_a_failing_poll_is_logged_and_the_loop_goes_on(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head()
    n = []

    def start(address, info):
        n.append(address)
        raise OSError("no free port")

    runner.start = start

    def wait(seconds: float) -> bool:
        if len(n) == 2:
            agent.stop()
        return False

    agent._wait = wait
    assert agent.run() == 0 and len(n) == 2
    assert any("poll failed" in line for line in lines(caplog))


# -- what the node offers -----------------------------------------------------------------
def test_labels_parse_and_bad_ones_are_refused():
    assert parse_labels("pool=a100, zone=b") == {"pool": "a100", "zone": "b"}
    assert parse_labels(None) == {} and parse_labels(" ") == {}
    for bad in ("pool", "pool=a=b", "pool=a100,", "bad key=x", "ray.io/x=y", f"{NODE_LABEL}=n"):
        with pytest.raises(ValueError):
            parse_labels(bad)


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times"
    return args[args.index(name) + 1]


def test_worker_start_args_carry_the_gpus_labels_resource_and_ports():
    spec = NodeSpec(
        name="gpu-1", gpus=8, cpus=16, labels={"pool": "a100"}, node_ip="10.0.0.9", object_store_memory=10**9
    )
    ports = {"node_manager_port": 20004, "object_manager_port": 20005}
    args = worker_start_args(spec, "10.0.0.5:6380", "/tmp/t", ports, 20100, 20199)
    assert args[:2] == ["start", "--block"] and "--head" not in args
    assert flag(args, "--address") == "10.0.0.5:6380"
    assert flag(args, "--num-gpus") == "8" and flag(args, "--num-cpus") == "16"
    assert json.loads(flag(args, "--resources")) == {"worker_node": 100}
    assert flag(args, "--labels") == "pool=a100,argus.io/node=gpu-1"
    assert flag(args, "--node-ip-address") == "10.0.0.9" and flag(args, "--temp-dir") == "/tmp/t"
    assert flag(args, "--node-manager-port") == "20004" and flag(args, "--min-worker-port") == "20100"
    assert flag(args, "--object-store-memory") == str(10**9)
    bare = worker_start_args(NodeSpec(name="n", gpus=0), "h:1", None, {}, 1, 2)
    for absent in ("--node-ip-address", "--num-cpus", "--temp-dir", "--object-store-memory"):
        assert absent not in bare  # Ray chooses


# -- the command line's input checks (exit 2 before anything starts) ------------------------
@pytest.mark.parametrize(
    "args, field",
    [
        (["--labels", "pool"], "--labels"),
        (["--labels", "argus.io/node=x"], "--labels"),
        (["--name", "bad name!"], "--name"),
        (["--node-ip", "not-an-ip"], "--node-ip"),
    ],
)
def test_node_agent_bad_input_exits_2_naming_the_option(args, field, tmp_path):
    from argus.client.cli import app

    result = CliRunner().invoke(
        app, ["node-agent", "--shared-root", str(tmp_path), "--cluster", "c", "--gpus", "1", *args]
    )
    assert result.exit_code == 2, result.output
    assert field in result.output


def test_head_start_bad_cluster_name_exits_2(tmp_path):
    from argus.client.cli import app

    result = CliRunner().invoke(app, ["head", "start", "--shared-root", str(tmp_path), "--cluster", "a/b"])
    assert result.exit_code == 2 and "--cluster" in result.output
    result = CliRunner().invoke(app, ["head", "status", "--shared-root", str(tmp_path), "--cluster", "none"])
    assert result.exit_code == 1 and "no head of cluster none" in result.output


def test_a_failed_read_while_joined_keeps_the_raylet_until_the_last_record_goes_stale(world):
    agent, files, clock, runner, caplog = world
    files[HEAD_PATH] = head(at=1000.0)
    assert agent.poll().action == Action.JOIN
    files[HEAD_PATH] = "{half written"  # a shared filesystem's hiccup, or a rename in flight
    clock.now = 1010.0
    assert agent.poll().action == Action.WAIT
    del files[HEAD_PATH]
    clock.now = 1025.0
    assert agent.poll().action == Action.WAIT
    assert [c[0] for c in runner.calls] == ["start"]  # never stopped meanwhile
    clock.now = 1031.0  # the last good record is now past its TTL: the head is gone
    assert agent.poll().action == Action.LEAVE
    assert [c[0] for c in runner.calls] == ["start", "stop"]


@pytest.mark.parametrize("command", [["head", "start"], ["node-agent"]])
def test_a_node_ip_that_is_not_ipv4_is_refused_naming_the_option(tmp_path, command):
    from argus.client.cli import app
    from argus.testing.cli import invoke

    result = invoke(app, *command, "--shared-root", tmp_path, "--cluster", "c1", "--node-ip", "::1")
    assert result.exit_code == 2
    assert "--node-ip: '::1' is not an IPv4 address" in result.err_text
    assert not (tmp_path / "ray").exists()  # nothing was started or written
