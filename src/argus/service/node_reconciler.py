"""The node lifecycle's background side, and the plumbing `NodeService` builds on.

Owns the state `NodeService` shares (its stores, SSH agent operations, worker pool, per-node
locks and hold files), the background bring-up of a registered node over SSH (`_bring_up`:
stop a stale agent, start the agent detached, fail the node with the reason on any error), the
completion of an offline (`_take_offline`: hold file, agent stopped over SSH, `offline`), and
the reconciler (`reconcile`, `run`, `nudge`): pending nodes that joined Ray go online or fail
after `nodes.join_timeout_s`, busy nodes asked to go offline go once empty.

The admin's actions and the listing are `argus.service.node_service.NodeService`'s, a subclass
of `NodeReconciler`. Admin actions and the reconciler take a per-node lock in this process, so
they act on a node one at a time; the store's compare-and-set guards against other processes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from argus.cluster.errors import ClusterError, ClusterUnavailable
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.cluster.ssh import Connector
from argus.domain import nodes as rules
from argus.domain.discovery import hold_file
from argus.domain.nodes import NODE_LABEL, NodeState, Step
from argus.domain.task import ACTIVE_STATES
from argus.service.errors import APIError
from argus.service.node_agents import AgentError, AgentOps
from argus.service.node_views import Running
from argus.settings import ArgusSettings
from argus.store.nodes import NodeStore
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.nodes")


class Drainer(Protocol):
    """Asks Ray to drain a node (`argus.cluster.drain.RayDrain`)."""

    def drain(self, node_id_hex: str, reason: str) -> None:
        """Raises: ClusterUnavailable (Ray not reached), ClusterError (Ray refused)."""


def hold_path(shared_root: str, cluster: str, name: str) -> Path:
    """The hold file that keeps `name`'s agent from joining Ray."""
    return Path(hold_file(shared_root, cluster, name))


def _decision_view(n: NodeCapacity | None) -> rules.RayNodeView | None:
    if n is None:
        return None
    return rules.RayNodeView(
        n.node_id, n.alive, n.draining, n.total_gpus, n.available_gpus, n.total_cpus, n.available_cpus
    )


class NodeReconciler:
    """Managed nodes' shared state, background bring-up, offline completion and reconciler."""

    def __init__(
        self,
        settings: ArgusSettings,
        store: NodeStore,
        tasks: TaskStore,
        snapshots: Any,
        connector: Connector,
        drainer: Drainer,
        clock: Callable[[], float] = time.time,
        workers: int = 4,
        pool_capacity: Callable[[], dict[str, dict[str, float]]] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.tasks = tasks
        self.snapshots = snapshots
        self.agents = AgentOps(settings, connector)
        self.drainer = drainer
        self.clock = clock
        self.pool_capacity = pool_capacity
        self.last_error: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argus-node")
        self._busy: set[str] = set()  # names being brought up by a worker
        self._jobs: list[Any] = []
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._wake = threading.Event()

    # -- plumbing -------------------------------------------------------------------------
    @property
    def cluster(self) -> str:
        return self.settings.cluster_name

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _hold(self, name: str, reason: str) -> None:
        path = hold_path(self.settings.shared_root, self.cluster, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(reason.replace("\n", " ") + "\n")
        tmp.replace(path)

    def _held(self, n: NodeCapacity) -> str | None:
        """The reason of the hold on an unmanaged node's name, or None when it is not held."""
        name = n.labels.get(NODE_LABEL)
        if not name:
            return None
        try:
            return hold_path(self.settings.shared_root, self.cluster, name).read_text().strip() or "held"
        except (OSError, ValueError):
            return None

    def _held_name(self, name: str) -> bool:
        """Whether node `name`'s hold file exists."""
        return hold_path(self.settings.shared_root, self.cluster, name).exists()

    def _release_if_held(self, name: str) -> bool:
        path = hold_path(self.settings.shared_root, self.cluster, name)
        if not path.exists():
            return False
        path.unlink(missing_ok=True)
        return True

    def _release(self, name: str) -> None:
        hold_path(self.settings.shared_root, self.cluster, name).unlink(missing_ok=True)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for every background bring-up started so far (tests)."""
        with self._guard:
            jobs = list(self._jobs)
        for job in jobs:
            job.result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _snapshot(self) -> ClusterSnapshot:
        """Raises: APIError 503 when Ray cannot be read."""
        try:
            return self.snapshots.snapshot()
        except ClusterUnavailable as exc:
            raise APIError(503, f"cannot read Ray's view of the nodes: {exc}") from None

    @staticmethod
    def _ray_node(snap: ClusterSnapshot | None, name: str) -> NodeCapacity | None:
        """The Ray node labelled `argus.io/node=<name>`: an alive one, else a dead one."""
        if snap is None:
            return None
        found = [n for n in snap.nodes if n.labels.get(NODE_LABEL) == name and not n.is_head]
        alive = [n for n in found if n.alive]
        return (alive or found or [None])[0]

    def _running_by_node(self) -> Running:
        """Ray node id -> (task id, user id) of the active tasks whose latest attempt is placed
        there (node_views shows a user only their own)."""
        active = self.tasks.in_states([s.value for s in ACTIVE_STATES])
        latest = self.tasks.latest_attempts([t["task_id"] for t in active])
        out: Running = {}
        for t in active:
            placement = json.loads((latest.get(t["task_id"]) or {}).get("placement") or "{}")
            for node_id in placement:
                out.setdefault(node_id, []).append((t["task_id"], t["user_id"]))
        return out

    def _row(self, name: str) -> dict[str, Any]:
        row = self.store.get(name)
        assert row is not None
        return row

    def _fail(self, name: str, reason: str) -> None:
        log.warning("node %s failed: %s", name, reason)
        self.store.transition(name, NodeState.FAILED, self.clock(), reason, expect=[NodeState.PENDING])

    def _bring_up(self, name: str, stale: dict[str, Any] | None) -> None:
        """Start the node's agent (after stopping the agent `stale`, the node's previous
        registration, left running); any failure fails the node with the reason."""
        try:
            if stale is not None and (why := self.agents.stop(stale)):
                log.warning("node %s: the previous agent (pid %s) was not stopped: %s", name, stale["agent_pid"], why)
            started = self.agents.start(self._row(name))
            self.store.agent_started(
                name,
                started.pid,
                self.clock(),
                f"agent started on {started.hostname} (pid {started.pid}; log {started.log_path})",
            )
            self.nudge()
        except AgentError as exc:
            self._fail(name, str(exc))
        except Exception as exc:
            log.exception("bringing up node %s failed", name)
            self._fail(name, f"unexpected error while starting the agent: {type(exc).__name__}: {exc}")
        finally:
            with self._guard:
                self._busy.discard(name)

    def _conflict(self, row: dict[str, Any], action: str) -> APIError:
        return APIError(409, f"node {row['name']} is {row['state']}: {rules.ACTION_NEEDS[action]}")

    def _ray_drain(self, n: NodeCapacity | None, reason: str) -> bool:
        """Drain `n` in Ray when it is alive and not draining yet; True when asked.

        Raises:
            APIError: 503 when Ray refuses or cannot be reached.
        """
        if n is None or not n.alive or n.draining:
            return False
        try:
            self.drainer.drain(n.node_id, reason)
        except ClusterUnavailable as exc:
            raise APIError(503, f"cannot ask Ray to drain node {n.node_id}: {exc}") from None
        except ClusterError as exc:  # Ray answered and refused
            raise APIError(409, str(exc)) from None
        return True

    def _take_offline(self, row: dict[str, Any], n: NodeCapacity | None, reason: str) -> None:
        """Hold the node out of Ray, stop its agent over SSH, and record `offline`.

        An agent that cannot be stopped is reported in the reason; the hold file (and Ray's
        drain of its node, when it is alive) keeps it from taking work.
        """
        name = row["name"]
        self._hold(name, reason)
        note = self.agents.stop(row)
        if note:
            try:
                drained = self._ray_drain(n, f"argus: {reason}")
            except APIError:
                drained = False
            reason = (
                f"{reason}; the agent could not be stopped ({note}): its hold file keeps it "
                f"out of Ray{' and Ray drains its node' if drained else ''}"
            )
        if not self.store.transition(
            name, NodeState.OFFLINE, self.clock(), reason, agent_pid=None, offline_requested=False
        ):
            raise self._conflict(self._row(name), "offline")

    # -- the reconciler -------------------------------------------------------------------
    def nudge(self) -> None:
        """Ask the reconciler for a pass soon."""
        self._wake.set()

    def reconcile(self) -> None:
        """One pass: pending nodes that joined go online (or fail after the join timeout),
        busy nodes asked to go offline go once empty; a pending node whose bring-up was lost
        (the server restarted before its agent started) fails."""
        with self._guard:  # before the rows: a bring-up that ends in between is then seen done
            busy = set(self._busy)
        rows = self.store.list([NodeState.PENDING.value, NodeState.ONLINE.value, NodeState.DRAINING.value])
        todo = []
        for row in rows:
            if row["state"] == NodeState.PENDING and row["agent_started_at"] is None:
                if row["name"] not in busy:
                    self._fail(
                        row["name"],
                        "the server restarted before the agent was started; register the node again",
                    )
            elif row["state"] == NodeState.PENDING or row["offline_requested"]:
                todo.append(row)
        if not todo:
            self.last_error = None
            return
        try:
            snap = self.snapshots.snapshot()
        except ClusterUnavailable as exc:
            self.last_error = str(exc)
            return
        running = self._running_by_node()
        now = self.clock()
        for row in todo:
            name = row["name"]
            n = self._ray_node(snap, name)
            tasks = len(running.get(n.node_id, [])) if n is not None and n.alive else 0
            decision = rules.reconcile(
                NodeState(row["state"]),
                row["agent_started_at"],
                bool(row["offline_requested"]),
                _decision_view(n),
                tasks,
                now,
                self.settings.nodes.join_timeout_s,
            )
            if decision.step == Step.ONLINE:
                self.store.transition(
                    name,
                    NodeState.ONLINE,
                    now,
                    decision.reason,
                    expect=[NodeState.PENDING],
                    ray_node_id=n.node_id if n else None,
                )
            elif decision.step == Step.FAIL:
                log_path = rules.agent_log_path(self.settings.nodes_shared_root, name)
                watched = hold_path(self.settings.nodes_shared_root, self.cluster, name).parent.parent
                self._fail(
                    name,
                    f"{decision.reason} (the agent's log on the node: {log_path}; it "
                    f"looks for the head in {watched}/head.json)",
                )
                # A late join must not bring a failed node into service: hold it, stop its agent.
                self._hold(name, "failed: did not join in time")
                with self._lock(name):
                    note = self.agents.stop(self._row(name))
                if note:
                    log.warning("node %s: its agent could not be stopped: %s", name, note)
            elif decision.step == Step.STOP:
                with self._lock(name):
                    fresh = self._row(name)
                    if fresh["offline_requested"] and fresh["state"] in (
                        NodeState.ONLINE,
                        NodeState.DRAINING,
                    ):
                        try:
                            self._take_offline(fresh, n, "offline requested: the node is empty")
                        except APIError as exc:
                            log.warning("node %s: %s", name, exc.message)
        self.last_error = None

    def run(self, stop: threading.Event) -> None:
        """Reconcile every `nodes.reconcile_interval_s`, or sooner when nudged, until `stop`."""
        interval = self.settings.nodes.reconcile_interval_s
        while not stop.is_set():
            try:
                self.reconcile()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("node reconcile pass failed")
            self._wake.wait(interval)
            self._wake.clear()
