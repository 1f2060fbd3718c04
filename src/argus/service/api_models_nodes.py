"""The nodes' response bodies as Pydantic models (docs/api.md, Nodes).

Owns the documented shape of `argus.service.node_views`' bodies: a registered node or a Ray
worker that joined by itself (`managed: false`), what Ray says about it, its events, and the
listing. Same invariants as `argus.service.api_models`: exactly the keys the views build, in
their order, with the same nullability.
"""

from __future__ import annotations

from pydantic import Field

from argus.domain.nodes import NodeState
from argus.service.api_models import ApiModel, IsoTime, Pools


class SSHDetails(ApiModel):
    """How Argus reaches a managed node (shown to the admin only)."""

    host: str
    port: int
    user: str
    key: str = Field(description="the name of a key file in the server's `nodes.key_dir`")


class RayNode(ApiModel):
    """What Ray says about a node (free GPUs and CPUs are 0 on a dead one)."""

    node_id: str
    node_ip: str
    alive: bool
    draining: bool
    gpus_total: float
    gpus_free: float
    cpus_total: float
    cpus_free: float
    labels: dict[str, str]


class NodeBody(ApiModel):
    """A node: registered (`managed`), or a Ray worker that joined by itself."""

    id: str = Field(description="its registered name, else its `argus.io/node` label, else its Ray node id")
    name: str | None
    managed: bool
    state: NodeState
    reason: str | None
    offline_requested: bool
    pool: str | None
    labels: dict[str, str]
    gpus: float | None = Field(description="null: Ray detects them on the node")
    cpus: float | None
    ssh: SSHDetails | None = Field(description="the admin's only; null for an unmanaged node")
    agent_pid: int | None = Field(description="the admin's only")
    agent_started_at: IsoTime | None
    created_at: IsoTime | None
    updated_at: IsoTime | None
    ray: RayNode | None = Field(description="null when the node has no Ray node (not joined yet, or gone)")
    gpus_free: float | None = Field(
        description="free GPUs as admission counts them (Ray's free GPUs less the gangs admitted there that Ray "
        "has not placed yet); in the listing only, for a schedulable node; else null"
    )
    running_tasks: list[str] = Field(
        description="active tasks whose GPUs Ray placed there (before Ray shows them: where admission counted "
        "the gang) that the caller may see"
    )
    running_tasks_other: int = Field(description="other users' tasks whose GPUs are there (0 for the admin)")


class NodeEvent(ApiModel):
    at: IsoTime
    from_state: NodeState | None
    to_state: NodeState
    reason: str | None


class NodeDetail(NodeBody):
    events: list[NodeEvent] = Field(description="oldest first; an unmanaged node has none")


class NodeList(ApiModel):
    nodes: list[NodeBody]
    pools: Pools | None = Field(description="per pool (no pool: `-`); null when Ray cannot be read")
    ray_error: str | None


class HoldLifted(ApiModel):
    """`:undrain` of a drained unmanaged node that already left Ray: its hold is lifted."""

    id: str
    name: str
    managed: bool
    state: NodeState
    reason: str
