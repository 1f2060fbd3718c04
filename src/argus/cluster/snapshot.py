"""The scheduler's view of cluster capacity: per-node GPUs and CPUs, total and free.

Owns `RaySnapshotSource`, which reads the GCS's own resource view (the autoscaler state
service's `GetClusterResourceState`, the table Ray's scheduler itself keeps, updated by every
raylet within about a second) over one short-lived gRPC channel, and the pure parsing of that
reply into `ClusterSnapshot`. A node's metrics export port (what Prometheus scrapes) comes from
the GCS's node table, read only when the snapshot shows a node whose port is not known yet.

Invariants:
- The calling process never becomes a Ray driver: no `ray.init()`, no core worker, no Ray C++
  GCS client (whose connect waits ignore the caller's timeout). A GCS restart or outage can
  therefore never kill the caller.
- No connection state outlives a call: each `snapshot()` opens its own channel and closes it,
  so a source object survives any number of head restarts and is safe to share between
  threads. The only shared state is the GCS address learnt from the dashboard, guarded by a
  lock and forgotten when that address stops answering.
- Every `snapshot()` ends within about `timeout_s`: it either returns a snapshot or raises
  `ClusterUnavailable`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from argus.cluster.errors import ClusterUnavailable

HEAD_RESOURCE = "node:__internal_head__"
WORKER_RESOURCE = "worker_node"
ALIVE_STATUSES = frozenset({"RUNNING", "IDLE", "DRAINING"})
_DROPPED_RESOURCES = frozenset({"memory", "object_store_memory"})
_GCS_PORT_FLAG = re.compile(r"--gcs_server_port=(\d+)")
_GCS_ADDRESS_FLAG = re.compile(r"--gcs-address=([^\s]+:\d+)")
_MAX_REPLY_BYTES = 256 * 1024 * 1024
_HOST_PORT = re.compile(r"^[^\s/:]+:\d+$")
# What a placement group adds to the nodes holding its bundles (`GPU_group_0_<pg id>`,
# `bundle_group_<pg id>`, ...): bookkeeping of a reservation, not capacity.
_PG_RESOURCE = re.compile(r"_group_(?:\d+_)?[0-9a-f]{36}$")


@dataclass(frozen=True)
class NodeCapacity:
    """One Ray node as the GCS sees it at one moment."""

    node_id: str
    node_ip: str
    is_head: bool
    alive: bool
    draining: bool
    total_gpus: float
    available_gpus: float
    total_cpus: float
    available_cpus: float
    resources_total: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    metrics_export_port: int | None = None  # Ray's metrics agent (Prometheus format); None: unknown

    def has_resource(self, name: str) -> bool:
        """Whether the node offers a positive amount of `name`."""
        return self.resources_total.get(name, 0.0) > 0


@dataclass(frozen=True)
class ClusterSnapshot:
    """Every node the GCS reports (dead ones included), read at `taken_at` (epoch seconds)."""

    nodes: tuple[NodeCapacity, ...]
    taken_at: float

    def schedulable(self, worker_resource: str | None = None) -> list[NodeCapacity]:
        """The nodes new work may be placed on.

        Args:
            worker_resource: when given, only nodes offering this custom resource count
                (Argus workers offer `worker_node`).

        Returns:
            Alive, not draining, non-head nodes, in the snapshot's order.
        """
        return [
            n
            for n in self.nodes
            if n.alive
            and not n.draining
            and not n.is_head
            and (worker_resource is None or n.has_resource(worker_resource))
        ]

    @property
    def total_gpus(self) -> float:
        """GPUs of alive nodes."""
        return sum(n.total_gpus for n in self.nodes if n.alive)

    @property
    def available_gpus(self) -> float:
        """Free GPUs of alive nodes."""
        return sum(n.available_gpus for n in self.nodes if n.alive)


# -- parsing (pure) ----------------------------------------------------------------------
def _node_id_hex(raw: Any) -> str:
    """The node id as Ray prints it: hex of the id bytes (the JSON form carries base64)."""
    if isinstance(raw, bytes):
        return raw.hex()
    if not raw:
        return ""
    try:
        return base64.b64decode(raw, validate=True).hex()
    except (ValueError, TypeError):
        return str(raw)


def _floats(mapping: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (mapping or {}).items()}


def _is_capacity(resource: str) -> bool:
    return not (resource.startswith("node:") or resource in _DROPPED_RESOURCES or _PG_RESOURCE.search(resource))


def parse_node_state(node: Mapping[str, Any]) -> NodeCapacity:
    """One `NodeState` of the GCS reply, in its JSON form, as a `NodeCapacity`.

    Args:
        node: a mapping with the proto field names (`node_id` in base64 or bytes,
            `node_ip_address`, `status`, `total_resources`, `available_resources`,
            `labels`); absent fields take the proto defaults.

    Returns:
        The node's capacity. A resource missing from `available_resources` is fully taken
        (the GCS leaves out what is at zero). GPUs reserved by a placement group count as
        taken. `resources_total` leaves out `node:*`, memory and placement-group
        bookkeeping (`*_group_*`); `labels` are the node's static labels (Ray's dynamic
        labels only mark placement groups).
    """
    total = _floats(node.get("total_resources"))
    available = _floats(node.get("available_resources"))
    status = str(node.get("status") or "UNSPECIFIED")
    return NodeCapacity(
        node_id=_node_id_hex(node.get("node_id")),
        node_ip=str(node.get("node_ip_address") or ""),
        is_head=HEAD_RESOURCE in total,
        alive=status in ALIVE_STATUSES,
        draining=status == "DRAINING",
        total_gpus=total.get("GPU", 0.0),
        available_gpus=available.get("GPU", 0.0),
        total_cpus=total.get("CPU", 0.0),
        available_cpus=available.get("CPU", 0.0),
        resources_total={k: v for k, v in total.items() if _is_capacity(k)},
        labels={str(k): str(v) for k, v in (node.get("labels") or {}).items()},
    )


def parse_cluster_resource_state(
    state: Mapping[str, Any], taken_at: float, ports: Mapping[str, int] | None = None
) -> ClusterSnapshot:
    """A `ClusterResourceState` of the GCS, in its JSON form, as a `ClusterSnapshot`.

    Args:
        state: a mapping with a `node_states` list (proto field names).
        taken_at: when the state was read, epoch seconds.
        ports: node id (hex) -> its metrics export port, where known.

    Returns:
        The snapshot, nodes sorted head first, then by IP (as text).
    """
    nodes = [parse_node_state(n) for n in state.get("node_states") or []]
    if ports:
        nodes = [dataclasses.replace(n, metrics_export_port=ports.get(n.node_id)) for n in nodes]
    nodes.sort(key=lambda n: (not n.is_head, n.node_ip, n.node_id))
    return ClusterSnapshot(nodes=tuple(nodes), taken_at=taken_at)


def gcs_address_from_head_detail(detail: Mapping[str, Any], head_ip: str) -> str | None:
    """The GCS address named by the dashboard's detail of the head node.

    Args:
        detail: `data.detail` of the dashboard's `GET /nodes/<head node id>`; its `gcs`
            entry holds the GCS server's command line, its `cmdline` the raylet's.
        head_ip: the head node's IP, used with `--gcs_server_port`.

    Returns:
        `host:port`, or None when neither command line names it.
    """
    gcs_cmd = (detail.get("gcs") or {}).get("cmdline") or []
    for part in _strings(gcs_cmd):
        m = _GCS_PORT_FLAG.search(part)
        if m and head_ip:
            return f"{head_ip}:{m.group(1)}"
    for part in _strings(detail.get("cmdline") or []):
        m = _GCS_ADDRESS_FLAG.search(part)
        if m:
            return m.group(1)
    return None


def _strings(items: Iterable[Any]) -> Iterable[str]:
    return (s for s in items if isinstance(s, str))


# -- reading Ray -------------------------------------------------------------------------
class RaySnapshotSource:
    """Reads `ClusterSnapshot`s of one Ray cluster without joining it as a driver."""

    def __init__(
        self,
        dashboard_url: str,
        gcs_address: str | None = None,
        timeout_s: float = 5.0,
        locate: Callable[[], str | None] | None = None,
    ):
        """
        Args:
            dashboard_url: the dashboard, e.g. `http://10.0.0.1:8265`; used only to learn the
                GCS address when none is given.
            gcs_address: the GCS, `host:port` (for the local cluster,
                `ClusterState.gcs_address`). Learnt from the dashboard when None.
            timeout_s: the most one `snapshot()` may take.
            locate: asked at each call for the GCS address (head discovery); it may raise
                `ClusterUnavailable`. Used when `gcs_address` is None.

        Raises:
            ValueError: `gcs_address` is not `host:port`, or `timeout_s` is not positive.
        """
        if gcs_address is not None and not _HOST_PORT.fullmatch(gcs_address):
            raise ValueError(f"gcs_address must be host:port, not {gcs_address!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.dashboard_url = dashboard_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self._given_gcs = gcs_address
        self._locate = locate
        self._learnt_gcs: str | None = None
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}  # node id -> metrics export port (a node's, for its life)

    @classmethod
    def for_config(cls, config: Any, timeout_s: float = 5.0) -> RaySnapshotSource:
        """A source for a RayConfig: through head.json when it names a `cluster_name`."""
        if not getattr(config, "cluster_name", None):
            return cls(config.address, timeout_s=timeout_s)
        from argus.cluster.locate import HeadLocator

        locator = HeadLocator(config)
        return cls(config.address, timeout_s=timeout_s, locate=lambda: locator.current().gcs_address)

    def gcs(self, deadline: float) -> str:
        """The GCS address to use now (given, located through head.json, or learnt).

        Raises:
            ClusterUnavailable: it cannot be found before `deadline` (monotonic seconds).
        """
        if self._given_gcs:
            return self._given_gcs
        if self._locate is not None:
            found = self._locate()
            if found:
                return found
        return self._learn_gcs_address(deadline)

    @property
    def gcs_address(self) -> str | None:
        """The GCS address in use: the given one, else the last one learnt (None before)."""
        return self._given_gcs or self._learnt_gcs

    def snapshot(self) -> ClusterSnapshot:
        """Every node's capacity, as the GCS holds it now.

        Returns:
            A `ClusterSnapshot` taken within the last `timeout_s`.

        Raises:
            ClusterUnavailable: neither the GCS (nor, when it is needed to find the GCS, the
                dashboard) answered in time, or it answered with an error.
        """
        deadline = time.monotonic() + self.timeout_s
        address = self.gcs(deadline)
        try:
            state, taken_at = _read_resource_state(address, deadline)
        except ClusterUnavailable:
            if self._given_gcs is None:
                with self._lock:  # the head may come back elsewhere: ask the dashboard again
                    if self._learnt_gcs == address:
                        self._learnt_gcs = None
            raise
        return parse_cluster_resource_state(state, taken_at, self._metrics_ports(address, state, deadline))

    def _metrics_ports(self, address: str, state: Mapping[str, Any], deadline: float) -> dict[str, int]:
        """Known ports, read again from the GCS's node table when a node is new (best effort:
        a failure leaves the new nodes' ports unknown until the next snapshot)."""
        ids = {_node_id_hex(n.get("node_id")) for n in state.get("node_states") or []}
        with self._lock:
            known = dict(self._ports)
        if ids - known.keys():
            try:
                read = _read_metrics_ports(address, deadline)
            except ClusterUnavailable:
                return {k: v for k, v in known.items() if v}
            known = {k: read.get(k, 0) for k in ids}  # 0: asked, none reported; not asked again
            with self._lock:
                self._ports = known
        return {k: v for k, v in known.items() if v}

    def _learn_gcs_address(self, deadline: float) -> str:
        with self._lock:
            if self._learnt_gcs:
                return self._learnt_gcs
        nodes = _get_json(f"{self.dashboard_url}/api/v0/nodes", deadline)
        try:
            rows = nodes["data"]["result"]["result"]
            head = next(n for n in rows if n.get("is_head_node") and n.get("state") == "ALIVE")
        except (KeyError, TypeError, StopIteration):
            raise ClusterUnavailable(f"the dashboard at {self.dashboard_url} names no alive head node") from None
        detail = _get_json(f"{self.dashboard_url}/nodes/{head['node_id']}", deadline)
        try:
            address = gcs_address_from_head_detail(detail["data"]["detail"], head.get("node_ip", ""))
        except (KeyError, TypeError):
            address = None
        if not address:
            raise ClusterUnavailable(
                f"the dashboard at {self.dashboard_url} does not (yet) show the GCS address; "
                "pass gcs_address explicitly"
            )
        with self._lock:
            self._learnt_gcs = address
        return address


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ClusterUnavailable(f"{what}: out of time")
    return left


def _get_json(url: str, deadline: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=_remaining(deadline, url)) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot read {url}: {exc}") from None


def _channel(address: str) -> Any:
    import grpc

    # The GCS is reached directly (as Ray's own components do), never through an HTTP proxy;
    # a large cluster's reply may exceed gRPC's default 4 MiB limit.
    return grpc.insecure_channel(
        address,
        options=[("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", _MAX_REPLY_BYTES)],
    )


def _read_metrics_ports(address: str, deadline: float) -> dict[str, int]:
    """Node id (hex) -> metrics export port of the nodes in the GCS's node table that have one."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = _channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        request = gcs_service_pb2.GetAllNodeInfoRequest()  # type: ignore[attr-defined]
        reply = stub.GetAllNodeInfo(request, timeout=_remaining(deadline, f"GCS at {address}"))
    except grpc.RpcError as exc:
        raise ClusterUnavailable(f"cannot read the node table of the GCS at {address}: {exc}") from None
    finally:
        channel.close()
    return {n.node_id.hex(): int(n.metrics_export_port) for n in reply.node_info_list if n.metrics_export_port > 0}


def _read_resource_state(address: str, deadline: float) -> tuple[dict[str, Any], float]:
    """`GetClusterResourceState` of the GCS at `address`, as a dict with proto field names."""
    import grpc
    from google.protobuf import json_format
    from ray.core.generated import autoscaler_pb2, autoscaler_pb2_grpc

    timeout = _remaining(deadline, f"GCS at {address}")
    channel = _channel(address)
    try:
        stub = autoscaler_pb2_grpc.AutoscalerStateServiceStub(channel)
        # Ray's generated protobuf module defines its message classes at import time through the
        # descriptor pool and ships no stubs, so mypy cannot see them.
        request = autoscaler_pb2.GetClusterResourceStateRequest()  # type: ignore[attr-defined]
        reply = stub.GetClusterResourceState(request, timeout=timeout)
        taken_at = time.time()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = getattr(code, "name", "error")
        raise ClusterUnavailable(f"cannot read the GCS at {address}: {name}: {details}") from None
    finally:
        channel.close()
    state = json_format.MessageToDict(reply.cluster_resource_state, preserving_proto_field_name=True)
    return state, taken_at
