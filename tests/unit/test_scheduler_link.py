"""The channels between the API process and a scheduler in its own process
(`argus.scheduler.link`): nudges over a Unix datagram socket, status and metrics through a file.

Real sockets and files in a temporary directory; the "scheduler" is a plain object with the
attributes `/healthz` reads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from argus.scheduler.link import NudgeListener, NudgeSender, StatusReader, StatusWriter, metric_samples


def _until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def _listening(run_dir) -> Iterator[tuple[list[bool], NudgeSender, threading.Thread]]:
    """A listener running in a thread (what it received: each nudge's `sync`) and a sender."""
    got: list[bool] = []
    listener = NudgeListener(run_dir, lambda sync=False: got.append(sync))
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,))
    thread.start()
    send = NudgeSender(run_dir)
    try:
        yield got, send, thread
    finally:
        stop.set()
        thread.join(timeout=5)
        send.close()


def test_a_nudge_reaches_the_listener_with_its_kind(tmp_path):
    with _listening(tmp_path) as (got, send, thread):
        send()
        send(sync=True)
        send()
        _until(lambda: len(got) == 3)
        assert got == [False, True, False]
        assert send.dropped == 0
    assert not thread.is_alive()
    assert not (tmp_path / "nudge.sock").exists()  # the listener removes its socket


def test_a_nudge_with_nobody_listening_is_dropped_without_an_error(tmp_path):
    send = NudgeSender(tmp_path)
    send()
    send(sync=True)
    assert send.dropped == 2
    send.close()


def test_a_new_listener_replaces_a_socket_left_by_a_dead_one(tmp_path):
    (tmp_path / "nudge.sock").write_text("left over")
    with _listening(tmp_path) as (got, send, _):
        send(sync=True)
        _until(lambda: got == [True])


class _Scheduler(SimpleNamespace):
    @property
    def last_fair_share(self):
        return self.fair_share


def _scheduler(**kw):
    base = {"reconciled": False, "last_tick_at": None, "last_error": None, "ray_error": None, "ray_ok_at": None}
    return _Scheduler(**{**base, "fair_share": None, **kw})


def test_the_reader_sees_what_the_writer_wrote_and_nothing_before(tmp_path):
    reader = StatusReader(tmp_path)
    assert (reader.reconciled, reader.last_tick_at, reader.ray_ok_at, reader.last_error) == (False, None, None, None)
    sched = _scheduler()
    writer = StatusWriter(tmp_path, sched, lambda: [])
    assert writer.write() is True
    assert writer.write() is False  # unchanged: not written again
    sched.reconciled, sched.last_tick_at, sched.ray_ok_at = True, 1000.5, 1000.25
    sched.last_error, sched.ray_error = "boom", "cannot reach the GCS"
    assert writer.write() is True
    assert reader.reconciled is True
    assert (reader.last_tick_at, reader.ray_ok_at) == (1000.5, 1000.25)
    assert (reader.last_error, reader.ray_error) == ("boom", "cannot reach the GCS")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["pid"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left
    reader.forget()
    assert reader.reconciled is False and not (tmp_path / "status.json").exists()


def test_the_writer_thread_writes_while_it_runs_and_the_last_state_when_stopped(tmp_path):
    sched = _scheduler()
    reader = StatusReader(tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=StatusWriter(tmp_path, sched, lambda: [], every_s=0.01).run, args=(stop,))
    thread.start()
    sched.last_tick_at = 1.0
    _until(lambda: reader.last_tick_at == 1.0)
    stop.set()
    thread.join(timeout=5)
    slow = StatusWriter(tmp_path, sched, lambda: [], every_s=3600)
    stop = threading.Event()
    thread = threading.Thread(target=slow.run, args=(stop,))
    thread.start()
    sched.last_tick_at, sched.fair_share = 42.0, {"alice": 1.5}
    stop.set()  # set after the last pass: its state is written before the thread ends
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert reader.last_tick_at == 42.0 and reader.last_fair_share == {"alice": 1.5}


def test_the_childs_metrics_are_served_by_the_reader_as_a_collector(tmp_path):
    child = CollectorRegistry(auto_describe=False)
    passes = Histogram("argus_scheduler_pass_seconds", "Duration of passes", registry=child, buckets=(0.1, 1.0))
    admissions = Counter("argus_scheduler_admissions", "Attempts started", registry=child)
    passes.observe(0.05)
    passes.observe(0.5)
    admissions.inc(3)
    StatusWriter(tmp_path, _scheduler(), lambda: metric_samples(child)).write()
    api = CollectorRegistry(auto_describe=False)
    api.register(StatusReader(tmp_path))
    text = generate_latest(api).decode()
    assert text == generate_latest(child).decode()  # the same exposition, line for line
    assert 'argus_scheduler_pass_seconds_bucket{le="0.1"} 1.0' in text
    assert "argus_scheduler_pass_seconds_count 2.0" in text
    assert "argus_scheduler_admissions_total 3.0" in text


def test_the_reader_serves_no_metrics_before_the_first_write(tmp_path):
    api = CollectorRegistry(auto_describe=False)
    api.register(StatusReader(tmp_path))
    assert generate_latest(api) == b""
