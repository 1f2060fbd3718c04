"""Node records and Ray's nodes to API bodies (docs/api.md, Nodes).

Pure: a registered node (`argus.domain.node_records.Node`, or a Ray node that joined by
itself) and what Ray says about it become the node body; SSH details and the agent's pid are
shown to the admin only, and so are other users' tasks: a user's `running_tasks` lists only
their own, `running_tasks_other` counts the rest.
"""

from __future__ import annotations

from typing import Any

from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.domain.node_records import Node, NodeEvent, Running
from argus.domain.nodes import NODE_LABEL, POOL_LABEL, NodeState
from argus.service.auth import Identity
from argus.service.views import iso


def ray_view(n: NodeCapacity | None) -> dict[str, Any] | None:
    """What Ray says about a node (free GPUs and CPUs are 0 on a dead one)."""
    if n is None:
        return None
    return {
        "node_id": n.node_id,
        "node_ip": n.node_ip,
        "alive": n.alive,
        "draining": n.draining,
        "gpus_total": n.total_gpus,
        "gpus_free": n.available_gpus if n.alive else 0.0,
        "cpus_total": n.total_cpus,
        "cpus_free": n.available_cpus if n.alive else 0.0,
        "labels": dict(n.labels),
    }


def running_view(placed: list[tuple[str, str]], who: Identity | None) -> dict[str, Any]:
    """`running_tasks` (the ids `who` may see, sorted) and `running_tasks_other` (how many
    other users' tasks are there besides; 0 for the admin, `who` None)."""
    mine = sorted(t for t, user in placed if who is None or who.owns(user))
    return {"running_tasks": mine, "running_tasks_other": len(placed) - len(mine)}


def node_view(node: Node, ray: NodeCapacity | None, running: Running, who: Identity | None) -> dict[str, Any]:
    """A registered node with its Ray node (`who` None: the admin's view)."""
    show_ssh = who is None or who.is_admin
    return {
        "id": node.name,
        "name": node.name,
        "managed": True,
        "state": node.state.value,
        "reason": node.reason,
        "offline_requested": node.offline_requested,
        "pool": node.pool,
        "labels": dict(node.labels),
        "gpus": node.gpus,
        "cpus": node.cpus,
        "ssh": {"host": node.host, "port": node.port, "user": node.ssh_user, "key": node.key_ref} if show_ssh else None,
        "agent_pid": node.agent_pid if show_ssh else None,
        "agent_started_at": iso(node.agent_started_at),
        "created_at": iso(node.created_at),
        "updated_at": iso(node.updated_at),
        "ray": ray_view(ray),
        "gpus_free": None,
        **running_view(running.get(ray.node_id, []) if ray is not None and ray.alive else [], who),
    }


def unmanaged_view(
    n: NodeCapacity, running: Running, held: str | None = None, who: Identity | None = None
) -> dict[str, Any]:
    """A Ray worker that joined by itself: named by its `argus.io/node` label or its node id,
    its state Ray's, or `draining` while Argus holds it (`held`: the hold's reason); `who`
    None: the admin's view."""
    name = n.labels.get(NODE_LABEL)
    state = (
        NodeState.DRAINING
        if n.draining or (held is not None and n.alive)
        else NodeState.ONLINE
        if n.alive
        else NodeState.OFFLINE
    )
    return {
        "id": name or n.node_id,
        "name": name,
        "managed": False,
        "state": state.value,
        "reason": held,
        "offline_requested": False,
        "pool": n.labels.get(POOL_LABEL),
        "labels": dict(n.labels),
        "gpus": n.total_gpus,
        "cpus": n.total_cpus,
        "ssh": None,
        "agent_pid": None,
        "agent_started_at": None,
        "created_at": None,
        "updated_at": None,
        "ray": ray_view(n),
        "gpus_free": None,
        **running_view(running.get(n.node_id, []), who),
    }


def event_view(e: NodeEvent) -> dict[str, Any]:
    return {"at": iso(e.at), "from_state": e.from_state, "to_state": e.to_state, "reason": e.reason}


def pools_of(snap: ClusterSnapshot) -> dict[str, dict[str, float]]:
    """GPUs per pool of the schedulable nodes in Ray's view (no pool: "-")."""
    pools: dict[str, dict[str, float]] = {}
    for n in snap.schedulable():
        p = pools.setdefault(n.labels.get(POOL_LABEL) or "-", {"nodes": 0, "gpus_total": 0.0, "gpus_free": 0.0})
        p["nodes"] += 1
        p["gpus_total"] += n.total_gpus
        p["gpus_free"] += n.available_gpus
    return dict(sorted(pools.items()))
