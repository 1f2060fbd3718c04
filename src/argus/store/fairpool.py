"""A connection pool that hands its connections out in the order they were asked for.

Owns `FairQueuePool`, the pool of SQLite's one write connection (`argus.store.db`). SQLAlchemy's
`QueuePool` wakes a waiting thread when a connection comes back, but the thread that gave it back
usually asks again before the woken one runs (it still holds the GIL) and takes it again: under a
stream of API writes, the scheduler's few writes per pass waited seconds, even minutes, for a
turn (bench/scheduler_pass.py --writers 1). Here every checkout first takes a turn from a FIFO
lock that passes ownership straight to the longest waiter, so a writer waits at most for the
writers that asked before it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import sqlalchemy as sa


class FifoLock:
    """A lock granted in arrival order: `release` hands it to the oldest waiter directly, so a
    thread that releases and asks again queues behind those already waiting."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock (at most `timeout` seconds; None: without limit).

        Returns:
            True when the lock is held by the caller, False when the time ran out.
        """
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        if gate.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return True  # handed over by release(): the lock stayed held throughout
        with self._mutex:
            try:
                self._waiters.remove(gate)
                return False
            except ValueError:
                pass  # handed over just as the time ran out: it is ours
        gate.acquire()
        return True

    def release(self) -> None:
        """Hand the lock to the oldest waiter, or free it when none waits."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


class FairQueuePool(sa.pool.QueuePool):
    """A `QueuePool` whose checkouts are served first come, first served (see the module
    docstring). Meant for a pool of one connection without overflow, where a turn is the
    connection itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = FifoLock()

    def _do_get(self) -> Any:
        if not self._turns.acquire(self._timeout):
            raise sa.exc.TimeoutError(f"no database write connection within {self._timeout:g} s (writers queued ahead)")
        try:
            return super()._do_get()
        except BaseException:
            self._turns.release()
            raise

    def _do_return_conn(self, record: Any) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self._turns.release()
