"""Group commit of accepted tasks (`argus.store.task_inserts`), over SQLite and PostgreSQL.

Concurrent requests' rows are committed together, each with its `accepted` event; a taken id
fails only its own request; a closed batcher commits what was queued and refuses more.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_support import open_backend

from argus.domain.scheduling import Job
from argus.store.db import Database, open_database
from argus.store.schema import tasks as tasks_table
from argus.store.task_inserts import InsertBatcher, NewTask, insert_tasks
from argus.store.tasks import TaskStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    with open_backend(request.param, tmp_path) as backend:
        db = open_database(backend.url)
        store = TaskStore(db)
        yield store
        store.inserts.close()
        db.dispose()


def row(n: int, user: str = "alice", now: float = 1000.0) -> NewTask:
    return NewTask(f"t-{n:05d}", user, "ppo", f"workload: ppo # {n}\n", 1, 2, 0.0, now + n, 600, 3600.0, None)


def test_concurrent_inserts_share_transactions_and_each_row_is_complete(store):
    gate = threading.Event()
    batcher = InsertBatcher(store.db)
    original = batcher._write

    def slow_first(batch):  # hold the first batch so that the next requests queue behind it
        gate.wait(5)
        return original(batch)

    batcher._write = slow_first  # type: ignore[method-assign]

    wakeups = []

    async def burst() -> None:
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a, **k: wakeups.append(a) or real(*a, **k)  # type: ignore[method-assign]
        first = asyncio.ensure_future(batcher.insert(row(0)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.insert(row(n))) for n in range(1, 100)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *rest)

    asyncio.run(burst())
    batcher.close()
    assert batcher.rows == 100
    assert batcher.batches == 2  # the first row alone, then the 99 queued meanwhile in one commit
    assert len(wakeups) == 2  # each batch's requests are told in one call on their loop
    tasks = store.in_states(["QUEUED"])
    assert [t.task_id for t in tasks] == [f"t-{n:05d}" for n in range(100)]  # in the order queued
    t = store.get("t-00042")
    assert (t.user_id, t.nnodes, t.n_gpus_per_node, t.priority, t.time_limit_s, t.created_at) == (
        "alice", 1, 2, 600, 3600.0, 1042.0
    )  # fmt: skip
    assert store.spec_text("t-00042") == "workload: ppo # 42\n"
    [event] = store.events("t-00042")
    assert (event.from_state, event.to_state, event.reason, event.at) == (None, "QUEUED", "accepted", 1042.0)


def test_every_column_of_a_new_task_is_stored(store):
    insert_tasks(store.db, [NewTask("t-full", "bob", "grpo", "spec", 2, 8, 1.0, 5.0, 900, 60.0, "h20", True)])
    t = store.get("t-full")
    assert (t.user_id, t.workload, t.nnodes, t.n_gpus_per_node, t.driver_gpus, t.priority) == (
        "bob", "grpo", 2, 8, 1.0, 900
    )  # fmt: skip
    assert (t.time_limit_s, t.pool, t.preemptible, t.state.value, t.attempts) == (60.0, "h20", True, "QUEUED", 0)
    assert (t.created_at, t.updated_at) == (5.0, 5.0)


def test_a_taken_id_fails_only_its_own_request(store):
    store.create(**_kwargs(row(7)))

    async def burst() -> list[BaseException | None]:
        batcher = store.inserts
        results = await asyncio.gather(*(batcher.insert(row(n)) for n in range(5, 10)), return_exceptions=True)
        return list(results)

    results = asyncio.run(burst())
    assert [r is None for r in results] == [True, True, False, True, True]
    assert isinstance(results[2], sa.exc.IntegrityError)
    ids = {t.task_id for t in store.in_states(["QUEUED"])}
    assert ids == {f"t-{n:05d}" for n in range(5, 10)}
    assert len(store.events("t-00007")) == 1  # the original row is untouched


def test_a_blocking_insert_and_close(store):
    batcher = InsertBatcher(store.db)
    batcher.insert_blocking(row(1))
    assert store.get("t-00001").state == "QUEUED"
    batcher.close()
    with pytest.raises(RuntimeError, match="stopping"):
        batcher.insert_blocking(row(2))
    assert store.get("t-00002") is None


def _kwargs(r: NewTask) -> dict:
    return {
        "task_id": r.task_id,
        "user_id": r.user_id,
        "workload": r.workload,
        "jobspec_yaml": r.jobspec_yaml,
        "nnodes": r.nnodes,
        "n_gpus_per_node": r.n_gpus_per_node,
        "driver_gpus": r.driver_gpus,
        "now": r.now,
        "priority": r.priority,
        "time_limit_s": r.time_limit_s,
        "pool": r.pool,
    }


class _Abort(BaseException):
    """Something no `except Exception` catches."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_dies_fails_its_batch_and_the_next_insert_starts_another(store, monkeypatch):
    import argus.store.task_inserts as task_inserts

    batcher = InsertBatcher(store.db)
    real = task_inserts.insert_tasks

    def abort(db, rows):
        raise _Abort()

    monkeypatch.setattr(task_inserts, "insert_tasks", abort)
    with pytest.raises(RuntimeError, match="the insert thread stopped"):
        batcher.insert_blocking(row(1))  # answered, not left waiting
    batcher._thread.join(5)
    assert not batcher._thread.is_alive()
    monkeypatch.setattr(task_inserts, "insert_tasks", real)
    batcher.insert_blocking(row(2))
    batcher.close()
    assert store.get("t-00002").state == "QUEUED" and store.get("t-00001") is None


def test_the_scheduler_reads_of_the_queue_give_each_task_as_its_whole_row_would(store):
    """`waiting` and `due` build the policy's `Job` and the recorded wait straight from the
    columns; they must agree with the whole row (`in_states`, `Job.of`) for every field."""
    rows = [
        NewTask("t-a", "alice", "ppo", "x", 2, 8, 1.0, 1000.0, 900, 7200.0, "a100"),
        NewTask("t-b", "bob", "grpo", "x", 1, 4, 0.0, 1001.0, 500, 600.0, None),
        NewTask("t-c", "carol", "sft", "x", 1, 1, 0.5, 1002.0, 100, 60.0, None),
    ]
    insert_tasks(store.db, rows)
    store.record_waits([("t-b", "Resources", "needs 4 GPUs on one node", 1500.0)], 1003.0)
    with store.db.write.begin() as conn:  # a retry after a failed start: due again at 2000
        conn.execute(
            sa.update(tasks_table)
            .where(tasks_table.c.task_id == "t-c")
            .values(state="PENDING_RESOURCES", pending_code="BeginTime", next_run_at=2000.0, estimated_start=2000.0)
        )
    states = ["QUEUED", "PENDING_RESOURCES"]
    whole = {t.task_id: t for t in store.in_states(states)}
    read = store.waiting(states)
    assert [w.job.id for w in read] == ["t-a", "t-b", "t-c"]  # oldest first
    for w in read:
        t = whole[w.job.id]
        assert w.job == Job.of(t)
        assert (w.state, w.pending_code, w.pending_reason, w.estimated_start, w.seq) == (
            t.state, t.pending_code, t.pending_reason, t.estimated_start, t.seq,
        )  # fmt: skip
    assert read[1].pending_reason == "needs 4 GPUs on one node" and read[2].job.not_before == 2000.0
    # New and due: the QUEUED one, and the retry only once its time has come.
    assert [w.job.id for w in store.due(1500.0)] == ["t-a"]
    assert [w.job.id for w in store.due(2000.0)] == ["t-a", "t-c"]


def test_the_rows_a_pass_parks_are_read_by_their_id_and_only_waiting_ones_change(tmp_path: Path):
    """SQLite, asked for `task_id IN (...) AND state IN (...)`, chose the state index and read
    every waiting task on each pass; `record_waits` reads by id, and a row that stopped waiting
    meanwhile is left alone."""
    from argus.store import tasks as task_store

    db = open_database(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    try:
        store = TaskStore(db)
        insert_tasks(db, [row(n) for n in range(3)])
        # As many ids as a pass parks under a burst: with 40, SQLite preferred the state index.
        bound = task_store._WAIT_ROWS.params(ids=[f"t-{n:05d}" for n in range(40)])
        sql = str(bound.compile(db.read, compile_kwargs={"literal_binds": True}))
        with db.read.connect() as conn:
            plan = " ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all())
        assert "sqlite_autoindex_tasks" in plan and "state" not in plan, plan
        with db.write.begin() as conn:
            conn.execute(sa.update(tasks_table).where(tasks_table.c.task_id == "t-00001").values(state="CANCELED"))
        waits = [(f"t-0000{n}", "Resources", "too big", None) for n in range(3)]
        assert store.record_waits(waits, 2000.0) == 2
        assert [store.get(f"t-0000{n}").state.value for n in range(3)] == [
            "PENDING_RESOURCES",
            "CANCELED",
            "PENDING_RESOURCES",
        ]
        assert store.events("t-00001")[-1].to_state == "QUEUED"  # no wait recorded on the cancelled task
    finally:
        store.inserts.close()
        db.dispose()


def test_sqlite_inserts_many_rows_in_multi_row_statements_and_a_taken_id_still_fails_the_batch(tmp_path, monkeypatch):
    from argus.store import task_inserts

    monkeypatch.setattr(task_inserts, "_SQLITE_MAX_PARAMS", 40)  # 2 task rows (15 columns) a statement
    monkeypatch.setattr(Database, "direct", lambda self: None)  # the sqlite3 module's path
    db = open_database(f"sqlite:///{tmp_path}/a.sqlite3")
    store = TaskStore(db)
    try:
        statements = []
        raw = db.write.raw_connection()
        sqlite = raw.driver_connection
        raw.close()
        sqlite.set_trace_callback(statements.append)
        insert_tasks(db, [row(n) for n in range(7)])
        sqlite.set_trace_callback(None)
        inserts = [s for s in statements if s.startswith("INSERT INTO tasks ")]
        assert len(inserts) == 4  # 2 + 2 + 2 + 1 rows
        assert [s.count("), (") + 1 for s in inserts] == [2, 2, 2, 1]
        assert [t.task_id for t in sorted(store.in_states(["QUEUED"]), key=lambda t: t.task_id)] == [
            f"t-{n:05d}" for n in range(7)
        ]
        with db.read.connect() as conn:
            events = conn.execute(sa.text("SELECT task_id, reason FROM task_events ORDER BY task_id")).all()
        assert events == [(f"t-{n:05d}", "accepted") for n in range(7)]
        with pytest.raises(sa.exc.IntegrityError):  # t-00006 is taken: nothing of this batch is kept
            insert_tasks(db, [row(7), row(6), row(8)])
        assert len(store.in_states(["QUEUED"])) == 7
    finally:
        store.inserts.close()
        db.dispose()
