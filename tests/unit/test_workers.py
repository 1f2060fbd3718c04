"""`argus.service.threads.Workers`: the accept threads' hop. Results and exceptions come back to
the awaiting coroutine, calls run on the workers' own threads (at most `n` at once, started at
the first call), a request that went away is skipped, and `shutdown` ends the threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from argus.service.threads import Workers


def test_results_and_errors_come_back_to_the_caller_from_the_worker_threads():
    workers = Workers(3, "t-workers")
    assert workers._threads == []  # none started before the first call

    async def main() -> None:
        main_thread = threading.get_ident()
        assert await workers.run(lambda a, b: a + b, 2, 3) == 5
        ran_on = await workers.run(threading.get_ident)
        assert ran_on != main_thread
        with pytest.raises(KeyError, match="missing"):
            await workers.run({}.__getitem__, "missing")

    asyncio.run(main())
    assert [t.name for t in workers._threads] == ["t-workers-0", "t-workers-1", "t-workers-2"]
    workers.shutdown()
    for t in workers._threads:
        t.join(timeout=5)
        assert not t.is_alive()


def test_at_most_n_calls_run_at_once_and_a_cancelled_caller_is_skipped():
    workers = Workers(2, "t-workers")
    running, peak, lock = 0, 0, threading.Lock()

    def slow(x: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return x

    errors: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        assert await asyncio.gather(*[workers.run(slow, i) for i in range(8)]) == list(range(8))
        gone = asyncio.ensure_future(workers.run(slow, 99))
        await asyncio.sleep(0)
        gone.cancel()  # its request went away: the result is dropped, nothing raises
        assert await workers.run(slow, 7) == 7
        await asyncio.sleep(0.05)  # the dropped result's callback has run by now

    asyncio.run(main())
    assert peak == 2
    assert errors == []  # setting a cancelled future's result would be an InvalidStateError here
    workers.shutdown()

    async def after() -> None:
        with pytest.raises(RuntimeError, match="shut down"):
            await workers.run(slow, 1)

    asyncio.run(after())
