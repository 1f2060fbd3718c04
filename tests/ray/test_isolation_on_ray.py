"""Jobs see nothing of whoever started the nodes, against a real Ray cluster of this module's own.

The head (`argus.cluster.head.start`) is started from this process while its environment holds
the admin token and its working directory is a hostile one (`hostile_cwd`: a `mvp_marker.py`
and a `secrets.py` that record who imported them); the worker is a real `argus node-agent`
started the way an operator would on a GPU host, from another hostile directory and with the
token in its environment too. The job is submitted from a hostile directory as well. Then:
the job sees no token and no Argus setting, imports its own code first (`sys.path[0]` is its
`code_path`, its marker is its own), no shadow module is ever imported by anything, no node
process holds the token, `ray start` runs in the node's own empty directory, and what the job
writes is not world-readable (umask 027).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import markers, submit, wait_for

from argus.cluster import head
from argus.cluster.local import loopback_prefix, port_free
from argus.cluster.nodeenv import NODE_WORKDIR
from argus.cluster.procs import alive_nodes, by_temp_dir, descendants, stop_trees, wait_gone
from argus.spec.config import parse_ray_config
from argus.testing.sandbox import prepare, task_yaml

pytestmark = pytest.mark.ray
CLUSTER = "iso"
TOKEN = "isolation-admin-token-in-the-starters-environment"
SHADOW = "shadow-from-a-working-directory"
MARKER = "iso-own"
PROBE = f'''"""Which snapshot this is, and what the process that imported it sees."""
import json, os, sys

_m = os.umask(0)
os.umask(_m)
print("PROBE " + json.dumps({{
    "path0": sys.path[0], "cwd": os.getcwd(), "umask": _m,
    "token": any("{TOKEN}" in v for v in os.environ.values()),
    "control": sorted(k for k in os.environ if k.startswith(("ARGUS_", "MVP_"))),
}}), flush=True)
MARKER = "{MARKER}"
'''


def hostile_cwd(directory: Path) -> Path:
    """A directory whose `mvp_marker.py` and `secrets.py` each record, in `imported/`, the
    command line of any process that imports them."""
    (directory / "imported").mkdir(parents=True, exist_ok=True)
    for name, body in (("mvp_marker", f'MARKER = "{SHADOW}"\n'), ("secrets", "")):
        (directory / f"{name}.py").write_text(
            "import os, pathlib, sys\n"
            f"pathlib.Path(__file__).with_name('imported').joinpath('{name}-%d' % os.getpid())"
            ".write_text(' '.join(sys.argv))\n" + body
        )
    return directory


def imported(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (directory / "imported").iterdir()}


def _free(start: int) -> int:
    port = start
    while not port_free(port):
        port += 1
    return port


def cwd_of(proc) -> str | None:
    try:
        return proc.cwd()
    except Exception:  # it exited meanwhile
        return None


def proc_env(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


class Isolated:
    """A head and one node agent, both started by a hostile caller; `close` stops them."""

    def __init__(self, root: Path):
        self.root = root
        self.gcs = _free(6470)
        self.dash = _free(8340)
        prefix = loopback_prefix(self.gcs)
        self.head_ip, self.node_ip = f"{prefix}1", f"{prefix}2"
        self.head_cwd = hostile_cwd(root / "head-caller")
        self.agent_cwd = hostile_cwd(root / "agent-caller")
        self.submit_cwd = hostile_cwd(root / "submit-caller")
        self.agent: subprocess.Popen | None = None
        self.rec = None

    def start(self) -> None:
        cwd, old = os.getcwd(), os.environ.get("MVP_INTERNAL_TOKEN")
        os.environ["MVP_INTERNAL_TOKEN"] = TOKEN
        os.chdir(self.head_cwd)
        try:
            self.rec = head.start(
                str(self.root), CLUSTER, port=self.gcs, dashboard_port=self.dash, node_ip=self.head_ip
            )
        finally:
            os.chdir(cwd)
            if old is None:
                os.environ.pop("MVP_INTERNAL_TOKEN")
            else:
                os.environ["MVP_INTERNAL_TOKEN"] = old
        log = open(self.root / "agent.log", "ab")
        # As an operator starts it on a GPU host: the `argus` command, from where they stand.
        self.agent = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "argus"),
                "node-agent",
                "--shared-root",
                str(self.root),
                "--cluster",
                CLUSTER,
                "--gpus",
                "2",
                "--cpus",
                "4",
                "--name",
                "iso-1",
                "--node-ip",
                self.node_ip,
                "--poll-s",
                "0.5",
                "--object-store-memory",
                str(100 * 1024 * 1024),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.agent_cwd,
            env={**os.environ, "MVP_INTERNAL_TOKEN": TOKEN, "ARGUS_TOKEN": TOKEN},
        )
        log.close()
        deadline = time.monotonic() + 60
        while self.node_ip not in {n.node_ip for n in alive_nodes(self.rec.dashboard_url)}:
            assert self.agent.poll() is None, (self.root / "agent.log").read_text()
            assert time.monotonic() < deadline, (self.root / "agent.log").read_text()
            time.sleep(0.5)

    def node_processes(self) -> list:
        """Every process of this cluster: the agent's tree, and whatever names its temp dir."""
        procs = {p.pid: p for p in descendants(self.agent.pid)} if self.agent else {}
        for p in by_temp_dir(self.rec.temp_dir):
            procs.setdefault(p.pid, p)
        for pid in (self.rec.head_pid, self.rec.publisher_pid):
            for p in descendants(pid):
                procs.setdefault(p.pid, p)
        return list(procs.values())

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_trees([self.agent.pid], 1.0)
                self.agent.wait(timeout=10)
        head.stop(str(self.root), CLUSTER, grace_s=10.0)
        left = by_temp_dir(head.temp_dir_for(str(self.root), CLUSTER))
        for p in left:
            p.kill()
        wait_gone(left, 5.0)


@pytest.fixture(scope="module")
def iso():
    root = Path(tempfile.mkdtemp(prefix="argus-iso-")).resolve()
    c = Isolated(root)
    t0 = time.monotonic()
    try:
        c.start()
        print(f"\nhostile head + agent up in {time.monotonic() - t0:.1f}s")
        yield c
    finally:
        c.close()
        if not os.environ.get("ARGUS_KEEP_TEST_ROOT"):
            shutil.rmtree(root, ignore_errors=True)


def test_nodes_hold_no_token_and_start_ray_in_their_own_empty_directory(iso):
    procs = [p for p in iso.node_processes() if p.pid != iso.agent.pid]
    names = {p.name() for p in procs}
    assert {"raylet", "gcs_server"} <= names, names
    holding = [(p.pid, p.name()) for p in procs if TOKEN.encode() in proc_env(p.pid)]
    assert not holding, f"node processes with the admin token in their environment: {holding}"
    # The agent (started by the operator) has it; its raylet, started by Argus, has not.
    assert TOKEN.encode() in proc_env(iso.agent.pid)
    work = Path(iso.rec.temp_dir) / NODE_WORKDIR
    raylets = [p for p in procs if p.name() == "raylet"]
    assert len(raylets) == 2
    assert {p.cwd() for p in raylets} == {str(work / "head-ray"), str(work / "node-iso-1")}
    assert all(stat.S_IMODE(Path(p.cwd()).stat().st_mode) == 0o700 for p in raylets)
    for p in procs:
        assert cwd_of(p) not in (str(iso.head_cwd), str(iso.agent_cwd)), (p.pid, p.cmdline())
    assert imported(iso.head_cwd) == {} and imported(iso.agent_cwd) == {}


def test_a_job_sees_no_token_and_imports_only_its_own_code(iso):
    sb = prepare(iso.root, markers=(MARKER,))
    code = sb.code[MARKER]
    (code / "mvp_marker.py").write_text(PROBE)
    config = parse_ray_config(
        {
            "address": iso.rec.dashboard_url,
            "shared_root": str(iso.root),
            "entrypoint_num_cpus": 1,
            "entrypoint_resources": {"worker_node": 1},
        }
    )
    text = task_yaml(sb, "ppo", MARKER, total_training_steps=2, save_freq=1, env_vars={"VERL_SIM_STEP_SECONDS": "0.1"})
    cwd = os.getcwd()
    os.chdir(iso.submit_cwd)  # the submitter's (the server's) working directory
    try:
        tool, sid, rendered = submit(config, text)
    finally:
        os.chdir(cwd)
    wait_for(tool, sid, {"SUCCEEDED"}, timeout=180)
    log = tool.logs(sid)
    assert markers(log) == [MARKER], log[-3000:]
    probes = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines() if line.startswith("PROBE ")]
    assert len(probes) == 1, log[-3000:]
    seen = probes[0]
    assert seen["token"] is False and seen["control"] == [], seen
    assert seen["path0"] == str(code), seen
    assert seen["cwd"] == str(Path(iso.rec.temp_dir) / NODE_WORKDIR / "node-iso-1"), seen
    assert seen["umask"] == 0o027, seen
    for d in (iso.head_cwd, iso.agent_cwd, iso.submit_cwd):
        assert imported(d) == {}, f"a shadow module in {d} was imported: {imported(d)}"
    # What the job wrote (its checkpoints) is not world-readable.
    written = [p for p in Path(str(rendered.job_root), "checkpoints").rglob("*")]
    assert written, f"no checkpoint under {rendered.job_root}"
    loose = [(str(p), oct(stat.S_IMODE(p.stat().st_mode))) for p in written if p.stat().st_mode & 0o007]
    assert not loose, loose
    # Still no process of the cluster holds the token after a job ran on it.
    assert not [p.pid for p in iso.node_processes() if TOKEN.encode() in proc_env(p.pid) and p.pid != iso.agent.pid]
