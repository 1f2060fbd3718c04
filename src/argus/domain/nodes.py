"""Managed nodes (seed v2.1 §4.1): their states, the agent's commands, and the reconciler's
decisions (pure). The registration rules are `argus.domain.node_registration`'s, re-exported here.

A managed node is a worker host that the admin registered (host, port, user, a reference to a
private key in the server's key directory, labels, GPUs) and on which Argus starts the node agent
over SSH. The agent joins Ray with the label `argus.io/node=<name>`, which is how a registered
node is matched to its Ray node.

States: `pending` (registered; the agent is being started, or has started and the node has not
yet joined Ray) → `online` (its Ray node is alive) ⇄ `draining` (no new work; what runs finishes)
→ `offline` (the agent stopped); `failed` (SSH, the host check or the join went wrong: `reason`
says which). `failed` and `offline` are not final: registering the same name again moves the node
back to `pending`. `ALLOWED_FROM` is the only way into a state; the store enforces it with
compare-and-set. No clock, no SSH, no Ray here: callers pass in what they saw.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from enum import StrEnum

from argus.domain.node_registration import (
    DEFAULT_SSH_PORT,
    FIELDS,
    MAX_LABELS,
    NODE_LABEL,
    POOL_LABEL,
    RAY_RESERVED_PREFIX,
    NodeRegistration,
    RegistrationError,
    check_name,
    format_labels,
    label_key_problem,
    label_value_problem,
    parse_labels,
    parse_registration,
)

# The registration rules are re-exported: callers reach them as `argus.domain.nodes.<name>`.
__all__ = [
    "ACTION_NEEDS",
    "ALLOWED_FROM",
    "CHECK_FAILURES",
    "DEFAULT_SSH_PORT",
    "FIELDS",
    "MAX_LABELS",
    "NODE_LABEL",
    "POOL_LABEL",
    "RAY_RESERVED_PREFIX",
    "Decision",
    "NodeRegistration",
    "NodeState",
    "RayNodeView",
    "RegistrationError",
    "Step",
    "agent_command",
    "agent_log_path",
    "can_transition",
    "check_failure",
    "check_name",
    "check_script",
    "format_labels",
    "is_idle",
    "label_key_problem",
    "label_value_problem",
    "parse_labels",
    "parse_registration",
    "reconcile",
    "start_script",
    "stop_script",
]


class NodeState(StrEnum):
    PENDING = "pending"
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"
    FAILED = "failed"


# target state -> the states it may be entered from.
ALLOWED_FROM: dict[NodeState, frozenset[NodeState]] = {
    # registered again after it failed or went offline
    NodeState.PENDING: frozenset({NodeState.FAILED, NodeState.OFFLINE}),
    # joined Ray; or undrained
    NodeState.ONLINE: frozenset({NodeState.PENDING, NodeState.DRAINING}),
    NodeState.DRAINING: frozenset({NodeState.ONLINE}),
    # the agent stopped (a failed node's leftover agent included)
    NodeState.OFFLINE: frozenset({NodeState.PENDING, NodeState.ONLINE, NodeState.DRAINING, NodeState.FAILED}),
    # SSH, the host check or the join failed
    NodeState.FAILED: frozenset({NodeState.PENDING}),
}

# What each admin action needs, for the 409 message.
ACTION_NEEDS: dict[str, str] = {
    "drain": "only an online node can be drained",
    "undrain": "only a draining node can be undrained",
    "offline": "a node that is offline already cannot be taken offline again",
}


def can_transition(current: NodeState, target: NodeState) -> bool:
    """Whether `current -> target` is allowed."""
    return current in ALLOWED_FROM[target]


# -- the agent on the node ----------------------------------------------------------------------
def agent_log_path(shared_root: str, name: str) -> str:
    """Where the agent started over SSH writes its output: `<shared_root>/common/logs/nodes/`."""
    return f"{shared_root.rstrip('/')}/common/logs/nodes/{name}.log"


def agent_command(agent: str, shared_root: str, cluster: str, reg: NodeRegistration) -> list[str]:
    """The node agent's argument vector (`<agent> node-agent …`).

    `--node-ip` is passed when the registered host is an IP address (the address Argus reaches
    the node at is then the one Ray should use); for a host name the agent picks its own.
    """
    argv = [
        *shlex.split(agent),
        "node-agent",
        "--shared-root",
        shared_root,
        "--cluster",
        cluster,
        "--name",
        reg.name,
    ]
    if reg.gpus is not None:
        argv += ["--gpus", str(reg.gpus)]
    if reg.cpus is not None:
        argv += ["--cpus", str(reg.cpus)]
    if reg.labels:
        argv += ["--labels", format_labels(reg.labels)]
    if _is_ip(reg.host):
        argv += ["--node-ip", reg.host]
    return argv


def _is_ip(host: str) -> bool:
    """An IPv4 address (what `ray start --node-ip-address` and the agent take)."""
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


CHECK_FAILURES = {
    3: "the shared root {shared_root} is not visible on the host",
    4: "the agent command `{agent} node-agent --help` does not run on the host (is Argus installed there?)",
}


def check_script(agent: str, shared_root: str) -> str:
    """A shell script that checks the host: prints `host=<uname -n>` and exits 0, or exits with
    a code of `CHECK_FAILURES` (3: the shared root is not visible; 4: the agent does not run)."""
    help_cmd = " ".join(shlex.quote(a) for a in [*shlex.split(agent), "node-agent", "--help"])
    return (
        f"echo host=$(uname -n); test -d {shlex.quote(shared_root)} || exit 3; "
        f"{help_cmd} >/dev/null 2>&1 || exit 4; exit 0"
    )


def check_failure(rc: int, stderr: str, agent: str, shared_root: str) -> str:
    """Why the host check failed, from its exit code."""
    known = CHECK_FAILURES.get(rc)
    if known:
        return known.format(agent=agent, shared_root=shared_root)
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return f"the host check exited {rc}: {detail}"


def start_script(argv: list[str], log_path: str) -> str:
    """A shell script that starts the agent detached from the SSH session; prints its pid.

    The agent is the background job itself (a simple command, so `$!` is the agent's own pid:
    `nohup` and `setsid` exec it in place); `setsid` gives it a session of its own, so the SSH
    session ending does not signal it; its output goes to `log_path`, its stdin is /dev/null.
    """
    log = shlex.quote(log_path)
    parent = shlex.quote(log_path.rsplit("/", 1)[0] or "/")
    cmd = " ".join(shlex.quote(a) for a in argv)
    return f"mkdir -p {parent} || exit 1; nohup setsid {cmd} > {log} 2>&1 < /dev/null & echo $!"


def stop_script(pid: int, name: str, wait_s: float) -> str:
    """A shell script that stops the agent `pid` with SIGTERM and waits for it to exit.

    The process counts as this node's agent while its arguments (`/proc/<pid>/cmdline`, empty for
    an exited process not yet reaped) include `node-agent` and `--name <name>` as arguments of
    their own (a shell whose command text merely mentions them does not count): a pid reused
    after a reboot is left alone. Prints `gone` (nothing to stop) or `stopped`, or exits 5 when
    the agent still runs after `wait_s` seconds.
    """
    tries = max(1, int(wait_s / 0.2))
    q = shlex.quote(name)
    return (
        f"p={int(pid)}; ours() {{ tr '\\0' '\\n' < /proc/$p/cmdline 2>/dev/null | grep -qx -- node-agent "
        f"&& tr '\\0' '\\n' < /proc/$p/cmdline 2>/dev/null | grep -x -A1 -- --name | tail -n1 "
        f"| grep -qx -- {q}; }}; "
        f"ours || {{ echo gone; exit 0; }}; kill -TERM $p; i=0; while ours; do i=$((i+1)); "
        f"[ $i -gt {tries} ] && {{ echo 'the agent (pid '$p') is still running' >&2; exit 5; }}; "
        f"sleep 0.2; done; echo stopped"
    )


# -- the reconciler's decisions -----------------------------------------------------------------
@dataclass(frozen=True)
class RayNodeView:
    """What Ray says about one node, reduced to what the decisions need."""

    node_id: str
    alive: bool
    draining: bool
    total_gpus: float
    free_gpus: float
    total_cpus: float
    free_cpus: float


def is_idle(ray_node: RayNodeView | None, running_tasks: int) -> bool:
    """Whether a node runs no work: its Ray node is gone or dead, or every GPU and CPU is free
    and no Argus task is placed on it.

    Free CPUs stand in for free `worker_node` slots (the snapshot carries only the totals of
    custom resources): a task's driver holds CPUs there.
    """
    if ray_node is None or not ray_node.alive:
        return True
    return (
        running_tasks == 0 and ray_node.free_gpus >= ray_node.total_gpus and ray_node.free_cpus >= ray_node.total_cpus
    )


class Step(StrEnum):
    NOTHING = "nothing"
    ONLINE = "online"  # the node joined Ray
    FAIL = "fail"  # it did not join in time
    STOP = "stop"  # offline was requested and the node is empty: stop the agent


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str = ""


def reconcile(
    state: NodeState,
    agent_started_at: float | None,
    offline_requested: bool,
    ray_node: RayNodeView | None,
    running_tasks: int,
    now: float,
    join_timeout_s: float,
) -> Decision:
    """What the reconciler does about one registered node.

    Args:
        state: the node's state.
        agent_started_at: when its agent was started over SSH (None: not yet).
        offline_requested: the admin asked for offline while work ran.
        ray_node: its alive Ray node (label `argus.io/node=<name>`), else None.
        running_tasks: Argus tasks placed on that Ray node.
        now: the clock.
        join_timeout_s: how long a started agent may take to join Ray.
    """
    if state == NodeState.PENDING and agent_started_at is not None:
        if ray_node is not None and ray_node.alive:
            return Decision(Step.ONLINE, f"joined Ray as node {ray_node.node_id}")
        if now - agent_started_at > join_timeout_s:
            return Decision(Step.FAIL, f"agent started but the node did not join Ray within {join_timeout_s:g} s")
        return Decision(Step.NOTHING)
    if offline_requested and state in (NodeState.ONLINE, NodeState.DRAINING) and is_idle(ray_node, running_tasks):
        return Decision(Step.STOP, "offline requested and the node is empty")
    return Decision(Step.NOTHING)
