"""`/healthz` while Ray is unreachable: degraded with the reason, from what the scheduler's last
pass learnt (the handler never calls Ray); and `argus up`'s wait fails on it.

The real app with its scheduler thread over a real SQLite store; Ray's job server and GCS are
the fakes of argus.testing.fakes, made unreachable the way a dead head is (ClusterUnavailable).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from argus.client import server_cli
from argus.client.cli import app as cli_app
from argus.service import launcher
from argus.service.app import create_app
from argus.settings import parse_settings
from argus.testing.cli import invoke
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import prepare


class Counting(FakeSnapshots):
    """A snapshot source that counts its calls (so a test sees /healthz make none)."""

    calls: int = 0

    def snapshot(self):
        type(self).calls += 1
        return super().snapshot()


@pytest.fixture
def server(tmp_path):
    sandbox = prepare(tmp_path / "shared")
    settings = parse_settings(
        {
            "ray": {"shared_root": str(sandbox.shared_root)},
            "service": {"db_url": f"sqlite:///{tmp_path}/argus.sqlite3"},
            "scheduler": {"interval_s": 0.1, "min_tick_gap_s": 0},
        },
        environ={},
    )
    snaps = Counting({"w1": 4}, down=True)
    jobs = FakeJobs(down=True)
    app = create_app(
        settings,
        jobs=jobs,
        snapshots=snaps,
        run_scheduler=True,
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": "admin-token-for-health"},
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, snaps, jobs, app


def _wait_health(client: TestClient, want: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/healthz").json()
        if body["status"] == want or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_healthz_is_degraded_with_the_reason_while_ray_is_unreachable(server):
    client, snaps, jobs, app = server
    body = _wait_health(client, "degraded")
    assert body["status"] == "degraded", body
    assert body["ray"] == "unreachable: cannot reach the GCS (fake: down)"
    assert body["db"] == "ok" and body["scheduler"]["ray_ok_at"] is None
    r = client.get("/healthz")
    assert r.status_code == 200  # the process and its database are alive

    scheduler = app.state.tasks.nudge.__self__
    with scheduler._lock:  # no pass runs meanwhile: what the handler alone does
        before = Counting.calls
        assert client.get("/healthz").json()["status"] == "degraded"
        assert Counting.calls == before  # no Ray call inside the handler

    snaps.down = jobs.down = False  # the head is back
    body = _wait_health(client, "ok")
    assert body["status"] == "ok" and body["ray"] == "ok", body
    assert body["scheduler"]["ray_ok_at"] is not None


# -- `argus up`'s wait ----------------------------------------------------------------------------
class _Health(BaseHTTPRequestHandler):
    body: dict = {}

    def do_GET(self):
        data = json.dumps(type(self).body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


@pytest.fixture
def health_url():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_the_wait_reports_ray_unreachable_and_passes_when_ray_answers(health_url):
    _Health.body = {"status": "degraded", "ray": "unreachable: cannot read the GCS at 10.0.0.1:6380"}
    assert launcher.ray_verdict(health_url, wait_s=1) == ("Ray is unreachable: cannot read the GCS at 10.0.0.1:6380")
    _Health.body = {"status": "ok", "ray": "ok"}
    assert launcher.ray_verdict(health_url, wait_s=1) is None
    _Health.body = {"status": "ok", "ray": "unknown: no pass yet"}
    assert launcher.ray_verdict(health_url, wait_s=0.3) == "no scheduler pass reached Ray within 0.3 s"
    _Health.body = {"status": "degraded", "ray": "unknown: the scheduler process is not running (restarted 2 time(s))"}
    assert launcher.ray_verdict(health_url, wait_s=0.3) == "the scheduler process is not running (restarted 2 time(s))"


def test_argus_up_exits_1_when_the_server_says_ray_is_unreachable(monkeypatch, tmp_path):
    info = launcher.ServerInfo(
        "http://127.0.0.1:1",
        42,
        "tok",
        tmp_path / "c",
        tmp_path / "l",
        True,
        "http://127.0.0.1:8265",
        "Ray is unreachable: GCS down",
    )
    monkeypatch.setattr(launcher, "up", lambda *a, **k: info)
    monkeypatch.setattr(server_cli, "private_umask", lambda: 0o027)  # keep this process's umask
    result = invoke(cli_app, "up", "--shared-root", tmp_path)
    assert result.exit_code == 1
    assert "degraded: Ray is unreachable: GCS down" in result.err_text
    assert "server started: http://127.0.0.1:1" in result.out_text
    monkeypatch.setattr(
        launcher,
        "up",
        lambda *a, **k: launcher.ServerInfo(
            *[getattr(info, f) for f in ("url", "pid", "admin_token", "config", "log", "started_now", "dashboard_url")]
        ),
    )
    assert invoke(cli_app, "up", "--shared-root", tmp_path).exit_code == 0
