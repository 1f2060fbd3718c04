"""The console's usage page.

Owns `/ui/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: GPU-hours per user per UTC day from the GPU-hour
ledger (`UsageService.by_user_day`: a user's own, the admin's everyone's), as a stacked-bar chart
drawn on the server (`argus.service.ui.svg`) and a table. The window is whole UTC days, `to`
included; by default the 14 days up to today. A bad date is shown next to its field.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from argus.domain.errors import Invalid
from argus.service.ui.sessions import ConsoleSession
from argus.service.ui.svg import usage_chart
from argus.service.ui.web import page_session, render
from argus.service.usage_service import UsageService

router = APIRouter(prefix="/ui", include_in_schema=False)
DEFAULT_DAYS = 14
MAX_DAYS = 366
DATE_RULE = "must be a date, YYYY-MM-DD"


def _usage(request: Request) -> UsageService:
    return request.app.state.usage


def _day(field: str, raw: str, problems: dict[str, str]) -> date | None:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        problems[field] = f"{DATE_RULE}; got {raw[:32]!r}"
        return None


def window(raw_from: str, raw_to: str, today: date) -> tuple[date, date, dict[str, str]]:
    """The first and last day of the window (both included), and the problems by field."""
    problems: dict[str, str] = {}
    last = _day("to", raw_to, problems) if raw_to.strip() else today
    first = _day("from", raw_from, problems) if raw_from.strip() else None
    if last is None:
        last = today
    if first is None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    if not problems:
        if last < first:
            problems["to"] = f"must not be before from ({first.isoformat()})"
        elif (last - first).days + 1 > MAX_DAYS:
            problems["from"] = f"the window is at most {MAX_DAYS} days"
    return first, last, problems


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """The chart's and the table's figures: GPU-hours per (user, day), per day and per user."""
    hours = {(r["user"], r["day"]): float(r["gpu_hours"]) for r in report["rows"]}
    users, days = report["users"], report["days"]
    per_day = {d: sum(hours.get((u, d), 0.0) for u in users) for d in days}
    per_user = {u: sum(hours.get((u, d), 0.0) for d in days) for u in users}
    return {"hours": hours, "users": users, "days": days, "per_day": per_day, "per_user": per_user}


@router.get("/usage")
def usage_page(
    request: Request,
    session: Annotated[ConsoleSession, Depends(page_session)],
    start: Annotated[str, Query(alias="from")] = "",
    end: Annotated[str, Query(alias="to")] = "",
) -> HTMLResponse:
    svc = _usage(request)
    today = datetime.fromtimestamp(svc.clock(), tz=UTC).date()
    first, last, problems = window(start, end, today)
    figures: dict[str, Any] = {"hours": {}, "users": [], "days": [], "per_day": {}, "per_user": {}}
    chart = None
    if not problems:
        try:
            report = svc.by_user_day(session.identity, first.isoformat(), (last + timedelta(days=1)).isoformat())
        except Invalid as exc:  # the service's own word on the window
            problems = {field: why for field, why in exc.problems}
        else:
            figures = _figures(report)
            whose = "all users" if session.identity.is_admin else session.identity.user_id
            label = f"GPU-hours per day of {whose}, {first.isoformat()} to {last.isoformat()} (UTC)"
            chart = usage_chart(figures["days"], figures["users"], figures["hours"], label)
    status = 400 if problems else 200
    return render(
        request,
        "usage.html",
        session,
        status_code=status,
        first=first.isoformat(),
        last=last.isoformat(),
        raw_from=start,
        raw_to=end,
        problems=problems,
        chart=chart,
        **figures,
    )
