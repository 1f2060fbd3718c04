"""Where a route's blocking work runs: the threads that may wait on Ray, and the accept threads.

Owns the `service.ray_threads` limiter (made on first use, on the app's loop): work that may
wait seconds on Ray (cancel, logs, the queue's pools, the node actions) runs there, never in
the few threads that serve the other reads, so a slow or gone Ray cannot starve them.

Also owns `Workers`, the threads that parse submissions (`service.accept_threads`): a call is
one put on a queue and one `call_soon_threadsafe` back, with an asyncio future and nothing else
(`run_in_executor` also makes a `concurrent.futures.Future`, with its condition variable, and
chains the two: about a tenth of a submission's CPU under load).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import Request

T = TypeVar("T")


async def on_ray_threads(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the Ray threads (`service.ray_threads`) and await its result.

    Args:
        request: the route's request (the limiter lives on its app's state).
        fn: blocking work that may wait on Ray.
    Returns:
        What `fn` returns; what it raises propagates.
    """
    state = request.app.state
    if getattr(state, "ray_threads", None) is None:
        state.ray_threads = anyio.CapacityLimiter(state.settings.service.ray_threads)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=state.ray_threads)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # its request went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Workers:
    """`n` threads that run blocking calls for coroutines (`await workers.run(fn, *args)`)."""

    def __init__(self, n: int, name: str):
        self.n, self.name = max(1, n), name
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []  # started at the first call
        self._lock = threading.Lock()
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self.n:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread; what it returns, or raises, comes back here.

        Raises:
            RuntimeError: after `shutdown` (no thread would run it).
        """
        if self._closed:
            raise RuntimeError(f"{self.name}: the threads were shut down")
        if len(self._threads) < self.n:
            self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return await future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, loop, future = item
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, as run_in_executor would
                error: BaseException | None = exc
                result = None
            else:
                error = None
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            del item, fn, args, future, result, error

    def shutdown(self) -> None:
        """Let the threads end once the calls queued before this one have run."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
