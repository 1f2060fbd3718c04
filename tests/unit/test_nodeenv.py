"""The environment, umask and working directory of the processes Argus starts for Ray nodes."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from argus.cluster import nodeenv
from argus.cluster.errors import ClusterError
from argus.cluster.nodeenv import NODE_ENV_PASS, node_env, node_workdir, pass_list, spawn

VENV_BIN = str(Path(sys.executable).parent)

CALLER = {
    "PATH": "/usr/local/bin:/usr/bin",
    "HOME": "/home/op",
    "USER": "op",
    "LOGNAME": "op",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/var/tmp",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca.pem",
    # Everything below is the control plane's or the caller's own: never passed.
    "MVP_INTERNAL_TOKEN": "the-admin-token",
    "ARGUS_TOKEN": "a-user-token",
    "ARGUS_DATABASE_URL": "postgresql://argus:pw@db/argus",
    "ARGUS_URL": "http://127.0.0.1:8080",
    "RAY_ADDRESS": "10.0.0.9:6379",
    "RAY_API_SERVER_ADDRESS": "http://10.0.0.9:8265",
    "PYTHONPATH": "/home/op/hacks",
    "PYTHONSTARTUP": "/home/op/startup.py",
    "LD_PRELOAD": "/home/op/hook.so",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    "NCCL_SOCKET_IFNAME": "eth0",
    "AWS_SECRET_ACCESS_KEY": "s3-secret",
    "HF_TOKEN": "hf-secret",
    "VIRTUAL_ENV": "/home/op/venv",
    "PWD": "/home/op/work",
}


def test_only_the_allow_list_reaches_a_node():
    env = node_env(environ=CALLER)
    assert env == {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin",
        "HOME": "/home/op",
        "USER": "op",
        "LOGNAME": "op",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TMPDIR": "/var/tmp",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca.pem",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    assert not any(name.startswith(("ARGUS_", "MVP_")) for name in env)
    assert "the-admin-token" not in repr(env)


def test_the_gpu_slice_is_passed_only_when_given():
    assert node_env("2,3", environ=CALLER)["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "CUDA_VISIBLE_DEVICES" not in node_env(environ=CALLER)
    assert node_env("", environ=CALLER)["CUDA_VISIBLE_DEVICES"] == ""  # no GPU at all


def test_the_path_starts_with_this_python_and_drops_relative_entries():
    env = node_env(environ={"PATH": f":.:bin:/opt/tools::{VENV_BIN}:/usr/bin:"})
    assert env["PATH"] == f"{VENV_BIN}:/opt/tools:/usr/bin"
    assert node_env(environ={})["PATH"] == f"{VENV_BIN}:{nodeenv.DEFAULT_PATH}"


def test_the_pass_list_adds_names_on_purpose():
    caller = {
        **CALLER,
        NODE_ENV_PASS: "NCCL_SOCKET_IFNAME, LD_LIBRARY_PATH HF_TOKEN,NCCL_SOCKET_IFNAME,UNSET_NAME",
    }
    assert pass_list(caller) == ["NCCL_SOCKET_IFNAME", "LD_LIBRARY_PATH", "HF_TOKEN", "UNSET_NAME"]
    env = node_env(environ=caller)
    assert (env["NCCL_SOCKET_IFNAME"], env["LD_LIBRARY_PATH"], env["HF_TOKEN"]) == (
        "eth0",
        "/usr/local/cuda/lib64",
        "hf-secret",
    )
    assert "UNSET_NAME" not in env and NODE_ENV_PASS not in env
    # A node agent keeps the list, so its own `ray start` passes the same names.
    agent = node_env(environ=caller, keep_pass_list=True)
    assert agent[NODE_ENV_PASS] == "NCCL_SOCKET_IFNAME,LD_LIBRARY_PATH,HF_TOKEN,UNSET_NAME"
    assert node_env(environ=agent) == env


@pytest.mark.parametrize(
    "name",
    [
        "MVP_INTERNAL_TOKEN",
        "ARGUS_DATABASE_URL",
        "ARGUS_NODE_ENV_PASS",
        "RAY_ADDRESS",
        "RAY_API_SERVER_ADDRESS",
        "PATH",
    ],
)
def test_the_pass_list_never_passes_the_control_planes_settings(name):
    with pytest.raises(ClusterError, match=f"{NODE_ENV_PASS}: {name} is never passed"):
        node_env(environ={**CALLER, NODE_ENV_PASS: f"TZ,{name}"})


def test_the_pass_list_refuses_what_is_not_a_name():
    with pytest.raises(ClusterError, match="'A=B' is not an environment variable name"):
        pass_list({NODE_ENV_PASS: "A=B"})
    assert pass_list({NODE_ENV_PASS: "  "}) == [] and pass_list({}) == []


def test_each_node_gets_an_empty_private_working_directory(tmp_path):
    temp = tmp_path / "ray-temp"
    d = node_workdir(str(temp), "node-w1")
    assert d == temp / "argus-node-cwd" / "node-w1"
    assert d.is_dir() and list(d.iterdir()) == []
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # What a job left there is gone at the next start (a `secrets.py` would shadow Python's own).
    (d / "secrets.py").write_text("raise SystemExit('shadow')\n")
    (d / "outputs").mkdir()
    assert list(node_workdir(str(temp), "node-w1").iterdir()) == []
    # A link put in its place is replaced, never followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    d.rmdir()
    d.symlink_to(elsewhere)
    assert node_workdir(str(temp), "node-w1").is_dir() and not d.is_symlink()
    assert (elsewhere / "keep").exists()
    other = node_workdir(str(temp), "node-w2")
    assert other != d and other.parent == d.parent
    for bad in ("", "..", "a/b"):
        with pytest.raises(ClusterError):
            node_workdir(str(temp), bad)


def test_ray_temp_dir_default(tmp_path, monkeypatch):
    monkeypatch.setattr(nodeenv, "DEFAULT_RAY_TEMP_DIR", str(tmp_path / "ray"))
    assert node_workdir(None, "head-ray") == tmp_path / "ray" / "argus-node-cwd" / "head-ray"


def test_a_spawned_node_process_has_that_env_cwd_and_umask_027(tmp_path):
    cwd = node_workdir(str(tmp_path), "node-x")
    probe = (
        "import json, os, sys; m = os.umask(0); os.umask(m); open('written', 'w').close(); "
        "print(json.dumps({'cwd': os.getcwd(), 'umask': m, 'env': dict(os.environ), 'path0': sys.path[0]}))"
    )
    env = node_env(environ=CALLER)
    proc = spawn([sys.executable, "-c", probe], tmp_path / "out.log", env, cwd=cwd)
    assert proc.wait(timeout=60) == 0
    import json

    seen = json.loads((tmp_path / "out.log").read_text())
    assert seen["cwd"] == str(cwd) and seen["umask"] == 0o027
    assert "MVP_INTERNAL_TOKEN" not in seen["env"] and "ARGUS_TOKEN" not in seen["env"]
    assert {k: v for k, v in seen["env"].items() if k in env} == env
    assert stat.S_IMODE((cwd / "written").stat().st_mode) & 0o007 == 0
    # Without a directory it runs in `/`, never in the caller's.
    proc = spawn([sys.executable, "-c", "import os; print(os.getcwd())"], tmp_path / "root.log", env)
    assert proc.wait(timeout=60) == 0
    assert (tmp_path / "root.log").read_text().strip() == "/" != os.getcwd()


def test_every_node_process_argus_starts_uses_the_allow_list():
    """head.py, agent.py and local.py start processes only through `spawn` / `start_ray`, each
    given `node_env(...)` and a `node_workdir(...)`: no Popen of their own with the caller's env."""
    root = Path(nodeenv.__file__).parent
    for name in ("head.py", "agent.py", "local.py"):
        text = (root / name).read_text()
        assert "subprocess.Popen(" not in text and "os.environ)" not in text, name
        assert "node_env(" in text and "node_workdir(" in text, name
    assert "subprocess.Popen(" not in (root / "procs.py").read_text()  # start_ray uses spawn
