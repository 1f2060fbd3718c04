"""What a process started for a Ray node inherits: its environment, umask and working directory.

Owns the allow-list environment of every process Argus starts for a node (`ray start` of a head
or a worker, the node agent, the head's publisher): nothing of the control plane's or the
caller's environment reaches Ray, and so no job can read the admin token or the server's
settings. Owns the umask of those processes (027: what jobs write is not world-readable) and
the empty working directory of each node's `ray start` (`python -m` puts the working directory
first on `sys.path`, so the caller's would shadow every job's code). Used by
`argus.cluster.procs`, `head`, `agent` and `local`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from argus.cluster.errors import ClusterError

DEFAULT_RAY_TEMP_DIR = "/tmp/ray"
NODE_ENV_PASS = "ARGUS_NODE_ENV_PASS"
# What every node process gets from its caller's environment when set there; nothing else.
NODE_ENV_NAMES = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
NODE_ENV_PREFIXES = ("LC_",)
# Never passed, not even when NODE_ENV_PASS names them: the control plane's own settings and
# tokens, and the address of another Ray cluster.
NEVER_PASS_PREFIXES = ("ARGUS_", "MVP_")
NEVER_PASS = frozenset({"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "PATH"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_UMASK = 0o027
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def pass_list(environ: Mapping[str, str] | None = None) -> list[str]:
    """The extra names `ARGUS_NODE_ENV_PASS` asks to pass to node processes (comma or space
    separated), in order, without duplicates.

    Raises:
        ClusterError: a name is not a valid variable name, or is one never passed
            (`ARGUS_*`, `MVP_*`, `RAY_ADDRESS`, `RAY_API_SERVER_ADDRESS`, `PATH`).
    """
    env = os.environ if environ is None else environ
    names: list[str] = []
    for name in re.split(r"[,\s]+", env.get(NODE_ENV_PASS, "").strip()):
        if not name or name in names:
            continue
        if not _ENV_NAME.fullmatch(name):
            raise ClusterError(f"{NODE_ENV_PASS}: {name!r} is not an environment variable name")
        if name in NEVER_PASS or name.startswith(NEVER_PASS_PREFIXES):
            raise ClusterError(
                f"{NODE_ENV_PASS}: {name} is never passed to nodes (the control "
                "plane's settings and tokens, and Ray's address, stay out of jobs)"
            )
        names.append(name)
    return names


def _node_path(caller_path: str | None) -> str:
    """This environment's bin first, then the caller's absolute PATH entries (an empty or
    relative entry would make the shell look in the working directory)."""
    parts = [str(Path(sys.executable).parent)]
    for entry in (caller_path or DEFAULT_PATH).split(os.pathsep):
        if entry.startswith("/") and entry not in parts:
            parts.append(entry)
    return os.pathsep.join(parts)


def node_env(
    cuda_visible_devices: str | None = None,
    environ: Mapping[str, str] | None = None,
    keep_pass_list: bool = False,
) -> dict[str, str]:
    """The environment of a process started for a node (`ray start`, a node agent, the head's
    publisher): an allow-list, never the caller's whole environment.

    It holds PATH (this Python's bin first, so drivers' `python3` is this environment's), the
    caller's NODE_ENV_NAMES and LC_* when set, the names listed in `ARGUS_NODE_ENV_PASS`
    (hardware and network settings an operator passes on purpose: `CUDA_HOME`, `NCCL_*`,
    `LD_LIBRARY_PATH`, proxies), `CUDA_VISIBLE_DEVICES` only when given here, and
    `RAY_USAGE_STATS_ENABLED=0`. Every job on the node can read all of it.

    Args:
        cuda_visible_devices: the node's GPU slice, or None for none set.
        environ: the caller's environment (default `os.environ`).
        keep_pass_list: keep `ARGUS_NODE_ENV_PASS` itself (for a node agent, which applies it
            to its own `ray start`).

    Returns:
        The environment.

    Raises:
        ClusterError: `ARGUS_NODE_ENV_PASS` names a variable that is never passed.
    """
    src = os.environ if environ is None else environ
    extra = pass_list(src)
    env = {"PATH": _node_path(src.get("PATH"))}
    for name, value in src.items():
        if name in NODE_ENV_NAMES or name.startswith(NODE_ENV_PREFIXES) or name in extra:
            env[name] = value
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    if keep_pass_list and extra:
        env[NODE_ENV_PASS] = ",".join(extra)
    return env


NODE_WORKDIR = "argus-node-cwd"


def node_workdir(temp_dir: str | None, name: str) -> Path:
    """An empty working directory of this node's own (0700), made anew for each `ray start`.

    `python -m` puts the working directory first on `sys.path`: started in the caller's, every
    Ray process and job of the node would import whatever lies there (`secrets.py`,
    `mvp_marker.py`) ahead of its own code. It is `<temp dir>/argus-node-cwd/<name>` (Ray's
    default temp dir when `temp_dir` is None); what a job left there is removed at the start.

    Raises:
        ClusterError: `name` is not a plain file name, or the directory cannot be made.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ClusterError(f"node name {name!r} cannot name a working directory")
    base = Path(temp_dir or DEFAULT_RAY_TEMP_DIR) / NODE_WORKDIR
    path = base / name
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(base)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise OSError(f"{base} is not a directory of this user (uid {os.getuid()})")
        os.chmod(base, 0o700)  # a shared /tmp: nobody else may swap what lies below
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise ClusterError(f"cannot make the working directory {path} of node {name}: {exc}") from None
    return path


def spawn(args: list[str], log_path: Path, env: dict[str, str], cwd: Path | str | None = None) -> subprocess.Popen:
    """Start a node process detached (its own session, stdin closed), its output appended to
    `log_path`, with `env`, umask NODE_UMASK and `cwd` (default: this node's `/`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(cwd or "/"),
            umask=NODE_UMASK,
            start_new_session=True,
        )
