"""The node lifecycle's background side, and the node operations the admin's actions build on.

Owns the state that the node reconciler and the node service (`argus.service.node_service`)
share: the node and task stores, SSH agent operations, the worker pool of bring-ups, the names
being brought up (`claim`), per-node locks, and hold files. It owns:

- the background bring-up of a registered node over SSH (`bring_up`: stop a stale agent, start
  the agent detached, fail the node with the reason on any error);
- the completion of an offline (`take_offline`: hold file, agent stopped over SSH, `offline`);
- where each active task's GPUs are (`running_by_node`): where Ray placed them, as the job
  tool reports them once per listing (`JobTool.gpus_by_job`), else (not placed yet, or Ray
  not read) where admission counted them (`gpu_nodes`);
- the reconciler, one loop shape with the scheduler's: `tick(now)` is one pass (pending nodes
  that joined Ray go online, or fail after `nodes.join_timeout_s`; busy nodes asked to go
  offline go once empty; a pending node whose bring-up was lost in a restart fails), `run(stop)`
  paces passes (`argus.scheduler.pacing.Pacer`: every `nodes.reconcile_interval_s`, or sooner
  when nudged).

Admin actions and the reconciler take a per-node lock in this process (`lock`), so they act on
a node one at a time; the store's compare-and-set guards against other processes. Errors are
domain errors (`argus.domain.errors`): the service maps them to HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from argus.cluster.errors import ClusterError, ClusterUnavailable
from argus.cluster.node_agents import AgentError, AgentOps
from argus.cluster.snapshot import ClusterSnapshot, NodeCapacity
from argus.domain import nodes as rules
from argus.domain.discovery import hold_file
from argus.domain.errors import Conflict, DomainError, Unavailable
from argus.domain.node_records import Node, Running
from argus.domain.nodes import NODE_LABEL, NodeState, Step
from argus.domain.records import Attempt, Task
from argus.domain.task import ACTIVE_STATES
from argus.ports import Clock, ClusterView, Drainer, JobTool, SSHRunner
from argus.scheduler.pacing import Pacer
from argus.settings import ArgusSettings
from argus.store.nodes import NodeStore
from argus.store.tasks import TaskStore

log = logging.getLogger("argus.nodes")


def hold_path(shared_root: str, cluster: str, name: str) -> Path:
    """The hold file that keeps `name`'s agent from joining Ray."""
    return Path(hold_file(shared_root, cluster, name))


def decision_view(n: NodeCapacity | None) -> rules.RayNodeView | None:
    """What the pure decisions need of a Ray node."""
    if n is None:
        return None
    return rules.RayNodeView(
        n.node_id, n.alive, n.draining, n.total_gpus, n.available_gpus, n.total_cpus, n.available_cpus
    )


def gpu_nodes(task: Task, attempt: Attempt, ray: Mapping[str, Mapping[str, float]] | None) -> list[str]:
    """The Ray nodes holding an active task's GPUs.

    `ray` is where Ray put each job's GPUs (`JobTool.gpus_by_job`; None: Ray was not read).
    Ray chooses the nodes of a job's placement groups, so its answer wins: those nodes, and the
    driver's node when the driver holds a GPU of its own. Without it (the placement groups do
    not exist yet, or Ray was not read): the driver's node when it is known and holds all the
    task's GPUs, else the nodes admission counted the gang on (`attempt.placement`).
    """
    driver = attempt.driver_node_id
    held = [n for n, gpus in (ray or {}).get(attempt.ray_submission_id, {}).items() if gpus > 0]
    if held:
        if driver and task.driver_gpus > 0 and driver not in held:
            held.append(driver)
        return held
    if driver and task.driver_gpus > 0 and task.nnodes * task.n_gpus_per_node == 0:
        return [driver]
    return list(attempt.placement)


def conflict(node: Node, action: str) -> Conflict:
    """The 409 of an admin action that the node's state does not allow."""
    return Conflict(f"node {node.name} is {node.state.value}: {rules.ACTION_NEEDS[action]}")


class NodeReconciler:
    """Managed nodes' shared state and operations, background bring-up, and the reconciler."""

    def __init__(
        self,
        settings: ArgusSettings,
        store: NodeStore,
        tasks: TaskStore,
        snapshots: ClusterView,
        ssh: SSHRunner,
        drainer: Drainer,
        clock: Clock = time.time,
        workers: int = 4,
        jobs: JobTool | None = None,
    ):
        """`jobs`: Ray's job tool, which says where Ray put each job's GPUs (None: the nodes
        admission counted each task on are taken as its nodes)."""
        self.settings = settings
        self.store = store
        self.tasks = tasks
        self.snapshots = snapshots
        self.agents = AgentOps(settings, ssh)
        self.drainer = drainer
        self.jobs = jobs
        self.clock = clock
        self.last_error: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argus-node")
        self._busy: set[str] = set()  # names being brought up by a worker
        self._jobs: list[Future[None]] = []
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._pacer = Pacer("node reconcile pass", settings.nodes.reconcile_interval_s, clock=clock, log=log)

    # -- plumbing -------------------------------------------------------------------------
    @property
    def cluster(self) -> str:
        return self.settings.cluster_name

    def lock(self, name: str) -> threading.Lock:
        """The lock an action on node `name` holds in this process."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def hold(self, name: str, reason: str) -> None:
        """Write `name`'s hold file (its agent leaves Ray and does not join again)."""
        path = hold_path(self.settings.shared_root, self.cluster, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(reason.replace("\n", " ") + "\n")
        tmp.replace(path)

    def held(self, n: NodeCapacity) -> str | None:
        """The reason of the hold on an unmanaged node's name, or None when it is not held."""
        name = n.labels.get(NODE_LABEL)
        if not name:
            return None
        try:
            return hold_path(self.settings.shared_root, self.cluster, name).read_text().strip() or "held"
        except (OSError, ValueError):
            return None

    def held_name(self, name: str) -> bool:
        """Whether node `name`'s hold file exists."""
        return hold_path(self.settings.shared_root, self.cluster, name).exists()

    def release_if_held(self, name: str) -> bool:
        """Remove `name`'s hold file; False when there was none."""
        path = hold_path(self.settings.shared_root, self.cluster, name)
        if not path.exists():
            return False
        path.unlink(missing_ok=True)
        return True

    def release(self, name: str) -> None:
        """Remove `name`'s hold file, if any (its agent joins Ray again)."""
        hold_path(self.settings.shared_root, self.cluster, name).unlink(missing_ok=True)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for every background bring-up started so far (tests)."""
        with self._guard:
            jobs = list(self._jobs)
        for job in jobs:
            job.result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def snapshot(self) -> ClusterSnapshot:
        """Ray's view of the nodes.

        Raises:
            Unavailable: Ray cannot be read.
        """
        try:
            return self.snapshots.snapshot()
        except ClusterUnavailable as exc:
            raise Unavailable(f"cannot read Ray's view of the nodes: {exc}") from None

    def snapshot_or_none(self) -> ClusterSnapshot | None:
        """Ray's view of the nodes, or None when Ray cannot be read."""
        try:
            return self.snapshots.snapshot()
        except ClusterUnavailable:
            return None

    @staticmethod
    def ray_node(snap: ClusterSnapshot | None, name: str) -> NodeCapacity | None:
        """The Ray node labelled `argus.io/node=<name>`: an alive one, else a dead one."""
        if snap is None:
            return None
        found = [n for n in snap.nodes if n.labels.get(NODE_LABEL) == name and not n.is_head]
        alive = [n for n in found if n.alive]
        return (alive or found)[0] if found else None

    def running_by_node(self) -> Running:
        """Ray node id -> (task id, user id) of the active tasks whose GPUs are there
        (`gpu_nodes`; the node views show a user only their own). Ray is asked once, and only
        when some active task has an attempt."""
        active = self.tasks.in_states([s.value for s in ACTIVE_STATES])
        latest = self.tasks.latest_attempts([t.task_id for t in active])
        ray = self._gpus_by_job() if latest else None
        out: Running = {}
        for t in active:
            attempt = latest.get(t.task_id)
            for node_id in gpu_nodes(t, attempt, ray) if attempt is not None else ():
                out.setdefault(node_id, []).append((t.task_id, t.user_id))
        return out

    def _gpus_by_job(self) -> dict[str, dict[str, float]] | None:
        """Where Ray put each job's GPUs, or None when there is no job tool or Ray cannot be read."""
        if self.jobs is None:
            return None
        try:
            return self.jobs.gpus_by_job()
        except ClusterUnavailable as exc:
            log.info("where Ray put the jobs' GPUs is unknown, admission's placement is shown: %s", exc)
            return None

    def node(self, name: str) -> Node:
        """The registered node `name` (the caller knows it exists: nodes are never deleted)."""
        node = self.store.get(name)
        assert node is not None
        return node

    # -- bring-up -------------------------------------------------------------------------
    def claim(self, name: str) -> bool:
        """Mark `name` as being brought up; False when it is already."""
        with self._guard:
            if name in self._busy:
                return False
            self._busy.add(name)
            return True

    def unclaim(self, name: str) -> None:
        """Undo `claim` (the registration did not go through)."""
        with self._guard:
            self._busy.discard(name)

    def is_busy(self, name: str) -> bool:
        """Whether `name` is being brought up."""
        with self._guard:
            return name in self._busy

    def bring_up(self, name: str, stale: Node | None) -> None:
        """Start the bring-up of the claimed, pending node `name` in the background (after
        stopping the agent of `stale`, its previous registration, when it has one)."""
        job = self._pool.submit(self._bring_up, name, stale)
        with self._guard:
            self._jobs = [j for j in self._jobs if not j.done()] + [job]

    def _fail(self, name: str, reason: str, now: float) -> None:
        log.warning("node %s failed: %s", name, reason)
        self.store.failed(name, now, reason)

    def _bring_up(self, name: str, stale: Node | None) -> None:
        """Start the node's agent (after stopping the agent `stale`, the node's previous
        registration, left running); any failure fails the node with the reason."""
        try:
            if stale is not None and (why := self.agents.stop(stale)):
                log.warning("node %s: the previous agent (pid %s) was not stopped: %s", name, stale.agent_pid, why)
            started = self.agents.start(self.node(name))
            self.store.agent_started(
                name,
                started.pid,
                self.clock(),
                f"agent started on {started.hostname} (pid {started.pid}; log {started.log_path})",
            )
            self.nudge()
        except AgentError as exc:
            self._fail(name, str(exc), self.clock())
        except Exception as exc:
            log.exception("bringing up node %s failed", name)
            self._fail(name, f"unexpected error while starting the agent: {type(exc).__name__}: {exc}", self.clock())
        finally:
            self.unclaim(name)

    # -- drain and offline ----------------------------------------------------------------
    def ray_drain(self, n: NodeCapacity | None, reason: str) -> bool:
        """Drain `n` in Ray when it is alive and not draining yet; True when asked.

        Raises:
            Unavailable: Ray cannot be reached.
            Conflict: Ray refused (its message).
        """
        if n is None or not n.alive or n.draining:
            return False
        try:
            self.drainer.drain(n.node_id, reason)
        except ClusterUnavailable as exc:
            raise Unavailable(f"cannot ask Ray to drain node {n.node_id}: {exc}") from None
        except ClusterError as exc:  # Ray answered and refused
            raise Conflict(str(exc)) from None
        return True

    def take_offline(self, node: Node, n: NodeCapacity | None, reason: str) -> bool:
        """Hold the node out of Ray, stop its agent over SSH, and record `offline`.

        An agent that cannot be stopped is reported in the reason; the hold file (and Ray's
        drain of its node, when it is alive) keeps it from taking work.

        Returns:
            False when the node's state no longer allows `offline` (it changed meanwhile).
        """
        self.hold(node.name, reason)
        note = self.agents.stop(node)
        if note:
            try:
                drained = self.ray_drain(n, f"argus: {reason}")
            except DomainError:
                drained = False
            reason = (
                f"{reason}; the agent could not be stopped ({note}): its hold file keeps it "
                f"out of Ray{' and Ray drains its node' if drained else ''}"
            )
        return self.store.went_offline(node.name, self.clock(), reason)

    # -- the reconciler -------------------------------------------------------------------
    def nudge(self) -> None:
        """Ask the reconciler for a pass soon."""
        self._pacer.nudge()

    def run(self, stop: threading.Event) -> None:
        """Reconcile every `nodes.reconcile_interval_s`, or sooner when nudged, until `stop`;
        a failed pass is logged and kept in `last_error`."""
        self._pacer.run(stop, lambda now, _full: self.tick(now), self._pass_failed)

    def _pass_failed(self, error: str) -> None:
        self.last_error = error

    def tick(self, now: float) -> None:
        """One pass: pending nodes that joined go online (or fail after the join timeout),
        busy nodes asked to go offline go once empty; a pending node whose bring-up was lost
        (the server restarted before its agent started) fails."""
        with self._guard:  # before the rows: a bring-up that ends in between is then seen done
            busy = set(self._busy)
        todo = []
        for node in self.store.list([NodeState.PENDING, NodeState.ONLINE, NodeState.DRAINING]):
            if node.state == NodeState.PENDING and node.agent_started_at is None:
                if node.name not in busy:
                    self._fail(
                        node.name, "the server restarted before the agent was started; register the node again", now
                    )
            elif node.state == NodeState.PENDING or node.offline_requested:
                todo.append(node)
        if not todo:
            self.last_error = None
            return
        try:
            snap = self.snapshots.snapshot()
        except ClusterUnavailable as exc:
            self.last_error = str(exc)
            return
        running = self.running_by_node()
        for node in todo:
            self._reconcile_one(node, snap, running, now)
        self.last_error = None

    def _reconcile_one(self, node: Node, snap: ClusterSnapshot, running: Running, now: float) -> None:
        name = node.name
        n = self.ray_node(snap, name)
        tasks = len(running.get(n.node_id, [])) if n is not None and n.alive else 0
        decision = rules.reconcile(
            node.state,
            node.agent_started_at,
            node.offline_requested,
            decision_view(n),
            tasks,
            now,
            self.settings.nodes.join_timeout_s,
        )
        if decision.step == Step.ONLINE:
            self.store.joined(name, n.node_id if n else None, now, decision.reason)
        elif decision.step == Step.FAIL:
            log_path = rules.agent_log_path(self.settings.nodes_shared_root, name)
            watched = hold_path(self.settings.nodes_shared_root, self.cluster, name).parent.parent
            self._fail(
                name,
                f"{decision.reason} (the agent's log on the node: {log_path}; it "
                f"looks for the head in {watched}/head.json)",
                now,
            )
            # A late join must not bring a failed node into service: hold it, stop its agent.
            self.hold(name, "failed: did not join in time")
            with self.lock(name):
                note = self.agents.stop(self.node(name))
            if note:
                log.warning("node %s: its agent could not be stopped: %s", name, note)
        elif decision.step == Step.STOP:
            with self.lock(name):
                fresh = self.node(name)
                if (
                    fresh.offline_requested
                    and fresh.state in (NodeState.ONLINE, NodeState.DRAINING)
                    and not self.take_offline(fresh, n, "offline requested: the node is empty")
                ):
                    log.warning("node %s: %s", name, conflict(self.node(name), "offline").message)
