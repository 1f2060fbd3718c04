"""Uncached verl checks: run off the event loop, in a bounded pool, fair between users.

Owns the queue in front of the Hydra compose of a new override set (about 0.5-2 s of pure
Python that holds the GIL, and Hydra's state is process-wide): `workers` worker processes run
the composes; each user has a queue of their own, and a free worker takes the next check of the
next user in turn (round-robin), so one user's flood of distinct overrides waits behind itself,
not in front of everybody else. One user never holds every worker (at most `workers - 1` when
there are two or more), so another user's check starts at once rather than after a running
compose ends. A check already waiting or running for the same key is shared,
not run twice (a check waiting in another user's queue is not: that would put this user behind
the other's backlog). A user with `max_queued` checks waiting gets `CheckBacklog` (the routes answer 429).

The worker processes are started (spawned, never forked from the threaded server) at the first
check, start without the admin token in their environment, and exit with the server (even one
killed outright). Each worker has a dispatcher
thread of this process that picks its next check and waits for it; nothing is handed to the
process pool from its own callbacks, and a waiter that goes away cannot cancel a check that
others share.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argus.spec.errors import Problem


def compose_check(
    config_name: str, overrides: Sequence[str], config_dir: str, user_overrides: Sequence[str]
) -> list[Problem]:
    """What a worker runs: the Hydra compose of `argus.spec.hydra_check.check_overrides`."""
    from argus.spec.hydra_check import check_overrides

    return check_overrides(config_name, list(overrides), Path(config_dir), list(user_overrides))


def _worker_start(names: Sequence[str], parent: int) -> None:
    """In each worker process: drop `names` from the environment, and exit once the server
    that started it is gone (a server killed outright never shuts its pool down)."""
    for name in names:
        os.environ.pop(name, None)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="argus-check-parent", daemon=True).start()


class _Discarded(Exception):
    """A check stopped only because another check on its pool hung (it is run again)."""


class CheckBacklog(Exception):
    """The user already has as many checks waiting as allowed."""

    def __init__(self, user: str, waiting: int):
        super().__init__(f"user {user} has {waiting} verl checks waiting")
        self.user = user
        self.waiting = waiting


@dataclass
class _Item:
    user: str
    key: Hashable
    args: tuple[Any, ...]
    future: Future = field(default_factory=Future)

    def __post_init__(self) -> None:
        self.future.set_running_or_notify_cancel()  # a running future cannot be cancelled


class CheckPool:
    """A fair, bounded pool for slow checks.

    Args:
        workers: checks run at once.
        run: the check (picklable when the executor is a process pool); returns problems.
        executor: what runs `run`; default: `workers` spawned processes, made at first use.
        max_queued: checks a user may have waiting (not yet running).
        scrub_env: variables removed from the worker processes' environment.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        run: Callable[..., list[Problem]] = compose_check,
        executor: Executor | None = None,
        max_queued: int = 64,
        scrub_env: Sequence[str] = (),
        timeout_s: float = 60.0,
    ):
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self.run = run
        self.max_queued = max_queued
        self.scrub_env = tuple(scrub_env)
        self._executor = executor
        self._own_executor = executor is None
        self._queues: dict[str, deque[_Item]] = {}
        self._turns: deque[str] = deque()  # users with checks waiting, in serving order
        self._running_keys: dict[Hashable, _Item] = {}
        self._waiting_keys: dict[tuple[str, Hashable], _Item] = {}
        self._running = 0
        self._running_by_user: dict[str, int] = {}
        self.per_user = max(1, self.workers - 1)
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._discarded: set[int] = set()  # pools stopped for a hung check (their ids)

    def _get_executor(self) -> Executor:
        if self._closed:
            raise RuntimeError("the check pool is closed")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(self.scrub_env, os.getpid()),
            )
        return self._executor

    def waiting(self, user: str) -> int:
        """Checks of `user` not yet running."""
        with self._lock:
            return len(self._queues.get(user, ()))

    def submit(self, user: str, key: Hashable, *args: Any) -> Future:
        """Queue a check of `user`; the future's result is the problems found ([] = clean).

        Raises:
            CheckBacklog: `user` already has `max_queued` checks waiting.
            RuntimeError: the pool is closed.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the check pool is closed")
            same = self._running_keys.get(key) or self._waiting_keys.get((user, key))
            if same is not None:
                return same.future
            queue = self._queues.get(user)
            if queue is not None and len(queue) >= self.max_queued:
                raise CheckBacklog(user, len(queue))
            item = _Item(user, key, args)
            self._waiting_keys[(user, key)] = item
            if queue is None:
                self._queues[user] = queue = deque()
                self._turns.append(user)
            queue.append(item)
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._serve, name=f"argus-check-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for t in self._threads:
                    t.start()
            self._ready.notify()
        return item.future

    def _take(self) -> _Item | None:
        """The next check to run (round-robin over users under their share), or None once
        closed; waits for one."""
        with self._ready:
            while not self._closed:
                for _ in range(len(self._turns)):
                    user = self._turns.popleft()
                    if self._running_by_user.get(user, 0) >= self.per_user:
                        self._turns.append(user)  # at its share: keeps its place for later
                        continue
                    queue = self._queues[user]
                    item = queue.popleft()
                    del self._waiting_keys[(user, item.key)]
                    self._running_keys.setdefault(item.key, item)
                    if queue:
                        self._turns.append(user)  # back of the line: the other users go first
                    else:
                        del self._queues[user]
                    self._running += 1
                    self._running_by_user[user] = self._running_by_user.get(user, 0) + 1
                    return item
                self._ready.wait()
            return None

    def _serve(self) -> None:
        while (item := self._take()) is not None:
            result: Any = None
            error: BaseException | None = None
            for attempt in range(2):
                result, error = self._run_once(item)
                if not isinstance(error, _Discarded) or attempt:
                    break  # else: stopped for another check's timeout: once more, on a fresh pool
            with self._ready:
                self._running -= 1
                left = self._running_by_user.pop(item.user, 1) - 1
                if left:
                    self._running_by_user[item.user] = left
                if self._running_keys.get(item.key) is item:
                    del self._running_keys[item.key]
                self._ready.notify_all()  # a user below its share again may have checks waiting
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

    def _run_once(self, item: _Item) -> tuple[Any, BaseException | None]:
        """Run one check on the current pool: (problems, None) or (None, the error)."""
        try:
            with self._lock:
                executor = self._get_executor()
            return executor.submit(self.run, *item.args).result(timeout=self.timeout_s), None
        except FutureTimeout:  # a check that never ends: its workers are stopped
            self._discard(executor)
            return [
                Problem(
                    "overrides",
                    f"the check against verl's config took over {self.timeout_s:g} s and was stopped",
                )
            ], None
        except BrokenProcessPool as exc:  # a worker died: the next check starts a fresh pool
            with self._lock:
                if id(executor) in self._discarded:
                    return None, _Discarded(str(exc))
                if self._own_executor and self._executor is executor:
                    self._executor = None
            return None, exc
        except BaseException as exc:  # the check's own error goes to whoever waits for it
            return None, exc

    def _discard(self, executor: Executor) -> None:
        """Stop a process pool whose worker hangs; the next check starts a fresh one."""
        with self._lock:
            if self._executor is executor and self._own_executor:
                self._executor = None
                self._discarded.add(id(executor))
            else:
                return
        for proc in list(getattr(executor, "_processes", {}).values()):
            proc.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop taking checks; checks waiting are failed; the worker processes end."""
        with self._ready:
            self._closed = True
            waiting = [i for q in self._queues.values() for i in q]
            self._queues.clear()
            self._turns.clear()
            self._waiting_keys.clear()
            executor, self._executor = self._executor, None
            self._ready.notify_all()
        for item in waiting:
            item.future.set_exception(RuntimeError("the check pool is closed"))
        if executor is not None and self._own_executor:
            executor.shutdown(wait=True, cancel_futures=True)  # the workers have exited after
