"""The scheduler in its own process (`scheduler.own_process`, the default of `argus server`),
against the real local Ray cluster: a real server process, its child, the nudge socket between
them, and what the child reports through `/healthz` and `/metrics`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import user_client, wait_state
from prometheus_client.parser import text_string_to_metric_families

from argus.cluster import local
from argus.cluster.procs import pid_alive
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess, run_dir_of, until

pytestmark = pytest.mark.ray
ADMIN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _health(server: ServerProcess) -> dict:
    return httpx.get(f"{server.url}/healthz", timeout=5).json()


def _run_dir(pid: int) -> Path:
    """The run directory of the scheduler process `pid`, private to the server's user."""
    run_dir = run_dir_of(pid)
    assert run_dir.stat().st_mode & 0o077 == 0
    return run_dir


def _metric(server: ServerProcess, sample: str) -> float | None:
    """One sample's value on the server's /metrics (None: not there)."""
    text = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=5).text
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == sample]
    assert len(values) <= 1, (sample, values)
    return values[0] if values else None


def _reconciled(server: ServerProcess) -> dict:
    return until(
        "a reconciled scheduler process",
        lambda: (h := _health(server))["scheduler"]["reconciled"] and h["ray"] == "ok" and h,
        timeout=60,
    )


@pytest.fixture
def server(idle_cluster, sandbox, tmp_path):
    # One full pass at start, the next an hour later: whatever is admitted meanwhile was admitted
    # by a nudge from the API.
    srv = ServerProcess(local.config_file(idle_cluster.shared_root), tmp_path, ADMIN, interval_s=3600)
    srv.start()
    yield srv
    srv.stop()


def test_a_submission_nudges_the_scheduler_process_which_admits_it_before_its_next_full_pass(server, sandbox):
    health = _reconciled(server)
    child = health["scheduler"]["process"]
    assert health["status"] == "ok" and health["scheduler"]["running"] is True
    assert child["restarts"] == 0 and child["last_exit"] is None
    assert psutil.Process(child["pid"]).ppid() == server.proc.pid  # a child of the server, not a thread of it
    # The child's first full pass, served on the API's /metrics.
    passes = until("a pass counted", lambda: _metric(server, "argus_scheduler_pass_seconds_count"))
    assert _metric(server, "argus_scheduler_admissions_total") == 0
    assert _metric(server, "argus_scheduler_process_up") == 1

    alice = user_client(server.url, ADMIN, "alice")
    t0 = time.monotonic()
    tid = alice.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=1, total_training_steps=2))["task_id"]
    task = wait_state(alice, tid, {"SUBMITTED", "RUNNING", "SUCCEEDED"}, timeout=30)
    took = time.monotonic() - t0
    assert took < 30, f"admitted after {took:.1f} s"
    assert task["latest_attempt"]["ray_submission_id"] == f"{tid}--a01"
    until("the admission counted", lambda: _metric(server, "argus_scheduler_admissions_total") == 1)
    assert (_metric(server, "argus_scheduler_pass_seconds_count") or 0) > passes
    alice.cancel(tid)


def test_the_server_starts_its_scheduler_process_again_and_takes_it_down_when_killed(server, sandbox):
    first = _reconciled(server)["scheduler"]["process"]["pid"]
    os.kill(first, signal.SIGKILL)
    again = until(
        "a new scheduler process",
        lambda: (p := _health(server)["scheduler"]["process"])["pid"] not in (None, first) and p,
    )
    assert again["restarts"] == 1 and again["last_exit"] == -signal.SIGKILL
    assert psutil.Process(again["pid"]).ppid() == server.proc.pid
    assert _metric(server, "argus_scheduler_process_restarts_total") == 1
    health = _reconciled(server)  # the new one reconciles with Ray before it admits
    assert health["scheduler"]["process"]["pid"] == again["pid"]

    alice = user_client(server.url, ADMIN, "alice")
    tid = alice.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=1, total_training_steps=2))["task_id"]
    wait_state(alice, tid, {"SUBMITTED", "RUNNING", "SUCCEEDED"}, timeout=30)
    alice.cancel(tid)

    # A crashed server leaves no scheduler behind (a restarted one would otherwise run beside it).
    run_dir = _run_dir(again["pid"])
    server.kill()
    until("the scheduler process gone with its server", lambda: not pid_alive(again["pid"]), timeout=10)
    until("its run directory removed", lambda: not run_dir.exists())
