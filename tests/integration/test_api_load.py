"""The API under load, over a real database: the per-user submission rate answers 429 with
`Retry-After`, reads answer while many new override sets wait for their verl check, and the
SQLite write-ahead log is truncated once it passes its bound; the check pool's real worker
processes start without the admin token and do not outlive a server killed outright.

The verl check is a fake held behind a gate here (a thread pool stands in for the worker
processes), so "while submits are in flight" is a fact of the test, not a matter of timing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import ADMIN_TOKEN, SNAPSHOTS, Api, backend, make_settings, sandbox
from fastapi.testclient import TestClient

from argus.service.app import create_app
from argus.service.checks import CheckPool
from argus.store.db import open_database
from argus.testing.sandbox import Sandbox


@pytest.fixture
def make_api(sandbox, backend):
    """Builds an app with the service settings given (and, optionally, a check pool)."""
    opened: list[tuple] = []

    def make(pool: CheckPool | None = None, **service) -> Api:
        settings = make_settings(sandbox, backend.url)
        settings = settings.model_copy(update={"service": settings.service.model_copy(update=service)})
        app = create_app(
            settings, run_scheduler=False, snapshots=SNAPSHOTS, environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN}
        )
        if pool is not None:
            app.state.tasks.checks.pool.close()
            app.state.tasks.checks.pool = pool
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append((app, client))
        return Api(client, sandbox, backend)

    yield make
    for app, client in opened:
        client.__exit__(None, None, None)
        app.state.db.dispose()


# -- the per-user submission rate --------------------------------------------------------------
def test_past_the_rate_a_user_gets_429_with_retry_after_and_others_do_not(make_api):
    api = make_api(submit_rate_per_s=0.01, submit_burst=3)  # one new token every 100 s
    alice, bob = api.new_user("rate_a"), api.new_user("rate_b")
    for _ in range(3):
        api.submit(alice)
    r = api.post_yaml(alice, api.spec())
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 100
    body = r.json()
    assert body["error"] == "too_many_requests"
    assert "0.01 a second" in body["message"] and "burst 3" in body["message"]
    assert [p["field"] for p in body["problems"]] == ["service.submit_rate_per_s"]
    assert api.submit(bob)  # bob has a bucket of his own
    for _ in range(3):  # the admin is not limited
        r = api.post_yaml(api.admin, api.spec())
        assert r.status_code == 201, r.text
    # Nothing of the refused submission was stored: alice has her three tasks.
    assert len(api.list_all(alice)) == 3


def test_the_default_rate_is_generous(make_api):
    api = make_api()
    user = api.new_user("rate_default")
    for _ in range(40):
        api.submit(user)


# -- reads while new override sets wait for their check ---------------------------------------
def test_reads_answer_while_many_uncached_submits_wait_for_their_check(make_api):
    gate = threading.Event()
    checks_started = threading.Semaphore(0)

    def slow_check(*_args) -> list:
        checks_started.release()
        assert gate.wait(60), "the gate was never opened"
        return []

    executor = ThreadPoolExecutor(2)
    api = make_api(pool=CheckPool(2, run=slow_check, executor=executor))
    users = [api.new_user("busy") for _ in range(4)]
    reader = api.new_user("reader")
    gate.set()  # the reader's own task's check passes straight through
    own = api.submit(reader, api.spec(overrides=["data.train_batch_size=8"]))
    assert checks_started.acquire(timeout=0)
    gate.clear()

    # 48 submissions of override sets never seen: more than Starlette's 40 threads.
    results: list[int] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        text = api.spec(overrides=[f"data.train_batch_size={100 + i}"])
        status = api.post_yaml(users[i % len(users)], text).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=submit, args=(i,), daemon=True) for i in range(48)]
    for t in threads:
        t.start()
    for _ in range(2):  # both workers hold a check: the submits are in flight
        assert checks_started.acquire(timeout=60)

    answers = {}
    for path in ("/healthz", "/api/v2/tasks", f"/api/v2/tasks/{own}"):
        r = api.get(reader if path != "/healthz" else api.admin, path)
        answers[path] = r.status_code
    with lock:
        finished_before_reads = list(results)
    assert answers == {"/healthz": 200, "/api/v2/tasks": 200, f"/api/v2/tasks/{own}": 200}
    assert finished_before_reads == []  # every submit was still waiting for its check

    gate.set()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [201] * 48
    executor.shutdown()


# -- the write-ahead log stays bounded ---------------------------------------------------------
def test_the_wal_is_truncated_once_it_passes_its_bound(tmp_path: Path):
    bound = 1024 * 1024
    db = open_database(f"sqlite:///{tmp_path / 'wal.sqlite3'}", autocheckpoint=False, wal_max_bytes=bound)
    try:
        with db.write.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
        for _ in range(40):
            with db.write.begin() as conn:
                conn.execute(sa.text("INSERT INTO filler (data) VALUES (:d)"), [{"d": b"x" * 4000} for _ in range(50)])
        assert db.wal_bytes() > 4 * bound
        # A reader of an old snapshot holds it: truncation waits for the next checkpoint.
        reader = db.read.connect()
        reader.exec_driver_sql("SELECT COUNT(*) FROM filler").scalar_one()
        assert db.checkpoint() is False
        assert db.wal_bytes() > bound
        reader.close()
        assert db.checkpoint() is True
        assert db.wal_bytes() <= bound
        with db.read.connect() as conn:  # nothing was lost
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM filler").scalar_one() == 2000
        # Under the bound, a checkpoint is a passive one and leaves the file alone.
        with db.write.begin() as conn:
            conn.execute(sa.text("INSERT INTO filler (data) VALUES (:d)"), {"d": b"y"})
        assert db.checkpoint() is False
        assert 0 < db.wal_bytes() <= bound
    finally:
        db.dispose()


# -- the check pool's worker processes ------------------------------------------------------


def test_worker_processes_start_without_the_scrubbed_variables(monkeypatch):
    monkeypatch.setenv("ARGUS_TEST_SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("ARGUS_TEST_KEPT", "kept")
    pool = CheckPool(1, run=os.getenv, scrub_env=["ARGUS_TEST_SECRET_TOKEN"])
    try:
        assert pool.submit("u", "a", "ARGUS_TEST_SECRET_TOKEN").result(timeout=120) is None
        assert pool.submit("u", "b", "ARGUS_TEST_KEPT").result(timeout=120) == "kept"
    finally:
        pool.close()


def test_worker_processes_exit_when_the_server_is_gone(tmp_path):
    """A server killed outright (SIGKILL) leaves no check worker behind."""
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    script = (
        "import os, sys\n"
        "from argus.service.checks import CheckPool\n"
        "if __name__ == '__main__':\n"
        "    pool = CheckPool(1, run=os.getpid)\n"
        f"    open({str(pids)!r}, 'w').write(str(pool.submit('u', 'k').result(timeout=120)))\n"
        "    sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "    import time; time.sleep(600)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        worker = int(pids.read_text())
        os.kill(worker, 0)  # alive while the server is
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    for _ in range(200):  # the worker looks for its server every second
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError(f"check worker {worker} outlived its server")


# -- group commit of accepted tasks ---------------------------------------------------------------
def test_concurrent_submits_are_all_stored_and_a_taken_id_is_drawn_again(make_api, monkeypatch):
    import argus.service.task_service as task_service

    api = make_api(submit_rate_per_s=None)
    user = api.new_user("grouped")
    draws = iter(["mvp2-grouped-ppo-clash"] * 2)
    real = task_service.new_task_id
    monkeypatch.setattr(task_service, "new_task_id", lambda *a: next(draws, None) or real(*a))
    first = api.submit(user)
    second = api.submit(user)  # draws the taken id first, then a fresh one
    assert first == "mvp2-grouped-ppo-clash" and second != first and "-ppo-" in second
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: api.submit(user), range(40)))
    assert len(set(ids)) == 40
    listed = {t["task_id"] for t in api.list_all(user)}
    assert listed == {first, second, *ids}
    inserts = api.client.app.state.store.inserts
    assert inserts.rows == 42 and inserts.batches <= 42
    events = api.client.app.state.store.events(ids[0])
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [(None, "QUEUED", "accepted")]
