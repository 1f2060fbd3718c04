"""Managed nodes, pure: the state machine, registration rules, the agent's scripts and the
reconciler's decisions (a fake clock: plain numbers)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from argus.domain import nodes as rules
from argus.domain.nodes import (
    ALLOWED_FROM,
    NodeRegistration,
    NodeState,
    RayNodeView,
    RegistrationError,
    Step,
    can_transition,
    is_idle,
    parse_labels,
    parse_registration,
    reconcile,
)

GOOD = {"name": "gpu-1", "host": "10.0.0.5", "user": "root", "key": "gpu1.pem"}


def problems(body) -> dict[str, str]:
    with pytest.raises(RegistrationError) as info:
        parse_registration(body)
    return dict(info.value.problems)


# -- states -------------------------------------------------------------------------------------
def test_the_lifecycle_and_what_it_refuses():
    path = [
        NodeState.PENDING,
        NodeState.ONLINE,
        NodeState.DRAINING,
        NodeState.ONLINE,
        NodeState.DRAINING,
        NodeState.OFFLINE,
        NodeState.PENDING,
        NodeState.FAILED,
        NodeState.OFFLINE,
    ]
    for a, b in zip(path, path[1:]):
        assert can_transition(a, b), (a, b)
    for a, b in [
        (NodeState.PENDING, NodeState.DRAINING),
        (NodeState.OFFLINE, NodeState.ONLINE),
        (NodeState.FAILED, NodeState.ONLINE),
        (NodeState.ONLINE, NodeState.FAILED),
        (NodeState.OFFLINE, NodeState.DRAINING),
        (NodeState.ONLINE, NodeState.PENDING),
    ]:
        assert not can_transition(a, b), (a, b)
    assert set(ALLOWED_FROM) == set(NodeState)
    assert [s.value for s in NodeState] == ["pending", "online", "draining", "offline", "failed"]


# -- registration -------------------------------------------------------------------------------
def test_a_minimal_registration_takes_the_defaults():
    reg = parse_registration(GOOD)
    assert reg == NodeRegistration("gpu-1", "10.0.0.5", "root", "gpu1.pem", 22, {}, None, None)
    full = parse_registration(
        {
            **GOOD,
            "port": 2222,
            "gpus": 8,
            "cpus": 1,
            "host": "node-1.example.com",
            "labels": {"pool": "a100", "example.com/rack": "r1", "empty": ""},
        }
    )
    assert (full.port, full.gpus, full.cpus, full.pool) == (2222, 8, 1, "a100")


@pytest.mark.parametrize(
    "field,value",
    [
        ("name", "GPU-1"),
        ("name", "-gpu"),
        ("name", "gpu_1"),
        ("name", "a" * 64),
        ("name", ""),
        ("name", 5),
        ("host", "bad host"),
        ("host", "-oProxyCommand=x"),
        ("host", ""),
        ("host", "a..b"),
        ("user", "Root"),
        ("user", "x y"),
        ("user", "a" * 33),
        ("key", "../id"),
        ("key", "keys/id"),
        ("key", ".."),
        ("key", ".hidden"),
        ("key", ""),
        ("port", 0),
        ("port", 65536),
        ("port", "22"),
        ("port", True),
        ("gpus", -1),
        ("gpus", 1.5),
        ("cpus", -2),
        ("cpus", 0),
        ("gpus", 1025),
        ("gpus", 2**40),
        ("labels", ["pool=a"]),
    ],
)
def test_each_bad_field_is_named(field, value):
    assert field in problems({**GOOD, field: value})


def test_missing_and_unknown_fields_are_all_listed():
    found = problems({"name": "n1", "hots": "x"})
    assert {"host", "user", "key", "hots"} <= set(found)
    assert found["host"] == "is required" and "unknown field" in found["hots"]
    assert problems([1]) == {"<body>": "must be a JSON object"}


@pytest.mark.parametrize(
    "key,words",
    [
        ("ray.io/node-id", "reserved"),
        ("argus.io/node", "reserved"),
        ("-pool", "key name"),
        ("bad_prefix_/x", "prefix"),
        ("a/b/c", "prefix"),
        ("x" * 64, "key name"),
        ("", "non-empty"),
    ],
)
def test_label_keys_follow_rays_rules_and_reserve_ours(key, words):
    found = problems({**GOOD, "labels": {key: "v"}})
    assert words in found[f"labels.{key}"]


@pytest.mark.parametrize("value", ["-a", "a-", "a b", "x" * 64, "a,b", "a=b", 3])
def test_label_values_follow_rays_rules(value):
    assert "labels.pool" in problems({**GOOD, "labels": {"pool": value}})


@pytest.mark.parametrize(
    "key,value",
    [
        ("pool", "a100"),
        ("example.com/rack", "r-1"),
        ("a.b-c_d", "X.y_z"),
        ("x" * 63, "y" * 63),
        ("-x", "v"),
        ("p/", "v"),
        ("bad_/x", "v"),
        ("k", "-v"),
        ("k", "v_"),
        ("k", ""),
        ("a..b/c", "v"),
    ],
)
def test_label_rules_agree_with_rays_own_validators(key, value):
    from ray._private.label_utils import validate_label_key, validate_label_value

    ours = rules.label_key_problem(key) is None and rules.label_value_problem(value) is None
    try:
        validate_label_value(value)
        theirs = validate_label_key(key) is None
    except ValueError:
        theirs = False
    assert ours == theirs, (key, value)


def test_cli_labels_parse_and_format_round_trip():
    assert parse_labels("pool=a100, rack=r1,") == {"pool": "a100", "rack": "r1"}
    assert rules.format_labels({"rack": "r1", "pool": "a100"}) == "pool=a100,rack=r1"
    for bad in ("pool", "=x", "a=1,a=2"):
        with pytest.raises(ValueError):
            parse_labels(bad)


# -- the agent's command and scripts ------------------------------------------------------------
def test_the_agent_command_line():
    reg = parse_registration({**GOOD, "gpus": 8, "cpus": 32, "labels": {"pool": "a100", "rack": "r1"}})
    argv = rules.agent_command("/opt/argus/bin/argus", "/private", "prod", reg)
    assert argv == [
        "/opt/argus/bin/argus",
        "node-agent",
        "--shared-root",
        "/private",
        "--cluster",
        "prod",
        "--name",
        "gpu-1",
        "--gpus",
        "8",
        "--cpus",
        "32",
        "--labels",
        "pool=a100,rack=r1",
        "--node-ip",
        "10.0.0.5",
    ]
    by_name = rules.agent_command("argus", "/private", "prod", parse_registration({**GOOD, "host": "gpu1.example.com"}))
    assert "--node-ip" not in by_name and "--gpus" not in by_name  # Ray detects the GPUs


def test_the_start_script_detaches_and_prints_the_pid(tmp_path):
    log = tmp_path / "logs" / "n1.log"
    script = rules.start_script(["sh", "-c", "echo started; sleep 0.2"], str(log))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.strip().isdigit(), out
    subprocess.run(["sh", "-c", f"while kill -0 {out.stdout.strip()} 2>/dev/null; do sleep 0.05; done"], timeout=10)
    assert log.read_text() == "started\n"
    assert "'a b'" in rules.start_script(["x", "a b"], "/l/x.log")  # every argument quoted


def test_the_check_script_names_what_is_missing(tmp_path):
    ok = subprocess.run(["sh", "-c", rules.check_script("true", str(tmp_path))], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("host=")
    no_root = subprocess.run(["sh", "-c", rules.check_script("true", str(tmp_path / "nope"))])
    assert no_root.returncode == 3
    assert "not visible" in rules.check_failure(3, "", "true", "/x")
    no_agent = subprocess.run(["sh", "-c", rules.check_script("/no/such/argus", str(tmp_path))])
    assert no_agent.returncode == 4
    assert "`/no/such/argus node-agent --help` does not run" in rules.check_failure(4, "", "/no/such/argus", "/x")
    assert rules.check_failure(9, "boom\n", "a", "/x") == "the host check exited 9: boom"


def test_the_stop_script_only_stops_this_nodes_agent(tmp_path):
    fake = tmp_path / "node-agent"
    fake.write_text("#!/bin/sh\ntrap 'exit 0' TERM\nwhile true; do sleep 0.05; done\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "node-agent", "--name", "n1", "--x"])
    try:
        other = subprocess.run(["sh", "-c", rules.stop_script(proc.pid, "n", 2)], capture_output=True, text=True)
        assert other.stdout.strip() == "gone" and proc.poll() is None  # `n` is not `n1`
        done = subprocess.run(["sh", "-c", rules.stop_script(proc.pid, "n1", 5)], capture_output=True, text=True)
        assert done.stdout.strip() == "stopped", done
        assert proc.wait(5) == 0
        again = subprocess.run(["sh", "-c", rules.stop_script(proc.pid, "n1", 2)], capture_output=True, text=True)
        assert again.stdout.strip() == "gone"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shell = subprocess.Popen(["sh", "-c", "sleep 30 # node-agent --name n1", "node-agent"])
    try:  # a shell whose text names the agent is not the agent
        assert (
            subprocess.run(
                ["sh", "-c", rules.stop_script(shell.pid, "n1", 1)], capture_output=True, text=True
            ).stdout.strip()
            == "gone"
        )
        assert shell.poll() is None
    finally:
        shell.kill()
        shell.wait()


def test_the_started_pid_is_the_agent_itself(tmp_path):
    fake = tmp_path / "agent"
    fake.write_text("#!/bin/sh\nwhile :; do sleep 0.1; done\n")
    fake.chmod(0o755)
    script = rules.start_script([str(fake), "node-agent", "--name", "n1"], str(tmp_path / "l" / "n1.log"))
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    pid = int(out.stdout.strip())
    try:
        for _ in range(100):  # the forked shell execs nohup, setsid and the agent in turn
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            # nohup's and setsid's own command lines name the agent too: wait for the agent.
            if b"node-agent" in argv and os.path.basename(argv[0]) not in (b"nohup", b"setsid"):
                break
            time.sleep(0.02)
        assert argv[-4:] == [b"node-agent", b"--name", b"n1", b""], argv  # the agent, no shell around it
        assert os.getsid(pid) == pid  # a session of its own
    finally:
        os.kill(pid, 9)


# -- the reconciler -----------------------------------------------------------------------------
ALIVE = RayNodeView("ab" * 28, True, False, 4, 4, 8, 8)


def test_a_started_agent_goes_online_when_it_joins_or_fails_after_the_timeout():
    assert reconcile(NodeState.PENDING, None, False, None, 0, 1000, 120).step == Step.NOTHING
    d = reconcile(NodeState.PENDING, 1000, False, ALIVE, 0, 1001, 120)
    assert d.step == Step.ONLINE and ALIVE.node_id in d.reason
    assert reconcile(NodeState.PENDING, 1000, False, None, 0, 1120, 120).step == Step.NOTHING
    late = reconcile(NodeState.PENDING, 1000, False, None, 0, 1120.5, 120)
    assert late.step == Step.FAIL
    assert late.reason == "agent started but the node did not join Ray within 120 s"
    dead = RayNodeView(ALIVE.node_id, False, False, 4, 0, 8, 0)
    assert reconcile(NodeState.PENDING, 1000, False, dead, 0, 1121, 120).step == Step.FAIL


def test_offline_waits_until_the_node_is_empty():
    busy_gpu = RayNodeView(ALIVE.node_id, True, True, 4, 2, 8, 8)
    busy_cpu = RayNodeView(ALIVE.node_id, True, True, 4, 4, 8, 7)  # a driver holds a CPU
    for state in (NodeState.ONLINE, NodeState.DRAINING):
        assert reconcile(state, 1, True, busy_gpu, 0, 2, 120).step == Step.NOTHING
        assert reconcile(state, 1, True, busy_cpu, 0, 2, 120).step == Step.NOTHING
        assert reconcile(state, 1, True, ALIVE, 1, 2, 120).step == Step.NOTHING  # a task placed
        assert reconcile(state, 1, True, ALIVE, 0, 2, 120).step == Step.STOP
        assert reconcile(state, 1, True, None, 0, 2, 120).step == Step.STOP  # Ray let it go
        assert reconcile(state, 1, False, ALIVE, 0, 2, 120).step == Step.NOTHING
    assert is_idle(RayNodeView("x", False, False, 4, 0, 8, 0), 3)  # a dead node runs nothing


# -- the node record ----------------------------------------------------------------------------
def test_a_node_record_gives_back_its_registration_and_is_frozen():
    import dataclasses

    from argus.domain.node_records import Node

    reg = parse_registration({**GOOD, "port": 2222, "labels": {"pool": "a100"}, "gpus": 8})
    node = Node(
        name=reg.name,
        host=reg.host,
        port=reg.port,
        ssh_user=reg.user,
        key_ref=reg.key,
        labels=reg.labels,
        gpus=reg.gpus,
        cpus=None,
        state=NodeState.PENDING,
        reason="registered",
        agent_pid=None,
        agent_started_at=None,
        ray_node_id=None,
        offline_requested=False,
        created_at=1.0,
        updated_at=1.0,
    )
    assert node.registration() == reg and node.pool == "a100"
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.state = NodeState.ONLINE  # type: ignore[misc]
