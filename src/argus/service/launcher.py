"""`argus up` / `argus down`: the local cluster and the server, in the background, on one machine.

Owns the server's run files under `<shared_root>/common/run/`:

    server.yaml     the config the server was started with (ray section from the local cluster)
    server.json     pid, URL and log path of the running server (nothing of the admin token)
    admin_token     the admin token (mode 0600) when MVP_INTERNAL_TOKEN was not set
    secrets_key     the key users' secrets are encrypted with (mode 0600) when ARGUS_SECRETS_KEY
                    was not set; handed to the server in its environment, never printed

and its log at `<shared_root>/common/logs/server.log`. The run and log directories are 0750 and
the files 0640 (the token and the key 0600), whatever the caller's umask. `up` is idempotent: a server that
answers `/healthz` is left running, and the admin token shown for it is the one it was started
with: the first of $MVP_INTERNAL_TOKEN and the saved token that the server itself accepts as
the admin's (asked over `/api/v2/me`), or none when neither is. No file holds the token but
`admin_token`, not even hashed, and none the secrets key but `secrets_key` (made once, then
reused, so what was stored under it stays readable). `down` stops the server (SIGTERM, then
SIGKILL) and then the cluster.
"""

from __future__ import annotations

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
from typing import NoReturn

from argus.cluster import local
from argus.cluster.errors import ClusterError, PortInUse
from argus.cluster.jobs import make_private_dirs, write_private
from argus.settings import ArgusSettings, dump_settings, parse_settings
from argus.spec.loader import load_yaml_mapping

START_TIMEOUT_S = 60.0
# How long `up` waits for the server's first scheduler pass to say whether Ray answers.
RAY_WAIT_S = 30.0


@dataclass(frozen=True)
class ServerInfo:
    url: str
    pid: int
    admin_token: str | None  # None: a running server was started with a token not known here
    config: Path
    log: Path
    started_now: bool
    dashboard_url: str
    degraded: str | None = None  # why the server reports itself degraded (Ray unreachable)


def run_dir(shared_root: str | Path) -> Path:
    return Path(shared_root) / "common" / "run"


def server_log(shared_root: str | Path) -> Path:
    return Path(shared_root) / "common" / "logs" / "server.log"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a server answers `/healthz` at `url` with 200 (alive, even if degraded)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ray_verdict(url: str, wait_s: float = RAY_WAIT_S, timeout: float = 2.0) -> str | None:
    """Wait (at most `wait_s`) for the server's scheduler to have reached Ray once, as its
    `/healthz` tells; the server itself never blocks on Ray to answer.

    Returns:
        None when Ray answered (or the server does not say); else why the server is degraded:
        `Ray is unreachable: ...`, or that no scheduler pass has reached Ray yet.
    """
    deadline = time.monotonic() + wait_s
    ray = "unknown"
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as resp:
                ray = str(json.loads(resp.read()).get("ray") or "ok")
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            pass
        if not ray.startswith("unknown") or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if ray.startswith("unreachable"):
        return f"Ray is {ray}"
    if ray.startswith("unknown: the scheduler process"):
        return ray.removeprefix("unknown: ")
    if ray.startswith("unknown"):
        return f"no scheduler pass reached Ray within {wait_s:g} s"
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def accepts_as_admin(url: str, token: str, timeout: float = 3.0) -> bool:
    """Whether the server at `url` takes `token` as the admin's (`GET /api/v2/me`)."""
    req = urllib.request.Request(f"{url}/api/v2/me", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200 and json.loads(resp.read()).get("is_admin") is True
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False


def known_tokens(shared_root: str | Path, token_env: str = "MVP_INTERNAL_TOKEN") -> list[str]:
    """The environment's admin token and the saved one, in that order (those that exist)."""
    found = [os.environ.get(token_env) or ""]
    path = run_dir(shared_root) / "admin_token"
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # an older or careless copy: the owner's only
        found.append(path.read_text().strip())
    return [t for t in found if t]


def admin_token(shared_root: str | Path, token_env: str = "MVP_INTERNAL_TOKEN") -> str:
    """The environment's admin token, else the one saved under run/, else a new saved one."""
    known = known_tokens(shared_root, token_env)
    if known:
        return known[0]
    path = run_dir(shared_root) / "admin_token"
    make_private_dirs(path.parent)
    token = "argus_admin_" + secrets.token_urlsafe(32)
    write_private(path, token + "\n", 0o600)
    return token


def load_or_create_key(path: Path) -> str:
    """The Fernet key saved at `path` (made 0600 if it was not), else a new one saved there (0600)."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        key = path.read_text().strip()
        if key:
            return key
    from cryptography.fernet import Fernet

    make_private_dirs(path.parent)
    key = Fernet.generate_key().decode("ascii")
    write_private(path, key + "\n", 0o600)
    return key


def secrets_key(shared_root: str | Path, key_env: str = "ARGUS_SECRETS_KEY") -> str:
    """The environment's secrets key, else the one saved under run/, else a new saved one."""
    return os.environ.get(key_env) or load_or_create_key(run_dir(shared_root) / "secrets_key")


def _pid_alive(pid: int) -> bool:
    return local.pid_alive(pid)


def server_command(config: str | Path) -> list[str]:
    """The `argus server` command line: this Python in safe-path mode (`-P`), so that neither
    the caller's working directory nor the script's enters `sys.path` ahead of the installed
    packages (a `secrets.py` there would otherwise replace Python's own in the server)."""
    return [sys.executable, "-P", "-m", "argus.client.cli", "server", "--config", str(config)]


def up(
    shared_root: str,
    workers: int = 2,
    gpus_per_worker: int = 4,
    port: int = 8080,
    host: str = "127.0.0.1",
    gcs_port: int = local.DEFAULT_GCS_PORT,
    dashboard_port: int = local.DEFAULT_DASHBOARD_PORT,
) -> ServerInfo:
    """Start (or find) the local cluster and the server.

    Once the server answers, waits (at most RAY_WAIT_S) for its scheduler's first verdict on
    Ray; when Ray is unreachable the server is left running (it follows Ray when it comes
    back) and `ServerInfo.degraded` says why, for the caller to report and fail on.

    Raises:
        PortInUse: the server port is taken by something that is not this server.
        ClusterError: the cluster or the server failed to start (the log tail is in the message).
    """
    shared_root = str(Path(shared_root).resolve())
    state, _ = local.up(shared_root, workers, gpus_per_worker, gcs_port=gcs_port, dashboard_port=dashboard_port)
    running = _running_server(shared_root, state.dashboard_url)
    if running is not None:
        return running
    token = admin_token(shared_root)
    key = secrets_key(shared_root)
    if not local.port_free(port, host):
        raise PortInUse(f"port {port} is taken; pick another with --port")
    config, settings = _write_server_config(shared_root, host, port)
    log_path = _prepare_server_log(shared_root)
    proc = _start_server(shared_root, settings, token, key, config, log_path)
    url = f"http://{host}:{port}"
    if _wait_healthy(proc, url):
        _record_server(shared_root, proc.pid, url, config, log_path)
        return ServerInfo(url, proc.pid, token, config, log_path, True, state.dashboard_url, ray_verdict(url))
    _fail_start(proc, log_path)


def _running_server(shared_root: str, dashboard_url: str) -> ServerInfo | None:
    """The recorded server when its process lives and it answers, else None."""
    info_path = run_dir(shared_root) / "server.json"
    info = _read_json(info_path)
    if not (info and _pid_alive(info.get("pid", 0)) and healthy(info["url"])):
        return None
    # Name the token the running server was started with, never one it would refuse.
    token = next((t for t in known_tokens(shared_root) if accepts_as_admin(info["url"], t)), None)
    if "token_sha256" in info:  # written by an older `up`: the hash goes
        write_private(info_path, json.dumps({k: v for k, v in info.items() if k != "token_sha256"}, indent=2) + "\n")
    return ServerInfo(
        info["url"],
        info["pid"],
        token,
        Path(info["config"]),
        Path(info["log"]),
        False,
        dashboard_url,
        ray_verdict(info["url"]),
    )


def _write_server_config(shared_root: str, host: str, port: int) -> tuple[Path, ArgusSettings]:
    """Write run/server.yaml: the local cluster's ray section and this host and port."""
    ray = load_yaml_mapping(local.config_file(shared_root).read_text(), "ray config")
    settings = parse_settings({"ray": ray, "service": {"host": host, "port": port}}, "server config", environ={})
    rdir = run_dir(shared_root)
    make_private_dirs(rdir)
    config = rdir / "server.yaml"
    write_private(config, dump_settings(settings))
    return config, settings


def _prepare_server_log(shared_root: str) -> Path:
    """The server's log file, created if missing, mode 0640."""
    log_path = server_log(shared_root)
    make_private_dirs(log_path.parent)
    if not log_path.exists():
        write_private(log_path, "")
    os.chmod(log_path, 0o640)
    return log_path


def _start_server(
    shared_root: str, settings: ArgusSettings, token: str, key: str, config: Path, log_path: Path
) -> subprocess.Popen:
    """Start `argus server` in a session of its own, its output appended to `log_path`; the
    admin token and the secrets key go in its environment only."""
    env = {
        **os.environ,
        settings.service.admin_token_env: token,
        settings.service.secrets_key_env: key,
        "ARGUS_SHARED_ROOT": shared_root,
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            server_command(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=run_dir(shared_root),
            start_new_session=True,
        )


def _wait_healthy(proc: subprocess.Popen, url: str) -> bool:
    """Whether the server answers at `url` within START_TIMEOUT_S (False once it has exited)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if healthy(url):
            return True
        time.sleep(0.2)
    return False


def _record_server(shared_root: str, pid: int, url: str, config: Path, log_path: Path) -> None:
    """Write run/server.json: the server's pid, URL, config and log (nothing of its token)."""
    write_private(
        run_dir(shared_root) / "server.json",
        json.dumps({"pid": pid, "url": url, "config": str(config), "log": str(log_path)}, indent=2) + "\n",
    )


def _fail_start(proc: subprocess.Popen, log_path: Path) -> NoReturn:
    """Kill the server if it still runs; raise ClusterError with the end of its log."""
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
