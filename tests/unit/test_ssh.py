"""The SSH connector's failures, each one `SSHError` with a reason that says what to fix (no
SSH server needed; tests/e2e/test_nodes_ssh.py talks to a real one)."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from argus.cluster.ssh import SSHConnector, SSHError, SSHTarget, key_path


@pytest.fixture
def keys(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ok.key")], check=True)
    (tmp_path / "garbage.key").write_text("not a key\n")
    return tmp_path


def fails(connector: SSHConnector, target: SSHTarget) -> SSHError:
    with pytest.raises(SSHError) as info:
        connector.connect(target)
    return info.value


def test_key_references_stay_inside_the_key_directory(keys):
    assert key_path(keys, "ok.key") == keys / "ok.key"
    for bad in ("../ok.key", "a/b", "..", "", "."):
        with pytest.raises(SSHError) as info:
            key_path(keys, bad)
        assert info.value.kind == "key"


def test_a_missing_or_unreadable_key_is_named(keys):
    c = SSHConnector(keys, 2)
    e = fails(c, SSHTarget("127.0.0.1", 22, "root", "nope.key"))
    assert (e.kind, e.message) == ("key", f"no key file nope.key in the key directory {keys}")
    e = fails(c, SSHTarget("127.0.0.1", 22, "root", "garbage.key"))
    assert e.kind == "key" and e.message.startswith("cannot load key garbage.key")


def test_a_closed_port_is_unreachable(keys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        e = fails(SSHConnector(keys, 2), SSHTarget("127.0.0.1", port, "root", "ok.key"))
    assert e.kind == "unreachable"
    assert e.message == f"cannot connect to 127.0.0.1:{port}: Connection refused"


def test_a_server_that_never_answers_times_out_within_the_connect_timeout(keys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        e = fails(SSHConnector(keys, 1), SSHTarget("127.0.0.1", port, "root", "ok.key"))
        assert time.monotonic() - t0 < 5
    assert (e.kind, e.message) == ("timeout", f"cannot connect to 127.0.0.1:{port}: no SSH answer within 1 s")


def test_an_unresolvable_host_is_unreachable(keys):
    e = fails(SSHConnector(keys, 2), SSHTarget("no-such-host.invalid", 22, "root", "ok.key"))
    assert e.kind == "unreachable" and "cannot resolve no-such-host.invalid" in e.message
