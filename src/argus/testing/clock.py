"""The fake clock every test that needs time uses (no sleeps, no `time.time()`).

Owns `FakeClock`: an `argus.ports.Clock` (call it for the time) that moves only when a test
moves it, with `advance(seconds)`, `set(t)`, or `sleep(seconds)` where code under test is given
a sleep function. `now` is the current time, also settable. Code that takes its time as an aware
datetime (`Callable[[], datetime]`, like `RayJobTool`'s clock) is given the bound method `utc`.
A loop that measures elapsed time apart from the wall clock (a `monotonic` argument) is given a
second FakeClock.

Invariant: the time changes only through the test (never on its own).
"""

from __future__ import annotations

from datetime import UTC, datetime


class FakeClock:
    """Seconds since the epoch, as a test sets them.

    Args:
        start: the time it shows first.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the time by `seconds` (negative: back); returns the new time."""
        self.now += seconds
        return self.now

    def set(self, t: float) -> float:
        """Show `t` from now on; returns it."""
        self.now = float(t)
        return self.now

    def utc(self) -> datetime:
        """The time as an aware UTC datetime (pass `clock.utc` where a datetime clock is wanted)."""
        return datetime.fromtimestamp(self.now, tz=UTC)

    def sleep(self, seconds: float) -> None:
        """A `time.sleep` stand-in: the time moves by `seconds` at once."""
        self.now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"
