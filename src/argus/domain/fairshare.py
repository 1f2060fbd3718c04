"""Fair-share usage: the decayed GPU-hours and the last day's GPU-hours of each user (pure).

Owns the one formula both the live scheduler (`argus.scheduler.loop.Scheduler.usage`, over the
store's attempts) and the trace simulator (`argus.sim.engine`, over its replay) read, so that
the simulator predicts the live order.

The formula: every GPU-second counts with the weight it has decayed to by `now`, halving with
each `half_life_s` since it was used. A usage of `gpus` GPUs from `start` to `end` (a running
one: to `now`) is worth

    gpus / 3600 * integral over t in [start, end] of 0.5 ** ((now - t) / half_life_s) dt
  = gpus / 3600 * half_life_s / ln 2 * 0.5 ** ((now - end) / half_life_s)
                                     * (1 - 0.5 ** ((end - start) / half_life_s))

decayed GPU-hours: an hour just used counts about 1, an hour used one half-life ago 0.5. A long
job that still runs is not counted as if all its hours were used now: its first hours have
decayed like anyone else's. A usage that ended more than `HORIZON_HALF_LIVES` half-lives
before `now` (worth less than 1/1000 of its hours) is not counted at all, so the store reads
only a bounded window (`horizon_start`).

The last day's GPU-hours (the daily limit) are the GPU-seconds inside [now - 24 h, now],
undecayed.

Invariants: every value is >= 0; a user appears in a result only with a value > 0; usage
after `now` (a start in the future, the part of an end past `now`) is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

HORIZON_HALF_LIVES = 10.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Usage:
    """`gpus` GPUs held by `user` from `start` until `end` (None: still held). Epoch seconds."""

    user: str
    gpus: float
    start: float
    end: float | None = None


class UserUsage(NamedTuple):
    """Per user: decayed GPU-hours (fair share) and GPU-hours over the last 24 hours."""

    decayed: dict[str, float]
    day: dict[str, float]


def horizon_start(now: float, half_life_s: float) -> float:
    """A usage counts at `now` only if it ends after this time (the window the store reads)."""
    return now - HORIZON_HALF_LIVES * half_life_s


def decayed_gpu_hours(usage: Usage, now: float, half_life_s: float) -> float:
    """What one usage is worth at `now` in decayed GPU-hours (the module docstring's formula).

    Args:
        usage: the GPUs and the interval they were held (a running usage: until `now`).
        now: the time of the valuation.
        half_life_s: the half-life of the decay, > 0.

    Returns:
        The decayed GPU-hours, 0.0 for a usage that ended before the horizon, or that has no
        part before `now`.
    """
    start = usage.start
    end = now if usage.end is None else min(usage.end, now)
    if end <= start or end <= horizon_start(now, half_life_s):
        return 0.0
    k = math.log(2) / half_life_s
    # exp(-k (now - end)) * (1 - exp(-k (end - start))), with expm1 for short intervals.
    return usage.gpus / 3600.0 / k * math.exp(-k * (now - end)) * -math.expm1(-k * (end - start))


def day_gpu_hours(usage: Usage, now: float) -> float:
    """The GPU-hours of `usage` inside the last 24 hours before `now` (not decayed)."""
    end = now if usage.end is None else min(usage.end, now)
    overlap = end - max(usage.start, now - DAY_S)
    return usage.gpus * overlap / 3600.0 if overlap > 0 else 0.0


def fair_share(usages: Iterable[Usage], now: float, half_life_s: float) -> UserUsage:
    """Each user's decayed GPU-hours and last day's GPU-hours at `now`.

    Args:
        usages: finished and running usages, in any order (older ones than the horizon may be
            included; they count nothing).
        now: the time of the valuation.
        half_life_s: the half-life of the decay, > 0.

    Returns:
        (decayed, day): per user, the sum of `decayed_gpu_hours` and of `day_gpu_hours` over
        their usages; users whose sum is 0 are left out.

    Raises:
        ValueError: `half_life_s` is not positive.
    """
    if not half_life_s > 0:
        raise ValueError(f"the fair-share half-life must be positive, not {half_life_s!r}")
    decayed: dict[str, float] = {}
    day: dict[str, float] = {}
    for u in usages:
        d = decayed_gpu_hours(u, now, half_life_s)
        if d > 0:
            decayed[u.user] = decayed.get(u.user, 0.0) + d
        h = day_gpu_hours(u, now)
        if h > 0:
            day[u.user] = day.get(u.user, 0.0) + h
    return UserUsage(decayed, day)
