"""Asking Ray to drain a node: nothing new is placed there, running work goes on.

Owns `RayDrain` (it satisfies `argus.ports.Drainer`), which sends the GCS autoscaler
service's `DrainNode` (reason PREEMPTION, no deadline) over one short-lived gRPC channel, the
way `RaySnapshotSource` reads the resource table: the caller never becomes a Ray driver.

What Ray then does (2.60): the node reports DRAINING, the scheduler places no new task, actor,
placement-group bundle or job driver there, and work already running goes on. When the node
has nothing left to run its raylet shuts itself down. Ray cannot cancel a drain: a drained
node takes new work only after its raylet is started again (the node agent does that when its
hold is lifted).
"""

from __future__ import annotations

import time

from argus.cluster.errors import ClusterError, ClusterUnavailable
from argus.cluster.snapshot import RaySnapshotSource


class DrainRefused(ClusterError):
    """Ray answered but did not accept the drain."""


class RayDrain:
    """Drains nodes of the cluster a `RaySnapshotSource` reads."""

    def __init__(self, source: RaySnapshotSource, timeout_s: float = 5.0):
        self.source = source
        self.timeout_s = timeout_s

    def drain(self, node_id: str, reason: str) -> None:
        """Ask Ray to drain node `node_id` (hex, as `NodeCapacity.node_id`).

        Raises:
            ValueError: `node_id` is not hex.
            DrainRefused: Ray refused (its message is kept).
            ClusterUnavailable: the GCS did not answer in time.
        """
        import grpc
        from ray.core.generated import autoscaler_pb2, autoscaler_pb2_grpc

        raw = bytes.fromhex(node_id)
        deadline = time.monotonic() + self.timeout_s
        address = self.source.gcs(deadline)
        channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])
        try:
            stub = autoscaler_pb2_grpc.AutoscalerStateServiceStub(channel)
            reply = stub.DrainNode(
                autoscaler_pb2.DrainNodeRequest(  # type: ignore[attr-defined]
                    node_id=raw,
                    reason=autoscaler_pb2.DrainNodeReason.Value(  # type: ignore[attr-defined]
                        "DRAIN_NODE_REASON_PREEMPTION"
                    ),
                    reason_message=reason[:500],
                    deadline_timestamp_ms=0,
                ),
                timeout=max(0.1, deadline - time.monotonic()),
            )
        except grpc.RpcError as exc:
            code = getattr(exc.code(), "name", "error") if hasattr(exc, "code") else "error"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise ClusterUnavailable(
                f"cannot drain node {node_id} through the GCS at {address}: {code}: {details}"
            ) from None
        finally:
            channel.close()
        if not reply.is_accepted:
            raise DrainRefused(
                f"Ray refused to drain node {node_id}: {reply.rejection_reason_message or 'no reason given'}"
            )
