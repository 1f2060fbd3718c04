"""Accepted tasks' inserts, grouped: many requests' rows in one transaction (group commit).

Owns `NewTask` (one accepted task's row), `insert_tasks` (rows and their `accepted` events in
one transaction, by statements built once) and `InsertBatcher`. A request hands its row to
`InsertBatcher.insert` (async) and awaits it; one writer thread takes every row queued
meanwhile, up to `max_batch`, and inserts them together. Under a burst the cost of a
transaction (the write connection's turn, `BEGIN IMMEDIATE`, `COMMIT`, the WAL append) is then
paid once per batch instead of once per task, and no request holds a thread while it waits.

Invariants: a request's future completes only after its row is committed, or with the error
that kept it out; a row whose task id is taken fails alone (the batch is retried row by row, and
that row's future gets the `IntegrityError`, so the caller can draw another id); rows are
committed in the order they were queued.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from argus.domain.task import TaskState
from argus.store.db import Database
from argus.store.schema import task_events, tasks

log = logging.getLogger("argus.store")
_QUEUED = TaskState.QUEUED.value
_INSERT_TASK = tasks.insert()
_INSERT_EVENT = task_events.insert()


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
        values = asdict(self)
        now = values.pop("now")
        return {**values, "state": _QUEUED, "attempts": 0, "created_at": now, "updated_at": now}

    def event(self) -> dict:
        return {
            "task_id": self.task_id,
            "at": self.now,
            "from_state": None,
            "to_state": _QUEUED,
            "attempt_no": None,
            "reason": "accepted",
        }


def insert_tasks(db: Database, rows: Sequence[NewTask]) -> None:
    """Insert `rows` as QUEUED tasks with their first events, all in one transaction.

    Raises:
        sqlalchemy.exc.IntegrityError: a task id is taken (nothing of `rows` is stored).
    """
    with db.write.begin() as conn:
        conn.execute(_INSERT_TASK, [r.row() for r in rows])
        conn.execute(_INSERT_EVENT, [r.event() for r in rows])


_Done = Callable[[BaseException | None], None]


class InsertBatcher:
    """One writer thread that inserts the rows queued by many requests, a batch at a time.

    Args:
        db: the database (its write engine).
        max_batch: the most rows in one transaction.
    """

    def __init__(self, db: Database, max_batch: int = 256) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[NewTask, _Done] | None] = queue.SimpleQueue()
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self._put(row, done)
        await future

    def insert_blocking(self, row: NewTask) -> None:
        """`insert` for a caller on a thread: waits until `row` is committed.

        Raises:
            as `insert`.
        """
        future: Future[None] = Future()
        self._put(row, lambda error: future.set_exception(error) if error else future.set_result(None))
        future.result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _put(self, row: NewTask, done: _Done) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the server is stopping: no more tasks are accepted")
            if self._thread is None or not self._thread.is_alive():  # first use, or it died
                self._thread = threading.Thread(target=self._run, name="argus-task-inserts", daemon=True)
                self._thread.start()
            self._queue.put((row, done))

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
                self._write(batch)
            except BaseException as exc:  # nothing may leave a request waiting for ever
                for _, done in batch:
                    _tell(done, exc if isinstance(exc, Exception) else RuntimeError("the insert thread stopped"))
                raise
            if stop:
                return

    def _write(self, batch: list[tuple[NewTask, _Done]]) -> None:
        """Insert `batch` in one transaction; when that fails, row by row, so that only the
        rows that cannot be stored fail."""
        try:
            insert_tasks(self.db, [row for row, _ in batch])
        except Exception:
            for row, done in batch:
                try:
                    insert_tasks(self.db, [row])
                except Exception as exc:
                    _tell(done, exc)
                else:
                    self._count(1)
                    _tell(done, None)
            return
        self._count(len(batch))
        for _, done in batch:
            _tell(done, None)

    def _count(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows


def _tell(done: _Done, error: BaseException | None) -> None:
    """Tell a request how its row went; a request whose loop has closed is skipped."""
    try:
        done(error)
    except Exception:  # its loop closed, or its future was settled already
        log.debug("a request could not be told how its insert went", exc_info=True)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return  # the request went away (its client disconnected)
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
