"""Where a route's blocking work runs: the threads that may wait on Ray.

Owns the `service.ray_threads` limiter (made on first use, on the app's loop): work that may
wait seconds on Ray (cancel, logs, the queue's pools, the node actions) runs there, never in
the few threads that serve the other reads, so a slow or gone Ray cannot starve them.
"""

from __future__ import annotations

import functools
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
