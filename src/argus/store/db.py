"""Engines and migrations for SQLite (default) and PostgreSQL.

Owns how a database URL becomes engines, and applying the Alembic migrations at start.

SQLite runs in WAL mode (readers never wait for the writer) with `synchronous=NORMAL` and a busy
timeout. Writes go through their own engine whose transactions start with `BEGIN IMMEDIATE`, so a
read-then-write transaction holds the write lock from its first statement and two writers never
deadlock on a lock upgrade. The write engine holds a single connection, so writers in this
process queue on the pool (woken at once) instead of in SQLite's busy handler (which sleeps and
polls, and made tail latency seconds long under 32 concurrent writers). PostgreSQL uses one pooled engine for both, at READ COMMITTED, with
`SELECT … FOR UPDATE` where a transition reads before it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


@dataclass
class Database:
    """The read and write engines of one database (the same engine on PostgreSQL)."""

    url: str
    read: sa.Engine
    write: sa.Engine

    @property
    def is_sqlite(self) -> bool:
        return self.read.dialect.name == "sqlite"

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file (PASSIVE: never waits for,
        nor blocks, a writer). The server runs this on a thread of its own, so no request pays
        for a checkpoint's fsync; a no-op on PostgreSQL."""
        if self.is_sqlite:
            with self.read.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def dispose(self) -> None:
        self.read.dispose()
        if self.write is not self.read:
            self.write.dispose()


def _sqlite_engine(url: str, begin: str, pool_size: int, autocheckpoint: bool = True) -> sa.Engine:
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=pool_size, max_overflow=0 if pool_size == 1 else 16, pool_timeout=60,
        poolclass=sa.pool.QueuePool,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not autocheckpoint:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql(begin)

    return engine


def connect(url: str, autocheckpoint: bool = True) -> Database:
    """Engines for `url` (`sqlite:///path` or `postgresql+psycopg://…`); the SQLite file's
    directory is created.

    Args:
        autocheckpoint: False leaves SQLite's checkpoints to `Database.checkpoint`, which the
            caller then runs regularly (the server does, off the request path).
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Database(url, _sqlite_engine(url, "BEGIN", 8),
                        _sqlite_engine(url, "BEGIN IMMEDIATE", 1, autocheckpoint=autocheckpoint))
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return Database(url, engine, engine)


def migrate(db: Database) -> None:
    """Apply every Alembic migration not yet applied (idempotent)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.write.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(url: str, autocheckpoint: bool = True) -> Database:
    """Connect and migrate."""
    db = connect(url, autocheckpoint)
    migrate(db)
    return db
