"""Managed nodes and their events as the store hands them out: frozen records.

Owns the shape of what travels from the node store (`argus.store.nodes.NodeStore`) through the
node reconciler to the service. Records are immutable; a change is made by a named store method,
never by writing a field. The `labels` JSON column is decoded once, in the store. Times are
epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from argus.domain.nodes import POOL_LABEL, NodeRegistration, NodeState

# Ray node id -> (task id, user id) of the active tasks whose GPUs Ray placed there (before Ray
# shows them: where admission counted the gang).
Running = dict[str, list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class Node:
    """One registered node: how to reach it over SSH, what it offers, and where it stands."""

    name: str
    host: str
    port: int
    ssh_user: str
    key_ref: str  # a file name in the server's key directory (`nodes.key_dir`)
    labels: Mapping[str, str]
    gpus: int | None
    cpus: int | None
    state: NodeState
    reason: str | None
    agent_pid: int | None
    agent_started_at: float | None
    ray_node_id: str | None
    offline_requested: bool
    created_at: float
    updated_at: float

    @property
    def pool(self) -> str | None:
        return self.labels.get(POOL_LABEL)

    def registration(self) -> NodeRegistration:
        """The registration the node was made from (what its agent is started with)."""
        return NodeRegistration(
            name=self.name,
            host=self.host,
            user=self.ssh_user,
            key=self.key_ref,
            port=self.port,
            labels=dict(self.labels),
            gpus=self.gpus,
            cpus=self.cpus,
        )


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One row of a node's history (`from_state == to_state`: a change without a move)."""

    id: int
    node: str
    at: float
    from_state: str | None
    to_state: str
    reason: str | None
