"""The usage chart: GPU-hours per user per day as an inline SVG, drawn on the server.

Owns `usage_chart(days, users, hours)`: one stacked bar per UTC day, one colour per user (the
same user keeps the same colour across the chart and the legend), a y axis in GPU-hours with
round ticks, the days under the bars, and a legend. Pure: text in, markup out; every value that
comes from data (user ids, days) is escaped, and every bar carries its figures as data
attributes (`data-user`, `data-day`, `data-gpu-hours`) and a `<title>` tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

PALETTE = (
    "#2b5fd9", "#e07b39", "#1f8a4c", "#c0392b", "#8e44ad",
    "#0f7f9a", "#b7791f", "#d35d9e", "#5d6675", "#7fb800",
)  # fmt: skip
HEIGHT = 240  # the plot area's height, px
LEFT, TOP, BOTTOM = 56, 16, 48  # margins: the y axis' labels, the top, the days
SLOT_MIN, SLOT_MAX = 18, 56  # one day's width
LEGEND_ROW = 18


def colour(index: int) -> str:
    """The colour of the `index`-th user (in the chart's user order)."""
    return PALETTE[index % len(PALETTE)]


def nice_max(value: float) -> tuple[float, float]:
    """A round top for the y axis at or above `value`, and its tick step (5 steps or fewer)."""
    if value <= 0:
        return 1.0, 0.2
    raw = value / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(value / step - 1e-9), step


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if v else "0"


def _attr(text: str) -> str:
    return escape(text, quote=True)


def usage_chart(
    days: Sequence[str],
    users: Sequence[str],
    hours: Mapping[tuple[str, str], float],
    label: str,
) -> Markup:
    """The chart: `hours[(user, day)]` GPU-hours, stacked per day in `users` order.

    Args:
        days: the x axis (`YYYY-MM-DD`), in order.
        users: the stacking and legend order.
        hours: GPU-hours per (user, day); missing pairs are 0.
        label: the chart's accessible name (`aria-label`).
    """
    slot = max(SLOT_MIN, min(SLOT_MAX, 720 // max(1, len(days))))
    bar_w = max(6, int(slot * 0.7))
    plot_w = slot * max(1, len(days))
    legend_h = LEGEND_ROW * max(1, len(users))
    width = LEFT + plot_w + 16
    height = TOP + HEIGHT + BOTTOM + legend_h
    totals = [sum(hours.get((u, d), 0.0) for u in users) for d in days]
    top, step = nice_max(max(totals, default=0.0))
    scale = HEIGHT / top
    base = TOP + HEIGHT
    out = [
        f'<svg class="usage-chart" role="img" aria-label="{_attr(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" data-y-max="{_num(top)}" '
        f'data-plot-height="{HEIGHT}">',
        f"<title>{escape(label)}</title>",
    ]
    # The y axis: gridlines and round ticks; its title.
    ticks = round(top / step)
    for i in range(ticks + 1):
        y = base - i * step * scale
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.2f}" x2="{LEFT + plot_w}" y2="{y:.2f}" stroke="#dde1e7"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.2f}" text-anchor="end" font-size="11">'
            f"{_num(i * step)}</text>"
        )
    out.append(
        f'<text class="axis-title" x="12" y="{TOP + HEIGHT / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {TOP + HEIGHT / 2:.0f})">GPU-hours</text>'
    )
    # The bars: per day, each user's part stacked from the bottom.
    every = max(1, math.ceil(len(days) / 16))  # at most ~16 day labels
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = float(base)
        for j, user in enumerate(users):
            value = hours.get((user, day), 0.0)
            if value <= 0:
                continue
            h = value * scale
            y -= h
            who = _attr(user)
            out.append(
                f'<rect class="bar" x="{x:.2f}" y="{y:.2f}" width="{bar_w}" height="{h:.4f}" fill="{colour(j)}" '
                f'data-user="{who}" data-day="{_attr(day)}" data-gpu-hours="{value:.6f}">'
                f"<title>{escape(user)}, {escape(day)}: {_num(value)} GPU-hours</title></rect>"
            )
        if i % every == 0:
            cx = LEFT + i * slot + slot / 2
            out.append(
                f'<text class="day" x="{cx:.2f}" y="{base + 16}" font-size="10" text-anchor="middle">'
                f"{escape(day[5:])}</text>"
            )
    out.append(f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{LEFT + plot_w}" y2="{base}" stroke="#1d2330"/>')
    out.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#1d2330"/>')
    # The legend: one swatch and name per user.
    y0 = base + BOTTOM - 8
    if not users:
        out.append(f'<text class="legend" x="{LEFT}" y="{y0 + 12}" font-size="11">No usage in this window</text>')
    for j, user in enumerate(users):
        y = y0 + j * LEGEND_ROW
        out.append(
            f'<g class="legend" data-user="{_attr(user)}"><rect x="{LEFT}" y="{y}" width="12" height="12" '
            f'fill="{colour(j)}"/><text x="{LEFT + 18}" y="{y + 10}" font-size="11">{escape(user)}</text></g>'
        )
    out.append("</svg>")
    return Markup("".join(out))
