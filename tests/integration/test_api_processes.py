"""A real `argus server` with `service.api_processes: 2` over SQLite, against a Ray address nobody
answers (`argus.service.api_processes`): both processes serve, and what they share is one state.

Every call that must be able to land on either process goes over a new connection (`call`), so
the kernel hands it to whichever process accepts first. Which one answered is read from the
request metrics: the child API process writes its own to `requests-<pid>.json` in its run
directory every second, and the primary's `/metrics` is the sum of both.

One server serves the module (its per-user submission rate is tiny, its burst 5: every user
submits at most 5 tasks, bar the rate-limit test's); the tests that kill and stop it come last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from argus.cluster.procs import pid_alive
from argus.service.launcher import server_command
from argus.testing.sandbox import Sandbox, prepare, task_yaml
from argus.testing.server import ServerProcess, free_port, run_dir_of, until

ADMIN = "admin-token-for-the-api-processes"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
YAML = {"Content-Type": "application/yaml"}
BURST = 5
TASKS = "/api/v2/tasks"
API_MODULE = "argus.service.api_processes"
SCHEDULER_MODULE = "argus.service.scheduler_process"


def _dead_ray_config(tmp_path: Path) -> Path:
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump({"address": "http://127.0.0.1:9", "shared_root": str(tmp_path / "shared")}))
    return path


def _with_service(server: ServerProcess, **service: object) -> None:
    """Add `service` keys to the config `ServerProcess` wrote."""
    config = yaml.safe_load(server.config.read_text())
    config["service"].update(service)
    server.config.write_text(yaml.safe_dump(config))


def children_running(server_pid: int, module: str) -> list[psutil.Process]:
    """The server's children whose command line runs `module`."""
    out = []
    for proc in psutil.Process(server_pid).children():
        try:
            if module in proc.cmdline():
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


@dataclass
class Running:
    server: ServerProcess
    sandbox: Sandbox
    serial: list[int]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def child(self) -> psutil.Process:
        """The one child API process (waits for it, e.g. while it is being started again)."""
        return until("one child API process", lambda: (c := children_running(self.pid, API_MODULE)) and c, 15)[0]

    def child_file(self) -> Path:
        child = self.child()
        return run_dir_of(child.pid) / f"requests-{child.pid}.json"

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, **kw) -> httpx.Response:
        """One request on a connection of its own."""
        with httpx.Client(base_url=self.url, timeout=30, follow_redirects=False) as client:
            return client.request(method, path, headers={"Connection": "close", **(headers or {})}, **kw)

    def many(
        self, n: int, method: str, path: str, headers: dict[str, str] | None = None, at_once: int = 1, **kw
    ) -> list[httpx.Response]:
        """`n` calls, `at_once` at a time, each on a connection of its own (answers in order).
        One at a time spreads them best: under load the child API process takes most."""
        with ThreadPoolExecutor(at_once) as pool:
            return list(pool.map(lambda _: self.call(method, path, headers, **kw), range(n)))

    def new_user(self, prefix: str = "u") -> tuple[str, dict[str, str]]:
        self.serial[0] += 1
        user = f"{prefix}_{self.serial[0]}"
        r = self.call("POST", "/api/v2/users", ADMIN_H, json={"user_id": user})
        assert r.status_code == 201, r.text
        r = self.call("POST", f"/api/v2/users/{user}/tokens", ADMIN_H)
        assert r.status_code == 201, r.text
        return user, {"Authorization": f"Bearer {r.json()['token']}"}

    def spec(self) -> str:
        return task_yaml(self.sandbox, "ppo")

    def metrics_text(self) -> str:
        r = self.call("GET", "/metrics", ADMIN_H)
        assert r.status_code == 200, r.text
        return r.text


def requests_total(text: str, route: str, method: str, code: int) -> float:
    """`argus_api_requests_total` for these labels in an exposition (0 when absent)."""
    want = {"route": route, "method": method, "code": str(code)}
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("argus_api_requests_total{"):
            continue
        labels_text, value = line[len("argus_api_requests_total{") :].rsplit("} ", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
        if labels == want:
            total += float(value)
    return total


def file_total(path: Path, route: str, method: str, code: int) -> float:
    """The same count in a `requests-<pid>.json` (0 when the file or the sample is absent)."""
    try:
        families = json.loads(path.read_text())
    except FileNotFoundError:
        return 0.0
    want = {"route": route, "method": method, "code": str(code)}
    return sum(
        value
        for name, _kind, _doc, samples in families
        if name == "argus_api_requests"
        for sample, labels, value in samples
        if sample == "argus_api_requests_total" and labels == want
    )


def split(run: Running, route: str, method: str, code: int, before: tuple[float, float], n: int) -> tuple[float, float]:
    """(child, primary) answers of `route` since `before` (= `counts`), once the sum shows `n`
    more (the child's file is written every second)."""
    until(
        f"{n} more {method} {route} {code} on /metrics",
        lambda: requests_total(run.metrics_text(), route, method, code) >= before[0] + n,
        timeout=5,
    )
    time.sleep(0.05)
    total = requests_total(run.metrics_text(), route, method, code) - before[0]
    child = file_total(run.child_file(), route, method, code) - before[1]
    assert total == n, (route, code, total, n)
    return child, total - child


def counts(run: Running, route: str, method: str, code: int) -> tuple[float, float]:
    """(sum on /metrics, the child's file) for these labels now."""
    return requests_total(run.metrics_text(), route, method, code), file_total(run.child_file(), route, method, code)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("api2")
    sandbox = prepare(tmp / "shared")
    server = ServerProcess(_dead_ray_config(tmp), tmp, ADMIN, port=free_port(18820))
    _with_service(server, api_processes=2, submit_rate_per_s=0.0001, submit_burst=BURST)
    server.start()
    try:
        running = Running(server, sandbox, [0])
        running.child()
        until("the child's first requests file", lambda: running.child_file().exists(), 5)
        yield running
    finally:
        server.stop()


def submit(run: Running, n: int) -> list[httpx.Response]:
    """`n` submissions, 8 at a time, by users of their own (at most `BURST` each)."""
    users = [run.new_user("sub")[1] for _ in range(-(-n // BURST))]
    spec = run.spec()
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: run.call("POST", TASKS, {**users[i // BURST], **YAML}, content=spec), range(n)))


def test_both_processes_answer_submissions_and_metrics_sum_them(run):
    before = counts(run, TASKS, "POST", 201)
    got = submit(run, 40)
    for attempt in range(5):  # both answered some of the 40 (almost always), else of 10 more
        created = [r for r in got if r.status_code == 201]
        assert len(created) == len(got), [(r.status_code, r.text) for r in got if r.status_code != 201][:3]
        assert len({r.json()["task_id"] for r in created}) == len(created)
        child, primary = split(run, TASKS, "POST", 201, before, len(created))
        if (child and primary) or attempt == 4:
            break
        got += submit(run, 10)
    assert child > 0 and primary > 0, (child, primary)
    # What /metrics says of this route is the child's file plus the primary's own counts.
    assert requests_total(run.metrics_text(), TASKS, "POST", 201) == before[0] + len(created)


def test_a_burst_of_new_keep_alive_connections_is_spread_over_both_processes(run):
    """32 connections opened at once, as a client pool does: each process gets some of them (its
    own socket, `SO_REUSEPORT`). On one shared socket the process that woke first could take
    nearly all of them, and keep them for as long as they live."""
    _, user = run.new_user("pool")
    me = "/api/v2/me"
    before = counts(run, me, "GET", 200)
    clients = [httpx.Client(base_url=run.url, timeout=30) for _ in range(32)]
    try:
        with ThreadPoolExecutor(32) as pool:
            for _ in range(3):  # the same 32 connections, three requests each
                got = list(pool.map(lambda c: c.get(me, headers=user), clients))
                assert [r.status_code for r in got] == [200] * 32
    finally:
        for c in clients:
            c.close()
    child, primary = split(run, me, "GET", 200, before, 96)
    assert child % 3 == 0 and primary % 3 == 0  # a connection stays with the process that took it
    assert child >= 3 and primary >= 3, (child, primary)


def test_the_per_user_submission_rate_is_one_budget_across_the_processes(run):
    spec = run.spec()
    spread = False
    for _ in range(4):  # until both processes answered some of one user's burst
        _, user = run.new_user("rate")
        before = {code: counts(run, TASKS, "POST", code) for code in (201, 429)}
        got = run.many(14, "POST", TASKS, {**user, **YAML}, at_once=7, content=spec)
        codes = sorted(r.status_code for r in got)
        assert codes == [201] * BURST + [429] * (14 - BURST), [(r.status_code, r.text[:200]) for r in got]
        assert all(r.headers.get("retry-after") for r in got if r.status_code == 429)
        by = {code: split(run, TASKS, "POST", code, before[code], codes.count(code)) for code in (201, 429)}
        child = by[201][0] + by[429][0]
        primary = by[201][1] + by[429][1]
        if child and primary:
            spread = True
            break
    assert spread, "one process answered all of every user's 14 submissions"


def test_a_disabled_user_is_refused_by_every_process_at_once(run):
    me = "/api/v2/me"
    for _ in range(5):  # until both processes answered the token before and refused it after
        user, headers = run.new_user("off")
        before = {code: counts(run, me, "GET", code) for code in (200, 401)}
        ok = run.many(24, "GET", me, headers)  # each process that answers remembers the token (5 s)
        assert [r.status_code for r in ok] == [200] * 24
        r = run.call("POST", f"/api/v2/users/{user}:disable", ADMIN_H)
        assert r.status_code == 200, r.text
        refused = run.many(10, "GET", me, headers)
        assert [r.status_code for r in refused] == [401] * 10, [r.text for r in refused]
        served = split(run, me, "GET", 200, before[200], 24)
        refusals = split(run, me, "GET", 401, before[401], 10)
        if all(served) and all(refusals):
            return
    pytest.fail("one process answered all of a user's calls before or after the disable, every time")


def test_a_console_login_is_accepted_by_every_process(run):
    user, headers = run.new_user("ui")
    token = headers["Authorization"].split()[1]
    with httpx.Client(base_url=run.url, timeout=30, follow_redirects=False) as browser:
        form = browser.get("/ui/login")
        assert form.status_code == 200, form.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text).group(1)
        r = browser.post("/ui/login", data={"token": token, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/ui/tasks", r.text
        session = browser.cookies.get("argus_session")
    assert session
    for _ in range(5):  # until both processes answered some of the 10
        before = counts(run, "/ui/tasks", "GET", 200)
        pages = run.many(10, "GET", "/ui/tasks", {"Cookie": f"argus_session={session}"})
        assert [p.status_code for p in pages] == [200] * 10, [(p.status_code, p.headers.get("location")) for p in pages]
        assert all(user in p.text for p in pages)
        if all(split(run, "/ui/tasks", "GET", 200, before, 10)):
            break
    else:
        pytest.fail("one process answered every round of 10")
    # A session cookie signed with another key is no session on any of them.
    forged = run.many(6, "GET", "/ui/tasks", {"Cookie": f"argus_session={session[:-4]}0000"})
    assert [p.status_code for p in forged] == [303] * 6
    # A logout through one of them ends the session on all.
    cookie = {"Cookie": f"argus_session={session}"}
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', pages[0].text).group(1)
    out = run.call("POST", "/ui/logout", {**cookie, "X-CSRF-Token": csrf})
    assert out.status_code == 303, out.text
    after = run.many(10, "GET", "/ui/tasks", cookie)
    assert [(p.status_code, p.headers.get("location")) for p in after] == [(303, "/ui/login")] * 10


def test_node_routes_answered_through_the_child_are_the_primarys(run):
    bodies = run.many(10, "GET", "/api/v2/nodes", ADMIN_H)
    assert [r.status_code for r in bodies] == [200] * 10, [r.text for r in bodies]
    assert len({r.content for r in bodies}) == 1
    bad = {"name": "Bad_Name", "host": "10.0.0.9", "user": "root", "key": "good.pem"}
    refused = run.many(10, "POST", "/api/v2/nodes", ADMIN_H, json=bad)
    for r in refused:
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert "name" in [p["field"] for p in r.json()["problems"]], r.text
    time.sleep(1.5)  # the child's file is up to date
    child_file = json.loads(run.child_file().read_text())
    routes = {
        labels.get("route")
        for name, _k, _d, samples in child_file
        if name == "argus_api_requests"
        for _s, labels, _v in samples
    }
    assert not {"/api/v2/nodes", "/metrics", "/healthz"} & routes, routes  # forwarded, never served there


def test_healthz_on_every_process_shows_the_scheduler_process(run):
    scheduler = until("the scheduler process", lambda: children_running(run.pid, SCHEDULER_MODULE), 15)
    assert len(scheduler) == 1
    answers = run.many(10, "GET", "/healthz")
    for r in answers:
        process = r.json()["scheduler"]["process"]
        assert process is not None and process["pid"] == scheduler[0].pid, r.text


def test_a_killed_child_api_process_is_started_again(run):
    old = run.child()
    old_file = run_dir_of(old.pid) / f"requests-{old.pid}.json"
    until("the child's file", old_file.exists, 5)
    total_before = requests_total(run.metrics_text(), TASKS, "POST", 201)
    _, headers = run.new_user("down")
    os.kill(old.pid, signal.SIGKILL)
    # While it is down (started again after a second, then its start-up), new connections are
    # all answered at once: its socket was closed when it died, so none waits in its backlog.
    time.sleep(0.8)
    for _ in range(20):
        assert httpx.get(f"{run.url}/api/v2/me", headers=headers, timeout=1.5).status_code == 200
    new = until(
        "a new child API process",
        lambda: [p for p in children_running(run.pid, API_MODULE) if p.pid != old.pid],
        timeout=10,
    )[0]
    assert not pid_alive(old.pid)
    _, headers = run.new_user("after")
    answers = run.many(10, "GET", "/api/v2/me", headers)
    assert [r.status_code for r in answers] == [200] * 10
    until("the new child's file", (run_dir_of(new.pid) / f"requests-{new.pid}.json").exists, 5)
    assert old_file.exists()  # kept: the sums never go down
    assert requests_total(run.metrics_text(), TASKS, "POST", 201) == total_before


def test_a_stopped_server_leaves_no_child_and_no_run_dir(run):
    api = run.child()
    run_dir = run_dir_of(api.pid)
    scheduler = children_running(run.pid, SCHEDULER_MODULE)
    pids = [api.pid, *(p.pid for p in scheduler)]
    assert run_dir.is_dir() and (run_dir / "primary.sock").exists() and (run_dir / "shared").exists()
    assert run.server.proc is not None
    run.server.proc.send_signal(signal.SIGTERM)
    assert run.server.proc.wait(timeout=30) == 0
    for pid in pids:
        until(f"process {pid} gone", lambda pid=pid: not pid_alive(pid), 10)
    assert not run_dir.exists()


def test_several_api_processes_need_the_scheduler_in_its_own_process(tmp_path):
    prepare(tmp_path / "shared")
    server = ServerProcess(_dead_ray_config(tmp_path), tmp_path, ADMIN, port=free_port(18840), own_process=False)
    _with_service(server, api_processes=2)
    proc = subprocess.run(
        server_command(server.config),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MVP_INTERNAL_TOKEN": ADMIN},
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "service.api_processes" in proc.stderr, proc.stderr
    assert "own_process" in proc.stderr, proc.stderr


def test_a_killed_server_takes_its_child_api_process_with_it(tmp_path):
    prepare(tmp_path / "shared")
    server = ServerProcess(_dead_ray_config(tmp_path), tmp_path, ADMIN, port=free_port(18860))
    _with_service(server, api_processes=2)
    server.start()
    run_dir = None
    try:
        assert server.proc is not None
        child = until("the child API process", lambda: children_running(server.proc.pid, API_MODULE), 15)[0]
        run_dir = run_dir_of(child.pid)
        until("its requests file", (run_dir / f"requests-{child.pid}.json").exists, 5)
        server.kill()  # SIGKILL: no shutdown code runs in the server
        until("the child API process gone with its server", lambda: not pid_alive(child.pid), 10)
        with pytest.raises(httpx.TransportError):  # nobody listens on the port any more
            httpx.get(f"{server.url}/api/v2/me", timeout=2)
        # The child, orphaned, removes the private run directory nobody else will.
        until("the run directory removed", lambda: not run_dir.exists(), 5)
    finally:
        server.stop()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
