"""Durations as people write them: `90m`, `2h`, `1h30m`, `45s`, `2d`, or plain seconds.

Pure. Used for time limits (TaskSpec `time_limit`, the scheduler's default and maximum).
"""

from __future__ import annotations

import re
from functools import lru_cache

_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


@lru_cache(maxsize=1024, typed=True)  # typed: True is refused even after 1 was read
def parse_duration(value: str | int | float) -> float:
    """Seconds in `value` (remembered: settings' durations are read per request).

    Raises:
        ValueError: not a positive duration, with the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90m, 2h, 1h30m or a number of seconds")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("must be more than 0 and at most 365 days") from None
    else:
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(r"(?:\d+(?:\.\d+)?[dhms])+", text):
            units = [u for _, u in _PART.findall(text)]
            if len(set(units)) != len(units):
                raise ValueError(f"'{value}' repeats a unit")
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"'{value}' is not a duration such as 90m, 2h, 1h30m or a number of seconds")
    if not seconds > 0 or seconds > 365 * 86400:
        raise ValueError("must be more than 0 and at most 365 days")
    return seconds


def format_duration(seconds: float) -> str:
    """`1h30m`, `45s`, `2d3h`: the shortest exact form (whole seconds)."""
    s = round(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return "".join(out) or "0s"
