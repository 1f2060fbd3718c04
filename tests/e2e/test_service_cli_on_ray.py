"""The service commands of `argus` as a user runs them: the real executable in subprocesses,
against a real `argus server` over the real local Ray cluster, with the CPU stand-in for verl
as the training code. Credentials live in a temporary `ARGUS_CONFIG_DIR`, never in the home.

The last two tests run `argus up` / `argus down` on a cluster and a server of their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from argus.client.sdk import ArgusClient
from argus.cluster import local
from argus.cluster.local import port_free
from argus.spec.redact import redact_spec_text
from argus.testing.cluster import quiesce
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "test-admin-token"
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}
TASK_ID = re.compile(r"mvp2-[a-z0-9_]+-(?:ppo|grpo|sft)-\d{8}-\d{6}-[0-9a-f]{4}")
STEP_LINE = re.compile(r"^step:(\d+) - ", re.MULTILINE)


def _argus_exe() -> str:
    exe = Path(sys.executable).with_name("argus")
    if exe.exists():
        return str(exe)
    found = shutil.which("argus")
    assert found, "the argus executable is not installed next to this Python"
    return found


ARGUS = _argus_exe()


def _env(config_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment without any Argus credentials or admin token of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ARGUS_URL", "ARGUS_TOKEN", "ARGUS_CONFIG_DIR", "MVP_INTERNAL_TOKEN")
    }
    env["COLUMNS"] = "250"
    if config_dir is not None:
        env["ARGUS_CONFIG_DIR"] = str(config_dir)
    env.update(extra)
    return env


class Cli:
    """`argus` as one person runs it: their own config dir, so their own saved login."""

    def __init__(self, config_dir: Path):
        self.config_dir = config_dir
        self.token: str | None = None
        self.setup: dict[str, subprocess.CompletedProcess] = {}

    @property
    def credentials(self) -> Path:
        return self.config_dir / "credentials.json"

    def env(self) -> dict[str, str]:
        return _env(self.config_dir)

    def __call__(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [ARGUS, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"argus {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "--json", check=True).stdout)

    def submit(self, spec: Path) -> str:
        out = self("submit", str(spec), check=True).stdout
        found = TASK_ID.findall(out)
        assert len(found) == 1, out
        return found[0]

    def wait(self, task_id: str, states: set[str], timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        task = self.json("status", task_id)
        while task["state"] not in states and time.monotonic() < deadline:
            time.sleep(0.4)
            task = self.json("status", task_id)
        assert task["state"] in states, f"{task_id} is {task['state']} after {timeout}s, not {states}: {task}"
        return task


def Server(cluster, workdir: Path) -> ServerProcess:
    return ServerProcess(local.config_file(cluster.shared_root), workdir, ADMIN)


@pytest.fixture(scope="module")
def server(ray_cluster, sandbox, tmp_path_factory):
    quiesce(ray_cluster)  # whatever an earlier module left running is stopped first
    srv = Server(ray_cluster, tmp_path_factory.mktemp("cli-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def admin(server, tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("admin-config") / "argus")
    cli.token = ADMIN
    cli.setup["login"] = cli("login", "--url", server.url, "--token", ADMIN, check=True)
    return cli


def _user(name: str, server: ServerProcess, admin: Cli, tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp(f"{name}-config") / "argus")
    cli.setup["create"] = admin("users", "create", name, check=True)
    cli.setup["issue"] = admin("tokens", "issue", name, check=True)
    cli.token = cli.setup["issue"].stdout.strip()
    cli.setup["login"] = cli("login", "--url", server.url, "--token", cli.token, check=True)
    return cli


@pytest.fixture(scope="module")
def alice(server, admin, tmp_path_factory) -> Cli:
    return _user("alice", server, admin, tmp_path_factory)


@pytest.fixture(scope="module")
def bob(server, admin, tmp_path_factory) -> Cli:
    return _user("bob", server, admin, tmp_path_factory)


def _spec(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _oversized(sandbox) -> str:
    """A task no node of the 2 x 4 GPU cluster can ever hold: it waits in PENDING_RESOURCES."""
    return task_yaml(sandbox, "ppo", nnodes=3, n_gpus_per_node=4)


# -- 1. login, identity, users, tokens ---------------------------------------------------------
def test_login_saves_credentials_and_admin_manages_users_and_tokens(server, admin, alice, tmp_path):
    login = admin.setup["login"]
    assert f"logged in to {server.url} as admin (admin)" in login.stdout
    assert f"credentials saved to {admin.credentials}" in login.stdout
    assert stat.S_IMODE(admin.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(admin.config_dir.stat().st_mode) == 0o700
    assert json.loads(admin.credentials.read_text()) == {"url": server.url, "token": ADMIN}

    assert admin.json("me") == {"user_id": "admin", "is_admin": True}
    assert admin("me", check=True).stdout.strip() == f"admin (admin) at {server.url}"

    assert "created user alice (ACTIVE)" in alice.setup["create"].stdout
    users = admin.json("users", "list")["users"]
    assert {"alice": "ACTIVE"}.items() <= {u["user_id"]: u["state"] for u in users}.items()
    table = admin("users", "list", check=True).stdout
    assert re.search(r"alice\s.*ACTIVE", table), table

    issued = alice.setup["issue"]
    assert re.fullmatch(r"argus_[A-Za-z0-9_-]{40,}\n", issued.stdout), issued.stdout  # the token, alone on stdout
    assert "token for alice (shown once" in issued.stderr
    assert f"logged in to {server.url} as alice\n" in alice.setup["login"].stdout
    assert alice.json("me") == {"user_id": "alice", "is_admin": False}
    assert json.loads(alice.credentials.read_text())["token"] == alice.token

    # A wrong token: refused with the service's reason, whether given on the command line or saved.
    wrong = admin("me", "--token", "argus_not-a-real-token")
    assert wrong.returncode == 1
    assert "error: invalid token, or its user is disabled (401 unauthorized)" in wrong.stderr
    assert wrong.stdout == ""
    stranger = Cli(tmp_path / "stranger")
    refused = stranger("login", "--url", server.url, "--token", "argus_not-a-real-token")
    assert refused.returncode == 1 and "401 unauthorized" in refused.stderr
    assert not stranger.credentials.exists()  # nothing saved for a token the service refused
    nobody = stranger("me")
    assert nobody.returncode == 2 and "argus login --url URL --token TOKEN" in nobody.stderr

    # A user is not an admin.
    denied = alice("users", "list")
    assert denied.returncode == 1 and "403 forbidden" in denied.stderr


# -- 2. a user's tasks --------------------------------------------------------------------------
def test_submit_then_tasks_status_attempts_and_logs_of_a_finished_task(alice, sandbox, tmp_path):
    spec = _spec(tmp_path, "ppo.yaml", task_yaml(sandbox, "ppo"))
    out = alice("submit", str(spec), check=True).stdout
    tid = TASK_ID.search(out).group(0)
    assert tid.startswith("mvp2-alice-ppo-")
    assert out.strip() == f"submitted {tid} (QUEUED)"

    table = alice("tasks", check=True).stdout
    row = next((line for line in table.splitlines() if tid in line), None)
    assert row is not None, table
    assert re.search(rf"{tid}\s.*alice\s.*ppo\s", row), row
    listed = alice.json("tasks")
    assert set(listed) == {"tasks", "next_cursor"}
    mine = [t for t in listed["tasks"] if t["task_id"] == tid]
    assert len(mine) == 1 and mine[0]["user_id"] == "alice" and mine[0]["workload"] == "ppo"
    assert mine[0]["desired_resources"]["total_gpus"] == 2

    task = alice.wait(tid, FINAL)
    assert task["state"] == "SUCCEEDED", alice("logs", tid, "--tail", "40").stdout
    sid = f"{tid}--a01"
    assert task["latest_attempt"]["ray_submission_id"] == sid
    assert task["jobspec_yaml"] == redact_spec_text(spec.read_text())  # env_vars values hidden
    shown = alice("status", tid, check=True).stdout
    assert re.search(r"state\s+SUCCEEDED", shown) and f"#1 {sid} SUCCEEDED" in shown, shown

    attempts = alice.json("attempts", tid)
    assert attempts["task_id"] == tid
    assert [(a["attempt_no"], a["ray_submission_id"], a["ray_status"]) for a in attempts["attempts"]] == [
        (1, sid, "SUCCEEDED")
    ]
    assert sid in alice("attempts", tid, check=True).stdout

    logs = alice("logs", tid, check=True).stdout
    assert "MARKER sim-a" in logs
    assert "verl-sim: training finished after 4 steps" in logs
    assert [int(n) for n in STEP_LINE.findall(logs)] == [1, 2, 3, 4]
    last = alice("logs", tid, "--tail", "1", check=True).stdout
    assert len(last.splitlines()) == 1, last
    assert last.strip() == "verl-sim: training finished after 4 steps"
    first = alice("logs", tid, "--attempt", "1", check=True).stdout
    assert "MARKER sim-a" in first and [int(n) for n in STEP_LINE.findall(first)] == [1, 2, 3, 4]


def test_logs_follow_streams_a_running_task_until_it_ends(alice, sandbox, tmp_path):
    spec = _spec(
        tmp_path,
        "slow.yaml",
        task_yaml(sandbox, "ppo", total_training_steps=6, save_freq=6, env_vars={"VERL_SIM_STEP_SECONDS": "0.5"}),
    )
    tid = alice.submit(spec)
    alice.wait(tid, {"RUNNING"} | FINAL)

    queue = alice.json("queue")
    assert set(queue) == {"pools", "pools_error", "pending", "running"}
    # The session cluster's two workers have no pool label: both count under "-".
    assert list(queue["pools"]) == ["-"] and queue["pools"]["-"]["nodes"] == 2
    assert queue["pools"]["-"]["gpus_total"] == 8 and queue["pools_error"] is None
    running = [t for t in queue["running"] if t["task_id"] == tid]
    assert running == [
        {
            "task_id": tid,
            "user_id": "alice",
            "state": "RUNNING",
            "pool": None,
            "ray_submission_id": f"{tid}--a01",
        }
    ], queue
    assert all(t["task_id"] != tid for t in queue["pending"])

    proc = subprocess.Popen(
        [ARGUS, "logs", tid, "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=alice.env(),
        stdin=subprocess.DEVNULL,
    )
    lines: list[tuple[float, str]] = []
    state_at_first_line: list[str] = []
    client = ArgusClient(json.loads(alice.credentials.read_text())["url"], alice.token)

    def read() -> None:
        for line in proc.stdout:
            if not lines:
                state_at_first_line.append(client.task(tid)["state"])
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic()
    reader.join(timeout=10)
    client.close()
    assert rc == 0, proc.stderr.read()
    text = "".join(line for _, line in lines)
    # Every step once, in order, and the snapshot's marker: nothing lost or repeated when the
    # live log is replaced by its archive.
    assert [int(n) for n in STEP_LINE.findall(text)] == [1, 2, 3, 4, 5, 6], text
    assert text.count("MARKER sim-a") == 1, text
    assert "verl-sim: training finished after 6 steps" in text
    # It streamed: output came while the task was still going, well before the command ended.
    assert state_at_first_line and state_at_first_line[0] not in FINAL, state_at_first_line
    assert ended - lines[0][0] >= 1.0
    assert alice.json("status", tid)["state"] == "SUCCEEDED"


def test_cancel_a_waiting_and_a_running_task(alice, sandbox, tmp_path):
    waiting = alice.submit(_spec(tmp_path, "big.yaml", _oversized(sandbox)))
    running = alice.submit(
        _spec(
            tmp_path,
            "long.yaml",
            task_yaml(
                sandbox,
                "ppo",
                total_training_steps=40,
                save_freq=-1,
                env_vars={"VERL_SIM_STEP_SECONDS": "0.5"},
            ),
        )
    )

    task = alice.wait(waiting, {"PENDING_RESOURCES"}, timeout=30)
    assert "needs 3 node(s) x 4 GPU(s)" in task["pending_reason"]
    queue = alice.json("queue")
    assert [t for t in queue["pending"] if t["task_id"] == waiting][0]["state"] == "PENDING_RESOURCES"
    assert alice("cancel", waiting, check=True).stdout.strip() == f"{waiting}: CANCELED"
    assert alice.json("status", waiting)["state"] == "CANCELED"
    assert alice("attempts", waiting, check=True).stdout.strip() == f"{waiting} has no attempts yet"

    alice.wait(running, {"RUNNING"})
    assert alice.json("cancel", running) == {"task_id": running, "state": "CANCELED"}
    assert alice.json("status", running)["state"] == "CANCELED"
    queue = alice.json("queue")
    assert all(t["task_id"] not in (waiting, running) for t in queue["pending"] + queue["running"])

    for tid in (waiting, running):
        again = alice("cancel", tid)
        assert again.returncode == 1, again.stdout
        assert f"task {tid} already ended (CANCELED) (409 conflict)" in again.stderr


# -- 3. bad input and other users' tasks ----------------------------------------------------------
def test_bad_specs_exit_2_naming_the_field_and_store_nothing(alice, sandbox, tmp_path):
    before = [t["task_id"] for t in alice.json("tasks", "--limit", "500")["tasks"]]

    typo = alice("submit", str(_spec(tmp_path, "typo.yaml", task_yaml(sandbox, "ppo", n_gpu_per_node=2))))
    assert typo.returncode == 2, typo.stdout
    assert "n_gpu_per_node: unknown key; did you mean 'n_gpus_per_node'?" in typo.stderr
    assert "(400 bad_request)" in typo.stderr

    outside = alice("submit", str(_spec(tmp_path, "passwd.yaml", task_yaml(sandbox, "ppo", train_file="/etc/passwd"))))
    assert outside.returncode == 2, outside.stdout
    assert re.search(r"^\s+- train_file: .+", outside.stderr, re.MULTILINE), outside.stderr

    missing = alice("submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: no such file" in missing.stderr

    assert [t["task_id"] for t in alice.json("tasks", "--limit", "500")["tasks"]] == before  # nothing stored


def test_a_user_cannot_see_or_cancel_another_users_task(alice, bob, sandbox, tmp_path):
    tid = alice.submit(_spec(tmp_path, "big.yaml", _oversized(sandbox)))
    try:
        for args in (("status", tid), ("attempts", tid), ("logs", tid), ("cancel", tid)):
            proc = bob(*args)
            assert proc.returncode == 1, (args, proc.stdout)
            assert f"no task {tid} (404 not_found)" in proc.stderr, (args, proc.stderr)
        assert all(t["user_id"] == "bob" for t in bob.json("tasks")["tasks"])
        queue = bob.json("queue")
        assert all(t["task_id"] != tid for t in queue["pending"] + queue["running"])
        assert alice.json("status", tid)["state"] not in FINAL  # bob's cancel did nothing
    finally:
        alice("cancel", tid)
    assert alice.json("status", tid)["state"] == "CANCELED"


# -- 4. argus up / argus down -------------------------------------------------------------------
def _free(start: int, avoid: set[int]) -> int:
    port = start
    while port in avoid or not port_free(port):
        port += 1
    avoid.add(port)
    return port


def _healthz(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


class Launch:
    """`argus up` / `argus down` on a shared root and free ports of their own (never the defaults
    6380/8265/8080 nor the session cluster's), 1 worker x 2 GPUs."""

    def __init__(self, workdir: Path, start: int, **env: str):
        self.root = workdir / "shared"
        avoid = {6380, 8265, 8080}
        self.gcs = _free(6700 + start, avoid)
        self.dash = _free(8700 + start, avoid)
        self.port = _free(18680 + start, avoid)
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = self.root / "common" / "run"
        self.env = _env(workdir / "config", **env)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [ARGUS, *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def up(self) -> subprocess.CompletedProcess:
        proc = self(
            "up",
            "--shared-root",
            str(self.root),
            "--port",
            str(self.port),
            "--gcs-port",
            str(self.gcs),
            "--dashboard-port",
            str(self.dash),
            "--workers",
            "1",
            "--gpus-per-worker",
            "2",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def down(self) -> subprocess.CompletedProcess:
        return self("down", "--shared-root", str(self.root))

    def server_pid(self) -> int | None:
        try:
            return int(json.loads((self.run_dir / "server.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None


@pytest.fixture
def launch(tmp_path):
    """Makes `Launch`es; whatever the test did, each one is brought down afterwards."""
    made: list[Launch] = []

    def make(**env: str) -> Launch:
        made.append(Launch(tmp_path / f"launch{len(made)}", 20 * len(made), **env))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            pid = one.server_pid()
            one.down()
            if pid is not None and local.pid_alive(pid):  # `down` failed to stop it: do not leave it behind
                os.kill(pid, signal.SIGKILL)


def _started(launch: Launch, proc: subprocess.CompletedProcess) -> tuple[int, str]:
    """The pid and the admin token that `argus up` printed for a server it started now."""
    m = re.search(rf"^server started: {re.escape(launch.url)}  \(pid (\d+), log (\S+)\)$", proc.stdout, re.MULTILINE)
    assert m, proc.stdout
    assert Path(m.group(2)) == launch.root.resolve() / "common" / "logs" / "server.log"
    token = re.search(r"^admin token: (\S+)$", proc.stdout, re.MULTILINE)
    assert token, proc.stdout
    assert f"argus down --shared-root {launch.root}" in proc.stdout
    return int(m.group(1)), token.group(1)


def _is_admin(launch: Launch, token: str) -> bool:
    proc = launch("me", "--url", launch.url, "--token", token, "--json")
    return proc.returncode == 0 and json.loads(proc.stdout) == {"user_id": "admin", "is_admin": True}


def test_up_and_down_start_and_stop_a_cluster_and_a_server_of_their_own(launch):
    one = launch()  # no MVP_INTERNAL_TOKEN: `up` makes a token and keeps it
    first = one.up()
    pid, token = _started(one, first)
    dashboard = re.search(r"^Ray dashboard / job server: (\S+)$", first.stdout, re.MULTILINE).group(1)
    assert re.fullmatch(rf"http://127\.0\.\d+\.1:{one.dash}", dashboard), dashboard
    saved = one.run_dir / "admin_token"
    assert token.startswith("argus_admin_") and saved.read_text().strip() == token
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert one.server_pid() == pid

    health = _healthz(one.url)
    assert health and health["status"] == "ok" and health["db"] == "ok", health
    assert _is_admin(one, token)
    cluster = local.status(one.root)
    assert cluster is not None and cluster.healthy
    assert [n.gpus for n in cluster.state.nodes] == [0, 2]
    assert (cluster.state.gcs_port, cluster.state.dashboard_url) == (one.gcs, dashboard)

    again = one.up()
    assert f"server already running: {one.url}  (pid {pid}," in again.stdout
    assert f"admin token: {token}\n" in again.stdout  # the saved token, not a new one
    assert saved.read_text().strip() == token
    assert local.status(one.root).state.started_at == cluster.state.started_at  # the same cluster
    # Another token in the environment does not change which token the running server takes.
    one.env["MVP_INTERNAL_TOKEN"] = "some-other-token"
    other = one.up()
    assert f"admin token: {token}\n" in other.stdout and "some-other-token" not in other.stdout
    saved.unlink()
    unknown = one.up()
    assert "admin token: the one the running server was started with" in unknown.stdout
    assert "some-other-token" not in unknown.stdout and not saved.exists()  # nothing new made
    del one.env["MVP_INTERNAL_TOKEN"]

    down = one.down()
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.splitlines() == ["server stopped", "cluster stopped"]
    assert not local.pid_alive(pid)
    assert one.server_pid() is None
    assert local.status(one.root) is None
    assert _healthz(one.url) is None
    assert not [p.pid for p in local._by_temp_dir(cluster.state.temp_dir) if local.pid_alive(p.pid)]

    twice = one.down()
    assert twice.returncode == 0
    assert twice.stdout.splitlines() == ["no server was running", "no local cluster was running"]


def test_up_takes_the_admin_token_from_the_environment(launch):
    one = launch(MVP_INTERNAL_TOKEN="env-admin-token")
    pid, token = _started(one, one.up())
    assert token == "env-admin-token"
    assert not (one.run_dir / "admin_token").exists()  # nothing generated, nothing saved
    assert _is_admin(one, "env-admin-token")
    down = one.down()
    assert down.stdout.splitlines() == ["server stopped", "cluster stopped"]
    assert not local.pid_alive(pid) and local.status(one.root) is None
