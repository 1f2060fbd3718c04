"""Engines and migrations for SQLite (default) and PostgreSQL.

Owns how a database URL becomes engines, and applying the Alembic migrations at start.

SQLite runs in WAL mode (readers never wait for the writer) with `synchronous=NORMAL` and a busy
timeout. Writes go through their own engine whose transactions start with `BEGIN IMMEDIATE`, so a
read-then-write transaction holds the write lock from its first statement and two writers never
deadlock on a lock upgrade. The write engine holds a single connection, so writers in this
process queue on the pool (woken at once) instead of in SQLite's busy handler (which sleeps and
polls, and made tail latency seconds long under 32 concurrent writers). Writers in other
processes (the server's scheduler process, its other API processes, the CLI's admin commands)
queue the same way on an OS lock beside the database file (`<db>.write-lock`, `flock`), which
the write connection holds from checkout to checkin (a group commit of accepted tasks, checked
out `WriteLock.deferred`, holds it around its one `sqlite_direct` call alone): the kernel wakes
the next waiter as soon as it is released, where SQLite's busy handler would sleep 1 to 100 ms
between tries. The wait for it has no bound (a holder that dies releases it). PostgreSQL uses one
pooled engine for both, at READ COMMITTED, with `SELECT … FOR UPDATE` where a transition reads
before it writes.

The SQLite write-ahead log stays bounded: `Database.checkpoint` (run by the server every second)
copies it into the database file, and once the log file is over `wal_max_bytes` it checkpoints
with TRUNCATE on the write connection (so no writer of this process is waiting behind it) and
the file shrinks to nothing; `journal_size_limit` also cuts the file back whenever the log
restarts.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from argus.store.fairpool import FairQueuePool
from argus.store.sqlite_direct import DirectConnection

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Read connections kept open: as many as the threads that serve reads (Starlette's 40), so a
# burst never opens and closes connections (each open runs the PRAGMAs below).
READ_POOL = 40
WAL_MAX_BYTES = 16 * 1024 * 1024
# How long a TRUNCATE checkpoint waits for readers before giving up until the next one.
TRUNCATE_BUSY_TIMEOUT_MS = 250

log = logging.getLogger("argus.store")


@dataclass
class Database:
    """The read and write engines of one database (the same engine on PostgreSQL)."""

    url: str
    read: sa.Engine
    write: sa.Engine
    wal_max_bytes: int = WAL_MAX_BYTES
    write_lock: WriteLock | None = None  # SQLite on a file: held by the write connection
    pragmas: tuple[str, ...] = ()  # SQLite: what each connection sets (`name=value`)
    _direct: Any = field(default=None, repr=False)  # None: not opened yet; False: not available
    _direct_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.read.dialect.name == "sqlite"

    @property
    def wal_path(self) -> Path | None:
        """SQLite's write-ahead log file (None: not SQLite, or in memory)."""
        if not self.is_sqlite:
            return None
        path = sa.engine.make_url(self.url).database
        return Path(path + "-wal") if path and path != ":memory:" else None

    def wal_bytes(self) -> int:
        """The size of the write-ahead log file (0 when there is none)."""
        path = self.wal_path
        try:
            return path.stat().st_size if path is not None else 0
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> bool:
        """SQLite: copy the write-ahead log into the database file (PASSIVE: never waits for,
        nor blocks, a writer); when the log file is over `wal_max_bytes`, checkpoint with
        TRUNCATE instead (`truncate_wal`). The server runs this on a thread of its own, so no
        request pays for a checkpoint's fsync; a no-op on PostgreSQL.

        Returns:
            True when the log was truncated.
        """
        if not self.is_sqlite:
            return False
        if self.wal_bytes() > self.wal_max_bytes:
            return self.truncate_wal()
        raw = self.read.raw_connection()
        try:
            _sqlite3(raw).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            raw.close()
        return False

    def truncate_wal(self) -> bool:
        """SQLite: checkpoint everything and truncate the log file to zero bytes.

        Runs on the write engine's one connection, so the writers of this process wait for it
        on the pool (it takes milliseconds) rather than it waiting for them; it waits at most
        `TRUNCATE_BUSY_TIMEOUT_MS` for readers of an older snapshot, else gives up until the
        next call.

        Returns:
            True when the whole log was copied and the file truncated.
        """
        if not self.is_sqlite:
            return False
        raw = self.write.raw_connection()
        try:
            conn = _sqlite3(raw)
            conn.execute(f"PRAGMA busy_timeout={TRUNCATE_BUSY_TIMEOUT_MS}")
            try:
                busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            raw.close()
        if busy:
            log.debug("WAL truncation deferred: a reader or writer was busy")
        return not busy

    def direct(self) -> DirectConnection | None:
        """SQLite on a file: the connection whose transactions run in one call that keeps the
        interpreter lock (`sqlite_direct`), opened at the first call; None elsewhere, where it
        cannot be used, or once `drop_direct` was called. Run it only while holding the write
        engine's connection."""
        if self.write_lock is None:
            return None
        with self._direct_guard:
            if self._direct is None:
                path = sa.engine.make_url(self.url).database or ""
                try:
                    self._direct = DirectConnection.open(path, self.pragmas) or False
                except Exception:
                    log.warning("SQLite's direct connection could not be opened", exc_info=True)
                    self._direct = False
            return self._direct or None

    def drop_direct(self, direct: DirectConnection, reason: str) -> None:
        """Close `direct` for good (this `Database` writes the usual way from now on): it failed
        in a way that another try would repeat. A no-op when `direct` is no longer the one in use
        (`dispose` closed it meanwhile)."""
        with self._direct_guard:
            if self._direct is not direct:
                return
            self._direct = False
        if direct:
            log.warning("SQLite's direct connection is closed (%s); writes go the usual way", reason)
            direct.close()

    def dispose(self) -> None:
        self.read.dispose()
        if self.write is not self.read:
            self.write.dispose()
        with self._direct_guard:
            direct = self._direct
            if direct:  # opened again at the next use (a dropped one stays dropped)
                self._direct = None
        if direct:
            direct.close()
        if self.write_lock is not None:
            self.write_lock.close()


def _sqlite3(raw: sa.PoolProxiedConnection) -> sqlite3.Connection:
    """The sqlite3 connection under a pooled one.

    Raises:
        sqlalchemy.exc.InvalidRequestError: the pooled connection was invalidated (no DBAPI
            connection under it).
    """
    conn = raw.driver_connection
    if conn is None:
        raise sa.exc.InvalidRequestError("the pooled SQLite connection was invalidated")
    return conn


class WriteLock:
    """The OS lock that a process's SQLite write connection holds while it is checked out.

    `flock` on a file of its own beside the database: exclusive between processes (and between
    two `Database`s of one process, each with its own descriptor), released by the kernel when
    its holder dies. Within one `Database` the write pool's single connection already serialises
    the threads, so one descriptor serves them all. A thread inside `deferred` checks the
    connection out without the lock and takes it itself around the one call that writes
    (`task_inserts`), so that little Python runs while other processes wait for it (when the lock
    was taken, the thread still gets the interpreter back holding it).
    """

    def __init__(self, path: str):
        self.path = path
        self._fd = -1  # opened at the first acquire (again after `close`)
        self._held = False
        self._guard = threading.Lock()
        self._local = threading.local()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Checkouts on this thread meanwhile do not acquire the lock (the caller does)."""
        before = getattr(self._local, "deferred", False)
        self._local.deferred = True
        try:
            yield
        finally:
            self._local.deferred = before

    def acquire_on_checkout(self) -> None:
        if not getattr(self._local, "deferred", False):
            self.acquire()

    def acquire(self) -> None:
        with self._guard:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fd = self._fd
        # First without waiting and without letting go of the interpreter lock: once the lock
        # is held, every other process's writers wait for as long as this thread takes to get
        # the interpreter back from a busy one (up to a switch interval).
        if _flock_held(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) != 0:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the interpreter lock
        with self._guard:
            self._held = True

    def release(self) -> None:
        with self._guard:
            if not self._held:
                return
            self._held = False
            if _flock_held(self._fd, fcntl.LOCK_UN) != 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release and close the descriptor (an engine used after `Database.dispose` opens it
        again)."""
        self.release()
        with self._guard:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _libc_flock() -> Any:
    """libc's `flock` called without letting go of the interpreter lock (`ctypes.PyDLL`), for
    the calls that never block; None where it cannot be found."""
    try:
        flock = ctypes.PyDLL(None, use_errno=True).flock
    except (OSError, AttributeError):
        return None
    flock.argtypes = [ctypes.c_int, ctypes.c_int]
    flock.restype = ctypes.c_int
    return flock


_LIBC_FLOCK = _libc_flock()


def _flock_held(fd: int, operation: int) -> int:
    """`flock(fd, operation)` keeping the interpreter lock: 0 when done, else -1 (refused,
    or not available here: the caller then calls `fcntl.flock`)."""
    return -1 if _LIBC_FLOCK is None else int(_LIBC_FLOCK(fd, operation))


def _write_lock(engine: sa.Engine, path: str) -> WriteLock:
    """Hold `path`'s `WriteLock` while `engine`'s (one) connection is checked out."""
    lock = WriteLock(path)

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_conn, _record, _proxy):
        lock.acquire_on_checkout()

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, _record):
        lock.release()

    return lock


def _pragmas(autocheckpoint: bool, wal_max_bytes: int) -> tuple[str, ...]:
    """What each SQLite connection sets, besides WAL mode (which the file keeps)."""
    return (
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"journal_size_limit={int(wal_max_bytes)}",
        *(() if autocheckpoint else ("wal_autocheckpoint=0",)),
    )


def _sqlite_engine(
    url: str, begin: str, pool_size: int, autocheckpoint: bool = True, wal_max_bytes: int = WAL_MAX_BYTES
) -> sa.Engine:
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=pool_size,
        max_overflow=0 if pool_size == 1 else 16,
        pool_timeout=60,
        poolclass=FairQueuePool if pool_size == 1 else sa.pool.QueuePool,  # writers served in order
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        for pragma in _pragmas(autocheckpoint, wal_max_bytes):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(begin)

    return engine


def connect(url: str, autocheckpoint: bool = True, wal_max_bytes: int = WAL_MAX_BYTES) -> Database:
    """Engines for `url` (`sqlite:///path` or `postgresql+psycopg://…`); the SQLite file's
    directory is created.

    Args:
        autocheckpoint: False leaves SQLite's checkpoints to `Database.checkpoint`, which the
            caller then runs regularly (the server does, off the request path).
        wal_max_bytes: SQLite: the write-ahead log size past which it is truncated.
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        write = _sqlite_engine(url, "BEGIN IMMEDIATE", 1, autocheckpoint=autocheckpoint, wal_max_bytes=wal_max_bytes)
        lock = None
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock = _write_lock(write, path + ".write-lock")
        read = _sqlite_engine(url, "BEGIN", READ_POOL, wal_max_bytes=wal_max_bytes)
        return Database(url, read, write, wal_max_bytes, lock, _pragmas(autocheckpoint, wal_max_bytes))
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return Database(url, engine, engine)


def migrate(db: Database) -> None:
    """Apply every Alembic migration not yet applied (idempotent)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.write.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(url: str, autocheckpoint: bool = True, wal_max_bytes: int = WAL_MAX_BYTES) -> Database:
    """Connect and migrate."""
    db = connect(url, autocheckpoint, wal_max_bytes)
    migrate(db)
    return db
