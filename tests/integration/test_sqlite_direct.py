"""SQLite inserts in one call that keeps the interpreter lock (`argus.store.sqlite_direct`), on
real database files: values come back exactly as the sqlite3 module would have stored them, a
failed statement rolls the whole transaction back, group-committed tasks go this way, and
whatever it cannot carry or a busy database falls back to the usual path with nothing lost.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import random
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from argus.store import sqlite_direct
from argus.store.db import open_database
from argus.store.sqlite_direct import DirectConnection, DirectError, sql_rows
from argus.store.task_inserts import InsertBatcher, NewTask, insert_tasks
from argus.store.tasks import TaskStore

HOSTILE = [
    "plain",
    "it's",
    "'); DROP TABLE t; --",
    'back\\slash \\u0041 \\\' "quoted"',
    "line\nbreak\ttab\r",
    "é 日本語 \U0001f600 \u2028",
    "",
    "x" * 70_000,
]


def _typed(conn: sqlite3.Connection, table: str) -> list[tuple]:
    """Each value with its SQLite type; floats by their bits (`==` would take -0.0 for 0.0)."""
    rows = conn.execute(
        f"SELECT a, typeof(a), b, typeof(b), c, typeof(c), d, typeof(d) FROM {table} ORDER BY rowid"
    ).fetchall()
    return [tuple(v.hex() if type(v) is float else v for v in row) for row in rows]


def _floats() -> list[float]:
    rng = random.Random(7)
    out = [86400.0, -0.5, 0.1, 1 / 3, 2.0**-62, 2.0**53 - 1, 1764551056.123456]
    # SQLite 3.40 reads each of these back from its `repr` as a neighbouring double:
    misread = ["-0x1.3d9b54ea2fb75p+27", "-0x1.8edfa605e5447p+30", "0x1.2c0ff7e482937p+2", "0x1.3c2cfadce6e2bp+31"]
    out += [float.fromhex(h) for h in misread]
    out += [rng.uniform(1.6e9, 1.9e9) for _ in range(300)] + [rng.random() for _ in range(300)]
    while len(out) < 1200:  # any bit pattern
        value = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if sql_rows([[value]]) is not None:
            out.append(value)
    return out


def test_values_come_back_as_the_sqlite3_module_stores_them(tmp_path: Path):
    path = str(tmp_path / "v.db")
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("CREATE TABLE bound (a TEXT, b FLOAT, c INTEGER, d)")
    plain.execute("CREATE TABLE direct (a TEXT, b FLOAT, c INTEGER, d)")
    floats = _floats()
    rows = [[s, floats[n], n, None] for n, s in enumerate(HOSTILE)]
    rows += [["ints", 86400.0, 2**63 - 1, True], ["more", 3.0, -(2**63), False], ["x", 0.0, 0, 0.25]]
    rows += [[str(n), value, n, value] for n, value in enumerate(floats)]
    plain.executemany("INSERT INTO bound VALUES (?, ?, ?, ?)", rows)
    direct = DirectConnection.open(path, ["synchronous=NORMAL"])
    assert direct is not None
    try:
        values = sql_rows(rows, max_chars=10**6, max_rows=10**4)
        assert values is not None
        direct.run(f"BEGIN IMMEDIATE;INSERT INTO direct VALUES {values};COMMIT".encode())
    finally:
        direct.close()
    assert _typed(plain, "direct") == _typed(plain, "bound")
    assert plain.execute("SELECT count(*) FROM sqlite_master").fetchone() == (2,)  # nothing was injected
    plain.close()


@pytest.mark.parametrize(
    "value",
    [
        "nul\x00inside",
        float("inf"),
        float("nan"),
        -0.0,
        2**63,
        -(2**63) - 1,
        2.0**-1070,
        2.0**-63,
        2.0**53,
        1e300,
        b"b",
        1j,
        [1],
        {"a": 1},
    ],
)
def test_values_it_could_not_write_exactly_are_refused(value):
    assert sql_rows([["fine", value]]) is None
    assert sql_rows([["fine", 1, 1.0, True, None]]) == "('fine',1,1.0,1,NULL)"


def test_a_failing_statement_rolls_back_the_whole_script_and_the_connection_goes_on(tmp_path: Path):
    path = str(tmp_path / "r.db")
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    plain.execute("INSERT INTO t VALUES ('taken')")
    direct = DirectConnection.open(path)
    assert direct is not None
    try:
        with pytest.raises(DirectError) as caught:
            direct.run(b"BEGIN IMMEDIATE;INSERT INTO t VALUES ('new');INSERT INTO t VALUES ('taken');COMMIT")
        assert caught.value.code == sqlite_direct.SQLITE_CONSTRAINT
        assert "UNIQUE" in str(caught.value)
        assert plain.execute("SELECT k FROM t").fetchall() == [("taken",)]  # 'new' rolled back
        direct.run(b"BEGIN IMMEDIATE;INSERT INTO t VALUES ('after');COMMIT")  # no transaction left open
        assert plain.execute("SELECT k FROM t ORDER BY k").fetchall() == [("after",), ("taken",)]
        with pytest.raises(DirectError) as caught:
            direct.run(b"SELECT * FROM missing")
        assert "no such table" in str(caught.value)
    finally:
        direct.close()
    with pytest.raises(DirectError, match="closed"):
        direct.run(b"SELECT 1")
    plain.close()


def test_a_busy_database_fails_at_once_instead_of_stalling_the_process(tmp_path: Path):
    path = str(tmp_path / "b.db")
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("CREATE TABLE t (k TEXT)")
    plain.execute("BEGIN IMMEDIATE")  # a writer that takes no OS lock (the sqlite3 shell)
    direct = DirectConnection.open(path)
    assert direct is not None
    try:
        started = time.monotonic()
        with pytest.raises(DirectError) as caught:
            direct.run(b"BEGIN IMMEDIATE;INSERT INTO t VALUES ('x');COMMIT")
        assert caught.value.code == sqlite_direct.SQLITE_BUSY
        assert time.monotonic() - started < 1.0
    finally:
        plain.execute("ROLLBACK")
        direct.close()
        plain.close()


def test_it_calls_the_very_sqlite_that_the_sqlite3_module_calls():
    if "/libsqlite3" not in Path("/proc/self/maps").read_text():
        pytest.skip("this Python's sqlite3 carries its own SQLite")
    lib = sqlite_direct._load()
    assert lib is not None
    lib.sqlite3_libversion.restype = ctypes.c_char_p
    assert lib.sqlite3_libversion().decode() == sqlite3.sqlite_version
    address = ctypes.cast(lib.sqlite3_exec, ctypes.c_void_p).value
    assert address is not None
    owners = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            owners.append(rest[-1])
    assert len(owners) == 1 and "/libsqlite3" in owners[0], owners  # here: the shared library _sqlite3 links
    assert isinstance(lib, ctypes.PyDLL)  # its calls keep the interpreter lock


def test_it_is_not_used_where_it_cannot_be(tmp_path: Path, monkeypatch):
    assert DirectConnection.open(":memory:") is None
    assert DirectConnection.open(f"file:{tmp_path}/u.db?mode=rwc") is None
    with pytest.raises(DirectError, match="cannot open"):
        DirectConnection.open(str(tmp_path / "no" / "such.db"))
    sqlite3.connect(tmp_path / "s.db").close()
    monkeypatch.setattr(sqlite_direct, "_lib", None)
    monkeypatch.setattr(sqlite_direct, "_module_library", lambda: None)  # e.g. a static copy, not exported
    assert DirectConnection.open(str(tmp_path / "s.db")) is None


def row(n: int, jobspec: str | None = None) -> NewTask:
    return NewTask(
        f"t-{n:05d}", "alice", "ppo", jobspec or f"workload: ppo # {n}\n", 1, 2, 0.5, 1000.0 + n, 600, 3600.0
    )


@pytest.fixture
def db(tmp_path: Path):
    db = open_database(f"sqlite:///{tmp_path}/a.sqlite3")
    yield db
    db.dispose()


def _spy(monkeypatch) -> list[bytes]:
    scripts: list[bytes] = []
    real = DirectConnection.run

    def run(self, script):
        if script.startswith(b"BEGIN"):  # not the PRAGMAs at its opening
            scripts.append(script)
        return real(self, script)

    monkeypatch.setattr(DirectConnection, "run", run)
    return scripts


def _lock_is_free(db) -> bool:
    fd = os.open(db.write_lock.path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _stored(db) -> list[tuple]:
    with db.read.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT t.task_id, t.jobspec_yaml, t.driver_gpus, t.preemptible, t.state, e.reason "
                "FROM tasks t JOIN task_events e USING (task_id) ORDER BY t.seq"
            )
        ).all()


def test_group_committed_tasks_go_through_one_direct_script(db, monkeypatch):
    scripts = _spy(monkeypatch)
    statements: list[str] = []
    raw = db.write.raw_connection()
    raw.driver_connection.set_trace_callback(statements.append)
    raw.close()
    insert_tasks(db, [row(n) for n in range(5)])
    assert len(scripts) == 1 and scripts[0].startswith(b"BEGIN IMMEDIATE;") and scripts[0].endswith(b";COMMIT")
    assert not [s for s in statements if "INSERT" in s]  # the sqlite3 module's connection wrote nothing
    assert _stored(db) == [(f"t-{n:05d}", f"workload: ppo # {n}\n", 0.5, 0, "QUEUED", "accepted") for n in range(5)]
    store = TaskStore(db)
    try:
        assert [t.task_id for t in store.in_states(["QUEUED"])] == [f"t-{n:05d}" for n in range(5)]
        assert store.get("t-00003").priority == 600 and store.get("t-00003").time_limit_s == 3600.0
    finally:
        store.inserts.close()


def test_a_taken_id_fails_its_row_alone_through_the_batcher(db, monkeypatch):
    scripts = _spy(monkeypatch)
    insert_tasks(db, [row(1)])
    with pytest.raises(sa.exc.IntegrityError):  # as the usual path raises it: the caller draws again
        insert_tasks(db, [row(2), row(1), row(3)])
    assert [r[0] for r in _stored(db)] == ["t-00001"]  # nothing of that batch was kept
    batcher = InsertBatcher(db)
    errors: dict[int, BaseException | None] = {}

    def put(n: int) -> None:
        try:
            batcher.insert_blocking(row(n))
            errors[n] = None
        except BaseException as exc:
            errors[n] = exc

    assert _lock_is_free(db)  # the failed script let the OS lock go
    threads = [threading.Thread(target=put, args=(n,)) for n in (4, 1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    batcher.close()
    assert errors[4] is None and errors[5] is None and isinstance(errors[1], sa.exc.IntegrityError)
    assert sorted(r[0] for r in _stored(db)) == ["t-00001", "t-00004", "t-00005"]
    assert len(scripts) >= 4


def test_a_value_it_cannot_carry_goes_the_usual_way_intact(db, monkeypatch):
    scripts = _spy(monkeypatch)
    insert_tasks(db, [row(1, "with a nul \x00 inside\n"), row(2)])
    assert scripts == []
    assert [r[1] for r in _stored(db)] == ["with a nul \x00 inside\n", "workload: ppo # 2\n"]


def test_a_busy_database_falls_back_to_the_usual_path_and_waits_its_turn(db, monkeypatch, caplog):
    scripts = _spy(monkeypatch)
    insert_tasks(db, [row(0)])  # the direct connection is open
    shell = sqlite3.connect(db.url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    shell.execute("BEGIN IMMEDIATE")  # holds SQLite's write lock without the OS lock
    timer = threading.Timer(0.5, lambda: shell.execute("ROLLBACK"))
    timer.start()
    try:
        insert_tasks(db, [row(1), row(2)])  # direct: busy at once; then the usual path's busy handler
    finally:
        timer.join()
        shell.close()
    assert len(scripts) == 2
    assert "inserting the usual way" in caplog.text
    assert [r[0] for r in _stored(db)] == ["t-00000", "t-00001", "t-00002"]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from argus.store.db import connect

    db = connect(sys.argv[1])
    with db.write.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE held (a)")
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    print("committed", flush=True)
    db.dispose()
    """
)


def test_a_direct_insert_waits_for_another_process_that_holds_the_write_lock(db, monkeypatch, caplog):
    scripts = _spy(monkeypatch)
    insert_tasks(db, [row(0)])
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db.url, "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held", proc.stderr.read() if proc.stderr else ""
        started = time.monotonic()
        insert_tasks(db, [row(1), row(2)])  # on the OS lock, not SQLITE_BUSY and the usual path
        waited = time.monotonic() - started
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert waited >= 0.25, waited
    assert len(scripts) == 2 and "usual way" not in caplog.text
    assert [r[0] for r in _stored(db)] == ["t-00000", "t-00001", "t-00002"]


def test_batches_too_big_for_one_call_go_the_usual_way(db, monkeypatch):
    scripts = _spy(monkeypatch)
    big = "x: '" + "y" * 100_000 + "'\n"
    insert_tasks(db, [row(n, big) for n in range(3)])  # over MAX_SCRIPT_BYTES
    insert_tasks(db, [row(n) for n in range(3, 3 + sqlite_direct.MAX_SCRIPT_ROWS + 1)])  # one row too many
    assert scripts == []
    insert_tasks(db, [row(n) for n in range(100, 100 + sqlite_direct.MAX_SCRIPT_ROWS)])
    assert len(scripts) == 1
    stored = _stored(db)
    assert len(stored) == 3 + sqlite_direct.MAX_SCRIPT_ROWS + 1 + sqlite_direct.MAX_SCRIPT_ROWS
    assert [r[1] for r in stored[:3]] == [big] * 3


def test_a_failure_that_would_repeat_closes_the_direct_connection_for_good(db, monkeypatch, caplog):
    insert_tasks(db, [row(0)])
    direct = db.direct()
    assert direct is not None

    def readonly(self, script):
        raise DirectError(8, "attempt to write a readonly database")  # SQLITE_READONLY

    monkeypatch.setattr(DirectConnection, "run", readonly)
    insert_tasks(db, [row(1)])  # written the usual way
    assert db.direct() is None and "writes go the usual way" in caplog.text
    insert_tasks(db, [row(2)])
    assert [r[0] for r in _stored(db)] == ["t-00000", "t-00001", "t-00002"]
    assert _lock_is_free(db)


class _FailingRollback:
    """The real library, except that ROLLBACK fails (and leaves the transaction open)."""

    def __init__(self, lib):
        self._real = lib

    def __getattr__(self, name):
        return getattr(self._real, name)

    def sqlite3_exec(self, handle, script, *rest):
        return 1 if script == b"ROLLBACK" else self._real.sqlite3_exec(handle, script, *rest)


def test_a_failed_rollback_closes_the_connection_and_so_ends_its_transaction(tmp_path: Path):
    path = str(tmp_path / "f.db")
    plain = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    plain.execute("INSERT INTO t VALUES ('taken')")
    direct = DirectConnection.open(path)
    assert direct is not None
    direct._lib = _FailingRollback(direct._lib)
    with pytest.raises(DirectError, match="the rollback failed too"):
        direct.run(b"BEGIN IMMEDIATE;INSERT INTO t VALUES ('new');INSERT INTO t VALUES ('taken');COMMIT")
    with pytest.raises(DirectError, match="closed"):
        direct.run(b"SELECT 1")
    plain.execute("INSERT INTO t VALUES ('after')")  # SQLite's write lock went with the connection
    assert plain.execute("SELECT k FROM t ORDER BY k").fetchall() == [("after",), ("taken",)]
    plain.close()


def test_any_error_while_opening_it_means_the_usual_path(db, monkeypatch):
    def broken(path, pragmas=()):
        raise OSError("no such library")

    monkeypatch.setattr(DirectConnection, "open", broken)
    assert db.direct() is None
    insert_tasks(db, [row(1)])
    assert [r[0] for r in _stored(db)] == ["t-00001"]


def test_a_connection_closed_by_dispose_meanwhile_is_not_dropped_for_good(db, monkeypatch):
    stale = db.direct()
    assert stale is not None
    db.dispose()  # closes it; the next use opens another
    with monkeypatch.context() as m:
        m.setattr(type(db), "direct", lambda self: stale)  # a writer that took it just before
        insert_tasks(db, [row(1)])  # "closed": the usual path, nothing dropped
    fresh = db.direct()
    assert fresh is not None and fresh is not stale
    scripts = _spy(monkeypatch)
    insert_tasks(db, [row(2)])
    assert len(scripts) == 1
    assert [r[0] for r in _stored(db)] == ["t-00001", "t-00002"]
