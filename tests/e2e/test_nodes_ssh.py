"""Managed nodes over real SSH: an OpenSSH server of the test's own on 127.0.0.1, a Ray head of
its own (`argus.cluster.head`), and a real `argus server` that registers a node through the API,
starts its agent over SSH, sees it join Ray, drains it and takes it offline. A wrong key and an
unreachable port fail with clear reasons and leave the first node alone.

The sshd runs in the foreground of the test (`sshd -D -e`) with its own config, host key and
authorized keys (a user key made here); it is killed in teardown. Skipped only when
/usr/sbin/sshd is missing (`make test` installs openssh-server).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from argus.client.sdk import ArgusClient
from argus.cluster.local import port_free
from argus.testing.server import ServerProcess, free_port

SSHD = "/usr/sbin/sshd"
ADMIN = "nodes-e2e-admin"
CLUSTER = "nodes-e2e"
HEAD_IP = "127.0.47.1"
ARGUS = str(Path(sys.executable).with_name("argus"))

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


@pytest.fixture
def sshd(tmp_path) -> Iterator[tuple[int, Path]]:
    """An sshd on 127.0.0.1:<port> that lets root in with the key it yields (and no other)."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: install openssh-server (make test does)")
    d = tmp_path / "sshd"
    d.mkdir()
    host_key = _keygen(d / "host_ed25519")
    user_key = _keygen(d / "user_ed25519")
    (d / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    port = free_port(2270)
    config = d / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                f"PidFile {d / 'sshd.pid'}",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(d / "sshd.log", "ab")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        _wait_port("127.0.0.1", port, 15)
        yield port, user_key
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def head(tmp_path) -> Iterator[Path]:
    """A Ray head of this test's own cluster on 127.0.47.1; yields the shared root."""
    from argus.cluster import head as ray_head

    root = tmp_path / "shared"
    root.mkdir()
    gcs, dash = 6470, 8370
    while not (port_free(gcs) and port_free(dash)):
        gcs, dash = gcs + 1, dash + 1
    ray_head.start(str(root), CLUSTER, port=gcs, dashboard_port=dash, node_ip=HEAD_IP)
    try:
        yield root
    finally:
        ray_head.stop(str(root), CLUSTER)


def _agent_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stop_agent(pid: int) -> None:
    """Teardown only: an agent this test started that is still running."""
    try:
        proc = psutil.Process(pid)
        if "node-agent" not in " ".join(proc.cmdline()):
            return
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass


def _wait(client: ArgusClient, name: str, ok, timeout: float, what: str, log: Path | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        node = client.node(name)
        if ok(node):
            return node
        if time.monotonic() > deadline:
            extra = f"\nagent log:\n{log.read_text()[-3000:]}" if log and log.exists() else ""
            raise AssertionError(f"node {name} not {what} after {timeout}s: {node}{extra}")
        time.sleep(0.5)


def test_the_connector_runs_commands_and_records_the_host_key_on_first_contact(sshd, tmp_path):
    from argus.cluster.ssh import SSHConnector, SSHError, SSHTarget

    port, user_key = sshd
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(user_key, keys / "node.key")
    _keygen(tmp_path / "stranger")
    shutil.copy(tmp_path / "stranger", keys / "wrong.key")
    connector = SSHConnector(keys, 5)
    target = SSHTarget("127.0.0.1", port, "root", "node.key")
    session = connector.connect(target)
    try:
        res = session.run("echo out; echo err >&2; exit 3", 10)
        assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
        with pytest.raises(SSHError) as info:
            session.run("sleep 5", 0.5)
        assert info.value.kind == "timeout" and "did not finish within 0.5 s" in info.value.message
    finally:
        session.close()
    recorded = (keys / "known_hosts").read_text()
    assert recorded.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    connector.connect(target).close()  # the same key again: accepted
    assert (keys / "known_hosts").read_text() == recorded

    with pytest.raises(SSHError) as info:
        connector.connect(SSHTarget("127.0.0.1", port, "root", "wrong.key"))
    assert (info.value.kind, info.value.message) == (
        "auth",
        f"authentication failed for root@127.0.0.1:{port} with key wrong.key",
    )

    other = Path(f"{_keygen(tmp_path / 'other_host')}.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {other[0]} {other[1]}\n")
    with pytest.raises(SSHError) as info:
        connector.connect(target)
    assert info.value.kind == "host_key"
    assert f"the host key of 127.0.0.1:{port} is not the one recorded" in info.value.message


def test_a_node_registered_over_ssh_joins_drains_and_goes_offline(sshd, head, tmp_path):
    port, user_key = sshd
    root = head
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(user_key, keys / "node.key")
    _keygen(tmp_path / "stranger")
    shutil.copy(tmp_path / "stranger", keys / "wrong.key")
    rec = yaml.safe_load((root / "ray" / "discovery" / CLUSTER / "head.json").read_text())
    ray_cfg = tmp_path / "ray.yaml"
    ray_cfg.write_text(
        yaml.safe_dump({"address": rec["dashboard_url"], "cluster_name": CLUSTER, "shared_root": str(root)})
    )
    work = tmp_path / "server"
    work.mkdir()
    server = ServerProcess(ray_cfg, work, ADMIN)
    config = yaml.safe_load(server.config.read_text())
    config["nodes"] = {
        "agent_command": ARGUS,
        "key_dir": str(keys),
        "reconcile_interval_s": 0.5,
        "join_timeout_s": 90,
        "agent_stop_timeout_s": 30,
    }
    server.config.write_text(yaml.safe_dump(config))
    admin = ArgusClient(server.url, ADMIN, timeout=60)
    pids: list[int] = []
    server.start()
    try:
        node = admin.add_node(
            "ssh-1", "127.0.0.1", "root", "node.key", port=port, gpus=2, cpus=1, labels={"pool": "e2e"}
        )
        assert node["state"] == "pending"
        log = root / "common" / "logs" / "nodes" / "ssh-1.log"
        node = _wait(admin, "ssh-1", lambda n: n["state"] != "pending", 60, "out of pending", log)
        assert node["state"] == "online", (node, server.log.read_text()[-3000:])
        pids.append(node["agent_pid"])
        ray = node["ray"]
        assert ray["alive"] and ray["labels"]["argus.io/node"] == "ssh-1" and ray["labels"]["pool"] == "e2e"
        assert ray["gpus_total"] == 2 and ray["node_ip"]  # Ray turns 127.0.0.1 into a routable IP
        agent = psutil.Process(node["agent_pid"]).cmdline()  # the recorded pid is the agent itself
        assert "node-agent" in agent and agent[agent.index("--name") + 1] == "ssh-1", agent
        assert [e["to_state"] for e in node["events"]] == ["pending", "pending", "online"]
        assert "agent started on" in node["events"][1]["reason"]
        assert (keys / "known_hosts").read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
        pool = admin.nodes()["pools"].get("e2e")
        assert pool and pool["gpus_total"] == 2, admin.nodes()["pools"]

        # A wrong key and an unreachable port fail with their reasons; the first node is unaffected.
        admin.add_node("ssh-bad-key", "127.0.0.1", "root", "wrong.key", port=port)
        closed = free_port(port + 1)
        admin.add_node("ssh-no-host", "127.0.0.1", "root", "node.key", port=closed)
        bad = admin.wait_node("ssh-bad-key", {"failed"}, 30)
        assert bad["reason"] == f"authentication failed for root@127.0.0.1:{port} with key wrong.key"
        gone = admin.wait_node("ssh-no-host", {"failed"}, 30)
        assert gone["reason"].startswith(f"cannot connect to 127.0.0.1:{closed}: "), gone
        assert "refused" in gone["reason"].lower()
        first = admin.node("ssh-1")
        assert first["state"] == "online" and first["ray"]["alive"], first

        # Drain: Ray drains it (idle, so its raylet stops), the hold file keeps the agent out.
        node = admin.drain_node("ssh-1", "e2e drain")
        assert node["state"] == "draining"
        assert (root / "ray" / "discovery" / CLUSTER / "hold" / "ssh-1").exists()
        _wait(
            admin,
            "ssh-1",
            lambda n: n["ray"] is None or n["ray"]["draining"] or not n["ray"]["alive"],
            30,
            "drained in Ray",
            log,
        )

        # Offline: the node is empty, so its agent is stopped over SSH at once.
        node = admin.offline_node("ssh-1")
        assert node["state"] == "offline", node
        assert _agent_gone(pids[0]), f"the agent {pids[0]} still runs"
        assert node["ray"] is None or not node["ray"]["alive"], node
        assert [e["to_state"] for e in admin.node("ssh-1")["events"]][-2:] == ["draining", "offline"]
    finally:
        server.stop()
        for pid in pids:
            _stop_agent(pid)
