"""A real `argus server` process for tests and benchmarks, over a database that outlives it.

`ServerProcess(ray_config_path, workdir, admin_token, **scheduler)` writes a server config (the
cluster's RayConfig as its `ray` section, SQLite under `workdir` unless `db_url` is given), then
`start()` runs `argus server` as `argus up` does (`launcher.server_command`, the admin token and
the secrets key in its environment: `$ARGUS_SECRETS_KEY`, else `<workdir>/secrets_key`, made once
so a restarted server still reads what it stored) and waits for `/healthz`;
`kill()` is SIGKILL
(a crash), `stop()` a clean stop. `until` and `run_dir_of` serve the tests of the server's
scheduler process (`argus.service.scheduler_process`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import yaml

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.cluster.local import port_free
from argus.service.launcher import load_or_create_key, server_command

SECRETS_KEY_ENV = "ARGUS_SECRETS_KEY"
T = TypeVar("T")


def free_port(start: int) -> int:
    while not port_free(start):
        start += 1
    return start


class ServerProcess:
    def __init__(
        self,
        ray_config_path: str | Path,
        workdir: Path,
        admin_token: str,
        db_url: str | None = None,
        port: int | None = None,
        cwd: Path | None = None,
        **scheduler,
    ):
        self.workdir = workdir
        self.cwd = cwd
        self.admin_token = admin_token
        self.port = port or free_port(18480)
        self.url = f"http://127.0.0.1:{self.port}"
        ray = yaml.safe_load(Path(ray_config_path).read_text())
        self.config = workdir / "server.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "ray": ray,
                    "service": {"port": self.port, "db_url": db_url or f"sqlite:///{workdir}/argus.sqlite3"},
                    "scheduler": {"interval_s": 0.5, "retry_interval_s": 2, **scheduler},
                }
            )
        )
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        key = os.environ.get(SECRETS_KEY_ENV) or load_or_create_key(self.workdir / "secrets_key")
        env = {**os.environ, "MVP_INTERNAL_TOKEN": self.admin_token, SECRETS_KEY_ENV: key}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                server_command(self.config),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
            )
        admin = ArgusClient(self.url, self.admin_token, timeout=5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                admin.health()
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not answer in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def user_client(url: str, admin_token: str, user: str) -> ArgusClient:
    """A client for `user` (created if new) with a fresh token issued by the admin."""
    admin = ArgusClient(url, admin_token)
    try:
        admin.create_user(user)
    except ArgusAPIError as exc:
        assert exc.status == 409
    return ArgusClient(url, admin.issue_token(user)["token"])


def wait_state(client: ArgusClient, tid: str, states: set[str], timeout: float = 120) -> dict:
    """Poll the task until its state is one of `states`; fail with the task after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.task(tid)
        if task["state"] in states or time.monotonic() > deadline:
            assert task["state"] in states, f"{tid} is {task['state']} after {timeout}s, not {states}: {task}"
            return task
        time.sleep(0.3)


def until(what: str, pred: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll `pred` until it returns something true, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run_dir_of(pid: int) -> Path:
    """The run directory on a scheduler process's command line."""
    args = psutil.Process(pid).cmdline()
    return Path(args[args.index("--run-dir") + 1])
