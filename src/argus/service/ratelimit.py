"""The per-user submission rate: one token bucket per user, and the 429 past it.

Owns the buckets (`service.submit_rate_per_s` tokens a second, up to `service.submit_burst`
saved) and the answer past the rate: `RateLimited`, which the app turns into a 429 with a
`Retry-After` header and an error body naming the limit. Pure bookkeeping: the clock is passed
in, nothing here does I/O. The admin is not limited (the routes do not ask for it).

The bucket arithmetic is `refill` and `spend`, here only: a `RateLimiter` given a
`SharedState` keeps its buckets there instead (one budget across the server's API processes),
and `argus.service.shared_state` does its sums with these same functions.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from argus.service.errors import APIError
from argus.spec.errors import Problem

if TYPE_CHECKING:
    from argus.service.shared_state import SharedState


def refill(tokens: float, at: float, now: float, rate_per_s: float, burst: int) -> float:
    """The tokens at `now` of a bucket that held `tokens` at `at`: `rate_per_s` more a second,
    at most `burst`."""
    return min(float(burst), tokens + (now - at) * rate_per_s)


def spend(tokens: float, at: float, now: float, rate_per_s: float, burst: int) -> tuple[float, float, float]:
    """Take one token of a bucket that held `tokens` at `at` (a new bucket is `(burst, now)`).

    Returns:
        `(tokens, at)` to keep, and the wait: 0.0 when a token was taken, else the seconds until
        one is there (none is taken).
    """
    now = max(now, at)  # a clock read a hair before another thread's (or process's) write
    tokens = refill(tokens, at, now, rate_per_s, burst)
    if tokens >= 1.0:
        return tokens - 1.0, now, 0.0
    return tokens, now, (1.0 - tokens) / rate_per_s


class RateLimited(APIError):
    """429: the caller is over a rate; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float, problems: list[Problem] | None = None):
        super().__init__(429, message, problems)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The `Retry-After` header: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter:
    """Token buckets per user: `rate_per_s` tokens a second, at most `burst` saved.

    Args:
        rate_per_s: tokens added a second (None: no limit).
        burst: the bucket's size (what a user may send at once after a pause).
        clock: monotonic seconds.
        max_users: buckets kept; full buckets are dropped first when there are more.
        shared: keep the buckets there instead, shared with the server's other API processes
            (`clock` must then be the system-wide `time.monotonic`, as by default).
    """

    def __init__(
        self,
        rate_per_s: float | None,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 100_000,
        shared: SharedState | None = None,
    ):
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self.clock = clock
        self.max_users = max_users
        self.shared = shared
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)
        self._lock = threading.Lock()

    def wait_s(self, user: str) -> float:
        """Take one token of `user`'s bucket.

        Returns:
            0.0 when a token was taken, else the seconds until one is there (none is taken).
        """
        if self.rate_per_s is None:
            return 0.0
        now = self.clock()
        if self.shared is not None:
            return self.shared.take_token(user, self.rate_per_s, self.burst, now)
        with self._lock:
            tokens, at = self._buckets.get(user, (float(self.burst), now))
            tokens, at, wait = spend(tokens, at, now, self.rate_per_s, self.burst)
            self._buckets[user] = (tokens, at)
            if wait == 0.0 and len(self._buckets) > self.max_users:
                self._prune(now)
            return wait

    def _prune(self, now: float) -> None:
        rate = self.rate_per_s or 0.0
        full = [u for u, (t, at) in self._buckets.items() if refill(t, at, now, rate, self.burst) >= self.burst]
        for u in full:
            del self._buckets[u]
        if len(self._buckets) > self.max_users:  # still too many: forget the oldest
            for u in sorted(self._buckets, key=lambda u: self._buckets[u][1])[: len(self._buckets) // 2]:
                del self._buckets[u]

    def take(self, user: str) -> None:
        """Take one submission of `user`'s rate.

        Raises:
            RateLimited: `user` is over the rate (429, with the seconds until the next token).
        """
        wait = self.wait_s(user)
        if wait > 0:
            raise RateLimited(
                f"too many submissions: over {self.rate_per_s:g} a second (burst {self.burst}) "
                f"for user {user}; retry in {max(1, math.ceil(wait))} s",
                wait,
                [
                    Problem(
                        "service.submit_rate_per_s",
                        f"the limit is {self.rate_per_s:g} submissions a second per user, "
                        f"with bursts of {self.burst} (service.submit_burst)",
                    )
                ],
            )
