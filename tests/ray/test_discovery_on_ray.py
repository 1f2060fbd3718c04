"""Head discovery with real Ray: a head started by the project, node agents given no head address.

A cluster of its own (its own shared root, GCS 6420+ and dashboard 8300+, loopback 127.0.Y.k),
so it never touches the session's cluster. The agents are real `argus node-agent` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from argus.cluster import head
from argus.cluster.local import loopback_prefix, port_free
from argus.cluster.procs import alive_nodes, by_temp_dir, descendants, pid_alive, stop_trees, wait_gone
from argus.domain.discovery import parse_head

pytestmark = pytest.mark.ray

CLUSTER = "disc"
JOIN_S = 30.0


def _free(start: int, avoid: set[int] = frozenset()) -> int:
    port = start
    while port in avoid or not port_free(port):
        port += 1
    return port


class Discovery:
    """A head and its node agents; `close` stops everything it started."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.gcs = _free(6420)
        self.dash = _free(8300)
        prefix = loopback_prefix(self.gcs)
        self.head_ip = f"{prefix}1"
        self.agent_ips = [f"{prefix}2", f"{prefix}3"]
        self.agents: dict[str, subprocess.Popen] = {}

    def start_agent(self, ip: str, name: str) -> subprocess.Popen:
        log = open(Path(self.root) / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "argus.client.cli",
                "node-agent",
                "--shared-root",
                self.root,
                "--cluster",
                CLUSTER,
                "--gpus",
                "4",
                "--cpus",
                "1",
                "--labels",
                "pool=test-a",
                "--name",
                name,
                "--node-ip",
                ip,
                "--poll-s",
                "0.5",
                "--object-store-memory",
                str(100 * 1024 * 1024),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.agents[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (Path(self.root) / f"{name}.log").read_text(errors="replace")

    def wait_alive(self, dashboard_url: str, ips: list[str], timeout: float = JOIN_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            nodes = {n.node_ip: n for n in alive_nodes(dashboard_url)}
            if set(ips) <= set(nodes):
                return nodes
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.agents)
                raise AssertionError(
                    f"{sorted(set(ips) - set(nodes))} not ALIVE in {dashboard_url} "
                    f"after {timeout:.0f}s; alive: {sorted(nodes)}\n{logs}"
                )
            time.sleep(0.5)

    def close(self) -> None:
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.agents.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_trees([proc.pid], 1.0)
                proc.wait(timeout=10)
        head.stop(self.root, CLUSTER, grace_s=10.0)
        left = by_temp_dir(head.temp_dir_for(self.root, CLUSTER))
        for p in left:
            p.kill()
        wait_gone(left, 5.0)


@pytest.fixture(scope="module")
def disc(tmp_path_factory):
    d = Discovery(tmp_path_factory.mktemp("discovery"))
    try:
        yield d
    finally:
        d.close()
        left = [p.pid for p in by_temp_dir(head.temp_dir_for(d.root, CLUSTER)) if pid_alive(p.pid)]
        assert not left, f"processes left: {left}"
        assert head.status(d.root, CLUSTER) is None


def test_two_agents_given_no_head_address_join_the_published_head(disc):
    rec = head.start(disc.root, CLUSTER, port=disc.gcs, dashboard_port=disc.dash, node_ip=disc.head_ip)
    info = parse_head(Path(head.discovery_file(disc.root, CLUSTER)).read_text())
    assert (info.address, info.dashboard_url, info.temp_dir, info.stopped) == (
        rec.address,
        rec.dashboard_url,
        head.temp_dir_for(disc.root, CLUSTER),
        False,
    )
    assert head.status(disc.root, CLUSTER).healthy
    again = head.start(disc.root, CLUSTER, port=disc.gcs, dashboard_port=disc.dash, node_ip=disc.head_ip)
    assert again.head_pid == rec.head_pid  # the same head: nothing new started

    t0 = time.monotonic()
    for k, ip in enumerate(disc.agent_ips, start=2):
        disc.start_agent(ip, f"agent-{k}")
    nodes = disc.wait_alive(rec.dashboard_url, disc.agent_ips)
    print(f"\nboth agents joined in {time.monotonic() - t0:.1f}s")
    for k, ip in enumerate(disc.agent_ips, start=2):
        n = nodes[ip]
        assert n.resources_total.get("GPU") == 4 and n.resources_total.get("worker_node") == 100
        assert n.labels.get("pool") == "test-a" and n.labels.get("argus.io/node") == f"agent-{k}"
    assert "GPU" not in nodes[disc.head_ip].resources_total  # the head offers no GPU, no CPU
    assert "CPU" not in nodes[disc.head_ip].resources_total


def test_agents_rejoin_a_head_started_again_on_another_port(disc):
    old = head.status(disc.root, CLUSTER).record
    assert head.stop(disc.root, CLUSTER) is True
    assert parse_head(Path(head.discovery_file(disc.root, CLUSTER)).read_text()).stopped
    assert not pid_alive(old.head_pid)
    gcs2 = _free(old.gcs_port + 1)
    dash2 = _free(old.dashboard_port + 1)
    rec = head.start(disc.root, CLUSTER, port=gcs2, dashboard_port=dash2, node_ip=disc.head_ip)
    assert rec.address != old.address and rec.temp_dir == old.temp_dir
    t0 = time.monotonic()
    disc.wait_alive(rec.dashboard_url, disc.agent_ips)
    print(f"\nboth agents re-joined {rec.address} in {time.monotonic() - t0:.1f}s")
    for name in disc.agents:
        assert f"{rec.address}: head {rec.address} published" in disc.log(name) or f"rejoin {rec.address}" in disc.log(
            name
        )


def test_sigterm_stops_the_agent_and_its_raylet(disc):
    name, proc = "agent-2", disc.agents["agent-2"]
    tree = descendants(proc.pid)[1:]
    assert any("raylet" in p.name() for p in tree), [p.name() for p in tree]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    left = wait_gone(tree, 5.0)
    assert not left, [(p.pid, p.name()) for p in left]
    assert "stopping the raylet" in disc.log(name) and "node agent stopped" in disc.log(name)
    assert disc.agents["agent-3"].poll() is None  # the other agent is untouched


def test_the_cli_shows_the_head(disc):
    env = {**os.environ}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "argus.client.cli",
            "head",
            "status",
            "--shared-root",
            disc.root,
            "--cluster",
            CLUSTER,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"healthy": true' in out.stdout
