"""What the node routes do: register a managed node and bring it up over SSH, drain, undrain,
take offline, and list the registry joined with Ray's live view.

Owns the node lifecycle's side effects (SSH, hold files, Ray drains) and its reconciler. The
states and decisions are `argus.domain.nodes`'; every state change goes through `NodeStore`
(compare-and-set with an event and its reason).

- **register**: the body is validated and the node stored `pending`; a background worker (never
  the request) connects over SSH, checks the host (`uname -n`, the shared root visible, the agent
  command runs) and starts the node agent detached (`nohup setsid … &`), recording its pid. The
  reconciler moves the node `online` once Ray shows an alive node labelled
  `argus.io/node=<name>`, or `failed` after `nodes.join_timeout_s`. SSH, auth and check errors
  fail the node at once, with the reason.
- **drain** (online → draining): Ray is asked to drain the node (Argus's admission skips nodes
  Ray reports DRAINING; Ray stops the raylet once it is idle) and the node's hold file is
  written, so its agent does not join again. **undrain** (draining → online) removes the hold
  file. Ray cannot cancel a drain: a node still draining in Ray finishes draining, its raylet
  stops, and the agent then joins afresh.
- **offline**: a node that runs no work (its Ray node gone, or every GPU and CPU free and no Argus
  task placed there) has its hold file written and its agent stopped over SSH (SIGTERM, waiting
  for it to exit) and goes `offline`; a busy node is drained with `offline_requested` set, and the
  reconciler finishes the job once it is empty. An agent that cannot be reached is still kept
  out of Ray by the hold file (and its Ray node drained); the reason says so.
- **unmanaged nodes** (Ray workers that joined by themselves) are listed with `managed: false`,
  named by their `argus.io/node` label or their Ray node id. They can be drained (Ray's drain,
  plus the hold file when they carry a name) and undrained (the hold file removed), never taken
  offline: Argus has no SSH access to them.

Admin actions and the reconciler take a per-node lock in this process, so they act on a node
one at a time; the store's compare-and-set guards against other processes. The shared state
and operations (locks, hold files, Ray's drain), the background bring-up, offline completion
and the reconciler loop are `argus.scheduler.node_reconciler.NodeReconciler`'s, which this
service is handed. Errors are domain errors (`argus.domain.errors`), mapped to HTTP by
`argus.service.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from argus.cluster.errors import ClusterUnavailable
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.cluster.ssh import key_path
from argus.domain import nodes as rules
from argus.domain.admission import NodeFree, pool_summary
from argus.domain.errors import Conflict, Invalid, NotFound, Unavailable
from argus.domain.nodes import NODE_LABEL, NodeState
from argus.scheduler.node_reconciler import NodeReconciler, conflict, decision_view
from argus.service.auth import Identity
from argus.service.node_views import event_view, node_view, pools_of, unmanaged_view
from argus.store.nodes import NodeExists

INVALID = "the node registration is invalid"


class NodeService:
    """Managed nodes: the admin's actions and the listing, over the reconciler's operations
    (the background bring-up and the reconciler loop are `NodeReconciler`'s)."""

    def __init__(
        self,
        reconciler: NodeReconciler,
        node_capacity: Callable[[], NodeFree] | None = None,
    ):
        """
        Args:
            reconciler: the node operations and the background side.
            node_capacity: free GPUs, pool and total GPUs per schedulable node as admission
                counts them (the scheduler's `node_capacity`); default: Ray's view alone.
        """
        self.nodes = reconciler
        self.settings = reconciler.settings
        self.store = reconciler.store
        self.snapshots = reconciler.snapshots
        self.clock = reconciler.clock
        self.node_capacity = node_capacity

    # -- reads ----------------------------------------------------------------------------
    @staticmethod
    def _unmanaged(snap: ClusterSnapshot, registered: set[str]) -> list[NodeCapacity]:
        """Alive Ray workers that are not registered nodes."""
        return [n for n in snap.nodes if n.alive and not n.is_head and n.labels.get(NODE_LABEL) not in registered]

    def _find_unmanaged(self, node_id: str, snap: ClusterSnapshot) -> NodeCapacity | None:
        names = {r.name for r in self.store.list()}
        for n in self._unmanaged(snap, names):
            if node_id in (n.node_id, n.labels.get(NODE_LABEL)):
                return n
        return None

    def list(self, who: Identity) -> dict[str, Any]:
        """Registered nodes (by name) joined with Ray's view, then unmanaged Ray workers.

        `pools` is `{pool: {nodes, gpus_total, gpus_free}}` over the schedulable nodes, as
        admission counts them (nodes without a pool under "-"). When Ray cannot be read, the
        registry is still listed (`ray: null` for every node), `pools` is None and `ray_error`
        says why.
        """
        registered = self.store.list()
        snap, ray_error = None, None
        try:
            snap = self.snapshots.snapshot()
        except ClusterUnavailable as exc:
            ray_error = str(exc)
        running = self.nodes.running_by_node()
        views = [node_view(r, self.nodes.ray_node(snap, r.name), running, who) for r in registered]
        pools: dict[str, dict[str, float]] | None = None
        if snap is not None:
            names = {r.name for r in registered}
            views += [unmanaged_view(n, running, self.nodes.held(n), who) for n in self._unmanaged(snap, names)]
            try:
                if self.node_capacity is None:
                    pools = pools_of(snap)
                else:
                    free, in_pool, total = self.node_capacity()
                    pools = pool_summary(free, in_pool, total)
                    for v in views:
                        if v["ray"] is not None and v["ray"]["node_id"] in free:
                            v["gpus_free"] = free[v["ray"]["node_id"]]
            except ClusterUnavailable as exc:
                ray_error = str(exc)
        return {"nodes": views, "pools": pools, "ray_error": ray_error}

    def get(self, who: Identity, node_id: str) -> dict[str, Any]:
        """One node with its events (an unmanaged one has none).

        Raises:
            NotFound: neither registered nor an alive Ray worker of that name or id.
            Unavailable: not registered, and Ray cannot be read.
        """
        node = self.store.get(node_id) if rules.check_name(node_id) is None else None
        try:
            snap = self.snapshots.snapshot()
        except ClusterUnavailable:
            if node is None:
                raise Unavailable("no registered node is named so, and Ray cannot be read") from None
            snap = None
        running = self.nodes.running_by_node()
        if node is not None:
            view = node_view(node, self.nodes.ray_node(snap, node_id), running, who)
            return {**view, "events": [event_view(e) for e in self.store.events(node_id)]}
        n = self._find_unmanaged(node_id, snap) if snap is not None else None
        if n is None:
            raise NotFound(f"no node {node_id}")
        return {**unmanaged_view(n, running, self.nodes.held(n), who), "events": []}

    def _answer(self, name: str, snap: ClusterSnapshot | None = None) -> dict[str, Any]:
        if snap is None:
            snap = self.nodes.snapshot_or_none()
        return node_view(self.nodes.node(name), self.nodes.ray_node(snap, name), self.nodes.running_by_node(), None)

    # -- register -------------------------------------------------------------------------
    def register(self, body: Any) -> dict[str, Any]:
        """Validate and store a `pending` node; its bring-up runs in the background.

        Raises:
            Invalid: naming each invalid field (the key must exist in the key directory).
            Conflict: the name is being set up, or registered and its node is not failed or
                offline.
        """
        try:
            reg = rules.parse_registration(body)
        except rules.RegistrationError as exc:
            raise Invalid(INVALID, exc.problems) from None
        key_dir = Path(self.settings.nodes.key_dir).expanduser()
        if not key_path(key_dir, reg.key).is_file():
            raise Invalid(
                INVALID, [("key", f"no key file named {reg.key} in the server's key directory (nodes.key_dir)")]
            )
        if not self.nodes.claim(reg.name):
            raise Conflict(f"node {reg.name} is being set up already")
        try:
            with self.nodes.lock(reg.name):
                old = self.store.get(reg.name)
                node = self.store.create(reg, self.clock())
                self.nodes.release(reg.name)
        except NodeExists as exc:
            self.nodes.unclaim(reg.name)
            raise Conflict(
                f"node {reg.name} is registered already and {exc.state}; only a "
                f"failed or offline node can be registered again",
            ) from None
        except BaseException:
            self.nodes.unclaim(reg.name)
            raise
        # A failed node's agent may still run (it did not join in time): stop it first.
        self.nodes.bring_up(reg.name, old if old is not None and old.agent_pid else None)
        return node_view(node, None, {}, None)

    # -- drain, undrain, offline ----------------------------------------------------------
    def drain(self, node_id: str, reason: str | None = None) -> dict[str, Any]:
        """online -> draining (or Ray's drain of an unmanaged node).

        Raises:
            NotFound: unknown. Conflict: not online. Unavailable: Ray cannot be reached
                (nothing changed).
        """
        reason = reason or "drained by the admin"
        known = self.store.get(node_id) if rules.check_name(node_id) is None else None
        if known is None:
            return self._drain_unmanaged(node_id, reason)
        with self.nodes.lock(node_id):
            node = self.nodes.node(node_id)
            if node.state != NodeState.ONLINE:
                raise conflict(node, "drain")
            snap = self.nodes.snapshot()
            n = self.nodes.ray_node(snap, node_id)
            self.nodes.ray_drain(n, f"argus: {reason}")
            self.nodes.hold(node_id, reason)
            if not self.store.draining(node_id, self.clock(), reason):
                raise conflict(self.nodes.node(node_id), "drain")
        return self._answer(node_id)

    def _drain_unmanaged(self, node_id: str, reason: str) -> dict[str, Any]:
        snap = self.nodes.snapshot()
        n = self._find_unmanaged(node_id, snap)
        if n is None:
            raise NotFound(f"no node {node_id}")
        self.nodes.ray_drain(n, f"argus: {reason}")
        if n.labels.get(NODE_LABEL):
            self.nodes.hold(n.labels[NODE_LABEL], reason)
        after = self._find_unmanaged(node_id, self.nodes.snapshot()) or n
        return unmanaged_view(after, self.nodes.running_by_node(), reason)

    def undrain(self, node_id: str) -> dict[str, Any]:
        """draining -> online: the hold file is removed (and a pending offline cancelled).

        Ray cannot cancel a drain: a node that Ray still drains stops its raylet once idle, and
        its agent then joins afresh.

        Raises:
            NotFound: unknown. Conflict: not draining (or an unmanaged node without a name).
        """
        known = self.store.get(node_id) if rules.check_name(node_id) is None else None
        if known is None:
            return self._undrain_unmanaged(node_id)
        with self.nodes.lock(node_id):
            node = self.nodes.node(node_id)
            if node.state != NodeState.DRAINING:
                raise conflict(node, "undrain")
            self.nodes.release(node_id)
            if not self.store.undrained(node_id, self.clock(), "undrained by the admin"):
                raise conflict(self.nodes.node(node_id), "undrain")
        return self._answer(node_id)

    def _undrain_unmanaged(self, node_id: str) -> dict[str, Any]:
        n = self._find_unmanaged(node_id, self.nodes.snapshot())
        if n is None:
            # A drained node whose raylet Ray stopped is gone from Ray; its hold is what
            # keeps its agent out, and lifting it lets the agent join again.
            if rules.check_name(node_id) is None and self.nodes.release_if_held(node_id):
                return {
                    "id": node_id,
                    "name": node_id,
                    "managed": False,
                    "state": NodeState.OFFLINE.value,
                    "reason": "hold lifted: its agent joins again",
                }
            raise NotFound(f"no node {node_id}")
        name = n.labels.get(NODE_LABEL)
        if not name:
            raise Conflict(
                f"node {node_id} is not managed and has no {NODE_LABEL} label: "
                "there is no hold file to remove, and Ray cannot cancel a drain",
            )
        self.nodes.release(name)
        return unmanaged_view(n, self.nodes.running_by_node())  # Ray may still drain it

    def offline(self, node_id: str, reason: str | None = None) -> dict[str, Any]:
        """Stop the node's agent once it runs no work; drain it first when it does.

        Returns:
            The node: `offline`, or `draining` with `offline_requested` (the reconciler finishes).
        Raises:
            NotFound: unknown. Conflict: already offline / being set up / not managed.
            Unavailable: Ray cannot be reached for a node that may run work (nothing changed).
        """
        reason = reason or "taken offline by the admin"
        known = self.store.get(node_id) if rules.check_name(node_id) is None else None
        if known is None:
            if self._find_unmanaged(node_id, self.nodes.snapshot()) is None:
                raise NotFound(f"no node {node_id}")
            raise Conflict(
                f"node {node_id} is not managed by Argus (it joined by itself): "
                "Argus cannot stop its agent; drain it instead",
            )
        if self.nodes.is_busy(node_id):
            raise Conflict(f"node {node_id} is being set up; try again in a moment")
        with self.nodes.lock(node_id):
            node = self.nodes.node(node_id)
            if node.state == NodeState.OFFLINE:
                raise conflict(node, "offline")
            if node.state in (NodeState.PENDING, NodeState.FAILED):
                snap = self.nodes.snapshot_or_none()
                if not self.nodes.take_offline(node, self.nodes.ray_node(snap, node_id), reason):
                    raise conflict(self.nodes.node(node_id), "offline")
                return self._answer(node_id, snap)
            snap = self.nodes.snapshot()
            n = self.nodes.ray_node(snap, node_id)
            running = self.nodes.running_by_node().get(n.node_id, []) if n is not None else []
            if rules.is_idle(decision_view(n), len(running)):
                # Drained first, so nothing is placed there while the agent is being stopped.
                self.nodes.ray_drain(n, f"argus: {reason}")
                if not self.nodes.take_offline(node, n, reason):
                    raise conflict(self.nodes.node(node_id), "offline")
                return self._answer(node_id, snap)
            why = f"{reason}: draining first ({len(running)} task(s) placed there)"
            if node.state == NodeState.ONLINE:
                self.nodes.ray_drain(n, f"argus: {reason}")
                self.nodes.hold(node_id, reason)
                if not self.store.draining(node_id, self.clock(), why, offline_requested=True):
                    raise conflict(self.nodes.node(node_id), "offline")
            else:
                self.store.offline_requested(node_id, self.clock(), why)
        self.nodes.nudge()
        return self._answer(node_id)
