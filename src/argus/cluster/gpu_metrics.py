"""GPU utilisation and memory as Ray reports them: one reading per node, from its metrics agent.

Owns `RayGpuReader`, which reads every asked-for node's Ray metrics endpoint
(`http://<node ip>:<metrics export port>/metrics`, Prometheus text; the port is in the node's
`NodeCapacity`) and keeps two of Ray's per-GPU gauges, exported only by nodes with real GPUs:

- `ray_node_gpus_utilization{ip, GpuIndex, ...}`: the GPU's utilisation, in percent;
- `ray_node_gram_used{ip, GpuIndex, ...}`: the GPU's memory in use. Ray describes the gauge as
  bytes but records the device's `memory_used` in MiB (`ray.dashboard.modules.reporter`:
  `GpuUtilizationInfo.memory_used` is megabytes, `int(used) // MB`), so it is converted here.

A node's reading is over its GPUs: their mean utilisation and the most memory any one of them
holds. Ray reports per GPU and per node, never per task, so a node's reading is the same for
every task on it.

Invariants: one short GET per node (`timeout_s`), several at once; a node that does not answer,
answers garbage or exports no GPU series is left out of the result, never an error; nothing here
raises for one node's failure. Series whose `ip` label names another node are ignored.
"""

from __future__ import annotations

import logging
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from argus.cluster.snapshot import NodeCapacity

log = logging.getLogger("argus.cluster.gpu_metrics")

UTILIZATION = "ray_node_gpus_utilization"
MEMORY_USED = "ray_node_gram_used"
MIB = 1024 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024  # a node's whole metrics page; more is refused, not parsed
_MAX_PARALLEL = 8
# Node IPs are reached directly, never through an HTTP proxy of the server's environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class NodeGpuReading:
    """One node's GPUs at one moment, as Ray's metrics agent reports them.

    Attributes:
        util_pct_mean: the mean utilisation of its GPUs, in percent (None: none reported).
        mem_used_max_bytes: the most memory in use on any one of its GPUs, in bytes (None: none
            reported).
        gpus: how many GPUs the node reported.
    """

    util_pct_mean: float | None
    mem_used_max_bytes: float | None
    gpus: int


def parse_gpu_metrics(text: str, node_ip: str | None = None) -> NodeGpuReading | None:
    """The node's reading from its metrics page; None when the page has no GPU series.

    Args:
        text: Prometheus text as Ray's metrics agent serves it.
        node_ip: when given, series whose `ip` label names another address are ignored.

    Raises:
        ValueError: the text is not Prometheus text.
    """
    util: dict[str, float] = {}
    mem: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in (UTILIZATION, MEMORY_USED):
                continue
            if node_ip and s.labels.get("ip", node_ip) != node_ip:
                continue
            gpu = s.labels.get("GpuIndex") or s.labels.get("GpuUuid") or ""
            if s.name == UTILIZATION:
                util[gpu] = float(s.value)
            else:
                mem[gpu] = float(s.value) * MIB
    gpus = set(util) | set(mem)
    if not gpus:
        return None
    return NodeGpuReading(
        util_pct_mean=sum(util.values()) / len(util) if util else None,
        mem_used_max_bytes=max(mem.values()) if mem else None,
        gpus=len(gpus),
    )


class RayGpuReader:
    """Reads Ray's GPU gauges from the nodes' metrics agents (see the module docstring)."""

    def __init__(self, timeout_s: float = 2.0):
        self.timeout_s = timeout_s

    def _read_one(self, node: NodeCapacity) -> NodeGpuReading | None:
        url = f"http://{node.node_ip}:{node.metrics_export_port}/metrics"
        try:
            with _DIRECT.open(url, timeout=self.timeout_s) as resp:
                body = resp.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                log.debug("GPU metrics of %s: page over %d bytes, ignored", url, MAX_BODY_BYTES)
                return None
            return parse_gpu_metrics(body.decode("utf-8", "replace"), node.node_ip)
        except Exception as exc:  # one node's failure never fails the others
            log.debug("GPU metrics of %s not read: %s", url, exc)
            return None

    def read(self, nodes: Iterable[NodeCapacity]) -> Mapping[str, NodeGpuReading]:
        """The GPU reading of each of `nodes` that reports GPUs, by Ray node id.

        Nodes that are not alive or whose metrics port is unknown are not asked; a node that
        fails to answer within `timeout_s`, or has no GPU series, is left out.
        """
        asked = [n for n in nodes if n.alive and n.metrics_export_port and n.node_ip]
        if not asked:
            return {}
        with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, len(asked)), thread_name_prefix="argus-gpu") as pool:
            readings = list(pool.map(self._read_one, asked))
        return {n.node_id: r for n, r in zip(asked, readings, strict=True) if r is not None}
