"""The one loop shape of the scheduler and the node reconciler: when a pass runs.

Owns `Pacer`, which a loop holds and whose `run(stop, tick, failed)` is the loop's `run(stop)`:

- a pass runs at once when started, then whenever the first of three things comes: a nudge
  (`nudge()`, e.g. from the API), the interval (`interval_s`), or `stop`;
- each pass calls `tick(now, full)` with the injected clock's `now`. A pass is *full* when no
  full pass started within `full_every_s` (90 % of the interval by default, so that the
  interval's own wake-ups are full), or when a nudge asked for one (`nudge(full=True)`); every
  other (nudged) pass is light. A loop that has only one kind of pass ignores `full`;
- with `full_share`, full passes are spaced by their CPU: one that took `c` seconds of its
  thread's CPU time is followed by the next after `c / full_share` rather than `full_every_s`
  (never more than `FULL_SPACING_MAX` intervals), so that passes whose CPU grows with a long
  queue take at most that share of a core (like Slurm's backfill interval). Waits on Ray are
  not CPU and do not count; a full pass asked for by a nudge still runs at once;
- a pass that raises is logged and handed to `failed` (the loop records it, e.g. as its
  `last_error`), and the loop goes on: the loop outlives any one bad pass. A failed full pass
  is retried at the interval, not at once;
- nudges that come during a pass, or within `min_gap_s` of its start, are served by one pass
  (under a burst of nudges the loop does not spin on every single one);
- `stop` ends the loop after the pass in progress; set it, then `nudge()` to wake the loop.

Invariants: passes never overlap (one thread runs them); `tick` is never called after `run`
has seen `stop`. Nothing here knows what a pass does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from argus.ports import Clock

FULL_EVERY = 0.9  # of the interval: a wake-up at the interval always runs a full pass
FULL_SPACING_MAX = 5  # intervals: full passes (the sync with Ray: time limits, ended jobs) at least this often

Tick = Callable[[float, bool], None]


class Pacer:
    """Paces one loop's passes (see the module docstring)."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        *,
        min_gap_s: float = 0.0,
        full_every_s: float | None = None,
        full_share: float | None = None,
        clock: Clock = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
        log: logging.Logger | None = None,
    ):
        """
        Args:
            name: what a pass is called in the log ("scheduler tick").
            interval_s: the longest wait between passes.
            min_gap_s: nudged passes start at least this long after the previous pass started
                (at most the interval).
            full_every_s: a pass is full when none was within this long (default: 90 % of the
                interval).
            full_share: at most this share of a core goes to full passes (None: no bound).
            clock: the `now` handed to each pass.
            monotonic: how elapsed time is measured (a fake in tests).
            cpu: the CPU time of the thread that runs the passes (a fake in tests).
            log: where failed passes are logged.
        """
        self.name = name
        self.interval_s = interval_s
        self.min_gap_s = min(min_gap_s, interval_s)
        self.full_every_s = interval_s * FULL_EVERY if full_every_s is None else full_every_s
        self.clock = clock
        self.monotonic = monotonic
        self.cpu = cpu
        self.log = log or logging.getLogger("argus.loops")
        self._wake = threading.Event()
        self.full_share = full_share
        self._full_wanted = False
        self._last_full = float("-inf")
        self._full_spacing = self.full_every_s  # grows with the last full pass's duration

    def nudge(self, full: bool = False) -> None:
        """Ask for a pass soon; `full`: it must be a full pass."""
        if full:
            self._full_wanted = True
        self._wake.set()

    def run(self, stop: threading.Event, tick: Tick, failed: Callable[[str], None]) -> None:
        """Run passes until `stop` is set.

        Args:
            tick: one pass, `tick(now, full)`.
            failed: told `"<ExceptionType>: <message>"` of a pass that raised.
        """
        while not stop.is_set():
            started = self.one_pass(tick, failed)
            if stop.is_set():
                break
            if self._wake.wait(self.interval_s):
                stop.wait(max(0.0, self.min_gap_s - (self.monotonic() - started)))

    def one_pass(self, tick: Tick, failed: Callable[[str], None]) -> float:
        """Run one pass now, full or light as due; returns when it started (`monotonic`)."""
        self._wake.clear()
        started = self.monotonic()
        full = self._full_wanted or started - self._last_full >= self._full_spacing
        if full:
            self._full_wanted = False
            self._last_full = started  # a failed full pass is retried at the interval, not at once
        cpu = self.cpu()
        try:
            tick(self.clock(), full)
        except Exception as exc:  # the loop must outlive any one bad pass
            failed(f"{type(exc).__name__}: {exc}")
            self.log.exception("%s failed", self.name)
        if full and self.full_share:
            spacing = (self.cpu() - cpu) / self.full_share
            self._full_spacing = min(max(self.full_every_s, spacing), FULL_SPACING_MAX * self.interval_s)
        return started

    @property
    def full_spacing_s(self) -> float:
        """How long after a full pass the next one is due (not counting nudges that ask for one)."""
        return self._full_spacing
