"""How long a group commit of accepted tasks holds SQLite's OS write lock, beside busy threads.

While one process holds the write lock (`argus.store.db.WriteLock`), every other process's
writers wait. This times the hold of `insert_tasks` (ROWS rows, the bench's TaskSpec size) on a
fresh database file, with 0, 1 and 3 other threads of the process running Python the whole time
(as the event loop and the accept threads do under load), two ways:

- `sqlite3 module`: the usual path, each statement through the sqlite3 module, which lets go of
  the interpreter lock around every statement and must get it back from a busy thread each time;
- `direct`: one `sqlite_direct` script in one call that keeps the interpreter lock, the OS lock
  taken around that call alone (what the server does on SQLite).

Prints the median and 90th percentile of the hold and of the whole insert, per case.

Usage:
    python bench/write_hold.py [--inserts 300] [--rows 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from argus.store import db as db_module
from argus.store.db import Database, open_database
from argus.store.task_inserts import NewTask, insert_tasks

SPEC = "workload: ppo\n" + "".join(f"key_{n}: value {n} of the spec\n" for n in range(16))


def measure(db: Database, busy: int, inserts: int, rows: int, first: int) -> tuple[list[float], list[float]]:
    """Hold and whole-insert times (s) of `inserts` inserts beside `busy` spinning threads."""
    holds: list[float] = []
    lock = db.write_lock
    assert lock is not None
    acquire, release = type(lock).acquire, type(lock).release
    since = [0.0]

    def timed_acquire(self) -> None:
        acquire(self)
        since[0] = time.perf_counter()

    def timed_release(self) -> None:
        if self._held:
            holds.append(time.perf_counter() - since[0])
        release(self)

    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(busy)]
    for t in threads:
        t.start()
    whole: list[float] = []
    type(lock).acquire, type(lock).release = timed_acquire, timed_release
    try:
        for i in range(inserts):
            batch = [
                NewTask(f"t-{first + i * rows + k:09d}", "alice", "ppo", SPEC, 1, 8, 0.0, time.time(), 500, 3600.0)
                for k in range(rows)
            ]
            t0 = time.perf_counter()
            insert_tasks(db, batch)
            whole.append(time.perf_counter() - t0)
    finally:
        type(lock).acquire, type(lock).release = acquire, release
        stop.set()
        for t in threads:
            t.join()
    return holds, whole


def ms(xs: list[float], q: float) -> str:
    xs = sorted(xs)
    return f"{xs[min(len(xs) - 1, int(q * len(xs)))] * 1000:7.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inserts", type=int, default=300, help="inserts per case")
    ap.add_argument("--rows", type=int, default=6, help="rows per insert (the server's batches under load: ~6)")
    args = ap.parse_args()
    print(f"insert_tasks of {args.rows} rows ({len(SPEC)}-character specs), {args.inserts} per case; times in ms")
    print(f"{'path':<15} {'busy threads':>12} {'hold p50':>9} {'hold p90':>9} {'insert p50':>11} {'insert p90':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(f"sqlite:///{Path(tmp) / 'hold.sqlite3'}")
        direct = db_module.Database.direct
        first = 0
        try:
            for busy in (0, 1, 3):
                for path in ("sqlite3 module", "direct"):
                    if path == "sqlite3 module":
                        db_module.Database.direct = lambda self: None
                    else:
                        db_module.Database.direct = direct
                    holds, whole = measure(db, busy, args.inserts, args.rows, first)
                    first += args.inserts * args.rows
                    print(
                        f"{path:<15} {busy:>12} {ms(holds, 0.5)} {ms(holds, 0.9)}  {ms(whole, 0.5):>10} "
                        f"{ms(whole, 0.9):>10}   (mean hold {statistics.fmean(holds) * 1000:.2f})"
                    )
        finally:
            db_module.Database.direct = direct
            db.dispose()


if __name__ == "__main__":
    main()
