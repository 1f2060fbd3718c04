"""`RayGpuReader` against real HTTP metrics endpoints served by the test.

These machines have no GPU, so Ray's metrics agents here export no GPU series. Stand-ins: local
HTTP servers (`ThreadingHTTPServer`) serving the text a Ray metrics agent serves on a node with
two GPUs (`ray_node_gpus_utilization` in percent and `ray_node_gram_used` in MiB, per GPU, with
Ray's labels), a node without GPUs, a node that answers too late and a port nobody listens on.
The reader must read the GPU node right and leave the others out, within its timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from argus.cluster.gpu_metrics import MIB, NodeGpuReading, RayGpuReader, parse_gpu_metrics
from argus.cluster.snapshot import NodeCapacity

IP = "127.0.0.1"
LABELS = 'SessionName="session_2027_01_16_00_00_00_000000_1",Version="2.60.0",ip="127.0.0.1"'
GPU_NODE = f"""# HELP ray_node_cpu_utilization Total CPU usage on a ray node
# TYPE ray_node_cpu_utilization gauge
ray_node_cpu_utilization{{instance="gpu-01",{LABELS}}} 12.5
# HELP ray_node_gpus_available Total GPUs available on a ray node
# TYPE ray_node_gpus_available gauge
ray_node_gpus_available{{GpuDeviceName="NVIDIA H100 80GB HBM3",GpuIndex="0",GpuUuid="GPU-aa",{LABELS}}} 1.0
ray_node_gpus_available{{GpuDeviceName="NVIDIA H100 80GB HBM3",GpuIndex="1",GpuUuid="GPU-bb",{LABELS}}} 1.0
# HELP ray_node_gpus_utilization Total GPUs usage on a ray node
# TYPE ray_node_gpus_utilization gauge
ray_node_gpus_utilization{{GpuDeviceName="NVIDIA H100 80GB HBM3",GpuIndex="0",GpuUuid="GPU-aa",{LABELS}}} 90.0
ray_node_gpus_utilization{{GpuDeviceName="NVIDIA H100 80GB HBM3",GpuIndex="1",GpuUuid="GPU-bb",{LABELS}}} 30.0
# HELP ray_node_gram_used Total GPU RAM usage on a ray node
# TYPE ray_node_gram_used gauge
ray_node_gram_used{{GpuDeviceName="NVIDIA H100 80GB HBM3",GpuIndex="0",GpuUuid="GPU-aa",{LABELS}}} 40960.0
ray_node_gram_used{{GpuDeviceName="NVIDIA H100 80GB HBM3",GpuIndex="1",GpuUuid="GPU-bb",{LABELS}}} 1024.0
"""
CPU_NODE = f"""# HELP ray_node_cpu_utilization Total CPU usage on a ray node
# TYPE ray_node_cpu_utilization gauge
ray_node_cpu_utilization{{instance="cpu-01",{LABELS}}} 3.0
"""


def _serve(body: str, delay_s: float = 0.0) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay_s)
            data = body.encode() if self.path == "/metrics" else b"not found"
            try:
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the reader gave up on a slow answer
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((IP, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((IP, 0))
        return s.getsockname()[1]


def _node(node_id: str, port: int | None, alive: bool = True) -> NodeCapacity:
    return NodeCapacity(node_id, IP, False, alive, False, 2, 2, 8, 8, {"GPU": 2}, {}, metrics_export_port=port)


@pytest.fixture
def endpoints() -> Iterator[dict[str, int]]:
    servers = {"gpu": _serve(GPU_NODE), "cpu": _serve(CPU_NODE), "slow": _serve(GPU_NODE, delay_s=3.0)}
    yield {name: port for name, (_, port) in servers.items()}
    for server, _ in servers.values():
        server.shutdown()
        server.server_close()


def test_a_node_with_two_gpus_is_read_and_the_others_are_left_out(endpoints):
    nodes = [
        _node("gpu-node", endpoints["gpu"]),
        _node("cpu-node", endpoints["cpu"]),
        _node("slow-node", endpoints["slow"]),
        _node("refusing-node", _closed_port()),
        _node("unknown-port", None),
        _node("dead-node", endpoints["gpu"], alive=False),
    ]
    t0 = time.monotonic()
    readings = RayGpuReader(timeout_s=1.0).read(nodes)
    elapsed = time.monotonic() - t0
    # The mean of 90 % and 30 %; the busier GPU holds 40960 MiB (Ray's unit), given in bytes.
    assert readings == {"gpu-node": NodeGpuReading(60.0, 40960 * MIB, 2)}
    assert elapsed < 2.5, elapsed  # the nodes are read at once, each within its timeout


def test_no_nodes_no_reads():
    assert RayGpuReader().read([]) == {}


def test_series_of_another_node_and_garbage():
    other = GPU_NODE.replace('ip="127.0.0.1"', 'ip="10.0.0.9"')
    assert parse_gpu_metrics(other, IP) is None
    assert parse_gpu_metrics(other) == NodeGpuReading(60.0, 40960 * MIB, 2)
    only_memory = "\n".join(line for line in GPU_NODE.splitlines() if "utilization" not in line) + "\n"
    assert parse_gpu_metrics(only_memory, IP) == NodeGpuReading(None, 40960 * MIB, 2)
    with pytest.raises(ValueError):
        parse_gpu_metrics('ray_node_gram_used{GpuIndex="0" 12\n', IP)
