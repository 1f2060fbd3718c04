"""`argus up` / `argus down`: the local cluster and the server, in the background, on one machine.

Owns the server's run files under `<shared_root>/common/run/`:

    server.yaml     the config the server was started with (ray section from the local cluster)
    server.json     pid, URL and log path of the running server
    admin_token     the admin token (mode 0600) when MVP_INTERNAL_TOKEN was not set

and its log at `<shared_root>/common/logs/server.log`. `up` is idempotent: a server that answers
`/healthz` is left running, and the admin token shown for it is the one it was started with
(recognised by its SHA-256 in server.json), or none when that token is not known here. `down` stops the server (SIGTERM, then SIGKILL) and then the cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from argus.cluster import local
from argus.cluster.errors import ClusterError, PortInUse
from argus.service.settings import dump_settings, parse_settings
from argus.spec.loader import load_yaml_mapping

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerInfo:
    url: str
    pid: int
    admin_token: str | None  # None: a running server was started with a token not known here
    config: Path
    log: Path
    started_now: bool
    dashboard_url: str


def run_dir(shared_root: str | Path) -> Path:
    return Path(shared_root) / "common" / "run"


def server_log(shared_root: str | Path) -> Path:
    return Path(shared_root) / "common" / "logs" / "server.log"


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def known_tokens(shared_root: str | Path, token_env: str = "MVP_INTERNAL_TOKEN") -> list[str]:
    """The environment's admin token and the saved one, in that order (those that exist)."""
    found = [os.environ.get(token_env) or ""]
    path = run_dir(shared_root) / "admin_token"
    if path.exists():
        found.append(path.read_text().strip())
    return [t for t in found if t]


def admin_token(shared_root: str | Path, token_env: str = "MVP_INTERNAL_TOKEN") -> str:
    """The environment's admin token, else the one saved under run/, else a new saved one."""
    known = known_tokens(shared_root, token_env)
    if known:
        return known[0]
    path = run_dir(shared_root) / "admin_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "argus_admin_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _pid_alive(pid: int) -> bool:
    return local.pid_alive(pid)


def up(shared_root: str, workers: int = 2, gpus_per_worker: int = 4, port: int = 8080,
       host: str = "127.0.0.1", gcs_port: int = local.DEFAULT_GCS_PORT,
       dashboard_port: int = local.DEFAULT_DASHBOARD_PORT) -> ServerInfo:
    """Start (or find) the local cluster and the server.

    Raises:
        PortInUse: the server port is taken by something that is not this server.
        ClusterError: the cluster or the server failed to start (the log tail is in the message).
    """
    shared_root = str(Path(shared_root).resolve())
    state, _ = local.up(shared_root, workers, gpus_per_worker, gcs_port=gcs_port,
                        dashboard_port=dashboard_port)
    rdir = run_dir(shared_root)
    info_path = rdir / "server.json"
    info = _read_json(info_path)
    if info and _pid_alive(info.get("pid", 0)) and healthy(info["url"]):
        # Name the token the running server was started with, never one it would refuse.
        token = next((t for t in known_tokens(shared_root) if _sha(t) == info.get("token_sha256")), None)
        return ServerInfo(info["url"], info["pid"], token, Path(info["config"]), Path(info["log"]),
                          False, state.dashboard_url)
    token = admin_token(shared_root)
    if not local.port_free(port, host):
        raise PortInUse(f"port {port} is taken; pick another with --port")
    ray = load_yaml_mapping(local.config_file(shared_root).read_text(), "ray config")
    settings = parse_settings({"ray": ray, "service": {"host": host, "port": port}},
                              "server config", environ={})
    rdir.mkdir(parents=True, exist_ok=True)
    config = rdir / "server.yaml"
    config.write_text(dump_settings(settings))
    log_path = server_log(shared_root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, settings.service.admin_token_env: token, "ARGUS_SHARED_ROOT": shared_root}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "argus.client.cli", "server", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if healthy(url):
            info_path.write_text(json.dumps({"pid": proc.pid, "url": url, "config": str(config),
                                             "log": str(log_path), "token_sha256": _sha(token)},
                                            indent=2) + "\n")
            return ServerInfo(url, proc.pid, token, config, log_path, True, state.dashboard_url)
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    raise ClusterError(f"the server did not start; the end of {log_path}:\n{tail}")


def stop_server(shared_root: str | Path, grace_s: float = 15.0) -> bool:
    """Stop the recorded server; False when none was running."""
    info_path = run_dir(Path(shared_root).resolve()) / "server.json"
    info = _read_json(info_path)
    if not info:
        return False
    pid = int(info.get("pid", 0))
    stopped = False
    if pid and _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    info_path.unlink(missing_ok=True)
    return stopped


def down(shared_root: str | Path) -> tuple[bool, bool]:
    """Stop the server, then the cluster; returns (server_stopped, cluster_stopped)."""
    server = stop_server(shared_root)
    cluster = local.down(Path(shared_root).resolve())
    return server, cluster


def recorded_server(shared_root: str | Path) -> dict | None:
    """The running server's record, if its process lives."""
    info = _read_json(run_dir(Path(shared_root).resolve()) / "server.json")
    if info and _pid_alive(int(info.get("pid", 0))):
        return info
    return None
