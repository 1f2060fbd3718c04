"""SQLite's OS write lock (`argus.store.db.WriteLock`): the write connection holds an `flock` on
`<db>.write-lock` from its checkout to its checkin, so a writer of another `Database` (of this
process or another) waits on the lock, not in SQLite's busy handler, and goes on once the holder
committed. Real threads, a real second process, a real file."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from argus.store.db import Database, connect

HOLD_S = 0.3


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "db" / "argus.sqlite3"  # the directory is made by `connect`


@pytest.fixture
def db_a(db_path) -> Iterator[Database]:
    db = connect(f"sqlite:///{db_path}")
    try:
        with db.write.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE rows (id INTEGER PRIMARY KEY, who TEXT NOT NULL)")
        yield db
    finally:
        db.dispose()


@pytest.fixture
def db_b(db_path, db_a) -> Iterator[Database]:
    db = connect(f"sqlite:///{db_path}")
    try:
        yield db
    finally:
        db.dispose()


def lock_is_free(db_path: Path) -> bool:
    """Whether nobody holds the write lock (tried without waiting, on a descriptor of our own)."""
    fd = os.open(f"{db_path}.write-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases what we took
    return True


def insert(db: Database, who: str) -> list[str]:
    """Insert a row of `who` in a write transaction; the rows that transaction saw before."""
    with db.write.begin() as conn:
        seen = [r[0] for r in conn.execute(sa.text("SELECT who FROM rows ORDER BY id"))]
        conn.execute(sa.text("INSERT INTO rows (who) VALUES (:who)"), {"who": who})
    return seen


def test_a_second_database_of_this_process_waits_for_the_first_ones_write(db_path, db_a, db_b):
    held, done = threading.Event(), threading.Event()
    times: dict[str, float] = {}
    errors: list[BaseException] = []

    def a() -> None:
        try:
            with db_a.write.begin() as conn:
                conn.execute(sa.text("INSERT INTO rows (who) VALUES ('a')"))
                held.set()
                time.sleep(HOLD_S)
                times["a_commits"] = time.monotonic()
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
        finally:
            held.set()
            done.set()

    thread = threading.Thread(target=a)
    thread.start()
    try:
        assert held.wait(5)
        assert not lock_is_free(db_path)  # A holds the OS lock while its transaction is open
        t0 = time.monotonic()
        seen = insert(db_b, "b")  # no "database is locked": it waits for A
        times["b_done"] = time.monotonic()
    finally:
        thread.join(10)
    assert not errors, errors
    assert seen == ["a"]  # B's transaction began after A's commit
    assert times["b_done"] >= times["a_commits"]
    assert times["b_done"] - t0 >= HOLD_S * 0.5
    assert lock_is_free(db_path)  # both checked their connection in
    with db_a.read.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT who FROM rows ORDER BY id"))] == ["a", "b"]


HOLDER = textwrap.dedent(
    """
    import sys, time
    import sqlalchemy as sa
    from argus.store.db import connect

    db = connect(sys.argv[1])
    with db.write.begin() as conn:
        conn.execute(sa.text("INSERT INTO rows (who) VALUES ('other process')"))
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    print("committed", flush=True)
    db.dispose()
    """
)


def test_a_writer_waits_for_another_process_that_holds_a_write(db_path, db_a):
    hold_s = 0.5
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"sqlite:///{db_path}", str(hold_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held", proc.stderr.read() if proc.stderr else ""
        assert not lock_is_free(db_path)
        t0 = time.monotonic()
        seen = insert(db_a, "us")  # waits on the OS lock; no "database is locked"
        waited = time.monotonic() - t0
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen == ["other process"]  # our transaction began after its commit
    assert waited >= hold_s * 0.5, waited
    assert lock_is_free(db_path)


def test_a_dead_holder_releases_the_lock(db_path, db_a):
    """A process killed inside its write transaction: the kernel drops its lock, SQLite rolls
    its write back, and our write goes on at once."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"sqlite:///{db_path}", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t0 = time.monotonic()
    assert insert(db_a, "us") == []  # its write was never committed
    assert time.monotonic() - t0 < 5


def test_the_lock_file_is_private(db_path, db_a):
    mode = stat.S_IMODE(os.stat(f"{db_path}.write-lock").st_mode)
    assert mode == 0o600, oct(mode)


def test_a_failed_transaction_releases_the_lock(db_path, db_a):
    with pytest.raises(RuntimeError), db_a.write.begin() as conn:
        conn.execute(sa.text("INSERT INTO rows (who) VALUES ('x')"))
        assert not lock_is_free(db_path)
        raise RuntimeError("boom")
    assert lock_is_free(db_path)
    with pytest.raises(sa.exc.IntegrityError), db_a.write.begin() as conn:
        conn.execute(sa.text("INSERT INTO rows (id, who) VALUES (1, 'x'), (1, 'y')"))
    assert lock_is_free(db_path)
    assert insert(db_a, "after") == []


def test_after_dispose_the_engine_still_writes_and_locks(db_path, db_a, db_b):
    insert(db_a, "before")
    db_a.dispose()
    assert lock_is_free(db_path)
    assert insert(db_a, "after") == ["before"]  # the lock file is opened again
    with db_a.write.begin() as conn:
        conn.execute(sa.text("INSERT INTO rows (who) VALUES ('held')"))
        assert not lock_is_free(db_path)  # and held again
    assert insert(db_b, "b") == ["before", "after", "held"]
    assert lock_is_free(db_path)


def test_an_in_memory_database_has_no_lock_file():
    db = connect("sqlite:///:memory:")
    try:
        assert db.write_lock is None
    finally:
        db.dispose()


def test_a_deferred_checkout_leaves_the_lock_to_its_caller(db_path, db_a):
    """`WriteLock.deferred`: the connection is this thread's (the process's turn), and the OS lock
    is taken only around the caller's own write."""
    lock = db_a.write_lock
    assert lock is not None
    with lock.deferred():
        raw = db_a.write.raw_connection()
    try:
        assert lock_is_free(db_path)
        lock.acquire()
        assert not lock_is_free(db_path)
        lock.release()
        assert lock_is_free(db_path)
        other: list[list[str]] = []
        thread = threading.Thread(target=lambda: other.append(insert(db_a, "other thread")))
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and other == []  # this process's other writers wait for the connection
    finally:
        raw.close()
    thread.join(10)
    assert other == [[]]
    assert lock_is_free(db_path)  # the checkin after a deferred checkout released nothing twice
    assert insert(db_a, "after") == ["other thread"]
    with db_a.write.begin():
        assert not lock_is_free(db_path)  # checkouts outside `deferred` take it as before


def test_deferred_nests(db_path, db_a):
    lock = db_a.write_lock
    assert lock is not None
    with lock.deferred():
        with lock.deferred():
            pass
        raw = db_a.write.raw_connection()  # still deferred after the inner one ended
        try:
            assert lock_is_free(db_path)
        finally:
            raw.close()
    raw = db_a.write.raw_connection()
    try:
        assert not lock_is_free(db_path)
    finally:
        raw.close()
