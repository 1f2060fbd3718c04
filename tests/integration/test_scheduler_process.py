"""The scheduler's own process, without Ray: how the server supervises it
(`argus.service.scheduler_process.SchedulerChild`), what `/healthz` and `/metrics` say while it
is down, and a real `argus server` whose child goes with it.

The supervision tests run small stand-in programs as the child (real processes, real signals);
the last ones run the real server and its real child against a Ray address nobody answers.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from argus.cluster.procs import pid_alive
from argus.service import children
from argus.service.app import create_app
from argus.service.scheduler_process import SchedulerChild
from argus.settings import parse_settings
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import prepare
from argus.testing.server import ServerProcess, free_port, run_dir_of, until

ADMIN = "admin-token-for-the-scheduler-process"


class StandIn(SchedulerChild):
    """A child that runs `program` (Python source; argv[1] is the run directory)."""

    program = "import sys; sys.exit(0)"

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.program, str(self.run_dir)]


@pytest.fixture
def settings(tmp_path):
    return parse_settings(
        {
            "ray": {"shared_root": str(prepare(tmp_path / "shared").shared_root)},
            "service": {"db_url": f"sqlite:///{tmp_path}/argus.sqlite3"},
        },
        environ={},
    )


@pytest.fixture
def fast_restarts(monkeypatch):
    monkeypatch.setattr(children, "RESTART_MIN_S", 0.05)
    monkeypatch.setattr(children, "RESTART_MAX_S", 0.2)


def test_the_child_gets_the_settings_on_stdin_and_no_admin_keys_and_is_started_again(settings, fast_restarts):
    class Reports(StandIn):
        program = (
            "import json, os, sys; n = len(os.listdir(sys.argv[1]));"
            "open(f'{sys.argv[1]}/seen-{n}', 'w').write(json.dumps([sys.stdin.read(), sorted(os.environ)]));"
            "sys.exit(3)"
        )

    env = {"PATH": os.environ["PATH"], "MVP_INTERNAL_TOKEN": "adm", "ARGUS_METRICS_TOKEN": "m"}
    env |= {"ARGUS_UI_SESSION_KEY": "k", "ARGUS_SECRETS_KEY": "s"}
    child = Reports(settings, environ=env)
    run_dir = child.run_dir
    assert run_dir.stat().st_mode & 0o777 == 0o700
    child.start()
    try:
        until("three starts", lambda: child.restarts >= 2)
        assert child.last_exit == 3
        seen = sorted(run_dir.glob("seen-*"))
        text, names = json.loads(seen[0].read_text())
        assert parse_settings(yaml.safe_load(text), environ={}) == settings
        # The secrets key it needs; the admin token, the metrics token and the console key it never sees.
        assert "ARGUS_SECRETS_KEY" in names
        assert not {"MVP_INTERNAL_TOKEN", "ARGUS_METRICS_TOKEN", "ARGUS_UI_SESSION_KEY"} & set(names)
        assert not [p for p in run_dir.iterdir() if p.name.endswith((".yaml", ".yml"))]  # no settings on disk
    finally:
        child.stop()
    assert not run_dir.exists()


def test_a_child_that_cannot_be_started_is_tried_again_and_the_watch_goes_on(settings, fast_restarts):
    class Missing(StandIn):
        def command(self) -> list[str]:
            return [str(self.run_dir / "no-such-program")]

    child = Missing(settings)
    child.start()
    try:
        until("repeated tries", lambda: child.restarts >= 3)
        assert child.pid is None and not child.running
        assert child._watch is not None and child._watch.is_alive()
    finally:
        child.stop()
    with pytest.raises(RuntimeError, match="started already"):
        child.start()


def test_a_child_that_ignores_sigterm_is_killed_when_the_server_stops(settings, monkeypatch):
    monkeypatch.setattr(SchedulerChild, "stop_timeout_s", 0.5)

    class Stubborn(StandIn):
        program = (
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "open(f'{sys.argv[1]}/ready', 'w').close(); time.sleep(60)"
        )

    child = Stubborn(settings)
    child.start()
    until("the child ready", lambda: (child.run_dir / "ready").exists())
    pid = child.pid
    assert pid is not None
    t0 = time.monotonic()
    child.stop()
    assert time.monotonic() - t0 < 10
    assert not pid_alive(pid)
    assert child.restarts == 0  # a stop is not a crash: not started again


class ReportsThenExits(StandIn):
    """Reports a reconciled scheduler with one pass and one admission, then exits 0."""

    program = (
        "import json, sys, time;"
        "metrics = [['argus_scheduler_admissions', 'counter', 'Attempts started',"
        " [['argus_scheduler_admissions_total', {}, 1.0]]]];"
        "status = {'pid': 1, 'reconciled': True, 'last_tick_at': time.time(), 'last_error': None,"
        " 'ray_error': None, 'ray_ok_at': time.time(), 'fair_share': {'alice': 2.0}, 'metrics': metrics};"
        "open(f'{sys.argv[1]}/status.json', 'w').write(json.dumps(status)); time.sleep(1)"
    )


def test_healthz_and_metrics_say_so_while_the_scheduler_process_is_down(settings, monkeypatch):
    monkeypatch.setattr(children, "RESTART_MIN_S", 60.0)  # down for a minute once it exits
    child = ReportsThenExits(settings, environ={"PATH": os.environ["PATH"]})
    app = create_app(
        settings,
        jobs=FakeJobs(),
        snapshots=FakeSnapshots({"w1": 4}),
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": ADMIN},
        scheduler_child=child,
    )
    assert app.state.scheduler_child is child
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(app) as client:
        up = until("its report", lambda: (b := client.get("/healthz").json())["scheduler"]["reconciled"] and b)
        assert up["status"] == "ok" and up["ray"] == "ok" and up["scheduler"]["running"] is True, up
        assert "argus_scheduler_admissions_total 1.0" in client.get("/metrics", headers=auth).text
        assert app.state.tasks.fair_share() == {"alice": 2.0}  # the queue board's, as the child ordered by

        until("the child's exit seen", lambda: child.last_exit == 0)
        body = client.get("/healthz").json()
        assert body["status"] == "degraded", body
        assert body["scheduler"]["running"] is False
        assert body["ray"] == "unknown: the scheduler process is not running (restarted 0 time(s))", body
        assert body["scheduler"]["process"] == {"pid": None, "restarts": 0, "last_exit": 0}
        # What the dead child said is not shown as if it still held.
        assert body["scheduler"]["reconciled"] is False and body["scheduler"]["ray_ok_at"] is None
        text = client.get("/metrics", headers=auth).text
        assert "argus_scheduler_process_up 0.0" in text
        assert "argus_scheduler_process_restarts_total 0.0" in text
        assert "argus_scheduler_admissions" not in text
    assert not child.run_dir.exists()  # stopped with the app


def _dead_ray_config(tmp_path: Path) -> Path:
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump({"address": "http://127.0.0.1:9", "shared_root": str(tmp_path / "shared")}))
    return path


def _child_of(server: ServerProcess) -> dict:
    return until(
        "the scheduler process's first report",
        lambda: (h := httpx.get(f"{server.url}/healthz", timeout=5).json())["scheduler"]["last_tick_at"] and h,
        timeout=60,
    )["scheduler"]["process"]


@pytest.mark.parametrize("restarted", [False, True], ids=["first child", "a child started again"])
def test_a_real_server_runs_its_scheduler_as_a_child_that_dies_with_it(tmp_path, restarted):
    prepare(tmp_path / "shared")
    server = ServerProcess(_dead_ray_config(tmp_path), tmp_path, ADMIN, port=free_port(18760))
    server.start()
    try:
        child = _child_of(server)
        if restarted:  # started by the server's supervising thread, not its main thread
            old = child["pid"]
            os.kill(old, signal.SIGKILL)
            child = until("a new child's report", lambda: (p := _child_of(server))["pid"] not in (None, old) and p)
        health = httpx.get(f"{server.url}/healthz", timeout=5).json()
        assert health["status"] == "degraded" and health["ray"].startswith("unreachable:"), health
        pid = child["pid"]
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == server.proc.pid  # its parent is the server
        assert int(stat[3]) == pid  # a session of its own: a terminal's Ctrl-C reaches only the server
        run_dir = run_dir_of(pid)
        assert run_dir.is_dir() and (run_dir / "nudge.sock").exists()
        server.kill()  # SIGKILL: no shutdown code runs in the server
        until("the scheduler process gone with its server", lambda: not pid_alive(pid), timeout=10)
        until("its run directory removed", lambda: not run_dir.exists(), timeout=5)
        assert f"the server (pid {server.proc.pid}) is gone" in server.log.read_text()
    finally:
        server.stop()


def test_a_server_stopped_cleanly_stops_its_child_and_a_killed_child_is_replaced(tmp_path):
    prepare(tmp_path / "shared")
    server = ServerProcess(_dead_ray_config(tmp_path), tmp_path, ADMIN, port=free_port(18760))
    server.start()
    try:
        first = _child_of(server)["pid"]
        os.kill(first, signal.SIGKILL)
        again = until(
            "a new scheduler process",
            lambda: (
                (p := httpx.get(f"{server.url}/healthz", timeout=5).json()["scheduler"]["process"])["pid"]
                not in (None, first)
                and p
            ),
        )
        assert again["restarts"] == 1 and again["last_exit"] == -signal.SIGKILL
        assert _child_of(server)["pid"] == again["pid"]  # the new one reports (what the old one said is gone)
        run_dir = run_dir_of(again["pid"])
    finally:
        server.stop()
    assert not pid_alive(again["pid"])
    assert not run_dir.exists()  # removed by the server's own shutdown
    log = server.log.read_text()
    assert f"scheduler process {again['pid']} started" in log  # the child logs to the server's log
    assert f"scheduler process {again['pid']} stopped" in log  # a clean stop: its last pass ended, then it
