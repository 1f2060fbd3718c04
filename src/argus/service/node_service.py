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
one at a time; the store's compare-and-set guards against other processes. The shared state,
the background bring-up, offline completion and the reconciler loop are
`argus.service.node_reconciler`'s (`NodeReconciler`, the base class of `NodeService`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from argus.cluster.errors import ClusterUnavailable
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.cluster.ssh import key_path
from argus.domain import nodes as rules
from argus.domain.nodes import NODE_LABEL, NodeState
from argus.service.auth import Identity
from argus.service.errors import APIError, not_found
from argus.service.node_reconciler import Drainer, NodeReconciler, _decision_view, hold_path
from argus.service.node_views import event_view, node_view, pools_of, unmanaged_view
from argus.spec.errors import Problem
from argus.store.nodes import NodeExists

__all__ = ["Drainer", "NodeService", "hold_path"]


class NodeService(NodeReconciler):
    """Managed nodes: the admin's actions and the listing (the background bring-up and the
    reconciler are `NodeReconciler`'s)."""

    # -- reads ----------------------------------------------------------------------------
    def list(self, who: Identity) -> dict[str, Any]:
        """Registered nodes (by name) joined with Ray's view, then unmanaged Ray workers.

        `pools` is `{pool: {nodes, gpus_total, gpus_free}}` over the schedulable nodes, as
        admission counts them (nodes without a pool under "-"). When Ray cannot be read, the
        registry is still listed (`ray: null` for every node), `pools` is None and `ray_error`
        says why.
        """
        rows = self.store.list()
        snap, ray_error = None, None
        try:
            snap = self.snapshots.snapshot()
        except ClusterUnavailable as exc:
            ray_error = str(exc)
        running = self._running_by_node()
        views = [node_view(r, self._ray_node(snap, r["name"]), running, who) for r in rows]
        pools: dict[str, dict[str, float]] | None = None
        if snap is not None:
            names = {r["name"] for r in rows}
            views += [unmanaged_view(n, running, self._held(n), who) for n in self._unmanaged(snap, names)]
            try:
                pools = self.pool_capacity() if self.pool_capacity else pools_of(snap)
            except ClusterUnavailable as exc:
                ray_error = str(exc)
        return {"nodes": views, "pools": pools, "ray_error": ray_error}

    @staticmethod
    def _unmanaged(snap: ClusterSnapshot, registered: set[str]) -> list[NodeCapacity]:
        """Alive Ray workers that are not registered nodes."""
        return [n for n in snap.nodes if n.alive and not n.is_head and n.labels.get(NODE_LABEL) not in registered]

    def _find_unmanaged(self, node_id: str, snap: ClusterSnapshot) -> NodeCapacity | None:
        names = {r["name"] for r in self.store.list()}
        for n in self._unmanaged(snap, names):
            if node_id in (n.node_id, n.labels.get(NODE_LABEL)):
                return n
        return None

    def get(self, who: Identity, node_id: str) -> dict[str, Any]:
        """One node with its events (an unmanaged one has none).

        Raises:
            APIError: 404 neither registered nor an alive Ray worker of that name or id.
        """
        row = self.store.get(node_id) if rules.check_name(node_id) is None else None
        try:
            snap = self.snapshots.snapshot()
        except ClusterUnavailable:
            if row is None:
                raise APIError(503, "no registered node is named so, and Ray cannot be read") from None
            snap = None
        running = self._running_by_node()
        if row is not None:
            view = node_view(row, self._ray_node(snap, node_id), running, who)
            return {**view, "events": [event_view(e) for e in self.store.events(node_id)]}
        n = self._find_unmanaged(node_id, snap) if snap is not None else None
        if n is None:
            raise not_found(f"no node {node_id}")
        return {**unmanaged_view(n, running, self._held(n), who), "events": []}

    def _answer(self, name: str, snap: ClusterSnapshot | None = None) -> dict[str, Any]:
        if snap is None:
            try:
                snap = self.snapshots.snapshot()
            except ClusterUnavailable:
                snap = None
        return node_view(self._row(name), self._ray_node(snap, name), self._running_by_node(), None)

    # -- register -------------------------------------------------------------------------
    def register(self, body: Any) -> dict[str, Any]:
        """Validate and store a `pending` node; its bring-up runs in the background.

        Raises:
            APIError: 400 naming each invalid field (the key must exist in the key directory),
                409 when the name is registered and its node is not failed or offline.
        """
        try:
            reg = rules.parse_registration(body)
        except rules.RegistrationError as exc:
            raise APIError(400, "the node registration is invalid", [Problem(f, m) for f, m in exc.problems]) from None
        key_dir = Path(self.settings.nodes.key_dir).expanduser()
        if not key_path(key_dir, reg.key).is_file():
            raise APIError(
                400,
                "the node registration is invalid",
                [Problem("key", f"no key file named {reg.key} in the server's key directory (nodes.key_dir)")],
            )
        with self._guard:
            if reg.name in self._busy:
                raise APIError(409, f"node {reg.name} is being set up already")
            self._busy.add(reg.name)
        try:
            with self._lock(reg.name):
                old = self.store.get(reg.name)
                row = self.store.create(reg, self.clock())
                self._release(reg.name)
        except NodeExists as exc:
            with self._guard:
                self._busy.discard(reg.name)
            raise APIError(
                409,
                f"node {reg.name} is registered already and {exc.state}; only a "
                f"failed or offline node can be registered again",
            ) from None
        except BaseException:
            with self._guard:
                self._busy.discard(reg.name)
            raise
        # A failed node's agent may still run (it did not join in time): stop it first.
        stale = old if old is not None and old["agent_pid"] else None
        job = self._pool.submit(self._bring_up, reg.name, stale)
        with self._guard:
            self._jobs = [j for j in self._jobs if not j.done()] + [job]
        return node_view(row, None, {}, None)

    # -- drain, undrain, offline ----------------------------------------------------------
    def drain(self, node_id: str, reason: str | None = None) -> dict[str, Any]:
        """online -> draining (or Ray's drain of an unmanaged node).

        Raises:
            APIError: 404 unknown, 409 not online, 503 Ray unavailable (nothing changed).
        """
        reason = reason or "drained by the admin"
        row = self.store.get(node_id) if rules.check_name(node_id) is None else None
        if row is None:
            return self._drain_unmanaged(node_id, reason)
        with self._lock(node_id):
            row = self._row(node_id)
            if row["state"] != NodeState.ONLINE:
                raise self._conflict(row, "drain")
            snap = self._snapshot()
            n = self._ray_node(snap, node_id)
            self._ray_drain(n, f"argus: {reason}")
            self._hold(node_id, reason)
            if not self.store.transition(node_id, NodeState.DRAINING, self.clock(), reason, expect=[NodeState.ONLINE]):
                raise self._conflict(self._row(node_id), "drain")
        return self._answer(node_id)

    def _drain_unmanaged(self, node_id: str, reason: str) -> dict[str, Any]:
        snap = self._snapshot()
        n = self._find_unmanaged(node_id, snap)
        if n is None:
            raise not_found(f"no node {node_id}")
        self._ray_drain(n, f"argus: {reason}")
        if n.labels.get(NODE_LABEL):
            self._hold(n.labels[NODE_LABEL], reason)
        after = self._find_unmanaged(node_id, self._snapshot()) or n
        return unmanaged_view(after, self._running_by_node(), reason)

    def undrain(self, node_id: str) -> dict[str, Any]:
        """draining -> online: the hold file is removed (and a pending offline cancelled).

        Ray cannot cancel a drain: a node that Ray still drains stops its raylet once idle, and
        its agent then joins afresh.

        Raises:
            APIError: 404 unknown, 409 not draining (or an unmanaged node without a name).
        """
        row = self.store.get(node_id) if rules.check_name(node_id) is None else None
        if row is None:
            n = self._find_unmanaged(node_id, self._snapshot())
            if n is None:
                # A drained node whose raylet Ray stopped is gone from Ray; its hold is what
                # keeps its agent out, and lifting it lets the agent join again.
                if rules.check_name(node_id) is None and self._release_if_held(node_id):
                    return {
                        "id": node_id,
                        "name": node_id,
                        "managed": False,
                        "state": NodeState.OFFLINE.value,
                        "reason": "hold lifted: its agent joins again",
                    }
                raise not_found(f"no node {node_id}")
            name = n.labels.get(NODE_LABEL)
            if not name:
                raise APIError(
                    409,
                    f"node {node_id} is not managed and has no {NODE_LABEL} label: "
                    "there is no hold file to remove, and Ray cannot cancel a drain",
                )
            self._release(name)
            return unmanaged_view(n, self._running_by_node())  # Ray may still drain it
        with self._lock(node_id):
            row = self._row(node_id)
            if row["state"] != NodeState.DRAINING:
                raise self._conflict(row, "undrain")
            self._release(node_id)
            if not self.store.transition(
                node_id,
                NodeState.ONLINE,
                self.clock(),
                "undrained by the admin",
                expect=[NodeState.DRAINING],
                offline_requested=False,
            ):
                raise self._conflict(self._row(node_id), "undrain")
        return self._answer(node_id)

    def offline(self, node_id: str, reason: str | None = None) -> dict[str, Any]:
        """Stop the node's agent once it runs no work; drain it first when it does.

        Returns:
            The node: `offline`, or `draining` with `offline_requested` (the reconciler finishes).
        Raises:
            APIError: 404 unknown, 409 already offline / being set up / not managed,
                503 Ray unavailable for a node that may run work (nothing changed).
        """
        reason = reason or "taken offline by the admin"
        row = self.store.get(node_id) if rules.check_name(node_id) is None else None
        if row is None:
            snap = self._snapshot()
            if self._find_unmanaged(node_id, snap) is None:
                raise not_found(f"no node {node_id}")
            raise APIError(
                409,
                f"node {node_id} is not managed by Argus (it joined by itself): "
                "Argus cannot stop its agent; drain it instead",
            )
        with self._guard:
            if node_id in self._busy:
                raise APIError(409, f"node {node_id} is being set up; try again in a moment")
        with self._lock(node_id):
            row = self._row(node_id)
            state = NodeState(row["state"])
            if state == NodeState.OFFLINE:
                raise self._conflict(row, "offline")
            if state in (NodeState.PENDING, NodeState.FAILED):
                snap = self._snapshot_or_none()
                self._take_offline(row, self._ray_node(snap, node_id), reason)
                return self._answer(node_id, snap)
            snap = self._snapshot()
            n = self._ray_node(snap, node_id)
            running = self._running_by_node().get(n.node_id, []) if n is not None else []
            if rules.is_idle(_decision_view(n), len(running)):
                # Drained first, so nothing is placed there while the agent is being stopped.
                self._ray_drain(n, f"argus: {reason}")
                self._take_offline(row, n, reason)
                return self._answer(node_id, snap)
            why = f"{reason}: draining first ({len(running)} task(s) placed there)"
            if state == NodeState.ONLINE:
                self._ray_drain(n, f"argus: {reason}")
                self._hold(node_id, reason)
                if not self.store.transition(
                    node_id,
                    NodeState.DRAINING,
                    self.clock(),
                    why,
                    expect=[NodeState.ONLINE],
                    offline_requested=True,
                ):
                    raise self._conflict(self._row(node_id), "offline")
            else:
                self.store.record(node_id, self.clock(), why, [NodeState.DRAINING], offline_requested=True)
        self.nudge()
        return self._answer(node_id)

    def _snapshot_or_none(self) -> ClusterSnapshot | None:
        try:
            return self.snapshots.snapshot()
        except ClusterUnavailable:
            return None
