"""What the usage route does: GPU-hour reports over a window, from the GPU-hour ledger.

Owns the query's rules: `from`/`to` as ISO 8601 dates or times (a date is its UTC midnight, a
time without a zone is UTC) or epoch seconds; the default window, the last 7 days up to now; the
grouping (user, pool, day, task); who sees what: a user their own usage only, the admin
everyone's, or one user's with `user=`. Bad values are `Invalid` naming the field. The arithmetic
is `argus.domain.usage`'s, over `argus.store.ledger.LedgerStore.allocations`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from argus.domain.errors import Forbidden, Invalid
from argus.domain.task import check_user_id
from argus.domain.usage import DAY_S, GROUPS, UsageRow, gpu_seconds_by_user_day, report, total, utc_day
from argus.service.auth import Identity
from argus.service.views import iso
from argus.store.ledger import LedgerStore

DEFAULT_WINDOW_S = 7 * 86400.0
TIME_RULE = (
    "must be an ISO 8601 date or time (e.g. 2027-01-15 or 2027-01-15T08:00:00Z) or epoch seconds (9 or more digits)"
)
# Epoch seconds have 9 or more digits (since 1973); 8 digits are ISO 8601's basic date (20270115).
_EPOCH = re.compile(r"[0-9]{9,12}(\.[0-9]{1,9})?|[0-9]{1,12}\.[0-9]{1,9}")
_LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()


def parse_time(name: str, raw: str) -> float:
    """`raw` (the query parameter `name`) as epoch seconds.

    Raises:
        Invalid: naming `name`, when `raw` is neither an ISO 8601 date/time nor epoch seconds.
    """
    text = raw.strip()
    if _EPOCH.fullmatch(text):
        value = float(text)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise Invalid(f"invalid {name}", [(name, f"{TIME_RULE}; got {raw[:64]!r}")]) from None
        value = (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    if not (math.isfinite(value) and 0 <= value < _LATEST):
        raise Invalid(f"invalid {name}", [(name, "must be between 1970 and 9999")])
    return value


def row_view(row: UsageRow) -> dict[str, Any]:
    """One row of the report (figures rounded to the millisecond)."""
    return {
        "key": row.key,
        "gpu_seconds": round(row.gpu_seconds, 3),
        "gpu_hours": round(row.gpu_hours, 6),
        "tasks": row.tasks,
        "attempts": row.attempts,
        "wait_s": None if row.wait_s is None else round(row.wait_s, 3),
        "run_s": round(row.run_s, 3),
    }


class UsageService:
    """Usage reports over `LedgerStore`, at the time `clock` says."""

    def __init__(self, ledger: LedgerStore, clock: Callable[[], float]):
        self.ledger = ledger
        self.clock = clock

    def window(self, start: str | None, end: str | None, now: float) -> tuple[float, float]:
        """[from, to) from the query (default: the 7 days up to `now`).

        Raises:
            Invalid: a bad `from` or `to`, or `to` not after `from`.
        """
        hi = parse_time("to", end) if end else now
        lo = parse_time("from", start) if start else hi - DEFAULT_WINDOW_S
        if hi <= lo:
            raise Invalid("empty window", [("to", f"must be after from ({iso(lo)}); got {iso(hi)}")])
        return lo, hi

    def report(
        self, who: Identity, start: str | None, end: str | None, group_by: str, user: str | None
    ) -> dict[str, Any]:
        """The caller's usage (the admin's: everyone's, or `user`'s) in [from, to), grouped.

        Raises:
            Invalid: a bad `from`, `to`, `group_by` or `user`.
            Forbidden: a user asking for another user's usage.
        """
        if group_by not in GROUPS:
            raise Invalid(
                "invalid group_by", [("group_by", f"must be one of {', '.join(GROUPS)}; got {group_by[:32]!r}")]
            )
        if user is not None:
            try:
                check_user_id(user)
            except ValueError as exc:
                raise Invalid("invalid user", [("user", str(exc))]) from None
            if not who.owns(user):
                raise Forbidden("only the admin may read another user's usage")
        whose = user if who.is_admin else who.user_id
        now = self.clock()
        lo, hi = self.window(start, end, now)
        allocs = self.ledger.allocations(lo, hi, whose)
        return {
            "start": iso(lo),
            "end": iso(hi),
            "now": iso(now),
            "group_by": group_by,
            "user": whose,
            "rows": [row_view(r) for r in report(allocs, lo, hi, now, group_by)],
            "total": row_view(total(allocs, lo, hi, now)),
        }

    def by_user_day(self, who: Identity, start: str | None, end: str | None) -> dict[str, Any]:
        """GPU-seconds per user per UTC day in [from, to), in one read of the ledger: the
        caller's own (the admin's: everyone's). The console's usage chart.

        Returns:
            `{start, end, now, users: [...], days: [...], rows: [{user, day, gpu_seconds,
            gpu_hours}]}`: `days` every UTC day the window touches, `users` those with usage in
            it, sorted; a row per (user, day) with usage.

        Raises:
            Invalid: a bad `from` or `to`, or `to` not after `from`.
        """
        whose = None if who.is_admin else who.user_id
        now = self.clock()
        lo, hi = self.window(start, end, now)
        seconds = gpu_seconds_by_user_day(self.ledger.spans(lo, hi, whose), lo, hi, now)
        rows = [
            {"user": user, "day": day, "gpu_seconds": round(v, 3), "gpu_hours": round(v / 3600.0, 6)}
            for (user, day), v in sorted(seconds.items())
        ]
        days, day = [], lo // DAY_S * DAY_S
        while day < hi:
            days.append(utc_day(day))
            day += DAY_S
        return {
            "start": iso(lo),
            "end": iso(hi),
            "now": iso(now),
            "users": sorted({r["user"] for r in rows}),
            "days": days,
            "rows": rows,
        }
