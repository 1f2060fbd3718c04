"""The SQLite write connection is handed out first come, first served: a thread writing back to
back (as the API does under a burst of submissions) can no longer keep the scheduler's writes
waiting for seconds (bench/scheduler_pass.py --writers 1: a pass took 10-50 s before)."""

from __future__ import annotations

import threading
import time

from argus.store.db import open_database
from argus.store.fairpool import FairQueuePool, FifoLock


def _wait_until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.001)


def test_the_lock_is_granted_in_arrival_order_and_a_releaser_cannot_barge():
    lock = FifoLock()
    assert lock.acquire()
    order: list[int] = []

    def take(i: int) -> None:
        lock.acquire()
        order.append(i)
        lock.release()

    threads = []
    for i in range(5):
        t = threading.Thread(target=take, args=(i,))
        t.start()
        threads.append(t)
        _wait_until(lambda n=i + 1: len(lock._waiters) == n)
    lock.release()
    assert lock.acquire()  # asking again at once: served after every thread that waited
    assert order == [0, 1, 2, 3, 4]
    lock.release()
    for t in threads:
        t.join()


def test_a_timed_out_waiter_leaves_the_queue():
    lock = FifoLock()
    lock.acquire()
    assert lock.acquire(timeout=0.01) is False
    assert not lock._waiters
    lock.release()
    assert lock.acquire(timeout=0) is True


def test_a_writer_waits_for_at_most_the_write_in_progress(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/t.sqlite3")
    assert isinstance(db.write.pool, FairQueuePool)
    done = [0]
    stop = threading.Event()

    def hammer() -> None:  # back-to-back write transactions, as a flood of submissions makes
        while not stop.is_set():
            with db.write.begin() as conn:
                conn.exec_driver_sql("SELECT 1")
                done[0] += 1

    t = threading.Thread(target=hammer)
    t.start()
    try:
        _wait_until(lambda: done[0] > 50)
        overtaken = []
        for _ in range(20):
            before = done[0]
            with db.write.begin() as conn:
                overtaken.append(done[0] - before)
                conn.exec_driver_sql("SELECT 1")
        assert max(overtaken) <= 1, overtaken  # unfair: hundreds of writes went first
    finally:
        stop.set()
        t.join()
        db.dispose()
