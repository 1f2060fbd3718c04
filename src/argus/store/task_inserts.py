"""Accepted tasks' inserts, grouped: many requests' rows in one transaction (group commit).

Owns `NewTask` (one accepted task's row), `insert_tasks` (rows and their `accepted` events in
one transaction, by statements compiled once per driver, run by the driver itself: a third
of the cost of SQLAlchemy's per-statement path at the batch sizes seen under load; multi-row
`INSERT`s on SQLite, `executemany` elsewhere; on a SQLite file, batches of up to 64 rows are one
`sqlite_direct` script instead, run in one call that keeps the interpreter lock, with the OS
write lock taken around that call alone, and anything that script cannot carry goes the usual
way) and `InsertBatcher`. A request hands its row to
`InsertBatcher.insert` (async) and awaits it; one writer thread takes every row queued
meanwhile, up to `max_batch`, and inserts them together. Under a burst the cost of a
transaction (the write connection's turn, `BEGIN IMMEDIATE`, `COMMIT`, the WAL append) is then
paid once per batch instead of once per task, and no request holds a thread while it waits.

Invariants: a request's future completes only after its row is committed, or with the error
that kept it out; a row whose task id is taken fails alone (the batch is retried row by row, and
that row's future gets the `IntegrityError`, so the caller can draw another id); rows are
committed in the order they were queued. The requests of one event loop are told together, in
one call on that loop: a batch wakes each loop once, not once per row.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from argus.domain.task import TaskState
from argus.store.db import Database
from argus.store.schema import task_events, tasks
from argus.store.sqlite_direct import (
    MAX_SCRIPT_BYTES,
    SQLITE_BUSY,
    SQLITE_CONSTRAINT,
    SQLITE_MISUSE,
    DirectError,
    integrity_error,
    sql_rows,
)

log = logging.getLogger("argus.store")
_QUEUED = TaskState.QUEUED.value
_EVENT_COLUMNS = ("task_id", "at", "from_state", "to_state", "attempt_no", "reason")
_compiled: dict[tuple[str, str], tuple[tuple[str, tuple[str, ...] | None], tuple[str, tuple[str, ...] | None]]] = {}


@dataclass(frozen=True, slots=True)
class NewTask:
    """An accepted task's row, as it is inserted (QUEUED, no attempt yet)."""

    task_id: str
    user_id: str
    workload: str
    jobspec_yaml: str
    nnodes: int
    n_gpus_per_node: int
    driver_gpus: float
    now: float
    priority: int = 500
    time_limit_s: float = 86400.0
    pool: str | None = None
    preemptible: bool = False

    def row(self) -> dict:
        """The `tasks` row (field by field: `dataclasses.asdict` deep-copies, ten times slower)."""
        return {
            "task_id": self.task_id,
            "user_id": self.user_id,
            "workload": self.workload,
            "jobspec_yaml": self.jobspec_yaml,
            "nnodes": self.nnodes,
            "n_gpus_per_node": self.n_gpus_per_node,
            "driver_gpus": self.driver_gpus,
            "priority": self.priority,
            "time_limit_s": self.time_limit_s,
            "pool": self.pool,
            "preemptible": bool(self.preemptible),  # PostgreSQL's boolean takes no 0/1 from the driver
            "state": _QUEUED,
            "attempts": 0,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def event(self) -> dict:
        return {
            "task_id": self.task_id,
            "at": self.now,
            "from_state": None,
            "to_state": _QUEUED,
            "attempt_no": None,
            "reason": "accepted",
        }


_TASK_COLUMNS = tuple(NewTask("", "", "", "", 0, 0, 0.0, 0.0).row())  # the columns `row` fills


def _statement(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> tuple[str, tuple[str, ...] | None]:
    """The INSERT of `columns` as the driver takes it, and the order of its positional
    parameters (None: the driver takes them by name)."""
    compiled = table.insert().inline().compile(dialect=dialect, column_keys=list(columns))  # no RETURNING
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    return str(compiled), order


def _params(rows: list[dict], order: tuple[str, ...] | None) -> list:
    return [tuple(r[k] for k in order) for r in rows] if order is not None else rows


# SQLite: at most this many bound parameters in one statement (besides the connection's own limit).
_SQLITE_MAX_PARAMS = 32766
_multi: dict[tuple[str, int], str] = {}


def _sqlite_rows(cursor: Any, sql: str, params: list[tuple]) -> None:
    """SQLite: insert `params` with multi-row INSERTs (`VALUES (…), (…)`) instead of
    `executemany`. sqlite3 lets go of the interpreter around every row's step of an
    `executemany`, and while the write lock is held (every other process's writers waiting)
    each time it gets it back from a busy thread may cost up to a switch interval (5 ms): a
    5-row insert beside one busy thread held the lock 42 ms by `executemany`, 14 ms by one
    statement a table."""
    limit = min(_SQLITE_MAX_PARAMS, cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    per = max(1, limit // len(params[0]))
    head, _, values = sql.partition(" VALUES ")
    for at in range(0, len(params), per):
        chunk = params[at : at + per]
        key = (sql, len(chunk))
        statement = _multi.get(key)
        if statement is None:
            statement = _multi[key] = f"{head} VALUES {', '.join([values] * len(chunk))}"
        cursor.execute(statement, [v for row in chunk for v in row])


def _executemany(cursor: Any, sql: str, params: list) -> None:
    cursor.executemany(sql, params)


def _statements(dialect: sa.Dialect) -> tuple[tuple[str, tuple[str, ...] | None], tuple[str, tuple[str, ...] | None]]:
    """The INSERTs of tasks and of their events for `dialect`'s driver, compiled once."""
    key = (dialect.name, dialect.driver)  # each driver has its own parameter style
    if key not in _compiled:
        _compiled[key] = (
            _statement(tasks, _TASK_COLUMNS, dialect),
            _statement(task_events, _EVENT_COLUMNS, dialect),
        )
    return _compiled[key]


def _direct_script(rows: Sequence[NewTask], dialect: sa.Dialect) -> bytes | None:
    """The whole transaction as one script for `DirectConnection.run`: the compiled INSERTs with
    literal rows. None: more rows or bytes than one call should carry (`MAX_SCRIPT_ROWS`,
    `MAX_SCRIPT_BYTES`), a value `sql_rows` cannot write exactly, or text that is not UTF-8."""
    (task_sql, task_order), (event_sql, event_order) = _statements(dialect)
    if task_order is None or event_order is None:  # a driver that takes names: not SQLite's
        return None
    task_rows = sql_rows(_params([r.row() for r in rows], task_order))
    event_rows = sql_rows(_params([r.event() for r in rows], event_order))
    if task_rows is None or event_rows is None:
        return None
    task_head, event_head = task_sql.partition(" VALUES ")[0], event_sql.partition(" VALUES ")[0]
    try:
        script = f"BEGIN IMMEDIATE;{task_head} VALUES {task_rows};{event_head} VALUES {event_rows};COMMIT".encode()
    except UnicodeEncodeError:  # a lone surrogate: let the sqlite3 module say so
        return None
    return script if len(script) <= MAX_SCRIPT_BYTES else None  # doubled quotes, multi-byte text


def _insert_direct(db: Database, rows: Sequence[NewTask]) -> bool:
    """SQLite: insert `rows` through the database's `DirectConnection` (one call that keeps the
    interpreter lock) while holding the write engine's connection. Returns False when nothing
    was stored and the usual path must run: no direct connection, a batch or value it cannot
    carry, a busy database, a direct connection closed meanwhile, or any other failure but a
    constraint (which also closes the direct connection for good: another try would likely fail
    alike, and a transient one only costs the speed of this path).

    Raises:
        sqlalchemy.exc.IntegrityError: a task id is taken (nothing of `rows` is stored).
    """
    direct = db.direct()
    if direct is None:
        return False
    script = _direct_script(rows, db.write.dialect)
    if script is None:
        return False
    lock = db.write_lock
    assert lock is not None  # SQLite on a file, as `direct` says
    with lock.deferred():
        raw = db.write.raw_connection()  # this process's turn; the lock across processes below
    try:
        lock.acquire()
        try:
            direct.run(script)  # nothing but this one call while other processes wait
        finally:
            lock.release()
    except DirectError as exc:
        if exc.code in (SQLITE_BUSY, SQLITE_MISUSE):  # a writer without the OS lock; closed meanwhile
            log.warning("a direct SQLite insert could not run (%s); inserting the usual way", exc)
            return False
        if exc.code != SQLITE_CONSTRAINT:
            db.drop_direct(direct, str(exc))
            return False
        raise sa.exc.DBAPIError.instance("INSERT INTO tasks", None, integrity_error(str(exc)), sqlite3.Error) from exc
    finally:
        raw.close()
    return True


def insert_tasks(db: Database, rows: Sequence[NewTask]) -> None:
    """Insert `rows` as QUEUED tasks with their first events, all in one transaction.

    Raises:
        sqlalchemy.exc.IntegrityError: a task id is taken (nothing of `rows` is stored).
    """
    if _insert_direct(db, rows):
        return
    with db.write.begin() as conn:
        dialect = conn.dialect
        (task_sql, task_order), (event_sql, event_order) = _statements(dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        write = _sqlite_rows if dialect.name == "sqlite" and task_order is not None else _executemany
        sql, params = task_sql, _params([r.row() for r in rows], task_order)
        try:
            write(cursor, sql, params)
            sql, params = event_sql, _params([r.event() for r in rows], event_order)
            write(cursor, sql, params)
        except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy would raise it
            raise sa.exc.DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()


# A request's future: an asyncio one (`insert`, settled on its loop) or a thread's (`insert_blocking`).
_Waiter = asyncio.Future | Future
_Item = tuple[NewTask, _Waiter]


class InsertBatcher:
    """One writer thread that inserts the rows queued by many requests, a batch at a time.

    Args:
        db: the database (its write engine).
        max_batch: the most rows in one transaction.
    """

    def __init__(self, db: Database, max_batch: int = 256) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # transactions committed (for tests and benchmarks)
        self.rows = 0

    async def insert(self, row: NewTask) -> None:
        """Insert `row` with the next batch and wait (without a thread) until it is committed.

        Raises:
            sqlalchemy.exc.IntegrityError: its task id is taken.
            RuntimeError: the batcher is closed.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(row, future)
        await future

    def insert_blocking(self, row: NewTask) -> None:
        """`insert` for a caller on a thread: waits until `row` is committed.

        Raises:
            as `insert`.
        """
        future: Future[None] = Future()
        self._put(row, future)
        future.result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _put(self, row: NewTask, waiter: _Waiter) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the server is stopping: no more tasks are accepted")
            if self._thread is None or not self._thread.is_alive():  # first use, or it died
                self._thread = threading.Thread(target=self._run, name="argus-task-inserts", daemon=True)
                self._thread.start()
            self._queue.put((row, waiter))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                _tell(batch, self._write(batch))
            except BaseException as exc:  # nothing may leave a request waiting for ever
                error = exc if isinstance(exc, Exception) else RuntimeError("the insert thread stopped")
                _tell(batch, [error] * len(batch))
                raise
            if stop:
                return

    def _write(self, batch: list[_Item]) -> list[Exception | None]:
        """Insert `batch` in one transaction; when that fails, row by row, so that only the
        rows that cannot be stored fail. Returns each row's error, or None where it is stored."""
        try:
            insert_tasks(self.db, [row for row, _ in batch])
        except Exception:
            errors: list[Exception | None] = []
            for row, _ in batch:
                try:
                    insert_tasks(self.db, [row])
                except Exception as exc:
                    errors.append(exc)
                else:
                    self._count(1)
                    errors.append(None)
            return errors
        self._count(len(batch))
        return [None] * len(batch)

    def _count(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows


def _tell(batch: list[_Item], errors: Sequence[BaseException | None]) -> None:
    """Tell each request how its row went: a thread's at once, those of one event loop in one
    call on that loop. A request whose loop has closed is skipped."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, BaseException | None]]] = {}
    for (_, waiter), error in zip(batch, errors, strict=True):
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, error))
        else:
            try:
                _settle(waiter, error)
            except Exception:  # settled meanwhile (cancelled)
                log.debug("a request could not be told how its insert went", exc_info=True)
    for loop, told in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, told)
        except RuntimeError:  # its loop closed
            log.debug("%d request(s) could not be told how their inserts went", len(told), exc_info=True)


def _settle_all(told: list[tuple[asyncio.Future, BaseException | None]]) -> None:
    for future, error in told:
        try:
            _settle(future, error)
        except Exception:  # one future that cannot take its answer keeps no other waiting
            log.debug("a request could not be told how its insert went", exc_info=True)


def _settle(future: _Waiter, error: BaseException | None) -> None:
    if future.done():
        return  # the request went away (its client disconnected)
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
