"""GPU-hour accounting: allocations and the usage reports built from them (pure), like Slurm's
`sreport`.

Owns the arithmetic of the GPU-hour ledger (`argus.store.ledger`), which the usage API, the
per-task figures and the metrics read, and which `argus simulate` applies to its replay, so a
report is computed by one piece of code wherever it comes from.

An `Allocation` is one attempt's hold on GPUs: `gpus` GPUs (the gang's and the driver's) of
`user`'s task from `start` (the attempt was admitted) until `end` (the task left SUBMITTED or
RUNNING; None: it still holds them). Rules of a report over the window [lo, hi) at `now`:

- an interval is cut to the window, and a running one ends at `now` (nothing after `now` counts);
- GPU-seconds = gpus x the cut interval's length; `run_s` = the cut intervals' wall seconds;
- an attempt is in a window when it started inside it, or started before it and still held its
  GPUs after `lo`; `tasks` counts the distinct tasks of the attempts in the window;
- `wait_s` is the MEAN wait (accepted -> first allocation start) over the tasks whose first
  allocation (attempt 1) starts in the window; None when there is none;
- `by="day"` groups by UTC day (`YYYY-MM-DD`): an interval over midnight is split there, and
  each day is a window of its own (cut to [lo, hi));
- a task without a pool is grouped under `NO_POOL` ("-");
- rows are sorted by key.

Invariant: for any window, the sum of the GPU-seconds of the rows of `report(by=...)` is the
integral over the window of the GPUs the allocations hold, whatever the grouping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

GROUPS = ("user", "pool", "day", "task")
NO_POOL = "-"
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Allocation:
    """One attempt's GPUs: `gpus` (gang + driver) on `nodes` (node -> GPUs, the attempt's
    placement) from `start` until `end` (None: still held). `accepted_at` is when the task was
    accepted (its `created_at`). Epoch seconds."""

    user: str
    task_id: str
    attempt_no: int
    pool: str | None
    workload: str
    gpus: float
    nodes: Mapping[str, float] = field(hash=False, compare=False)
    start: float
    end: float | None
    accepted_at: float

    def stop(self, now: float) -> float:
        """Where the interval ends for accounting at `now`: its end, or `now` while held."""
        return self.end if self.end is not None else now


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One row of a report: `key` (a user, a pool, a `YYYY-MM-DD` UTC day or a task id)."""

    key: str
    gpu_seconds: float
    tasks: int
    attempts: int
    wait_s: float | None  # the mean wait of the tasks whose first allocation starts here
    run_s: float

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0


@dataclass(frozen=True, slots=True)
class TaskFigures:
    """One task's figures so far: GPU-seconds, its wait (accepted -> first allocation start,
    None if it never started) and its run time (the sum of its attempts' allocated wall time)."""

    gpu_seconds: float
    wait_s: float | None
    run_s: float


def check_group(by: str) -> str:
    """`by`, when it is a grouping of `report`.

    Raises:
        ValueError: naming the groupings.
    """
    if by not in GROUPS:
        raise ValueError(f"must be one of {', '.join(GROUPS)}")
    return by


def overlap(alloc: Allocation, lo: float, hi: float, now: float) -> float:
    """The wall seconds of `alloc` inside [lo, hi), cut at `now`."""
    return max(0.0, min(alloc.stop(now), hi, now) - max(alloc.start, lo))


def gpu_seconds(alloc: Allocation, lo: float, hi: float, now: float) -> float:
    """The GPU-seconds of `alloc` inside [lo, hi), a running one counted up to `now`."""
    return alloc.gpus * overlap(alloc, lo, hi, now)


def in_window(alloc: Allocation, lo: float, hi: float, now: float) -> bool:
    """Whether the attempt counts in [lo, hi) at `now`: it started there (not after `now`), or
    started before and still held its GPUs after `lo`."""
    if alloc.start > now:
        return False
    if lo <= alloc.start < hi:
        return True
    return alloc.start < lo and min(alloc.stop(now), now) > lo


def utc_day(ts: float) -> str:
    """`YYYY-MM-DD` of the UTC day of `ts`."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


class _Group:
    __slots__ = ("attempts", "gpu_seconds", "run_s", "tasks", "waits")

    def __init__(self) -> None:
        self.gpu_seconds = 0.0
        self.run_s = 0.0
        self.attempts = 0
        self.tasks: set[str] = set()
        self.waits: dict[str, float] = {}

    def add(self, alloc: Allocation, lo: float, hi: float, now: float) -> None:
        if not in_window(alloc, lo, hi, now):
            return
        seconds = overlap(alloc, lo, hi, now)
        self.gpu_seconds += alloc.gpus * seconds
        self.run_s += seconds
        self.attempts += 1
        self.tasks.add(alloc.task_id)
        if alloc.attempt_no == 1 and lo <= alloc.start < hi:
            self.waits[alloc.task_id] = max(0.0, alloc.start - alloc.accepted_at)

    def row(self, key: str) -> UsageRow:
        wait = sum(self.waits.values()) / len(self.waits) if self.waits else None
        return UsageRow(key, self.gpu_seconds, len(self.tasks), self.attempts, wait, self.run_s)


_KEYS: dict[str, Callable[[Allocation], str]] = {
    "user": lambda a: a.user,
    "pool": lambda a: a.pool or NO_POOL,
    "task": lambda a: a.task_id,
}


def report(allocs: Iterable[Allocation], lo: float, hi: float, now: float, by: str) -> list[UsageRow]:
    """The usage in [lo, hi) at `now`, one row per user, pool, UTC day or task (`by`).

    Only groups with an attempt in the window have a row (see the module's rules).

    Raises:
        ValueError: `by` is not one of `GROUPS`.
    """
    check_group(by)
    groups: dict[str, _Group] = {}
    for alloc in allocs:
        if by == "day":
            first = max(lo, alloc.start)
            if first >= hi:
                continue
            last = max(first, min(alloc.stop(now), now, hi))
            day = first // DAY_S * DAY_S
            while True:  # each UTC day the interval touches, cut to the window
                groups.setdefault(utc_day(day), _Group()).add(alloc, max(lo, day), min(hi, day + DAY_S), now)
                day += DAY_S
                if day >= last:
                    break
        else:
            groups.setdefault(_KEYS[by](alloc), _Group()).add(alloc, lo, hi, now)
    return [g.row(k) for k, g in sorted(groups.items()) if g.attempts]


def total(allocs: Iterable[Allocation], lo: float, hi: float, now: float) -> UsageRow:
    """The whole window as one row (key `total`): what a report's rows add up to, but with
    each task counted once."""
    group = _Group()
    for alloc in allocs:
        group.add(alloc, lo, hi, now)
    return group.row("total")


def gpu_seconds_by_user_day(
    spans: Iterable[tuple[str, float, float, float | None]], lo: float, hi: float, now: float
) -> dict[tuple[str, str], float]:
    """GPU-seconds per (user, UTC day) in [lo, hi) at `now`, from bare spans `(user, gpus,
    start, end or None)`: the same figures as `report(by="day")` per user, without building
    allocations (the console's chart over every user)."""
    out: dict[tuple[str, str], float] = {}
    names: dict[float, str] = {}
    for user, gpus, start, end in spans:
        first = max(lo, start)
        last = min(now if end is None else min(end, now), now, hi)
        day = first // DAY_S * DAY_S
        while day < last:
            seconds = min(last, day + DAY_S) - max(first, day)
            if seconds > 0:
                name = names.get(day) or names.setdefault(day, utc_day(day))
                out[(user, name)] = out.get((user, name), 0.0) + gpus * seconds
            day += DAY_S
    return out


def task_figures(allocs: Iterable[Allocation], now: float) -> TaskFigures:
    """One task's figures at `now` from its allocations (any order)."""
    ordered = sorted(allocs, key=lambda a: (a.start, a.attempt_no))
    if not ordered:
        return TaskFigures(0.0, None, 0.0)
    seconds = [max(0.0, min(a.stop(now), now) - a.start) for a in ordered]
    gpu = sum(a.gpus * s for a, s in zip(ordered, seconds, strict=True))
    first = ordered[0]
    return TaskFigures(gpu, max(0.0, first.start - first.accepted_at), sum(seconds))
