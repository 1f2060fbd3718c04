"""An attempt's record as Ray shows its job (part of step 1 of a scheduler pass, the sync).

Owns what the scheduler writes back to an attempt from Ray's `JobView`: its status, message,
times, diagnosed failure kind, and the node its driver runs on: Ray's node id (the job's
`driver_node_id`), that node's IP as the GCS has it (Ray's `driver_info` IP is where the driver
process says it connected from, which on a host with several nodes is the head's), and the
node's Argus name (its `argus.io/node` label). Invariants:

- the driver's node is looked up only when Ray reports a driver node the attempt does not have
  yet, in at most one cluster snapshot per pass (`RayNodes`, taken on the first ask);
- when that snapshot cannot be read the driver node is left as it was, so the next pass tries
  again (a node id is never recorded without the lookup of its name);
- a node the snapshot does not know (gone already) keeps the IP the job reports and no name;
- a failure kind once diagnosed is kept when a later view carries no diagnosis;
- a failed job whose node died under it (`with_node_loss`) is NODE_LOST, its evidence naming
  the node (Argus name and IP): Ray's message says so ("The actor died because its node has
  died"), or Ray's generic supervisor failure comes with the driver's node DEAD in the snapshot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from argus.cluster.errors import ClusterError
from argus.cluster.jobs import JobView
from argus.cluster.snapshot import ClusterSnapshot
from argus.domain.failure import Diagnosis, FailureCause
from argus.domain.nodes import NODE_LABEL
from argus.domain.records import Attempt
from argus.ports import ClusterView
from argus.store.tasks import LOST


class RecentSnapshots:
    """The cluster view, remembering its last snapshot for passes that may use one a little old.

    A light (nudged) pass plans new tasks against a snapshot up to `max_age_s` old (the GCS's
    own view lags its raylets by about as much), so a burst of submissions, whose nudged passes
    come every `min_tick_gap_s`, does not read the GCS for each. Free GPUs stay safe: a gang
    admitted since the snapshot is still booked against it by the scheduler, and GPUs freed
    since only show up free a little later. Every other reader takes a fresh snapshot.
    """

    def __init__(self, source: ClusterView):
        self.source = source
        self._last: tuple[float, ClusterSnapshot] | None = None

    def snapshot(self, now: float | None = None, max_age_s: float = 0.0) -> ClusterSnapshot:
        """A snapshot taken at most `max_age_s` before `now` (a fresh one when `now` is None).

        Raises:
            ClusterError: a fresh snapshot was needed and Ray cannot be read.
        """
        if max_age_s > 0 and now is not None and self._last is not None and 0.0 <= now - self._last[0] <= max_age_s:
            return self._last[1]
        snap = self.source.snapshot()
        if now is not None:
            self._last = (now, snap)
        return snap

    @property
    def taken_at(self) -> float | None:
        """The `now` of the last snapshot read from Ray with a time (None: none yet)."""
        return self._last[0] if self._last is not None else None


class RayNodes:
    """Ray nodes' IP and Argus name by node id, from one snapshot taken on the first ask (per pass)."""

    def __init__(self, snapshots: ClusterView):
        self._snapshots = snapshots
        self._nodes: Mapping[str, tuple[str, str | None]] | None = None
        self._dead: frozenset[str] = frozenset()
        self._read = False

    def nodes(self) -> Mapping[str, tuple[str, str | None]] | None:
        """Node id -> (IP, name; None without the label) of every node in the snapshot; None
        when it could not be read."""
        if not self._read:
            self._read = True
            try:
                snap = self._snapshots.snapshot()
            except ClusterError:
                return None
            self._nodes = {n.node_id: (n.node_ip, n.labels.get(NODE_LABEL)) for n in snap.nodes}
            self._dead = frozenset(n.node_id for n in snap.nodes if not n.alive)
        return self._nodes

    def dead(self, node_id: str | None) -> bool:
        """Whether the snapshot shows node `node_id` DEAD (False when unknown or unreadable)."""
        return node_id is not None and self.nodes() is not None and node_id in self._dead


def seen_in_ray(attempt: Attempt, view: JobView, nodes: RayNodes) -> Attempt:
    """The attempt as `view` shows it (equal to `attempt` when nothing changed)."""
    node = (attempt.driver_node_id, attempt.driver_node_ip, attempt.driver_node_name)
    if view.driver_node_id and view.driver_node_id != attempt.driver_node_id:
        known = nodes.nodes()
        if known is not None:
            ip, name = known.get(view.driver_node_id, (view.driver_node_ip, None))
            node = (view.driver_node_id, ip, name)
    return dataclasses.replace(
        attempt,
        ray_status=view.status,
        message=view.message,
        start_time=view.start_time,
        end_time=view.end_time,
        failure_kind=view.diagnosis.cause.value if view.diagnosis else attempt.failure_kind,
        driver_node_id=node[0],
        driver_node_ip=node[1],
        driver_node_name=node[2],
    )


def lost_in_ray(attempt: Attempt, evidence: str | None, now: float) -> Attempt:
    """The attempt once Ray no longer knows its job (its head restarted): LOST, a PLATFORM failure."""
    return dataclasses.replace(
        attempt, ray_status=LOST, message=evidence, end_time=now, failure_kind=FailureCause.PLATFORM.value
    )


# Ray's generic verdicts on a job whose supervisor went away: on their own they do not say why.
_VAGUE = frozenset({FailureCause.PLATFORM, FailureCause.UNKNOWN})


def _node_words(node_id: str | None, ip: str | None, name: str | None) -> str:
    """`node <name> (<ip>)`, with what is known of it."""
    label = name or (node_id[:12] if node_id else "?")
    return f"node {label} ({ip})" if ip else f"node {label}"


def with_node_loss(view: JobView, attempt: Attempt, nodes: RayNodes) -> JobView:
    """`view`, diagnosed NODE_LOST when the job failed because a node died under it.

    NODE_LOST when Ray's own words say a node died (the diagnosis already is NODE_LOST), or when
    Ray gives only a generic failure (PLATFORM, UNKNOWN) and the driver's node is DEAD in the
    cluster snapshot. The evidence names the node: the driver's, or one whose Ray id the message
    carries. Any other view is returned as it is.
    """
    diag = view.diagnosis
    if view.status != "FAILED" or diag is None:
        return view
    driver = view.driver_node_id or attempt.driver_node_id
    if diag.cause is not FailureCause.NODE_LOST and not (diag.cause in _VAGUE and nodes.dead(driver)):
        return view
    known = nodes.nodes() or {}
    text = f"{view.message or ''}\n{diag.evidence}"
    named = next((nid for nid in known if nid in text), None)
    if named is None and driver is not None:
        named = driver
    ip, name = known.get(named, (None, None)) if named is not None else (None, None)
    if named is not None and named == attempt.driver_node_id:  # recorded while the node was alive
        ip, name = attempt.driver_node_ip or ip, attempt.driver_node_name or name
    where = _node_words(named, ip or (view.driver_node_ip if named == driver else None), name)
    evidence = f"{where} was lost under the job: {diag.evidence}"[:500]
    return dataclasses.replace(view, diagnosis=Diagnosis(FailureCause.NODE_LOST, evidence))
